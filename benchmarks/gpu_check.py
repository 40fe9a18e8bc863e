"""The GPU check: every device path of vlprompt run on CUDA, and the GPU benchmark, in one go.

Parts, each within its own time budget (the whole within 8 minutes on one H100):
  methods    every registered learner alone and with every regularizer it composes with trains two steps
             at fp32, fp16 (towers and autocast, with the gradient scaler) and bf16; its prompt artifact
             and checkpoint load on the CPU with the same tensors (tests/method_matrix.py enumerates them
             from the registries)
  train      `vlprompt train` of MaPLe on the embedded world with data.workers=2, whose batches come pinned
  torchrun   `vlprompt train` through torchrun (one process, NCCL on CUDA) gives the single-process prompt
  parity     the same CoOp run on CUDA and on the CPU, at each precision, within that precision's tolerance
  benchmark  benchmarks/gpu.py: CoOp, CoCoOp and MaPLe at 100 and 1000 classes on ViT-B/16 (random
             weights), vlprompt's way against the naive way in the same process
Results go to DIR/gpu_check.json and DIR/gpu_check.md after every case, so a run stopped by its time limit
leaves what it measured. Without CUDA it says so in one line and runs the same parts on the CPU, small.

    python benchmarks/gpu_check.py --out DIR [--device auto|cuda|cpu] [--parts methods,train,...]

`make gpu-check OUT=DIR` installs the wheels of `make gpu-check-prepare` first (docs/performance.md).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / "src"), str(REPO / "tests")]  # vlprompt itself, and the registry-driven method lists

try:
    import open_clip  # noqa: F401  (vlprompt's backbones need it; the GPU machine lacks it unless carried)
except ImportError:
    raise SystemExit("open_clip is not installed: run `make gpu-check-prepare` where pip works and start the check "
                     "with `make gpu-check`, which installs the wheels it downloaded (docs/performance.md)") from None

import torch  # noqa: E402

#: seconds each part may take on the GPU (about 7 minutes together, leaving time to start and install)
BUDGETS = {"methods": 120, "train": 45, "torchrun": 45, "parity": 75, "benchmark": 135}
#: the CPU run's, small: it shows that every part of the script works, not how fast
QUICK_BUDGETS = {"methods": 60, "train": 60, "torchrun": 60, "parity": 60, "benchmark": 60}
#: a CUDA run's learned tensors against the CPU run's: the largest difference allowed, relative to the largest
#: change training made (fp32 convolutions may run in TF32 on CUDA; fp16 and bf16 round differently on each
#: device). First estimates: the first GPU run reports the differences found.
TOLERANCE = {"fp32": 1e-2, "fp16": 5e-2, "bf16": 1.5e-1}
WORLD = ["--preset", "world-demo", "data.dataset=world:shapes", "data.shots=2", "train.epochs=2"]


@dataclass
class Results:
    """Every case's outcome, written (JSON and Markdown) after each one."""

    out: Path
    meta: dict
    rows: list[dict] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    def start(self, part: str, case: str) -> None:
        self.meta["in_progress"] = f"{part}: {case}"  # what a run killed by its time limit was doing
        self.write()

    def add(self, part: str, case: str, status: str, seconds: float, summary: str = "", details: dict | None = None):
        self.rows.append({"part": part, "case": case, "status": status, "seconds": round(seconds, 2),
                          "summary": summary, **(details or {})})
        self.meta["in_progress"] = None
        self.write()
        print(f"{part:>9} {status:>7} {seconds:7.1f} s  {case}: {summary}", flush=True)

    def write(self) -> None:
        from vlprompt.io import write_json, write_text

        counts = {s: sum(r["status"] == s for r in self.rows) for s in ("pass", "fail", "skipped")}
        self.meta["elapsed_s"] = round(time.monotonic() - self.started, 1)
        write_json(self.out / "gpu_check.json", {"meta": {**self.meta, "counts": counts}, "results": self.rows})
        write_text(self.out / "gpu_check.md", markdown(self.meta, self.rows, counts))


