"""What a protocol is: a registered object that plans the runs a paper's table needs and builds that
table, with its title and its figure's data, from their results.

``vlprompt run``, sweep specs, paper presets' ``reproduce:`` sections and the report find a protocol by
name in ``PROTOCOLS`` and use only what it declares, so a new protocol is one module that registers an
instance, and no other module branches on its name. A figure is data tagged with a kind
(``Figure.kind``); report/ draws each kind with the renderer it registered for it, since protocols sit
below report/ and draw nothing themselves.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from vlprompt.errors import ConfigError
from vlprompt.protocols.common import ProtocolRequest, RunKey, RunPlan, execute
from vlprompt.registry import Registry


@dataclass
class Figure:
    """A table's figure as data: ``kind`` names the report's renderer ("base_new_bars", "shot_curves"),
    ``panels`` is panel title -> method -> values, ``x`` the horizontal axis where there is one (shots)."""

    kind: str
    panels: dict
    x: list = field(default_factory=list)


@dataclass
class ProtocolTable:
    """One table: the stem of its files, its title, its rows (average rows in ``footer``, which stay last
    when the report sorts), its figure; or, while runs of its group are unfinished, those runs and no rows."""

    name: str
    title: str
    header: list[str] = field(default_factory=list)
    rows: list[list] = field(default_factory=list)
    footer: list[list] = field(default_factory=list)
    figure: Figure | None = None
    missing: list[str] = field(default_factory=list)


@dataclass
class ProtocolResult:
    """What running a protocol gives: its table and the results of its runs, in plan order."""

    protocol: Protocol
    table: ProtocolTable
    plans: list[RunPlan]
    results: list[dict]


class Protocol:
    """A protocol: subclass, set ``name`` and ``title``, define ``plan`` and ``table``, and register an
    instance with ``register_protocol``; ``report_tables`` when the report groups its runs differently."""

    name: str = ""
    title: str = ""
    #: the request's options it reads beyond methods, datasets and seeds: "shots", "ratios", "targets"
    takes: tuple[str, ...] = ()
    #: of those, the ones without a default, which a paper preset's ``reproduce:`` section must give
    needs: tuple[str, ...] = ()
    #: tables of per-run analyses written beside its table, by kind (report/ writes each kind)
    analysis_tables: tuple[str, ...] = ()
    #: the shape of its table in the papers ("base_new", "shots", "transfer"), by which the report sets
    #: measured numbers beside published ones; None when no paper publishes such a table
    paper_comparison: str | None = None

    def plan(self, request: ProtocolRequest) -> list[RunPlan]:
        """Every run the request asks for, each with the keys its result is grouped by."""
        raise NotImplementedError

    def table(self, plans: list[RunKey], results: list[dict]) -> ProtocolTable:
        """The table of finished runs (``results`` in plan order), as ``vlprompt run`` writes it; it reads the
        runs' keys and results only, never their configs, so the report builds it without model code."""
        raise NotImplementedError

    def report_tables(self, plans: list[RunKey], results: list[dict]) -> list[ProtocolTable]:
        """The report's tables of the finished runs a registry holds: the table, or the runs it still needs."""
        missing = missing_runs(plans)
        return [ProtocolTable(self.name, self.title, missing=missing) if missing else self.table(plans, results)]

    def claims(self, dataset: str, config: dict, results: dict) -> bool:
        """Whether a run found without a registry (so with no protocol recorded) is one of this protocol's,
        judged by its dataset, config and results; the report asks the protocols in the order they were
        registered and the first that claims the run wins. By default none is claimed."""
        return False

    def run(self, request: ProtocolRequest) -> ProtocolResult:
        """Plan, execute the runs not finished yet, and build the table."""
        plans = self.plan(request)
        results = execute(plans, request)
        return ProtocolResult(self, self.table(plans, results), plans, results)


PROTOCOLS: Registry[Protocol] = Registry("protocol")


def register_protocol(protocol: Protocol) -> Protocol:
    """Add ``protocol`` under its ``name``; a second protocol of the same name is refused."""
    return PROTOCOLS.register()(protocol)


def list_protocols() -> list[str]:
    return PROTOCOLS.names()


def run_protocol(name: str, request: ProtocolRequest) -> ProtocolResult:
    return PROTOCOLS.get(name).run(request)


def takers_of(option: str) -> str:
    """The protocols that take a request option, e.g. "few_shot protocol" or "cross_dataset and ... protocols"."""
    names = [name for name, protocol in PROTOCOLS.items() if option in protocol.takes]
    return f"{' and '.join(names)} protocol{'s' if len(names) > 1 else ''}"


def refuse_untaken(protocol_name: str, given: list[str], spelled: str = "{}") -> None:
    """Refuse request options (``shots``, ``ratios``, ``targets``) that the protocol does not read, which it
    would otherwise ignore without a word; ``spelled`` shows the option as the user wrote it ("--{}")."""
    protocol = PROTOCOLS.get(protocol_name)
    for option in given:
        if option not in protocol.takes:
            hint = f"; {protocol_name} runs take the preset's data.shots (override: data.shots=N)" \
                if option == "shots" else f"; {protocol_name} does not read it"
            raise ConfigError(f"{spelled.format(option)} is for the {takers_of(option)}{hint}")


def unique(values) -> list:
    """The values in order of first appearance, each once."""
    return list(dict.fromkeys(values))


def setting_key(keys: dict) -> str:
    """A run's grouping keys as text, the same for equal keys, e.g. '{"shots": 4}'."""
    return json.dumps(keys, sort_keys=True)


def missing_runs(plans: list[RunKey], settings: list[str] | None = None) -> list[str]:
    """Each (dataset, method, setting) of these runs' crossing that none of them covers, e.g. 'coop on dtd
    ({"shots": 4})'; ``settings`` (default: the plans', in order) orders the settings."""
    have = {(p.dataset, p.method, setting_key(p.keys)) for p in plans}
    settings = settings or unique(setting_key(p.keys) for p in plans)
    return [f"{m} on {d} ({s})" for d in unique(p.dataset for p in plans) for m in unique(p.method for p in plans)
            for s in settings if (d, m, s) not in have]


def group_runs(plans: list[RunKey], results: list[dict], key) -> dict:
    """``key(plan, result)`` -> (its plans, their results), groups in order of first appearance."""
    groups: dict = {}
    for plan, result in zip(plans, results):
        mine = groups.setdefault(key(plan, result), ([], []))
        mine[0].append(plan)
        mine[1].append(result)
    return groups


def split_average(rows: list[list]) -> tuple[list[list], list[list]]:
    """(rows, footer): the rows whose first cell is "Average" go to the footer."""
    return [r for r in rows if r[0] != "Average"], [r for r in rows if r[0] == "Average"]
