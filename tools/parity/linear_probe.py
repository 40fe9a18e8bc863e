"""Parity of vlprompt's `linear_probe` with CoOp's linear-probe CLIP (KaiyangZhou/CoOp, `lpclip/linear_probe.py`).

    python tools/parity/linear_probe.py --reference PATH_TO_COOP_CLONE [--backbone vlprompt-tiny]

The official script runs unchanged, in its own process, on feature files written in its layout
(`FEATURE_DIR/DATASET/{train,val,test}.npz` with `feature_list` and `label_list`): the embedded world's
images through the backbone's image tower (the evaluation transform, as its feature extractor uses), 16
training and 4 validation images per class, so that its own few-shot sampling (seed 1, 16 shots, 4
validation shots) takes exactly these images. It sweeps C, binary-searches 8 steps and reports the C it
keeps and the test accuracy. vlprompt's probe is fitted on the same features and searches on the same
validation features. Printed: both Cs and both test accuracies, and the largest logit difference
between vlprompt's probe and a scikit-learn fit at the official C.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from inputs import first_per_class, parser_for
from sklearn.linear_model import LogisticRegression

from vlprompt.backbones import load_backbone
from vlprompt.data.feature_cache import encode_records
from vlprompt.engine.datasets import resolve_dataset
from vlprompt.learners.linear_probe import LinearProbe


def main() -> None:
    parser = parser_for(__doc__, "a clone of KaiyangZhou/CoOp")
    parser.add_argument("--dataset", default="world:objects_noisy_base", help="a vlprompt dataset")
    args = parser.parse_args()
    script = Path(args.reference) / "lpclip" / "linear_probe.py"
    if not script.is_file():
        raise SystemExit(f"{script} not found: pass the CoOp repository's folder with --reference")

    backbone = load_backbone(args.backbone, args.pretrained)
    data = resolve_dataset(args.dataset, None)
    splits = {"train": first_per_class(data.train, 16), "val": first_per_class(data.val, 4), "test": data.test}
    feats = {name: encode_records(backbone, data, records, views=1, seed=0, desc=name)[0]
             for name, records in splits.items()}
    labels = {name: torch.tensor([r.label for r in records]) for name, records in splits.items()}

    with tempfile.TemporaryDirectory() as work:
        folder = Path(work) / "feat" / "world"
        folder.mkdir(parents=True)
        for name in splits:
            np.savez(folder / f"{name}.npz", feature_list=feats[name].double().numpy(),
                     label_list=labels[name].numpy())
        subprocess.run([sys.executable, str(script), "--dataset", "world", "--feature_dir", "feat",
                        "--num_step", "8", "--num_run", "1"], cwd=work, check=True, capture_output=True)
        details = (Path(work) / "report" / "feat_s8r1_details.txt").read_text()
    official_c, official_acc = re.findall(r"16 shot, weight ([0-9.e+-]+), test_acc ([0-9.]+)", details)[-1]

    probe = LinearProbe(backbone, data.classnames)
    probe.build_from_training_set(feats["train"][None], labels["train"])
    chosen = probe.select_on_validation(feats["val"], labels["val"])
    with torch.no_grad():
        logits = probe(features=feats["test"]).logits
    our_acc = 100.0 * float((logits.argmax(-1) == labels["test"]).float().mean())
    reference = LogisticRegression(solver="lbfgs", max_iter=1000, C=float(official_c)).fit(
        feats["train"].double().numpy(), labels["train"].numpy())
    probe._fit(float(official_c))
    with torch.no_grad():
        at_official = probe(features=feats["test"]).logits
    expected = torch.from_numpy(reference.decision_function(feats["test"].double().numpy())).float()

    print(f"backbone {args.backbone} ({args.pretrained}), {args.dataset}: {data.num_classes} classes, 16 train and "
          f"4 validation images per class, {len(splits['test'])} test images")
    print(f"C            official {float(official_c):.6g}  vlprompt {chosen['c']:.6g}")
    print(f"test acc     official {float(official_acc):.2f}  vlprompt {our_acc:.2f}")
    print(f"logits at the official C  max |diff| {(at_official - expected).abs().max():.3e}  "
          f"(max |logit| {expected.abs().max():.3e})")


if __name__ == "__main__":
    main()
