"""The static HTML report of a sweep: opens from disk, no server, plain HTML with a little sorting script.

``index.html`` holds the protocols' tables (sortable; average rows stay last) with their figures and
CSV downloads, the per-dataset raw numbers as CSV files, and the failed runs with their errors;
``runs/SPEC.html`` is one page per run: its state, results, per-epoch metric curves, prompt norms
(Nemesis), neural-collapse metrics, its corruption sweep (Low-Norm Effect), the artifact's storage
(QPrompt's encoded tensors) and config.
The report folder is written whole or not at all.
"""

from __future__ import annotations

import datetime
import json
from html import escape
from pathlib import Path

import yaml

from vlprompt.analysis.corruption import HEATMAP_FILE, RUN_SUBDIR, SUMMARY_FILE
from vlprompt.analysis.prompt_norms import plot_norm_history
from vlprompt.analysis.run_analysis import NEURAL_COLLAPSE_FILE, analyze_run
from vlprompt.io import atomic_dir, pyplot, save_figure, write_bytes, write_text
from vlprompt.learners.artifact import TENSORS_FILE
from vlprompt.protocols.base_to_new import SPLIT_AWARE_MARK
from vlprompt.report.paper_tables import Comparison, paper_comparisons
from vlprompt.report.protocol_tables import Table, protocol_tables, unique
from vlprompt.report.sources import load_rows
from vlprompt.report.tables import csv_table
from vlprompt.sweep.registry import Row

MARKER = ".vlprompt-report"  # a folder holding this file may be replaced by a new report

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
            write_text(tmp / "runs" / f"{row.spec_id}.html", _run_page(row, tmp / "img"))
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
    counts = {s: sum(r.state == s for r in rows) for s in ("done", "failed", "running", "pending")}
    parts = [f"<p>{len(rows)} runs from <code>{escape(str(where))}</code>: "
             + ", ".join(f"{n} {s}" for s, n in counts.items()) + "</p>"]
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


def _run_page(row: Row, img_dir: Path) -> str:
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
    parts += _curves(row, run_dir / "metrics.jsonl", img_dir)
    if row.state == "done" and (run_dir / "prompt").is_dir() and not (run_dir / NEURAL_COLLAPSE_FILE).is_file():
        analyze_run(run_dir)  # runs of a sweep or protocol are analysed when first reported
    parts += _neural_collapse(run_dir / NEURAL_COLLAPSE_FILE)
    parts += _corruption(run_dir / RUN_SUBDIR, img_dir / f"{row.spec_id}_corruption.png")
    parts += _storage(run_dir / "prompt" / "config.json")
    parts.append("<h2>Config</h2><pre>" + escape(yaml.safe_dump(row.config, sort_keys=False)) + "</pre>")
    return _page(row.spec_id, "\n".join(parts))


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


def _curves(row: Row, metrics_path: Path, img_dir: Path) -> list[str]:
    """Per-epoch curves of every logged number (norms apart), and the Nemesis prompt norms when logged."""
    if not metrics_path.is_file():
        return []
    records = [json.loads(line) for line in metrics_path.read_text().splitlines() if line.strip()]
    keys = unique(k for r in records for k, v in r.items()
                  if k != "epoch" and not k.startswith("nemesis_norm_") and isinstance(v, (int, float)))
    if not records or not keys:
        return []
    plt = pyplot()
    cols = min(3, len(keys))
    nrows = -(-len(keys) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4 * cols, 2.8 * nrows), squeeze=False)
    for ax in axes.flat[len(keys):]:
        ax.set_visible(False)
    for ax, key in zip(axes.flat, keys):
        points = [(r["epoch"], r[key]) for r in records if key in r]
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", markersize=3)
        ax.set_title(key, fontsize=9)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    curves = save_figure(fig, img_dir / f"{row.spec_id}_metrics.png")
    parts = ["<h2>Training curves</h2>", f"<p><img src=\"../img/{escape(curves.name)}\" alt=\"metrics per epoch\"></p>"]
    if any(k.startswith("nemesis_norm_") for r in records for k in r):
        norms = plot_norm_history(metrics_path, img_dir / f"{row.spec_id}_norms.png")
        parts += ["<h2>Prompt norms</h2>", f"<p><img src=\"../img/{escape(norms.name)}\" alt=\"prompt norms\"></p>"]
    return parts


def _neural_collapse(path: Path) -> list[str]:
    """The run's neural-collapse metrics per evaluated class list (written by ``vlprompt analyze run``)."""
    found = json.loads(path.read_text()) if path.is_file() else {}
    if not found:
        return []
    names = unique(k for nc in found.values() for k in nc)
    rows = [[s, *(f"{nc[k]:.4f}" if k in nc else "" for k in names)] for s, nc in found.items()]
    return ["<h2>Neural-collapse metrics</h2>", _table(["Evaluated on", *names], rows)]


def _corruption(sweep_dir: Path, heatmap: Path) -> list[str]:
    """The run's corruption sweep (``vlprompt analyze corruption`` without ``--out``): counts and heatmap."""
    summary_path, source = sweep_dir / SUMMARY_FILE, sweep_dir / HEATMAP_FILE
    if not (summary_path.is_file() and source.is_file()):
        return []
    summary = json.loads(summary_path.read_text())
    write_bytes(heatmap, source.read_bytes())
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
    plain = config_path.parent / TENSORS_FILE
    if plain.is_file():
        rows.append(["other tensors (safetensors)", "float", plain.stat().st_size])
    return ["<h2>Prompt storage</h2>", _table(["Tensor", "Codec", "Bytes"], rows)]
