"""The training loop: SGD on the learner's prompt tensors, with regularizer hooks, checkpoint and resume.

Its settings are the run config's ``train`` section (``vlprompt.engine.config.TrainConfig``, whose defaults
are the reference's, Dassl's); the last epoch's weights are the result unless ``train.model_selection`` says
otherwise.
"""

from __future__ import annotations

import io
import json
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from vlprompt.engine.config import TrainConfig
from vlprompt.engine.device import to_device
from vlprompt.engine.distributed import all_reduce_sum_, is_main, shard, world
from vlprompt.engine.precision import autocast, grad_scaler
from vlprompt.engine.schedule import lr_at_epoch
from vlprompt.engine.seeding import capture_rng_state, restore_rng_state
from vlprompt.errors import ArtifactError, ConfigError, TrainingError
from vlprompt.io import write_bytes, write_text
from vlprompt.learners.base import PromptLearner
from vlprompt.progress import Progress, format_duration
from vlprompt.regularizers.base import Regularizer, TrainContext
from vlprompt.regularizers.composition import check_composition

log = logging.getLogger(__name__)


class Trainer:
    def __init__(self, learner: PromptLearner, config: TrainConfig, regularizers: list[Regularizer] = (),
                 context: TrainContext | None = None):
        self.learner = learner
        self.config = config
        self.regularizers = list(regularizers)
        check_composition(learner.name, learner.offers, [(type(r), r.config) for r in self.regularizers])
        self.context = context or TrainContext(learner=learner)
        self.context.max_epochs = config.epochs
        for reg in self.regularizers:
            reg.setup(self.context)
        self.params = learner.learnable_tensors()
        if not self.params:
            raise ConfigError(f"learner {learner.name!r} has nothing to train; evaluate it instead")
        multipliers = learner.lr_multipliers()  # a head's tensors train at a multiple of train.lr
        params = [{"params": [t for n, t in self.params.items() if multipliers.get(n, 1.0) == m], "lr_multiplier": m}
                  for m in sorted({multipliers.get(n, 1.0) for n in self.params})]
        if config.optimizer == "adamw":
            self.optimizer = torch.optim.AdamW(params, lr=config.lr, eps=config.adam_eps,
                                               weight_decay=config.weight_decay)
        elif config.optimizer == "adam":
            self.optimizer = torch.optim.Adam(params, lr=config.lr, eps=config.adam_eps,
                                              weight_decay=config.weight_decay)
        else:
            self.optimizer = torch.optim.SGD(params, lr=config.lr, momentum=config.momentum,
                                             weight_decay=config.weight_decay)
        self.scaler = grad_scaler(config.precision, learner.backbone.device)
        if world()[1] > config.batch_size:
            raise ConfigError(f"train.batch_size={config.batch_size} is smaller than the {world()[1]} processes of this "
                              "run: every process needs a share of each batch")
        self.history: list[dict] = []
        self.start_epoch = 0
        #: with model_selection=best_val: the best epoch so far, its validation accuracy and its tensors
        self.best: dict | None = None

    # -- checkpoints -----------------------------------------------------------------------
    def state_dict(self) -> dict:
        learned = {k: v.detach().clone() for k, v in self.learner.state_dict().items() if k in self.params}
        return {
            "epochs_done": self.start_epoch,
            "learner": learned,
            "optimizer": self.optimizer.state_dict(),
            "grad_scaler": self.scaler.state_dict(),
            "regularizers": {r.name: r.state_dict() for r in self.regularizers},
            "rng": capture_rng_state(),
            "history": self.history,
            "step": self.context.step,
            "best": self.best,
        }

    def save_checkpoint(self, path: Path) -> None:
        buffer = io.BytesIO()  # written as bytes, so a full disk is an OSError of the write (see vlprompt.io)
        torch.save(self.state_dict(), buffer)
        write_bytes(path, buffer.getvalue())

    def load_checkpoint(self, path: Path) -> None:
        """Resume from ``path``; a damaged or foreign file is refused with what to do (never unpickled freely).

        The learned tensors and the optimizer's state must be finite: resuming from NaN would only end in
        a "non-finite loss" that blames the learning rate."""
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            _check_finite(path, state["learner"], state["optimizer"]["state"])
            self.learner.load_state_dict(state["learner"], strict=False)
            self.optimizer.load_state_dict(state["optimizer"])
            if state.get("grad_scaler"):
                self.scaler.load_state_dict(state["grad_scaler"])
            for reg in self.regularizers:
                reg.load_state_dict(state["regularizers"].get(reg.name, {}))
            restore_rng_state(state["rng"])
            self.history = state["history"]
            self.best = state.get("best")
            self.start_epoch = state["epochs_done"]
            self.context.step = state["step"]
        except ArtifactError:
            raise
        except Exception as exc:  # torch's own message would advise weights_only=False, which must not be followed
            raise ArtifactError(f"checkpoint {path} is damaged or not a checkpoint of this run ({type(exc).__name__}); "
                                "delete it to restart the run from the beginning") from None
        log.info("resumed from %s after epoch %d", path, self.start_epoch)

    # -- training --------------------------------------------------------------------------
    def fit(self, batches, checkpoint: Path | None = None, metrics_path: Path | None = None,
            stop_after_epoch: int | None = None, validate: Callable[[], float] | None = None) -> list[dict]:
        """Train from the checkpoint if one exists; ``stop_after_epoch`` ends early (for interruption tests).

        With ``model_selection=best_val``, ``validate`` gives the validation accuracy after each epoch and
        the learner ends with the tensors of the first epoch that reached the best one.
        """
        cfg = self.config
        if cfg.model_selection == "best_val" and validate is None:
            raise ConfigError("train.model_selection=best_val needs the validation split; this training has none")
        if checkpoint is not None and Path(checkpoint).is_file():
            self.load_checkpoint(Path(checkpoint))
        self.start(batches)
        started, first = time.perf_counter(), self.start_epoch
        for epoch in range(self.start_epoch, cfg.epochs):
            record = self._run_epoch(batches, epoch)
            if cfg.model_selection == "best_val":
                self._keep_if_best(record, epoch, validate())
            self.history.append(record)
            per_epoch = (time.perf_counter() - started) / (epoch + 1 - first)
            log.info(_epoch_line(record, cfg.epochs, len(batches), per_epoch * (cfg.epochs - epoch - 1)))
            self.start_epoch = epoch + 1
            if checkpoint is not None and is_main():
                self.save_checkpoint(Path(checkpoint))
            if metrics_path is not None and is_main():
                write_text(metrics_path, "".join(_json_line(r) for r in self.history))
            if stop_after_epoch is not None and epoch + 1 >= stop_after_epoch:
                break
        if self.best is not None and self.start_epoch == cfg.epochs:
            with torch.no_grad():
                for name, tensor in self.best["tensors"].items():
                    self.params[name].copy_(tensor.to(self.params[name].device))
        return self.history

    def _keep_if_best(self, record: dict, epoch: int, accuracy: float) -> None:
        record["val_accuracy"] = accuracy
        if self.best is None or accuracy > self.best["val_accuracy"]:
            self.best = {"epoch": epoch + 1, "val_accuracy": accuracy,
                         "tensors": {k: v.detach().cpu().clone() for k, v in self.params.items()}}

    @property
    def selection(self) -> dict:
        """Which epoch's tensors the learner holds, and by what rule (results.json records it)."""
        if self.best is not None:
            return {"rule": "best_val", "epoch": self.best["epoch"], "val_accuracy": self.best["val_accuracy"]}
        return {"rule": "last", "epoch": self.start_epoch}

    def start(self, batches) -> None:
        """Give the regularizers the training data (cached features, where the learner uses them)."""
        self.context.train_features = getattr(batches, "features", None)
        self.context.train_labels = getattr(batches, "labels", None) if self.context.train_features is not None else None
        for reg in self.regularizers:
            reg.on_fit_start(self.context)

    def _run_epoch(self, batches, epoch: int) -> dict:
        cfg, ctx = self.config, self.context
        lr = lr_at_epoch(epoch, cfg.lr, cfg.epochs, cfg.warmup_epochs, cfg.warmup_lr)
        for group in self.optimizer.param_groups:  # warm-up is the same for all, as Dassl's constant warm-up
            group["lr"] = lr_at_epoch(epoch, cfg.lr * group.get("lr_multiplier", 1.0), cfg.epochs, cfg.warmup_epochs,
                                      cfg.warmup_lr)
        ctx.epoch = epoch
        self.learner.train()
        sums: dict[str, float] = {}
        correct = seen = 0
        start = time.perf_counter()
        bar = Progress(batches.epoch(epoch), f"epoch {epoch + 1}/{cfg.epochs}", total=len(batches), unit="batch",
                       log_every=None)  # fit logs one line per epoch
        for batch in bar:
            losses, logits = self._step(batch)
            for name, value in losses.items():
                sums[name] = sums.get(name, 0.0) + float(value)
            labels = batch["labels"][shard(len(batch["labels"]))]  # this process's share (all of it alone)
            correct += int((logits.argmax(-1).cpu() == labels.cpu()).sum())
            seen += len(labels)
            ctx.step += 1
            bar.set_postfix(loss=f"{float(losses['ce']):.3f}")
        counts = torch.tensor([correct, seen], dtype=torch.float64, device=self.learner.backbone.device)
        all_reduce_sum_([counts])
        correct, seen = int(counts[0]), int(counts[1])
        n_batches = max(len(batches), 1)
        record = {"epoch": epoch + 1, "lr": lr, "train_accuracy": 100.0 * correct / max(seen, 1),
                  "seconds": time.perf_counter() - start}
        record.update({f"loss_{k}": v / n_batches for k, v in sums.items()})
        for reg in self.regularizers:
            record.update(reg.on_epoch_end(ctx))
        if not all(math.isfinite(v) for k, v in record.items() if k.startswith("loss_")):
            raise TrainingError(f"non-finite loss in epoch {epoch + 1}: {record}; lower train.lr")
        return record

    def _step(self, batch: dict) -> tuple[dict, torch.Tensor]:
        ctx = self.context
        batch = to_device(batch, self.learner.backbone.device)
        size = len(batch["labels"])
        rows = shard(size)  # several processes: each takes its share, weighted by it
        weight = (rows.stop - rows.start) / size
        if weight < 1:
            batch = {k: v[rows] if isinstance(v, torch.Tensor) and len(v) == size else v for k, v in batch.items()}
        for reg in self.regularizers:
            reg.before_step(ctx, batch)
        with autocast(self.config.precision, self.learner.backbone.device):
            outputs = self.learner(images=batch.get("images"), features=batch.get("features"))
            losses = {"ce": F.cross_entropy(outputs.logits.float(), batch["labels"])}
            for reg in self.regularizers:
                losses.update(reg.extra_loss(ctx, outputs, batch))
        grad_reg = next((r for r in self.regularizers if r.wants_loss_gradients), None)
        names = list(self.params)
        tensors = list(self.params.values())
        def scale(loss):  # fp16: losses are scaled, and scaler.step unscales (skipping inf/NaN steps)
            return self.scaler.scale(loss * weight)

        if grad_reg is None:
            scale(sum(losses.values())).backward()
            all_reduce_sum_([t.grad for t in tensors if t.grad is not None])
        else:  # a gradient transform must be equivariant to the common scale (ProGrad's projection is)
            per_loss = {}
            for i, (loss_name, loss) in enumerate(losses.items()):
                grads = torch.autograd.grad(scale(loss), tensors, retain_graph=i < len(losses) - 1,
                                            allow_unused=True)
                per_loss[loss_name] = {n: (g if g is not None else torch.zeros_like(t))
                                       for n, t, g in zip(names, tensors, grads)}
                all_reduce_sum_(per_loss[loss_name].values())  # the whole batch's gradients, then the transform
            combined = grad_reg.transform_gradients(ctx, per_loss)
            for n, t in zip(names, tensors):
                t.grad = combined[n]
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        logged = torch.stack([v.detach().float() * weight for v in losses.values()])
        all_reduce_sum_([logged])  # the whole batch's mean losses
        return dict(zip(losses, logged)), outputs.logits.detach()


