"""The static HTML report of a sweep: opens from disk, no server, plain HTML with a little sorting script.

``index.html`` holds the protocols' tables (sortable; average rows stay last) with their figures and
CSV downloads, the per-dataset raw numbers as CSV files, and the failed runs with their errors;
``runs/SPEC.html`` is one page per run: its state, results, per-epoch metric curves, prompt norms
(Nemesis), neural-collapse metrics, its corruption sweep (Low-Norm Effect), the artifact's storage
(QPrompt's encoded tensors) and config.
The report folder is written whole or not at all. It only reads and renders: every analysis and
figure of a run comes from files the analysis stage wrote into the run directory, and a run without
them gets the command that writes them. A run page whose run is unchanged since the report being
replaced is carried over instead of rendered again (``page_cache``).
"""

from __future__ import annotations

import datetime
import hashlib
import json
from html import escape
from pathlib import Path

import yaml

from vlprompt.analysis.outputs import (
    ANALYZE_COMMAND,
    CORRUPTION_DIR,
    CORRUPTION_HEATMAP,
    CORRUPTION_SUMMARY,
    CURVES_FIGURE,
    METRICS_FILE,
    NEURAL_COLLAPSE_FILE,
    NORMS_FIGURE,
    RECORD_FILE,
    RESULTS_FILE,
    current_record,
)
from vlprompt.io import atomic_dir, place_file, write_text
from vlprompt.protocols.base_to_new import SPLIT_AWARE_MARK
from vlprompt.report.page_cache import PageCache, fingerprint
from vlprompt.report.paper_tables import Comparison, paper_comparisons
from vlprompt.report.protocol_tables import Table, protocol_tables, unique
from vlprompt.report.sources import load_rows
from vlprompt.report.tables import csv_table
from vlprompt.sweep.registry import Row
from vlprompt.version import __version__