def markdown(meta: dict, rows: list[dict], counts: dict) -> str:
    lines = [f"# GPU check: {meta['device']}", "",
             f"{meta['date']}; torch {meta['torch']} (CUDA {meta['cuda']}), Python {meta['python']}; "
             f"{counts['pass']} passed, {counts['fail']} failed, {counts['skipped']} skipped "
             f"(time budget spent)" + (f"; stopped during {meta['in_progress']}" if meta.get("in_progress") else ""),
             ""]
    bench = [r for r in rows if r["part"] == "benchmark" and r["status"] == "pass"]
    if bench:
        lines += [f"## Benchmark: {meta.get('benchmark_backbone')} (random weights), naive way against vlprompt's", "",
                  "| learner | classes | precision | batch | naive steps/s | vlprompt steps/s | speed-up | "
                  "naive peak GiB | vlprompt peak GiB |", "|---|---|---|---|---|---|---|---|---|"]
        for r in bench:
            gib = [f"{r[w]['peak_gib']:.2f}" if r[w]["peak_gib"] is not None else "-" for w in ("naive", "vlprompt")]
            lines.append(f"| {r['learner']} | {r['classes']} | {r['precision']} | {r['batch']} | "
                         f"{r['naive']['steps_per_s']:.2f} | {r['vlprompt']['steps_per_s']:.2f} | "
                         f"{r['speedup']:.1f}x | {gib[0]} | {gib[1]} |")
        lines.append("")
    lines += ["## Every case", "", "| part | case | status | seconds | result |", "|---|---|---|---|---|"]
    lines += [f"| {r['part']} | {r['case']} | {r['status']} | {r['seconds']} | {r['summary'].replace('|', '/')} |"
              for r in rows]
    return "\n".join(lines) + "\n"


