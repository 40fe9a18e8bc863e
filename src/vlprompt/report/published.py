"""The papers' published tables, shipped as package data (``report/published/*.yaml``), and how a report's
runs find theirs.

One file per paper method: ``runs_as`` names the vlprompt methods that are it (learner and regularizer
names joined by ``+``, e.g. ``coop+kgcoop`` is KgCoOp); each table gives a protocol, the setting the
paper ran (backbone, shots, epochs, split-aware inference, transductive data), the source every cell
comes from (paper table, README, figure of a table in the official repository) and the cells
(dataset -> one value per column). A table may narrow its methods (``runs_as``) or require option
values (``when``, e.g. ``nemesis.beta: 1`` for Nemesis' PUN). A cell nobody published is absent.
Matching reads only the runs' recorded config and results: no model is loaded.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from vlprompt.errors import ConfigError
from vlprompt.protocols.protocol import PROTOCOLS

PUBLISHED_DIR = Path(__file__).parent / "published"
SETTING_KEYS = {"backbone", "shots", "epochs", "inference", "transductive"}
AVERAGE = "average"  # the 11-dataset average row of base-to-new and few-shot tables
TARGETS_AVERAGE = "targets_average"  # the average over a transfer protocol's targets


@dataclass(frozen=True)
class PublishedTable:
    paper: str  # the method as the papers call it
    runs_as: tuple[str, ...]
    protocol: str
    setting: dict
    source: str
    columns: tuple  # metric names (base, new, H; accuracy) or shot counts
    cells: dict  # dataset -> values, one per column
    when: dict = field(default_factory=dict)
    note: str = ""
    read_off_plot: float | None = None  # the tolerance of values read off a plot, which are shown as ≈
    decimals: int = 2

    def value(self, dataset: str, column) -> float | None:
        values = self.cells.get(dataset)
        return None if values is None or column not in self.columns else values[self.columns.index(column)]

    def text(self, value: float) -> str:
        return ("≈" if self.read_off_plot else "") + f"{value:.{self.decimals}f}"


def compared_protocols() -> list[str]:
    """The protocols whose tables papers publish (``Protocol.paper_comparison``), in registration order."""
    return [name for name, protocol in PROTOCOLS.in_registration_order() if protocol.paper_comparison]


@functools.cache
def load_published(directory: Path = PUBLISHED_DIR) -> tuple[PublishedTable, ...]:
    """Every published table, in file-name order and each file's order (earlier wins a tie)."""
    tables = []
    for path in sorted(Path(directory).glob("*.yaml")):
        tables += _parse(path, yaml.safe_load(path.read_text()))
    return tuple(tables)


def _parse(path: Path, d: dict) -> list[PublishedTable]:
    def bad(what: str):
        return ConfigError(f"published numbers {path}: {what}")

    if not isinstance(d, dict) or not {"paper", "runs_as", "tables"} <= set(d):
        raise bad("needs paper, runs_as and tables")
    found = []
    compared = compared_protocols()
    for i, t in enumerate(d["tables"] or []):
        if t.get("protocol") not in compared:
            raise bad(f"table {i + 1}: protocol must be one of {', '.join(compared)}, got {t.get('protocol')!r}")
        if not t.get("source"):
            raise bad(f"table {i + 1}: every table needs the source of its cells")
        unknown = set(t.get("setting") or {}) - SETTING_KEYS
        if unknown:
            raise bad(f"table {i + 1}: unknown setting {sorted(unknown)}; valid: {sorted(SETTING_KEYS)}")
        columns = tuple(t["columns"])
        for dataset, values in t["cells"].items():
            if len(values) != len(columns):
                raise bad(f"table {i + 1}, {dataset}: {len(values)} values for {len(columns)} columns")
        found.append(PublishedTable(
            paper=d["paper"], runs_as=tuple(t.get("runs_as") or d["runs_as"]), protocol=t["protocol"],
            setting=dict(t.get("setting") or {}), source=t["source"], columns=columns,
            cells={k: [float(v) for v in vs] for k, vs in t["cells"].items()}, when=dict(t.get("when") or {}),
            note=t.get("note", ""), read_off_plot=t.get("read_off_plot"), decimals=int(t.get("decimals", 2))))
    return found


def method_key(config: dict, results: dict | None, fallback: str) -> str:
    """The method a run trained, by component names (``tcp+kgcoop``), whatever label its sweep gave it."""
    if config.get("learner"):
        return "+".join([config["learner"]["name"], *(r["name"] for r in config.get("regularizers") or [])])
    if results:
        return "+".join([results["method"], *results.get("regularizers", [])])
    return fallback


def _option(config: dict, dotted: str):
    """``component.option`` of a run's config (the learner's or a regularizer's); None when absent."""
    component, _, option = dotted.partition(".")
    learner = config.get("learner") or {}
    if learner.get("name") == component:
        return (learner.get("options") or {}).get(option)
    for spec in config.get("regularizers") or []:
        if spec.get("name") == component:
            return spec.get(option)
    return None


def _expected_epochs(setting: dict, dataset: str):
    epochs = setting.get("epochs")
    if isinstance(epochs, dict):
        return epochs.get(dataset, epochs.get("default"))
    return epochs


def differences(table: PublishedTable, configs: list[dict], results: list[dict], dataset: str) -> list[str]:
    """How the runs' recorded protocol differs from the paper's (empty when it matches what the paper declares)."""
    found = []
    setting = table.setting

    def recorded(get) -> list:
        return sorted({str(v) for v in map(get, configs, results) if v is not None})

    backbone = recorded(lambda c, r: (c.get("backbone") or {}).get("name") or (r.get("backbone") or {}).get("name"))
    if setting.get("backbone") and backbone and backbone != [setting["backbone"]]:
        found.append(f"backbone {'/'.join(backbone)} (paper {setting['backbone']})")
    shots = recorded(lambda c, r: (c.get("data") or {}).get("shots", r.get("shots")))
    varies_shots = "shots" in PROTOCOLS.get(table.protocol).takes  # then shot counts are the table's columns
    if not varies_shots and setting.get("shots") and shots and shots != [str(setting["shots"])]:
        found.append(f"shots {'/'.join(shots)} (paper {setting['shots']})")
    want = _expected_epochs(setting, dataset)
    epochs = recorded(lambda c, r: (c.get("train") or {}).get("epochs"))
    if want is not None and epochs and epochs != [str(want)]:
        found.append(f"epochs {'/'.join(epochs)} (paper {want})")
    if setting.get("inference", "split_agnostic") == "split_aware":
        found.append("paper tells the method each test image's split (base or new); measured numbers do not")
    if setting.get("transductive"):
        found.append("paper trains on unlabelled images of every class (transductive); these runs do not")
    return found


def find_table(protocol: str, method: str, config: dict, dataset: str, column, configs: list[dict],
               results: list[dict], tables: tuple[PublishedTable, ...] | None = None):
    """The published table for these runs, with the protocol differences: the candidate (same protocol,
    the method among its ``runs_as``, its ``when`` options met, a cell for this dataset and column) whose
    setting differs least from the runs'; (None, []) when the papers publish nothing for them."""
    best = None
    for table in load_published() if tables is None else tables:
        if (table.protocol != protocol or method not in table.runs_as or table.value(dataset, column) is None
                or any(_option(config, k) != v for k, v in table.when.items())):
            continue
        diffs = differences(table, configs, results, dataset)
        if best is None or len(diffs) < len(best[1]):
            best = (table, diffs)
    return best or (None, [])