MARKER = ".vlprompt-report"  # a folder holding this file may be replaced by a new report
#: the version of the run pages' layout: vlprompt's version and this file's own source, so that a page changed by
#: an upgrade or an edit renders every page again
RENDERER = hashlib.sha256(__version__.encode() + Path(__file__).read_bytes()).hexdigest()

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; padding: 0 1.5em; max-width: 75em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }
th { background: #f0f0f0; }
table.sortable th { cursor: pointer; }
tfoot td { font-weight: bold; background: #fafafa; }
pre { background: #f6f6f6; padding: 0.8em; overflow-x: auto; }
img { max-width: 100%; }
.failed { color: #a00; }
.note { color: #555; }
tr.differs td { background: #fff4e0; }
.paper td:not(:nth-last-child(-n+2)) { white-space: nowrap; }
.paper td:last-child { font-size: 0.85em; min-width: 22em; }
.paper td:nth-last-child(2) { min-width: 14em; }
"""

# click a header to sort by it (numbers by value, text alphabetically); a second click reverses
SORT_SCRIPT = """
document.querySelectorAll("table.sortable th").forEach(function (th, column) {
  th.addEventListener("click", function () {
    var body = th.closest("table").tBodies[0];
    var ascending = th.dataset.order !== "asc";
    th.dataset.order = ascending ? "asc" : "desc";
    var key = function (row) {
      var text = row.cells[column].textContent.trim();
      var number = parseFloat(text);
      return isNaN(number) ? text : number;
    };
    Array.from(body.rows).sort(function (a, b) {
      var x = key(a), y = key(b);
      var order = (typeof x === "number" && typeof y === "number") ? x - y : String(x).localeCompare(String(y));
      return ascending ? order : -order;
    }).forEach(function (row) { body.appendChild(row); });
  });
});
"""


def write_report(where: str | Path, out_dir: str | Path) -> Path:
    """Write the report of the runs at ``where`` (a registry or a runs folder) into ``out_dir``."""
    rows = load_rows(where)
    out_dir = Path(out_dir)
    pages = PageCache(out_dir, RENDERER)  # read before atomic_dir checks the folder: only a report's manifest counts
    with atomic_dir(out_dir, lambda d: (d / MARKER).is_file(), "report") as tmp:
        write_text(tmp / MARKER, "written by vlprompt report; the next report replaces this folder\n")
        for sub in ("img", "csv", "runs"):
            (tmp / sub).mkdir()
        tables = protocol_tables(rows, tmp / "img")
        for table in tables:
            if table.header:
                write_text(tmp / "csv" / f"{table.name}.csv", csv_table(table.header, table.rows + table.footer))
        raw = _write_raw(rows, tmp / "csv")
        comparisons = _write_comparisons(rows, tmp / "paper")
        for row in rows:
            _write_run_page(row, tmp, pages)
        pages.write(tmp)
        write_text(tmp / "index.html", _index(rows, tables, raw, where, comparisons))
    return out_dir / "index.html"


def _page(title: str, body: str) -> str:
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{escape(title)}</title>"
            f"<style>{STYLE}</style></head>\n<body>\n<h1>{escape(title)}</h1>\n{body}\n"
            f"<script>{SORT_SCRIPT}</script>\n</body></html>\n")


def _table(header: list | None, rows: list[list], footer: list[list] = (), sortable: bool = True, links=None,
           marked=()) -> str:
    """An HTML table; ``links`` maps a row index to the href of its first cell; ``marked`` rows are highlighted."""
    def cells(row, tag="td"):
        return "".join(f"<{tag}>{escape(str(c))}</{tag}>" for c in row)

    body = []
    for i, row in enumerate(rows):
        if links and i in links:
            first = f"<td><a href=\"{escape(links[i])}\">{escape(str(row[0]))}</a></td>"
            body.append(f"<tr>{first}{cells(row[1:])}</tr>")
        else:
            mark = ' class="differs"' if i in marked else ""
            body.append(f"<tr{mark}>{cells(row)}</tr>")
    foot = "<tfoot>" + "".join(f"<tr>{cells(r)}</tr>" for r in footer) + "</tfoot>" if footer else ""
    kind = ' class="sortable"' if sortable else ""
    head = f"<thead><tr>{cells(header, 'th')}</tr></thead>" if header else ""
    return (f"<table{kind}>{head}"
            f"<tbody>{''.join(body)}</tbody>{foot}</table>")


def _index(rows: list[Row], tables: list[Table], raw: dict[str, str], where, comparisons: list[Comparison]) -> str:
    counts = {s: sum(r.state == s for r in rows) for s in ("done", "failed", "running", "interrupted", "pending")}
    parts = [f"<p>{len(rows)} runs from <code>{escape(str(where))}</code>: "
             + ", ".join(f"{n} {s}" for s, n in counts.items() if n or s != "interrupted") + "</p>"]
    for t in tables:
        parts.append(f"<h2>{escape(t.title)}</h2>")
        if t.missing:
            parts.append(f"<p>The table needs every run of the group; not finished: {escape('; '.join(t.missing))}</p>")
            continue
        parts.append(_table(t.header, t.rows, t.footer))
        parts.append(f"<p><a href=\"csv/{escape(t.name)}.csv\" download>{escape(t.name)}.csv</a></p>")
        if t.figure is not None:
            parts.append(f"<p><img src=\"img/{escape(t.figure.name)}\" alt=\"{escape(t.title)}\"></p>")
    parts += _comparisons_html(comparisons)
    if raw:
        parts.append("<h2>Raw numbers per dataset</h2><ul>" + "".join(
            f"<li><a href=\"csv/{escape(file)}\" download>{escape(dataset)}</a></li>" for dataset, file in raw.items())
            + "</ul>")
    failed = [r for r in rows if r.state == "failed"]
    if failed:
        parts.append("<h2 class=\"failed\">Failed runs</h2>")
        parts.append(_table(["Run", "Attempts", "Error"], [[r.spec_id, r.attempts, r.error] for r in failed],
                            links={i: f"runs/{r.spec_id}.html" for i, r in enumerate(failed)}))
    parts.append("<h2>All runs</h2>")
    parts.append(_table(["Run", "State", "Method", "Dataset", "Seed", "Setting", "Accuracy"],
                        [[r.spec_id, r.state, r.method, r.dataset, r.seed, _setting(r), _headline(r)] for r in rows],
                        links={i: f"runs/{r.spec_id}.html" for i, r in enumerate(rows)}))
    return _page("vlprompt report", "\n".join(parts))


def _write_comparisons(rows: list[Row], folder: Path) -> list[Comparison]:
    """Each protocol's paper-versus-measured table as CSV and Markdown (``paper/``)."""
    comparisons = paper_comparisons(rows)
    if comparisons:
        folder.mkdir()
    for c in comparisons:
        write_text(folder / f"{c.name}.csv", c.csv())
        write_text(folder / f"{c.name}.md", c.markdown())
    return comparisons


def _comparisons_html(comparisons: list[Comparison]) -> list[str]:
    if not comparisons:
        return []
    parts = ["<h2>Our numbers beside the papers'</h2>",
             "<p>Each measured mean ± std beside the published value and the difference (measured minus paper); "
             "highlighted rows ran another protocol than the paper's (the last columns say how, and where each "
             "paper number comes from). — : the papers publish nothing for that row. ≈ : read off a plot.</p>"]
    for c in comparisons:
        parts.append(f"<h3>{escape(c.title)}</h3>")
        parts.append(f"<div class=\"paper\">{_table(c.header, c.rows, marked=set(c.flagged))}</div>")
        parts.append(f"<p><a href=\"paper/{escape(c.name)}.csv\" download>{escape(c.name)}.csv</a> · "
                     f"<a href=\"paper/{escape(c.name)}.md\">{escape(c.name)}.md</a></p>")
    return parts


def _setting(row: Row) -> str:
    return ", ".join(f"{k}={v}" for k, v in row.keys.items())


def _headline(row: Row) -> str:
    """The run's accuracies by subset, e.g. "base 81.25, new 75.00"."""
    if not row.results:
        return ""
    metrics = row.results["metrics"]
    return ", ".join(f"{s} {m['accuracy']:.2f}" for s, m in metrics.items() if isinstance(m, dict) and "accuracy" in m)


RAW_HEADER = ["run", "protocol", "method", "dataset", "seed", "setting", "evaluated_on", "accuracy", "macro_f1",
              "num_samples"]


def _write_raw(rows: list[Row], csv_dir: Path) -> dict[str, str]:
    """One CSV per training dataset: a line per run and evaluated subset or target dataset."""
    files = {}
    done = [r for r in rows if r.state == "done"]
    for i, dataset in enumerate(unique(r.dataset for r in done)):
        lines = []
        for r in (r for r in done if r.dataset == dataset):
            metrics = r.results["metrics"]
            evaluated = [(s, m) for s, m in metrics.items() if isinstance(m, dict) and "accuracy" in m]
            evaluated += [(f"{s} (told {s})", m["split_aware"]) for s, m in evaluated if "split_aware" in m]
            evaluated += list((metrics.get("datasets") or {}).items())
            for name, m in evaluated:
                lines.append([r.spec_id, r.protocol or "", r.method, dataset, r.seed, _setting(r), name,
                              m["accuracy"], m["macro_f1"], m["num_samples"]])
        files[dataset] = f"raw_{i + 1}_{_safe(dataset)}.csv"
        write_text(csv_dir / files[dataset], csv_table(RAW_HEADER, lines))
    return files


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:60]


def _time(stamp: float | None) -> str:
    return datetime.datetime.fromtimestamp(stamp).isoformat(sep=" ", timespec="seconds") if stamp else ""


def _page_inputs(run_dir: Path) -> list[Path]:
    """Every file of the run directory that its page reads: what its fingerprint covers."""
    return [run_dir / name for name in (RESULTS_FILE, METRICS_FILE, RECORD_FILE, CURVES_FIGURE, NORMS_FIGURE,
                                        NEURAL_COLLAPSE_FILE, f"{CORRUPTION_DIR}/{CORRUPTION_SUMMARY}",
                                        f"{CORRUPTION_DIR}/{CORRUPTION_HEATMAP}")] + _artifact_files(run_dir / "prompt")


def _artifact_files(prompt_dir: Path) -> list[Path]:
    """The prompt artifact's config.json and every file it records a SHA-256 of (its tensors), as the artifact
    names them itself: the report reads no name from the learners' code, which would import the models."""
    config_path = prompt_dir / "config.json"
    try:
        recorded = json.loads(config_path.read_text()).get("sha256") or {}
    except (OSError, ValueError):
        recorded = {}
    return [config_path, *(prompt_dir / name for name in recorded)]


def _write_run_page(row: Row, report: Path, pages: PageCache) -> None:
    """The run's page and its images, carried from the earlier report when nothing it shows changed."""
    stamp = fingerprint(row, _page_inputs(Path(row.run_dir)))
    if pages.carry(row.spec_id, stamp, report):
        return
    html, images = _run_page(row, report / "img")
    page = f"runs/{row.spec_id}.html"
    write_text(report / page, html)
    pages.add(row.spec_id, stamp, [page, *(f"img/{name}" for name in images)])


def _run_page(row: Row, img_dir: Path) -> tuple[str, list[str]]:
    """The page's HTML and the names of the images it placed in ``img_dir``."""
    run_dir = Path(row.run_dir)
    facts = [["state", row.state], ["method", row.method], ["dataset", row.dataset], ["seed", row.seed],
             ["setting", _setting(row)], ["protocol", row.protocol or ""], ["attempts", row.attempts],
             ["host", f"{row.host or ''} (pid {row.pid})" if row.host else ""], ["started", _time(row.started)],
             ["ended", _time(row.ended)], ["vlprompt version", row.version or ""],
             ["split hash", row.split_hash or ""], ["run directory", str(run_dir)]]
    parts = ["<p><a href=\"../index.html\">back to the report</a></p>",
             _table(None, facts, sortable=False)]
    if row.error:
        parts.append(f"<h2 class=\"failed\">Error</h2><pre>{escape(row.error)}</pre>")
    if row.results:
        parts.append("<h2>Results</h2>" + _results_table(row.results))
    if row.state == "done" and current_record(run_dir) is None:
        parts.append("<p class=\"note\">analysis not run on this run's results (training curves, prompt norms, "
                     f"neural collapse): <code>{escape(ANALYZE_COMMAND)} {escape(str(run_dir))}</code> writes them "
                     "into its directory, and the next report shows them</p>")
    images = []
    for title, source, name, alt in (("Training curves", CURVES_FIGURE, "metrics", "metrics per epoch"),
                                     ("Prompt norms", NORMS_FIGURE, "norms", "prompt norms")):
        parts += _figure(title, run_dir / source, img_dir / f"{row.spec_id}_{name}.png", alt, images)
    parts += _neural_collapse(run_dir / NEURAL_COLLAPSE_FILE)
    parts += _corruption(run_dir / CORRUPTION_DIR, img_dir / f"{row.spec_id}_corruption.png", images)
    parts += _storage(run_dir / "prompt" / "config.json")
    parts.append("<h2>Config</h2><pre>" + escape(yaml.safe_dump(row.config, sort_keys=False)) + "</pre>")
    return _page(row.spec_id, "\n".join(parts)), images


def _figure(title: str, source: Path, image: Path, alt: str, images: list[str]) -> list[str]:
    """A figure the analysis stage drew into the run directory, placed beside the page; none when absent."""
    if not source.is_file():
        return []
    place_file(source, image)
    images.append(image.name)
    return [f"<h2>{escape(title)}</h2>", f"<p><img src=\"../img/{escape(image.name)}\" alt=\"{escape(alt)}\"></p>"]


def _results_table(results: dict) -> str:
    metrics = results["metrics"]
    rows = [[s, f"{m['accuracy']:.2f}", f"{m['macro_f1']:.2f}", m["num_samples"]]
            for s, m in metrics.items() if isinstance(m, dict) and "accuracy" in m]
    rows += [[f"{s} ({SPLIT_AWARE_MARK})", f"{m['split_aware']['accuracy']:.2f}", f"{m['split_aware']['macro_f1']:.2f}",
              m["split_aware"]["num_samples"]] for s, m in metrics.items() if isinstance(m, dict) and "split_aware" in m]
    rows += [[f"{d} (target)", f"{m['accuracy']:.2f}", f"{m['macro_f1']:.2f}", m["num_samples"]]
             for d, m in (metrics.get("datasets") or {}).items()]
    extra = f"<p>harmonic mean of base and new: {metrics['harmonic_mean']:.2f}</p>" if "harmonic_mean" in metrics else ""
    if "split_aware_harmonic_mean" in metrics:
        extra += (f"<p>harmonic mean {SPLIT_AWARE_MARK}: {metrics['split_aware_harmonic_mean']:.2f} (the method "
                  "scores base and new images by different paths when told their split; the numbers above "
                  "without the mark score every image through one path)</p>")
    return _table(["Evaluated on", "Accuracy (%)", "Macro-F1 (%)", "Images"], rows) + extra + _selection(results)


def _selection(results: dict) -> str:
    """How the evaluated model was chosen: which epoch, and hyper-parameters searched on validation data."""
    lines = []
    selection = results.get("model_selection")
    if selection and selection["rule"] == "best_val":
        lines.append(f"model: epoch {selection['epoch']}, the best on the validation split "
                     f"({selection['val_accuracy']:.2f}%)")
    elif selection:
        lines.append(f"model: the last epoch ({selection['epoch']})")
    chosen = results.get("selected_on_validation")
    if chosen:
        lines.append("chosen on the validation split: " + ", ".join(
            f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in sorted(chosen.items())))
    return "".join(f"<p>{escape(line)}</p>" for line in lines)


def _neural_collapse(path: Path) -> list[str]:
    """The run's neural-collapse metrics per evaluated class list (written by ``vlprompt analyze run``)."""
    found = json.loads(path.read_text()) if path.is_file() else {}
    if not found:
        return []
    names = unique(k for nc in found.values() for k in nc)
    rows = [[s, *(f"{nc[k]:.4f}" if k in nc else "" for k in names)] for s, nc in found.items()]
    return ["<h2>Neural-collapse metrics</h2>", _table(["Evaluated on", *names], rows)]


def _corruption(sweep_dir: Path, heatmap: Path, images: list[str]) -> list[str]:
    """The run's corruption sweep (``vlprompt analyze corruption`` without ``--out``): counts and heatmap."""
    summary_path, source = sweep_dir / CORRUPTION_SUMMARY, sweep_dir / CORRUPTION_HEATMAP
    if not (summary_path.is_file() and source.is_file()):
        return []
    summary = json.loads(summary_path.read_text())
    place_file(source, heatmap)
    images.append(heatmap.name)
    rows = [["original accuracy (%)", f"{summary['baseline_accuracy']:.2f}"],
            ["Low-Norm Effect frequency", f"{summary['low_norm_frequency']} of {summary['settings']}"],
            *([f"accuracy rose where the norm was {d}", f"{summary[d]['improved']} of {summary[d]['settings']}"]
              for d in ("lowered", "raised"))]
    return ["<h2>Corruption analysis (Low-Norm Effect)</h2>", _table(None, rows, sortable=False),
            f"<p><img src=\"../img/{escape(heatmap.name)}\" alt=\"accuracy change per corrupted position\"></p>"]


def _storage(config_path: Path) -> list[str]:
    """The bytes of the artifact's encoded tensors (QPrompt) beside its plain safetensors file."""
    if not config_path.is_file():
        return []
    config = json.loads(config_path.read_text())
    encoded = config.get("encoded") or {}
    if not encoded:
        return []
    rows = [[name, e["codec"], e["bytes"]] for name, e in encoded.items()]
    codec_files = {e["file"] for e in encoded.values()}
    plain_files = [config_path.parent / name for name in config.get("sha256") or {} if name not in codec_files]
    rows += [["other tensors (safetensors)", "float", f.stat().st_size] for f in plain_files if f.is_file()]
    return ["<h2>Prompt storage</h2>", _table(["Tensor", "Codec", "Bytes"], rows)]
