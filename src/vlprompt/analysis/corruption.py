"""Low-Norm Effect corruption sweep (methods.md §7.2): corrupt one prompt position, re-evaluate, compare.

For every position p of a trained ``ctx`` and every setting, REPLACE sets ctx_p to z ~ N(0, σ² I)
(σ = 0: the zero vector; seeded) and RESCALE sets ctx_p to α · ctx_p; the test accuracy is compared
with the uncorrupted prompt's. A setting counts towards the Low-Norm Effect frequency when it lowered
the norm at p (measured, not assumed) and raised the accuracy. The default grid holds the official
examples (REPLACE σ = 0, RESCALE α = 0.001); the paper's full grid is not public.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.func import functional_call
from torch.nn.utils import parametrize

from vlprompt.analysis.outputs import CORRUPTION_HEATMAP, CORRUPTION_SUMMARY
from vlprompt.analysis.prompt_norms import position_norms
from vlprompt.engine.evaluate import classification_metrics
from vlprompt.errors import ConfigError
from vlprompt.io import pyplot, save_figure, write_text
from vlprompt.learners.base import PromptLearner
from vlprompt.learners.capabilities import Capability, require

#: what a learner must offer: context vectors to corrupt, and image features that the prompts leave fixed
SWEEP_NEEDS = frozenset({Capability.CONTEXT, Capability.FIXED_IMAGE_FEATURES})
OFFICIAL_REPLACE = (0.0,)
OFFICIAL_RESCALE = (0.001,)
COLUMNS = ("position", "corruption", "factor", "accuracy", "accuracy_change", "norm_before", "norm_after",
           "norm_reduced", "improved")


@dataclass(frozen=True)
class Setting:
    """One corruption: "replace" with standard deviation ``factor`` or "rescale" by ``factor``."""

    kind: str
    factor: float

    @property
    def label(self) -> str:
        return f"{self.kind} {'σ' if self.kind == 'replace' else 'α'}={self.factor:g}"

    def apply(self, ctx: torch.Tensor, position: int, generator: torch.Generator) -> torch.Tensor:
        """A corrupted copy of ``ctx`` (M, W) or (K, M, W); for class-specific context every class's vector."""
        out = ctx.detach().clone()
        target = out[..., position, :]
        if self.kind == "replace":
            noise = torch.randn(target.shape, generator=generator, dtype=torch.float32) * self.factor
            out[..., position, :] = noise.to(out)
        else:
            out[..., position, :] = target * self.factor
        return out


def grid(replace: list[float] = (), rescale: list[float] = ()) -> list[Setting]:
    """The official examples plus the user's σ and α values, without duplicates, in a stable order."""
    sigmas = sorted(set(OFFICIAL_REPLACE) | {float(s) for s in replace})
    alphas = sorted(set(OFFICIAL_RESCALE) | {float(a) for a in rescale})
    bad = [s for s in sigmas if s < 0]
    if bad:
        raise ConfigError(f"replace σ must be non-negative (a standard deviation); got {bad}")
    return [Setting("replace", s) for s in sigmas] + [Setting("rescale", a) for a in alphas]