class Check:
    """Runs the parts' cases against their deadlines and records each one."""

    def __init__(self, results: Results, device: str, quick: bool, work: Path):
        self.results, self.device, self.quick, self.work = results, device, quick, work
        self.cuda = device.startswith("cuda")
        self.deadline = 0.0
        self.backbones: dict[tuple[str, str], object] = {}

    def run_part(self, part: str, budget: float) -> None:
        """Every case of a part, within ``budget`` seconds; a part that breaks outside its cases is recorded."""
        self.deadline = time.monotonic() + budget
        start = time.monotonic()
        try:
            getattr(self, part)()
        except Exception as exc:
            self.results.add(part, "(the part itself)", "fail", time.monotonic() - start,
                             f"{type(exc).__name__}: {exc}"[:400], {"traceback": traceback.format_exc().splitlines()[-12:]})
        self.backbones.clear()

    def backbone(self, name: str, precision: str, pretrained: str | None):
        """A backbone on the check's device, loaded once (inside the case that first needs it)."""
        if (name, precision) not in self.backbones:
            from vlprompt.backbones import load_backbone

            self.backbones[name, precision] = load_backbone(name, pretrained, device=self.device, precision=precision)
        return self.backbones[name, precision]

    def case(self, part: str, name: str, fn, *args) -> dict | None:
        """Run one case unless its part's budget is spent; a failure is recorded, never raised."""
        if time.monotonic() > self.deadline:
            self.results.add(part, name, "skipped", 0.0, "the part's time budget was spent")
            return None
        self.results.start(part, name)
        start = time.monotonic()
        try:
            summary, details = fn(*args)
        except Exception as exc:  # a check that fails is a result, and the next case still runs
            tail = traceback.format_exc().strip().splitlines()[-12:]
            self.results.add(part, name, "fail", time.monotonic() - start, f"{type(exc).__name__}: {exc}"[:400],
                             {"traceback": tail})
            if self.cuda:
                torch.cuda.empty_cache()
            return None
        self.results.add(part, name, "pass", time.monotonic() - start, summary, details)
        return details

    def remaining(self) -> float:
        return max(1.0, self.deadline - time.monotonic())

    def command(self, argv: list[str]) -> subprocess.CompletedProcess:
        """A process of its own session (torchrun's workers included), stopped when the part's time is up."""
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]),
                   PYTHONUNBUFFERED="1")
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                                start_new_session=True, cwd=self.work)
        try:
            out, err = proc.communicate(timeout=self.remaining())
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise TimeoutError(f"{' '.join(argv[:6])} ... did not finish within the part's time budget") from None
        if proc.returncode != 0:
            raise RuntimeError(f"exit status {proc.returncode}; its error output ends: {err[-1500:]}")
        return subprocess.CompletedProcess(argv, proc.returncode, out, err)

    # -- parts ---------------------------------------------------------------------------------------------
    def methods(self) -> None:
        import method_matrix

        cases = [(lname, None) for lname in method_matrix.trained_learners()]
        cases += method_matrix.composing_pairs(method_matrix.DEVICE_OPTIONS)
        if self.quick:  # one of each kind: cached features, the image tower, a regularizer
            cases = [c for c in cases if c in [("coop", None), ("maple", None), ("coop", "kgcoop")]]
        for lname, rname in cases:  # each method at every precision, so a short budget skips whole methods
            for precision in method_matrix.DEVICE_PRECISIONS:
                name = f"{lname}+{rname}" if rname else lname
                self.case("methods", f"{name} {precision}", self._method, method_matrix, lname, rname, precision)

    def _method(self, method_matrix, lname, rname, precision):
        backbone = self.backbone("vlprompt-tiny", precision, "world")
        folder = Path(tempfile.mkdtemp(dir=self.work))
        out = method_matrix.check_on_device(lname, rname, backbone, precision, folder)
        last = out["losses"][-1]
        return f"2 steps on {backbone.device}, loss {sum(last.values()):.4g}; files load on the CPU", out

    def train(self) -> None:
        self.case("train", "pinned batches from 2 workers", self._pinned)
        self.case("train", "vlprompt train maple data.workers=2", self._train)

    def _pinned(self):
        from vlprompt.backbones import load_backbone
        from vlprompt.engine.batches import ImageBatches
        from vlprompt.world.tasks import load_task

        backbone = load_backbone("vlprompt-tiny", "world", device=self.device)
        data = load_task("shapes", train_per_class=1, val_per_class=1, test_per_class=1)
        batch = next(iter(ImageBatches(backbone, data, data.train[:8], 4, seed=0, workers=2).epoch(0)))
        pinned = batch["images"].is_pinned()
        assert pinned == self.cuda, f"images pinned: {pinned} on {self.device}"
        return f"a batch of {len(batch['labels'])} images from 2 workers, pinned: {pinned}", {"pinned": pinned}

    def _train(self):
        out = self.work / "train"
        dataset = "world:shapes" if self.quick else "world:objects"
        proc = self.command([sys.executable, "-m", "vlprompt", "train", *WORLD, f"data.dataset={dataset}",
                             "learner.name=maple", "data.workers=2", f"train.device={self.device}",
                             f"output_dir={out}", f"cache_dir={self.work / 'cache'}"])
        results = _only_run(out)
        loaded = _load_on_cpu(results)
        accuracy = results["metrics"]["base"]["accuracy"]
        return (f"base accuracy {accuracy:.2f}%, prompt loads on the CPU ({len(loaded)} tensors)",
                {"accuracy_base": accuracy, "timings_s": results["timings_s"], "stdout_tail": proc.stdout[-800:]})

    def torchrun(self) -> None:
        self.case("torchrun", "torchrun --nproc-per-node 1 vlprompt train coop", self._torchrun)

    def _torchrun(self):
        from vlprompt.engine.config import resolve_config
        from vlprompt.engine.run import run_experiment

        common = ["learner.name=coop", f"train.device={self.device}", f"cache_dir={self.work / 'cache'}"]
        single = run_experiment(resolve_config("world-demo", WORLD[2:] + common + [
            f"output_dir={self.work / 'single'}"])).results
        proc = self.command([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=1",
                             "-m", "vlprompt", "train", *WORLD, *common, f"output_dir={self.work / 'torchrun'}"])
        backend = "nccl" if self.cuda else "gloo"
        assert f"joined the process group (backend {backend})" in proc.stderr, proc.stderr[-1500:]
        a, b = _load_on_cpu(single), _load_on_cpu(_only_run(self.work / "torchrun"))
        diff = max(float((a[k] - b[k]).abs().max()) for k in a)
        assert a.keys() == b.keys() and diff <= 1e-5, f"torchrun's prompt differs from the single process's by {diff}"
        return f"joined with {backend}; prompt within {diff:.1e} of the single-process run", {"max_diff": diff}

    def parity(self) -> None:
        for precision in ("fp32", "fp16", "bf16"):
            self.case("parity", f"coop {precision}: {self.device} against cpu", self._parity, precision)

    def _parity(self, precision):
        from vlprompt.engine.config import resolve_config
        from vlprompt.engine.run import prepare, run_experiment

        runs, start = {}, None
        for device in ("cpu", self.device):
            tag = f"{device.replace(':', '')}-{precision}"
            config = resolve_config("world-demo", WORLD[2:] + [
                "learner.name=coop", f"train.device={device}", f"backbone.precision={precision}",
                f"train.precision={precision}", f"output_dir={self.work / 'parity' / tag}",
                f"cache_dir={self.work / 'cache' / tag}"])  # each device encodes its own features
            if start is None:  # the prompt before training (the same on every device)
                start = {k: v.detach().cpu().float() for k, v in prepare(config).learner.learnable_tensors().items()}
            runs[device] = run_experiment(config).results
        cpu, other = (_load_on_cpu(runs[d]) for d in ("cpu", self.device))
        moved = max(float((cpu[k] - start[k]).abs().max()) for k in cpu)
        diff = max(float((cpu[k] - other[k]).abs().max()) for k in cpu)
        accuracy = {d: runs[d]["metrics"]["base"]["accuracy"] for d in runs}
        allowed = TOLERANCE[precision] * moved
        assert moved > 0, "training did not change the prompt"
        assert diff <= allowed, (f"the prompts differ by {diff:.3g}, more than {TOLERANCE[precision]} of the largest "
                                 f"change training made ({moved:.3g})")
        return (f"prompts within {diff:.2e} = {diff / moved:.1e} of training's change (allowed "
                f"{TOLERANCE[precision]:.2g}); base accuracy " + ", ".join(f"{d} {a:.2f}%" for d, a in accuracy.items()),
                {"max_diff": diff, "max_change": moved, "relative": diff / moved, "allowed_relative":
                 TOLERANCE[precision], "accuracy_base": accuracy})

    def benchmark(self) -> None:
        import gpu

        name = "vlprompt-tiny" if self.quick else "ViT-B-16"
        self.results.meta["benchmark_backbone"] = name
        classes = [10] if self.quick else [100, 1000]
        steps = 1 if self.quick else 10
        precisions = ["fp32"] if self.quick else ["fp16", "bf16"]  # bf16 as far as the budget goes
        for precision in precisions:
            for learner in gpu.LEARNERS:
                for k in classes:
                    self.case("benchmark", f"{learner} {k} classes {precision}", self._bench, gpu, name, learner, k,
                              precision, steps)
            self.backbones.clear()  # one ViT-B/16 on the GPU at a time
            if self.cuda:
                torch.cuda.empty_cache()

    def _bench(self, gpu, name, learner, classes, precision, steps):
        r = gpu.compare(self.backbone(name, precision, None), learner, classes, precision, steps)
        if self.cuda:
            torch.cuda.empty_cache()
        details = {"learner": learner, "classes": classes, "precision": precision, "batch": gpu.BATCH[learner],
                   "steps": steps, **r}
        return (f"{r['naive']['steps_per_s']:.2f} -> {r['vlprompt']['steps_per_s']:.2f} steps/s "
                f"({r['speedup']:.1f}x)", details)