def _check_finite(path: Path, learned: dict, optimizer_state: dict) -> None:
    """Refuse a checkpoint whose learned tensors (or their optimizer state) hold NaN or infinite values."""
    bad = sorted(name for name, t in learned.items() if t.is_floating_point() and not torch.isfinite(t).all())
    bad += sorted(f"optimizer state {key} of parameter {index}" for index, entry in optimizer_state.items()
                  for key, t in entry.items()
                  if isinstance(t, torch.Tensor) and t.is_floating_point() and not torch.isfinite(t).all())
    if bad:
        raise ArtifactError(f"checkpoint {path} holds NaN or infinite values ({', '.join(bad)}): it was damaged or "
                            "saved after training diverged; delete it to restart the run from the beginning")


def _epoch_line(record: dict, epochs: int, n_batches: int, eta: float) -> str:
    """``epoch 3/10: loss ce 1.234, train accuracy 56.2%, 0.8 s (50.0 batch/s), ETA 5.6 s``."""
    losses = ", ".join(f"{k[5:]} {v:.4g}" for k, v in record.items() if k.startswith("loss_"))
    rate = n_batches / record["seconds"] if record["seconds"] > 0 else math.inf
    return (f"epoch {record['epoch']}/{epochs}: loss {losses}, train accuracy {record['train_accuracy']:.1f}%, "
            f"{format_duration(record['seconds'])} ({rate:.1f} batch/s), ETA {format_duration(eta)}")


def _json_line(record: dict) -> str:
    return json.dumps(record, sort_keys=True) + "\n"
