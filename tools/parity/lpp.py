"""Parity of vlprompt's `lpp` with the official LP++ (FereshteShakeri/FewShot-CLIP-Strong-Baseline,
`methods/linear_probe_p2.py`).

    python tools/parity/lpp.py --reference PATH_TO_LPP_CLONE [--backbone vlprompt-tiny]

The official `LinearProbe_P2.forward` runs unchanged on the CPU (`.cuda()` made a no-op), in float16 as
on its GPU (its one-hot matrices are float16, so its features must be too), on the embedded world's
features: its loaders yield cached features, which an identity `encode_image` hands to its loop, which
normalises them. vlprompt trains in float32 on the same features, the same zero-shot classifier and the
same starting bias (both draw a fresh linear layer right after the same seed). Printed: both sides' test
accuracy at their chosen epochs (the official code returns only that), and the epochs.
"""

from __future__ import annotations

import contextlib
import io
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from inputs import first_per_class, parser_for
from official import import_official
from tip_adapter import cuda_is_cpu, top1_accuracy
from torch import nn

from vlprompt.backbones import load_backbone
from vlprompt.data.feature_cache import encode_records
from vlprompt.engine.datasets import resolve_dataset
from vlprompt.learners.lpp import LPP


def main() -> None:
    parser = parser_for(__doc__, "a clone of FereshteShakeri/FewShot-CLIP-Strong-Baseline")
    parser.add_argument("--dataset", default="world:objects_noisy_base", help="a vlprompt dataset")
    parser.add_argument("--shots", type=int, default=4)
    parser.add_argument("--float32", action="store_true",
                        help="run the official code in float32 too: its one-hot matrices follow the features' dtype "
                             "(the one change to it), to tell precision from semantics")
    args = parser.parse_args()
    root = Path(args.reference) / "methods"
    official = import_official(root / "linear_probe_p2.py", name="methods.linear_probe_p2",
                               helpers={"methods.method": root / "method.py", "methods.utils": root / "utils.py"})
    official.cls_acc = top1_accuracy
    dtype = torch.float32 if args.float32 else torch.float16
    if args.float32:
        utils = sys.modules["methods.utils"]
        float16_one_hot = utils.get_one_hot
        utils.get_one_hot = lambda y, num_classes: float16_one_hot(y, num_classes).float()

    backbone = load_backbone(args.backbone, args.pretrained)
    data = resolve_dataset(args.dataset, None)
    splits = {"train": first_per_class(data.train, args.shots), "val": first_per_class(data.val, args.shots), "test": data.test}
    feats = {k: encode_records(backbone, data, r, views=1, seed=0, desc=k)[0] for k, r in splits.items()}
    labels = {k: torch.tensor([x.label for x in r]) for k, r in splits.items()}
    ours = LPP(backbone, data.classnames)
    text = ours.text_features().float()  # (K, D) normalised zero-shot classifier

    half = {k: v.to(dtype) for k, v in feats.items()}
    model = nn.Module()
    model.encode_image, model.dtype = (lambda x: x.clone()), dtype
    method = official.LinearProbe_P2({"train_epoch": 300, "shots": args.shots, "dataset": "world", "output_dir": "."})
    torch.manual_seed(1)
    with cuda_is_cpu(), contextlib.redirect_stdout(io.StringIO()) as printed:
        _, official_acc = method(train_loader=[(half["train"], labels["train"])],
                                 val_loader=[(half["val"], labels["val"])],
                                 test_features=F.normalize(feats["test"], dim=-1).to(dtype),
                                 test_labels=labels["test"], text_weights=text.t().to(dtype), model=model, classnames=data.classnames)
    val_scores = [float(line.rsplit(" ", 1)[1]) for line in printed.getvalue().splitlines()
                  if line.startswith("The accuracy for val data is")]
    official_epoch = len(val_scores) - val_scores[::-1].index(max(val_scores))  # the last best, as its >= keeps

    torch.manual_seed(1)
    ours.build_from_training_set(feats["train"][None], labels["train"])
    chosen = ours.select_on_validation(feats["val"], labels["val"])
    with torch.no_grad():
        our_acc = 100.0 * float((ours(features=feats["test"]).logits.argmax(-1) == labels["test"]).float().mean())
    print(f"backbone {args.backbone} ({args.pretrained}), {args.dataset}: {data.num_classes} classes, {args.shots} "
          f"shots, {len(splits['test'])} test images; official in {dtype}, vlprompt in float32")
    print(f"chosen epoch      official {official_epoch} (validation {max(val_scores):.2f})  vlprompt {chosen['epoch']} "
          f"(validation {chosen['validation_accuracy']:.2f})")
    print(f"test accuracy     official {official_acc:.2f}  vlprompt {our_acc:.2f}")


if __name__ == "__main__":
    main()
