"""Parity of ``vlprompt import`` with the official code: the official prompt learners save the checkpoint.

For CoOp (shared and class-specific context), CoCoOp, ProGrad, KgCoOp, Nemesis, MaPLe, IVLP and
PromptSRC, the official module builds its prompt learner (and, where the trainer registers it, its whole
``CustomCLIP``) on an OpenAI-format CLIP that the MaPLe repository's copy of OpenAI's ``clip`` package
builds from the same random weights as an open_clip model (ViT, text width 512 and image width 768 as
MaPLe hard-codes, 3 layers each, 64-wide heads as OpenAI's ``build_model`` assumes). Its prompt tensors
are drawn at random; the registered model's ``state_dict()`` is saved as Dassl's ``save_checkpoint``
does; vlprompt imports the file onto the open_clip model; the script prints the largest differences of
the class text features and of the logits of a batch of random images.

    python tools/parity/official_import.py --coop PATH --maple PATH --prograd PATH --kgcoop PATH \
        --nemesis PATH --promptsrc PATH

each PATH a checkout of KaiyangZhou/CoOp, muzairkhattak/multimodal-prompt-learning, BeierZhu/Prompt-align
(its ``ProGrad.public`` folder is found), htyao89/KgCoOp (its ``KgCoOp`` folder), ShyFoo/Nemesis and
muzairkhattak/PromptSRC. KgCoOp's and PromptSRC's prompt learners load a second CLIP from disk in their
constructors (the zero-shot teacher) and move it to a GPU: here their ``load_clip_to_cpu`` returns a copy
of the same CLIP and ``.cuda()`` leaves tensors where they are.
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import types
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace as NS

import open_clip
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
import official  # noqa: E402  (tools/parity/official.py)

from vlprompt.backbones import Backbone, BackboneIdentity  # noqa: E402
from vlprompt.backbones.loader import state_dict_sha256  # noqa: E402
from vlprompt.learners.artifact import from_pretrained  # noqa: E402
from vlprompt.learners.official_import import import_official  # noqa: E402

CLASSES = ["red circle", "blue_square", "green triangle", "yellow star"]
MODEL_NAMES = {"maple": "MultiModalPromptLearner", "ivlp": "VLPromptLearner", "promptsrc": "VLPromptLearner",
               "cocoop": "prompt_learner"}


def official_clip_package(maple: Path):
    """The MaPLe repository's ``clip`` package (OpenAI's, with its prompt-aware model.py), importable as ``clip``."""
    official.install_framework_stand_ins()
    package = types.ModuleType("clip")
    package.__path__ = [str(maple / "clip")]
    sys.modules["clip"] = package
    for name in ("simple_tokenizer", "model", "clip"):
        setattr(package, name, official._load(f"clip.{name}", maple / "clip" / f"{name}.py"))
    return package.clip


def models(clip, design: dict):
    """(open_clip model wrapped as a vlprompt Backbone, the official CLIP with the same weights)."""
    torch.manual_seed(0)
    model = open_clip.CLIP(embed_dim=512, quick_gelu=True,
                           vision_cfg={"image_size": 64, "layers": 3, "width": 768, "patch_size": 32,
                                       "head_width": 64},
                           text_cfg={"context_length": 77, "vocab_size": 49408, "width": 512, "heads": 8, "layers": 3})
    with torch.no_grad():  # open_clip leaves the text projection small; spread the features
        model.text_projection.normal_(0, 0.05)
    model.half().float().eval()  # OpenAI's weights are fp16 values, which build_model's convert_weights keeps
    backbone = Backbone(model, open_clip.get_tokenizer("ViT-B-16"), {"image_size": 64, "mean": (0.5,) * 3,
                        "std": (0.5,) * 3}, BackboneIdentity("parity-clip", "random", state_dict_sha256(model)))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    reference = clip.build_model(state, {"vision_depth": 0, "language_depth": 0, "vision_ctx": 0, "language_ctx": 0,
                                         **design}).float().eval()
    return backbone, reference


def randomise(module, names, seed):
    """Draw the trainable prompt tensors at random (their initial values would hide a mix-up)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if any(n in name for n in names):
                # fp16 values, so that the official code's casts to fp16 lose nothing
                p.copy_((torch.randn(p.shape, generator=g) * 0.3).half().to(p.dtype))