@dataclass
class CorruptionTable:
    """Accuracy of the original prompt and one row per (position, setting)."""

    baseline_accuracy: float
    settings: list[Setting]
    n_positions: int
    rows: list[dict] = field(default_factory=list)

    @property
    def low_norm_frequency(self) -> int:
        """Number of (position, setting) pairs whose norm-reducing corruption improved accuracy."""
        return sum(1 for r in self.rows if r["norm_reduced"] and r["improved"])

    def norm_direction_counts(self) -> dict[str, tuple[int, int]]:
        """(settings that raised accuracy, settings) among those that lowered and those that raised the
        norm at their position: the Low-Norm Effect is the first rate being the higher one."""
        counts = {}
        for direction, lowered in (("lowered", True), ("raised", False)):
            mine = [r for r in self.rows if r["norm_reduced"] == lowered and r["norm_after"] != r["norm_before"]]
            counts[direction] = (sum(1 for r in mine if r["improved"]), len(mine))
        return counts

    def summary(self) -> dict:
        """The sweep's headline numbers: the original accuracy, the Low-Norm Effect frequency, the counts."""
        counts = self.norm_direction_counts()
        return {"baseline_accuracy": self.baseline_accuracy, "settings": len(self.rows),
                "low_norm_frequency": self.low_norm_frequency,
                "lowered": {"improved": counts["lowered"][0], "settings": counts["lowered"][1]},
                "raised": {"improved": counts["raised"][0], "settings": counts["raised"][1]}}

    def change_matrix(self) -> torch.Tensor:
        """Accuracy change in points, (positions, settings)."""
        out = torch.zeros(self.n_positions, len(self.settings))
        for r in self.rows:
            out[r["position"], self.settings.index(Setting(r["corruption"], r["factor"]))] = r["accuracy_change"]
        return out

    def to_csv(self) -> str:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows)
        return buf.getvalue()

    def to_markdown(self) -> str:
        counts = self.norm_direction_counts()
        lines = [f"Original accuracy: {self.baseline_accuracy:.2f}%  ",
                 f"Low-Norm Effect frequency: {self.low_norm_frequency} of {len(self.rows)} settings  ",
                 f"Accuracy rose in {counts['lowered'][0]} of {counts['lowered'][1]} settings that lowered a "
                 f"position's norm and in {counts['raised'][0]} of {counts['raised'][1]} that raised it", "",
                 "| position | corruption | accuracy | change | norm before | norm after |", "|---|---|---|---|---|---|"]
        for r in self.rows:
            label = Setting(r["corruption"], r["factor"]).label
            lines.append(f"| {r['position']} | {label} | {r['accuracy']:.2f} | {r['accuracy_change']:+.2f} | "
                         f"{r['norm_before']:.4f} | {r['norm_after']:.4f} |")
        return "\n".join(lines) + "\n"

    def write(self, out_dir: str | Path) -> dict[str, Path]:
        """Write corruption.csv, corruption.md, corruption.json (the summary) and the heatmap into ``out_dir``."""
        out_dir = Path(out_dir)
        paths = {"csv": out_dir / "corruption.csv", "markdown": out_dir / "corruption.md",
                 "summary": out_dir / CORRUPTION_SUMMARY, "heatmap": out_dir / CORRUPTION_HEATMAP}
        write_text(paths["csv"], self.to_csv())
        write_text(paths["markdown"], self.to_markdown())
        write_text(paths["summary"], json.dumps(self.summary(), indent=1) + "\n")
        self.plot(paths["heatmap"])
        return paths

    def plot(self, out_png: str | Path) -> None:
        """Heatmap of the accuracy change, positions x settings, diverging around zero."""
        plt = pyplot()
        change = self.change_matrix().numpy()
        bound = max(float(abs(change).max()), 1e-6)
        fig, ax = plt.subplots(figsize=(1.6 + 1.2 * len(self.settings), 1.2 + 0.35 * self.n_positions))
        image = ax.imshow(change, cmap="RdBu", vmin=-bound, vmax=bound, aspect="auto")
        ax.set_xticks(range(len(self.settings)), [s.label for s in self.settings], rotation=30, ha="right")
        ax.set_yticks(range(self.n_positions))
        ax.set_ylabel("prompt position")
        ax.set_title(f"accuracy change (points); original {self.baseline_accuracy:.2f}%")
        if change.size <= 400:
            for (i, j), v in zip(((i, j) for i in range(change.shape[0]) for j in range(change.shape[1])),
                                 change.flatten()):
                ax.text(j, i, f"{v:+.1f}", ha="center", va="center", fontsize=7)
        fig.colorbar(image, ax=ax)
        save_figure(fig, out_png)


@torch.no_grad()
def context_logits(learner: PromptLearner, ctx: torch.Tensor, features: torch.Tensor, batch_size: int = 256
                   ) -> torch.Tensor:
    """Logits on cached image features with ``ctx`` in place of the learner's (the learner is untouched).

    Learners with ``encode_context`` (prompts shared by all images) encode the class prompts once;
    others (CoCoOp) run their forward pass per batch of images.
    """
    if Capability.ENCODE_CONTEXT in learner.offers:
        with learner.fixed_classifier(F.normalize(learner.encode_context(ctx), dim=-1)):
            return learner(features=features).logits
    if parametrize.is_parametrized(learner, "ctx"):
        raise ConfigError("the learner's ctx is parametrized; analyse a reloaded artifact (from_pretrained) instead")
    out = [functional_call(learner, {"ctx": ctx}, kwargs={"features": features[i : i + batch_size]}).logits
           for i in range(0, len(features), batch_size)]
    return torch.cat(out)


def corruption_sweep(learner: PromptLearner, features: torch.Tensor, labels: torch.Tensor,
                     replace: list[float] = (), rescale: list[float] = (), seed: int = 0,
                     batch_size: int = 256) -> CorruptionTable:
    """Corrupt every position with every setting of ``grid(replace, rescale)`` and measure the test accuracy."""
    require("the corruption sweep", SWEEP_NEEDS, learner.name, learner.offers,
            " (it corrupts the context vectors and re-scores fixed image features)")
    learner.eval()
    ctx = learner.ctx.detach()
    features = features.to(ctx.device)
    n_classes = len(learner.classnames)

    def accuracy(context: torch.Tensor) -> float:
        pred = context_logits(learner, context, features, batch_size).argmax(-1)
        return classification_metrics(pred, labels, n_classes)["accuracy"]

    settings = grid(replace, rescale)
    table = CorruptionTable(accuracy(ctx), settings, ctx.shape[-2])
    for s_index, setting in enumerate(settings):
        for position in range(ctx.shape[-2]):
            generator = torch.Generator().manual_seed(seed * 1_000_003 + s_index * 10_007 + position)
            corrupted = setting.apply(ctx, position, generator)
            acc = accuracy(corrupted)
            before = float(position_norms(ctx)[..., position].mean())
            after = float(position_norms(corrupted)[..., position].mean())
            table.rows.append({"position": position, "corruption": setting.kind, "factor": setting.factor,
                               "accuracy": acc, "accuracy_change": acc - table.baseline_accuracy,
                               "norm_before": before, "norm_after": after, "norm_reduced": after < before,
                               "improved": acc > table.baseline_accuracy})
    table.rows.sort(key=lambda r: (r["position"], settings.index(Setting(r["corruption"], r["factor"]))))
    return table
