"""Parity of vlprompt's `zslp` + `clap` with the official CLAP code (jusiro/CLAP, `trainers/adapters.py`).

    python tools/parity/clap.py --reference PATH_TO_CLAP_CLONE [--backbone vlprompt-tiny]

Both sides get the same open_clip model, the same cached training features (two augmented "views" of
twelve images, stacked view after view as CLAP's extraction stacks its repetitions), the same zero-shot
prototypes and the same trained prototypes. The official `AdapterMethod` (init "ZS", constraint "l2"),
`CustomCLIP.forward_features`, `init_lagrangian_multipliers` and `zero_shot_constraint` run unchanged.
The base text features are computed once by vlprompt for both: the official `_get_base_text_features`
moves tokens to CUDA; what it computes (the mean of unnormalised template features) is checked by hand
in tests/regularizers/test_clap.py.
Printed: the largest difference of the multipliers alpha, the logits, the constraint, the total loss and
its gradient with respect to the prototypes.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from inputs import PET_CLASSES, parser_for, print_differences, random_images
from official import import_official
from torch import nn

from vlprompt.backbones import load_backbone
from vlprompt.engine.batches import FeatureBatches
from vlprompt.engine.config import TrainConfig
from vlprompt.engine.trainer import Trainer
from vlprompt.learners.zslp import ZSLP
from vlprompt.regularizers.base import TrainContext
from vlprompt.regularizers.clap import CLAP


def main() -> None:
    parser = parser_for(__doc__, "a clone of jusiro/CLAP")
    args = parser.parse_args()
    root = Path(args.reference)
    official = import_official(root / "trainers" / "adapters.py",
                               helpers={"datasets.imagenet_templates": root / "datasets" / "imagenet_templates.py"})
    template = official.CUSTOM_TEMPLATES["OxfordPets"]

    torch.manual_seed(0)
    backbone = load_backbone(args.backbone, args.pretrained)
    classnames = list(PET_CLASSES)
    views, n = 2, 12
    images = random_images(backbone, views * n)
    labels = torch.arange(n) % len(classnames)
    with torch.no_grad():
        features = backbone.encode_image(images)  # view after view, as CLAP's repetitions

    ours = ZSLP(backbone, classnames, templates=template)
    cfg = SimpleNamespace(TRAINER=SimpleNamespace(ADAPTER=SimpleNamespace(INIT="ZS", CONSTRAINT="l2")))
    clip_model = SimpleNamespace(dtype=torch.float32, logit_scale=backbone.model.logit_scale)
    adapter = official.AdapterMethod(cfg, clip_model, ours.zero_shot_prototypes.clone())
    reference = official.CustomCLIP.__new__(official.CustomCLIP)
    nn.Module.__init__(reference)
    reference.adapter, reference.logit_scale = adapter, backbone.model.logit_scale

    with torch.no_grad():  # CLAP's multipliers come from the zero-shot logits of its training features
        adapter.init_lagrangian_multipliers(labels.repeat(views), reference.forward_features(features))
    trainer = Trainer(ours, TrainConfig(epochs=1, batch_size=n), [CLAP()], TrainContext(learner=ours))
    trainer.start(FeatureBatches(features.reshape(views, n, -1), labels, n, seed=0))
    clap = trainer.regularizers[0]

    shift = 0.3 * torch.randn(ours.prototypes.shape, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():  # as if trained: the same prototypes on both sides
        adapter.prototypes.add_(shift)
        ours.prototypes.add_(shift)
    batch, batch_labels = features[:n], labels
    ref_logits = reference.forward_features(batch)
    ref_constraint = adapter.zero_shot_constraint()
    ref_loss = F.cross_entropy(ref_logits, batch_labels) + ref_constraint
    ref_grad, = torch.autograd.grad(ref_loss, [adapter.prototypes])
    our_logits = ours.train()(features=batch).logits
    our_constraint = clap.extra_loss(trainer.context, None, {})["clap"]
    our_loss = F.cross_entropy(our_logits, batch_labels) + our_constraint
    our_grad, = torch.autograd.grad(our_loss, [ours.prototypes])

    print(f"backbone {args.backbone} ({args.pretrained}), template {template!r}, {len(classnames)} classes, "
          f"{views} views x {n} images")
    rows = [("alpha", adapter.alpha_constraint, clap.alpha), ("logits", ref_logits, our_logits),
            ("constraint", ref_constraint, our_constraint), ("loss", ref_loss, our_loss),
            ("grad prototypes", ref_grad, our_grad)]
    print_differences(rows, 16)


if __name__ == "__main__":
    main()