def save_dassl(folder: Path, model_name: str, module) -> Path:
    path = folder / model_name / "model.pth.tar-5"
    path.parent.mkdir(parents=True)
    torch.save({"state_dict": module.state_dict(), "epoch": 5, "optimizer": None, "scheduler": None,
                "val_result": None}, path)
    return folder


def cfg(**trainer):
    return NS(INPUT=NS(SIZE=(64, 64)), DATASET=NS(NAME="ImageNet"), OPTIM=NS(MAX_EPOCH=5),
              MODEL=NS(BACKBONE=NS(NAME="ViT-B/16")), TRAINER=NS(**{k: NS(**v) for k, v in trainer.items()}))


@contextmanager
def teacher_on_cpu(module, clip, reference):
    """KgCoOp's and PromptSRC's constructors load their zero-shot CLIP and call .cuda(): serve a copy of
    ``reference`` (for PromptSRC an unprompted one, as its ``zero_shot_model`` is) and keep it on the CPU."""
    def load(cfg, zero_shot_model=False):
        if not zero_shot_model:
            return copy.deepcopy(reference)
        plain = {"trainer": "IVLP", "vision_depth": 0, "language_depth": 0, "vision_ctx": 0, "language_ctx": 0}
        state = {k: v for k, v in reference.state_dict().items() if "VPT" not in k}
        return clip.build_model(state, plain).float().eval()

    saved = module.load_clip_to_cpu, torch.nn.Module.cuda, torch.Tensor.cuda
    module.load_clip_to_cpu = load
    torch.nn.Module.cuda = lambda self, *args, **kwargs: self
    torch.Tensor.cuda = lambda self, *args, **kwargs: self
    try:
        yield
    finally:
        module.load_clip_to_cpu, torch.nn.Module.cuda, torch.Tensor.cuda = saved


def load_trainer(name: str, path: Path):
    """An official trainer file as ``trainers.NAME``, its relative imports (imagenet_templates) served
    from its own folder without running the package's __init__ (which registers every trainer)."""
    sys.modules.setdefault("trainers", types.ModuleType("trainers"))
    templates = path.parent / "imagenet_templates.py"
    if templates.is_file():
        official._load("trainers.imagenet_templates", templates)
    return official._load(f"trainers.{name}", path)