def _only_run(output_dir: Path) -> dict:
    (run_dir,) = [p for p in output_dir.iterdir() if p.is_dir()]
    return json.loads((run_dir / "results.json").read_text())


def _load_on_cpu(results: dict) -> dict:
    """The run's learned tensors, from its prompt artifact rebuilt on the CPU."""
    from vlprompt.learners.artifact import from_pretrained

    learner = from_pretrained(Path(results["run_dir"]) / "prompt")
    assert learner.backbone.device.type == "cpu"
    return {k: v.detach() for k, v in learner.learnable_tensors().items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="folder for gpu_check.json and gpu_check.md")
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cuda, cuda:N or cpu")
    parser.add_argument("--parts", default=",".join(BUDGETS), help=f"comma-separated parts of: {', '.join(BUDGETS)}")
    parser.add_argument("--budget-scale", type=float, default=1.0, help="multiply every part's time budget")
    args = parser.parse_args(argv)
    parts = args.parts.split(",")
    unknown = [p for p in parts if p not in BUDGETS]
    if unknown:
        parser.error(f"--parts {','.join(unknown)} is not a part; choose from: {', '.join(BUDGETS)}")
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        parser.error(f"--device {device}: CUDA is not available on this machine")
    quick = device == "cpu"
    if quick:
        why = "--device cpu" if torch.cuda.is_available() else "no CUDA device on this machine"
        print(f"{why}: the GPU check runs only its CPU parts, small, to show that the script works", flush=True)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cuda = device.startswith("cuda")
    meta = {"device": torch.cuda.get_device_name(device) if cuda else f"cpu ({os.cpu_count()} cores)",
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "torch": torch.__version__,
            "cuda": torch.version.cuda, "python": platform.python_version(), "mode": "quick" if quick else "full",
            "budgets_s": {p: (QUICK_BUDGETS if quick else BUDGETS)[p] * args.budget_scale for p in parts},
            "open_clip": f"{open_clip.__version__} from {Path(open_clip.__file__).parent.parent}", "commit": _commit()}
    results = Results(out, meta)
    results.write()
    print(f"{meta['device']}; torch {meta['torch']}; results in {out}/gpu_check.md", flush=True)
    with tempfile.TemporaryDirectory(prefix="vlprompt-gpu-check-") as work:
        check = Check(results, device, quick, Path(work))
        for part in parts:
            check.run_part(part, meta["budgets_s"][part])
    failed = [r for r in results.rows if r["status"] == "fail"]
    print(f"{len(results.rows) - len(failed)} of {len(results.rows)} cases passed or were skipped; "
          f"{len(failed)} failed; {out}/gpu_check.md", flush=True)
    return 1 if failed else 0


def _commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                              timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


if __name__ == "__main__":
    sys.exit(main())
