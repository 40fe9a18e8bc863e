"""Parity of vlprompt's `tip_adapter` and `tip_adapter_f` with the official Tip-Adapter code
(gaopengcuhk/Tip-Adapter, `main.py` and `utils.py`).

    python tools/parity/tip_adapter.py --reference PATH_TO_TIP-ADAPTER_CLONE [--backbone vlprompt-tiny]

Both sides get the same cache (keys from two cached views of 16 training images), the same validation
and test features and the same zero-shot classifier. The official `search_hp`, `run_tip_adapter` and
`run_tip_adapter_F` run unchanged on the CPU: `.cuda()` is made a no-op, the cache values are float
(the official code keeps them in fp16, for fp16 features on a GPU), the "images" its fine-tuning loop
encodes are the cached features themselves (its `encode_image` is the identity; it normalises them as
it does images' features), and the backbone's logit scale is set to 100, which the official code
writes as a constant (OpenAI CLIP's exp(logit_scale)). Its `cls_acc` is replaced by the same top-1
accuracy written for NumPy 2 (the original converts a one-element array with float()).
Printed: the chosen (beta, alpha) on both sides, the test accuracies, and after one fine-tuning step on
one batch the largest difference of the keys.
"""

from __future__ import annotations

import contextlib
import io
import math
import re
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
from inputs import parser_for
from official import import_official
from torch import nn

from vlprompt.backbones import load_backbone
from vlprompt.engine.batches import FeatureBatches
from vlprompt.engine.config import TrainConfig
from vlprompt.engine.trainer import Trainer
from vlprompt.learners.tip_adapter import TipAdapter, TipAdapterF


@contextlib.contextmanager
def cuda_is_cpu():
    """The official code calls .cuda() on tensors and modules; here they stay where they are."""
    saved = torch.Tensor.cuda, nn.Module.cuda
    torch.Tensor.cuda = lambda self, *a, **k: self
    nn.Module.cuda = lambda self, *a, **k: self
    try:
        yield
    finally:
        torch.Tensor.cuda, nn.Module.cuda = saved


def top1_accuracy(output, target, topk=1):
    """The official cls_acc (top-1, in %) without its float() of a one-element array, which NumPy 2
    refuses; the same value."""
    pred = output.topk(topk, 1, True, True)[1].t()
    return 100 * float(pred.eq(target.view(1, -1).expand_as(pred))[:topk].sum()) / target.shape[0]


def printed_accuracy(text: str, who: str) -> float:
    """The last test accuracy the official code printed for ``who``."""
    return float(re.findall(rf"{re.escape(who)}'s (?:best )?test accuracy: ([0-9]+\.[0-9]+)", text)[-1])


def main() -> None:
    parser = parser_for(__doc__, "a clone of gaopengcuhk/Tip-Adapter")
    args = parser.parse_args()
    root = Path(args.reference)
    stand_ins = {"datasets": ["build_dataset"], "datasets.utils": ["build_data_loader"], "clip": ["tokenize", "load"]}
    utils = import_official(root / "utils.py", name="utils", stand_ins=stand_ins)
    official = import_official(root / "main.py", name="tip_main", stand_ins=stand_ins)
    utils.cls_acc = official.cls_acc = top1_accuracy

    torch.manual_seed(0)
    backbone = load_backbone(args.backbone, args.pretrained)
    with torch.no_grad():
        backbone.model.logit_scale.fill_(math.log(100.0))
    classnames = ["abyssinian", "american_bulldog", "basset_hound", "beagle"]
    template = "a photo of a {}, a type of pet."
    width, g = backbone.embed_dim, torch.Generator().manual_seed(1)
    train = torch.randn(2, 16, width, generator=g)  # two cached augmented views of 16 images
    train_labels = torch.arange(16) % 4
    val, val_labels = torch.randn(24, width, generator=g), torch.arange(24) % 4
    test, test_labels = torch.randn(40, width, generator=g), torch.arange(40) % 4

    ours = TipAdapter(backbone, classnames, templates=template)
    ours.build_from_training_set(train, train_labels)
    keys = F.normalize(train.mean(0), dim=-1).t()  # the official build_cache_model's result, (D, NK)
    values = F.one_hot(train_labels).float()
    clip_weights = ours.text_features().t()  # (D, K), as the official clip_classifier lays it out
    cfg = {"search_hp": True, "search_scale": [7, 3], "search_step": [200, 20], "init_beta": 1, "init_alpha": 1.17,
           "lr": 0.001, "train_epoch": 1, "shots": 4}
    val_n, test_n = F.normalize(val, dim=-1), F.normalize(test, dim=-1)

    with contextlib.redirect_stdout(io.StringIO()):
        reference_choice = utils.search_hp(cfg, keys, values, val_n, val_labels, clip_weights)
    chosen = ours.select_on_validation(val, val_labels)
    with torch.no_grad():
        our_accuracy = 100.0 * float((ours(features=test).logits.argmax(-1) == test_labels).float().mean())
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        official.run_tip_adapter(cfg, keys, values, val_n, val_labels, test_n, test_labels, clip_weights)
    print(f"backbone {args.backbone} ({args.pretrained}) at logit scale 100, {len(classnames)} classes, cache of "
          f"{train.shape[1]} images x {train.shape[0]} views, {len(val)} validation, {len(test)} test features")
    print(f"Tip-Adapter   official (beta, alpha) {tuple(round(v, 4) for v in reference_choice)}  "
          f"vlprompt {(round(chosen['beta'], 4), round(chosen['alpha'], 4))}")
    print(f"Tip-Adapter   test accuracy official {printed_accuracy(out.getvalue(), 'Tip-Adapter'):.2f}  "
          f"vlprompt {our_accuracy:.2f}")

    # Tip-Adapter-F: one AdamW step on one batch of 16 (the official loop: normalise, score, step)
    tuned = TipAdapterF(backbone, classnames, templates=template)
    tuned.build_from_training_set(train, train_labels)
    batch = train[0]
    clip_model = nn.Module()
    clip_model.encode_image, clip_model.dtype = (lambda x: x.clone()), torch.float32
    with tempfile.TemporaryDirectory() as cache_dir, cuda_is_cpu(), contextlib.redirect_stdout(io.StringIO()):
        official.run_tip_adapter_F({**cfg, "cache_dir": cache_dir}, keys.clone(), values, val_n, val_labels, test_n,
                                   test_labels, clip_weights, clip_model, [(batch, train_labels)])
        reference_keys = torch.load(f"{cache_dir}/best_F_{cfg['shots']}shots.pt").detach()
    config = TrainConfig(epochs=1, batch_size=16, lr=0.001, warmup_epochs=0, optimizer="adamw", adam_eps=1e-4,
                         weight_decay=0.01)
    Trainer(tuned, config).fit(FeatureBatches(batch[None], train_labels, 16, seed=0))
    print(f"Tip-Adapter-F keys after one step  max |diff| {(reference_keys - tuned.cache_keys.detach()).abs().max():.3e}"
          f"  (max |step| {(reference_keys - keys.t()).abs().max():.3e})")


if __name__ == "__main__":
    main()