def run(args, work: Path):
    clip = official_clip_package(args.maple)
    trainers = {"coop": args.coop / "trainers/coop.py", "cocoop": args.coop / "trainers/cocoop.py",
                "prograd": args.prograd / "ProGrad.public/trainers/prograd.py",
                "nemesis": args.nemesis / "trainers/coop_nemesis.py", "maple": args.maple / "trainers/maple.py",
                "ivlp": args.maple / "trainers/independentVL.py", "kgcoop": args.kgcoop / "KgCoOp/trainers/kgcoop.py",
                "promptsrc": args.promptsrc / "trainers/promptsrc.py"}
    trained = {"maple": ("prompt_learner",), "cocoop": ("prompt_learner",),  # what each trainer optimises
               "kgcoop": ("ctx", "bias_vectors", "meta_net"), "ivlp": ("prompt_learner.ctx", "VPT"),
               "promptsrc": ("prompt_learner.ctx", "VPT")}
    images = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    coop_like = {"N_CTX": 4, "CTX_INIT": "", "CSC": False, "CLASS_TOKEN_POSITION": "end", "PREC": "fp32"}
    cases = [
        ("coop", "shared context", {"COOP": coop_like}, {"trainer": "CoOp"}),
        ("coop", "class-specific context", {"COOP": {**coop_like, "CSC": True}}, {"trainer": "CoOp"}),
        ("prograd", "template init 'a photo of a {}.', 6 vectors",
         {"COOP": {**coop_like, "N_CTX": 6, "CTX_INIT": True}}, {"trainer": "CoOp"}),
        ("kgcoop", "'a photo of a'", {"COOP": {**coop_like, "CTX_INIT": "a photo of a"}, "COCOOP": {"PREC": "fp32"}},
         {"trainer": "CoOp"}),
        ("nemesis", "class-specific context", {"CoOpNemesis": {**coop_like, "CSC": True}}, {"trainer": "CoOp"}),
        ("cocoop", "'a photo of a'", {"COCOOP": {"N_CTX": 4, "CTX_INIT": "a photo of a", "PREC": "fp32"}},
         {"trainer": "CoCoOp"}),
        ("maple", "2 vectors, depth 3", {"MAPLE": {"N_CTX": 2, "CTX_INIT": "a photo of a", "PROMPT_DEPTH": 3}},
         {"trainer": "MaPLe", "maple_length": 2}),
        ("ivlp", "2+3 vectors, depths 2 and 3",
         {"IVLP": {"N_CTX_TEXT": 2, "N_CTX_VISION": 3, "CTX_INIT": "a photo of a", "PROMPT_DEPTH_TEXT": 2,
                   "PROMPT_DEPTH_VISION": 3}},
         {"trainer": "IVLP", "vision_depth": 3, "language_depth": 2, "vision_ctx": 3, "language_ctx": 2}),
        ("promptsrc", "4+4 vectors, depths 3 and 3",
         {"PROMPTSRC": {"N_CTX_TEXT": 4, "N_CTX_VISION": 4, "CTX_INIT": "a photo of a", "PROMPT_DEPTH_TEXT": 3,
                        "PROMPT_DEPTH_VISION": 3, "PREC": "fp32"}},
         {"trainer": "IVLP", "vision_depth": 3, "language_depth": 3, "vision_ctx": 4, "language_ctx": 4}),
    ]
    print(f"{'method':8} {'setting':42} {'max |text diff|':>16} {'max |logit diff|':>17}")
    for case, (method, setting, trainer_cfg, design) in enumerate(cases):
        module = load_trainer(method, trainers[method])
        backbone, reference = models(clip, design)
        config, text = cfg(**trainer_cfg), None
        with torch.no_grad(), teacher_on_cpu(module, clip, reference):
            if method in ("maple", "ivlp", "promptsrc", "cocoop"):  # their CustomCLIP scores images itself
                whole = module.CustomCLIP(config, CLASSES, reference).eval()
                if method == "maple":  # MaPLe makes proj fp16 for an fp16 CLIP (its GPU default); fp32 here
                    whole.prompt_learner.proj.float()
                randomise(whole, trained[method], seed=case)
                folder = save_dassl(work / str(case), MODEL_NAMES[method],
                                    whole.prompt_learner if method == "cocoop" else whole)
                logits = whole(images.type(reference.dtype))
                if method != "cocoop":  # CoCoOp's text features are per image: its logits compare them
                    text = text_of(whole, method)
            else:
                learner = module.PromptLearner(config, CLASSES, reference)
                randomise(learner, trained.get(method, ("ctx",)), seed=case)
                folder = save_dassl(work / str(case), "prompt_learner", learner)
                text = F.normalize(module.TextEncoder(reference)(learner(), learner.tokenized_prompts), dim=-1)
                image = F.normalize(reference.encode_image(images), dim=-1)
                logits = reference.logit_scale.exp() * image @ text.t()
        _, out = import_official(method, folder, backbone, CLASSES, folder / "imported")
        ours = from_pretrained(out, backbone=backbone)
        with torch.no_grad():
            text_diff = "(per image)" if text is None else f"{(ours.text_features() - text).abs().max():.2e}"
            logit_diff = (ours(images=images).logits - logits.float()).abs().max()
        print(f"{method:8} {setting:42} {text_diff:>16} {logit_diff:>17.2e}")


def text_of(whole, method):
    """The official text features of a whole MaPLe / IVLP model (its forward only returns logits)."""
    learner = whole.prompt_learner
    if method == "maple":
        prompts, _, deep_text, _ = learner()
        features = whole.text_encoder(prompts, whole.tokenized_prompts, deep_text)
    else:
        features = whole.text_encoder(learner(), whole.tokenized_prompts)
    return F.normalize(features.float(), dim=-1)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for name in ("coop", "maple", "prograd", "kgcoop", "nemesis", "promptsrc"):
        parser.add_argument(f"--{name}", type=Path, required=True, help=f"checkout of the {name} repository")
    with tempfile.TemporaryDirectory(prefix="vlprompt-import-parity-") as work:
        run(parser.parse_args(), Path(work))


if __name__ == "__main__":
    main()
