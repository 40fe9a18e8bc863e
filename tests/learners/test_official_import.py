"""``vlprompt import``: official CoOp-family checkpoints become vlprompt prompts that compute the same features.

Each test writes a checkpoint the way the official trainer would: its prompt learner's (or, for MaPLe,
IVLP and PromptSRC, its whole model's) state dict with the official key names and shapes on the
embedded ``vlprompt-tiny`` architecture, random values, the token buffers built from the class prompts
as the official code builds them, saved with ``torch.save`` in Dassl's dict (state_dict, epoch, optimizer,
and a warm-up scheduler that keeps its successor scheduler object, as Dassl's does) under
``OUTPUT/<model name>/model.pth.tar-N``. The expected features are computed here from the file's
tensors with open_clip's modules and the official forward pass written out (prompt assembly, deep
prompt replacement before each block, end-of-text pooling), not through vlprompt's learners.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import OrderedDict
from pathlib import Path

import open_clip
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vlprompt.backbones import load_backbone
from vlprompt.cli.main import main
from vlprompt.cli.official import parse_options, read_classes
from vlprompt.errors import ArtifactError, ConfigError
from vlprompt.io import OutputExistsError
from vlprompt.learners.artifact import from_pretrained
from vlprompt.learners.official_import import import_official

TOKENIZER = open_clip.get_tokenizer("vlprompt-tiny")
EPOCH = 10


class WarmupScheduler(torch.optim.lr_scheduler.LRScheduler):
    """Dassl's ConstantWarmupScheduler: it keeps the scheduler it hands over to as an attribute, so its
    state dict pickles that scheduler object (and the optimizer with it)."""

    def __init__(self, optimizer, successor, warmup_epoch, cons_lr):
        self.successor, self.warmup_epoch, self.cons_lr = successor, warmup_epoch, cons_lr
        super().__init__(optimizer)

    def get_lr(self):
        return [self.cons_lr for _ in self.base_lrs]


def dassl_save(output: Path, model_name: str, state: dict[str, torch.Tensor], trained: list[str]) -> Path:
    """Save ``state`` as Dassl's save_model does after a step of SGD on the ``trained`` tensors."""
    params = [nn.Parameter(state[k].detach().float().clone()) for k in trained]
    optimizer = torch.optim.SGD(params, lr=0.002, momentum=0.9)
    scheduler = WarmupScheduler(optimizer, torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, float(EPOCH)), 1, 1e-5)
    for p in params:
        p.grad = torch.ones_like(p)
    optimizer.step()
    scheduler.step()
    folder = output / model_name
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"model.pth.tar-{EPOCH}"
    torch.save({"state_dict": OrderedDict(state), "epoch": EPOCH, "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "val_result": None}, path)
    return path


def rand(*shape, seed, scale=0.1, dtype=torch.float32) -> torch.Tensor:
    return (torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * scale).to(dtype)


def token_buffers(model, classnames, prompt_prefix, n_ctx):
    """(token ids, token_prefix, token_suffix) as the official prompt learners register them. Saved in
    fp16 they are rounded; the official load_model drops them and rebuilds them at full precision, so
    expected features use these (fp32) ones."""
    ids = TOKENIZER([f"{prompt_prefix} {c.replace('_', ' ')}." for c in classnames])
    with torch.no_grad():
        emb = model.token_embedding(ids)
    return ids, emb[:, :1].clone(), emb[:, 1 + n_ctx:].clone()


def official_text(model, prompts, ids, deep=()) -> torch.Tensor:
    """The official TextEncoder, with MaPLe/IVLP deep prompts replacing positions 1..M before blocks 1..len."""
    with torch.no_grad():
        x = prompts.float() + model.positional_embedding
        for i, block in enumerate(model.transformer.resblocks):
            if 1 <= i <= len(deep):
                p = deep[i - 1].float()
                x = torch.cat([x[:, :1], p.expand(len(x), -1, -1), x[:, 1 + len(p):]], dim=1)
            x = block(x, attn_mask=model.attn_mask)
        x = model.ln_final(x)
        return F.normalize(x[torch.arange(len(x)), ids.argmax(-1)] @ model.text_projection, dim=-1)


def official_image(visual, images, shallow, deep=()) -> torch.Tensor:
    """The official prompted ViT: prompts appended after the positional embedding, the last M tokens
    replaced before blocks 1..len, class token pooled."""
    with torch.no_grad():
        x = visual.conv1(images)
        x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)
        cls = visual.class_embedding + torch.zeros(x.shape[0], 1, x.shape[-1])
        x = torch.cat([cls, x], dim=1) + visual.positional_embedding
        x = torch.cat([x, shallow.float().expand(len(x), -1, -1)], dim=1)
        x = visual.ln_pre(x)
        for i, block in enumerate(visual.transformer.resblocks):
            if 1 <= i <= len(deep):
                p = deep[i - 1].float()
                x = torch.cat([x[:, :-len(p)], p.expand(len(x), -1, -1)], dim=1)
            x = block(x)
        return F.normalize(visual.ln_post(x[:, 0]) @ visual.proj, dim=-1)


def frozen_clip(model) -> dict[str, torch.Tensor]:
    """The frozen CLIP weights in a whole-model official state dict (CustomCLIP's image_encoder, text_encoder)."""
    text = ("transformer.", "positional_embedding", "ln_final.", "text_projection")
    state = {f"image_encoder.{k}": v.clone() for k, v in model.visual.state_dict().items()}
    state |= {f"text_encoder.{k}": v.clone() for k, v in model.state_dict().items() if k.startswith(text)}
    return state | {"logit_scale": model.logit_scale.detach().clone()}


# -- one official file per method: (state dict, trained keys, model name, expected features) -----------------------

def coop_file(model, classnames, n_ctx=4, csc=False, prefix=None, dtype=torch.float16, seed=1):
    """CoOp/ProGrad/Nemesis (fp16, CoOp's default precision): ctx and the token buffers."""
    width = model.token_embedding.weight.shape[1]
    ctx = rand(*((len(classnames),) if csc else ()), n_ctx, width, seed=seed, dtype=dtype)
    ids, token_prefix, token_suffix = token_buffers(model, classnames, prefix or " ".join(["X"] * n_ctx), n_ctx)
    state = {"ctx": ctx, "token_prefix": token_prefix.to(dtype), "token_suffix": token_suffix.to(dtype)}
    contexts = ctx if csc else ctx.unsqueeze(0).expand(len(classnames), -1, -1)
    expected = official_text(model, torch.cat([token_prefix, contexts, token_suffix], dim=1), ids)
    return state, ["ctx"], "prompt_learner", lambda images: expected


def kgcoop_file(model, classnames):
    state, trained, name, expected = coop_file(model, classnames, prefix="a photo of a")
    state |= {"bias_vectors": rand(1, 512, seed=2, dtype=torch.float16),
              "meta_net.linear1.weight": rand(512, 512, seed=3, dtype=torch.float16),
              "meta_net.linear1.bias": rand(512, seed=4, dtype=torch.float16)}
    return state, trained + ["bias_vectors", "meta_net.linear1.weight", "meta_net.linear1.bias"], name, expected


def cocoop_file(model, classnames):
    """CoCoOp: ctx (4 words of 'a photo of a') plus the meta-net that shifts it per image."""
    width, dim = model.token_embedding.weight.shape[1], model.text_projection.shape[1]
    ctx = rand(4, width, seed=5)
    meta = OrderedDict([("linear1.weight", rand(dim // 16, dim, seed=6, scale=0.3)),
                        ("linear1.bias", rand(dim // 16, seed=7)),
                        ("linear2.weight", rand(width, dim // 16, seed=8, scale=0.3)),
                        ("linear2.bias", rand(width, seed=9))])
    ids, token_prefix, token_suffix = token_buffers(model, classnames, "a photo of a", 4)
    state = {"ctx": ctx, **{f"meta_net.{k}": v for k, v in meta.items()},
             "token_prefix": token_prefix, "token_suffix": token_suffix}

    def expected(images):
        with torch.no_grad():
            feats = F.normalize(model.encode_image(images), dim=-1)
            shift = F.linear(F.relu(F.linear(feats, meta["linear1.weight"], meta["linear1.bias"])),
                             meta["linear2.weight"], meta["linear2.bias"])
        return torch.stack([official_text(model, torch.cat(
            [token_prefix, (ctx + s).expand(len(classnames), -1, -1), token_suffix], dim=1), ids) for s in shift])

    return state, ["ctx", *(f"meta_net.{k}" for k in meta)], "prompt_learner", expected


def maple_file(model, classnames, n_ctx=2, depth=3, seed=10):
    """MaPLe: the whole model; ctx and proj in fp16, the compound prompts and their projections in fp32."""
    text_w, vision_w = model.token_embedding.weight.shape[1], model.visual.transformer.width
    ctx = rand(n_ctx, text_w, seed=seed, scale=0.3, dtype=torch.float16)
    proj = nn.Linear(text_w, vision_w).half()
    deep = [rand(n_ctx, text_w, seed=seed + 1 + i, scale=0.3) for i in range(depth - 1)]
    projections = [nn.Linear(text_w, vision_w) for _ in range(depth - 1)]
    ids, token_prefix, token_suffix = token_buffers(model, classnames, "a photo of a", n_ctx)
    state = {"prompt_learner.ctx": ctx, "prompt_learner.proj.weight": proj.weight.data,
             "prompt_learner.proj.bias": proj.bias.data}
    for i, (p, lin) in enumerate(zip(deep, projections)):
        state |= {f"prompt_learner.compound_prompts_text.{i}": p,
                  f"prompt_learner.compound_prompt_projections.{i}.weight": lin.weight.data,
                  f"prompt_learner.compound_prompt_projections.{i}.bias": lin.bias.data}
    state |= {"prompt_learner.token_prefix": token_prefix.half(), "prompt_learner.token_suffix": token_suffix.half()}
    state |= frozen_clip(model)
    trained = [k for k in state if k.startswith("prompt_learner.") and "token_" not in k]

    def expected(images):
        with torch.no_grad():
            prompts = torch.cat([token_prefix, ctx.expand(len(classnames), -1, -1), token_suffix], dim=1)
            text = official_text(model, prompts, ids, deep)
            shallow = F.linear(ctx.float(), proj.weight.float(), proj.bias.float())
            image = official_image(model.visual, images, shallow, [lin(p) for lin, p in zip(projections, deep)])
        return text, image

    return state, trained, "MultiModalPromptLearner", expected


def ivlp_file(model, classnames, zero_shot_copy=False):
    """IVLP (PromptSRC with ``zero_shot_copy``): the whole model, prompts inside the towers' blocks."""
    text_w, vision_w = model.token_embedding.weight.shape[1], model.visual.transformer.width
    ctx, vpt = rand(2, text_w, seed=20, scale=0.3), rand(3, vision_w, seed=21, scale=0.3)
    deep_text = [rand(2, text_w, seed=22 + i, scale=0.3) for i in range(2)]  # text depth 3
    deep_vision = [rand(3, vision_w, seed=30 + i, scale=0.3) for i in range(3)]  # vision depth 4 (all blocks)
    ids, token_prefix, token_suffix = token_buffers(model, classnames, "a photo of a", 2)
    state = {"prompt_learner.ctx": ctx, "prompt_learner.token_prefix": token_prefix,
             "prompt_learner.token_suffix": token_suffix, **frozen_clip(model), "image_encoder.VPT": vpt}
    state |= {f"text_encoder.transformer.resblocks.{j + 1}.VPT_shallow": p for j, p in enumerate(deep_text)}
    state |= {f"image_encoder.transformer.resblocks.{j + 1}.VPT_shallow": p for j, p in enumerate(deep_vision)}
    if zero_shot_copy:
        state |= {f"prompt_learner.ZS_image_encoder.{k}": v.clone() for k, v in model.visual.state_dict().items()}
    trained = ["prompt_learner.ctx"] + [k for k in state if "VPT" in k]

    def expected(images):
        prompts = torch.cat([token_prefix, ctx.expand(len(classnames), -1, -1), token_suffix], dim=1)
        return official_text(model, prompts, ids, deep_text), official_image(model.visual, images, vpt, deep_vision)

    return state, trained, "VLPromptLearner", expected


FILES = {
    "coop": lambda m, c: coop_file(m, c),
    "prograd": lambda m, c: coop_file(m, c, n_ctx=6, prefix="X X a photo of a", seed=11),
    "nemesis": lambda m, c: coop_file(m, c, n_ctx=3, csc=True, seed=12),
    "kgcoop": kgcoop_file,
    "cocoop": cocoop_file,
    "maple": maple_file,
    "ivlp": ivlp_file,
    "promptsrc": lambda m, c: ivlp_file(m, c, zero_shot_copy=True),
}


@pytest.fixture(scope="module")
def images():
    return torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("method", list(FILES))
def test_imported_prompt_gives_the_checkpoints_features(method, tiny_backbone, classnames, images, tmp_path):
    model = tiny_backbone.model
    state, trained, model_name, expected = FILES[method](model, classnames)
    dassl_save(tmp_path / "output", model_name, state, trained)
    # the run folder stands for its model's last checkpoint, as Dassl's load_model finds it
    _, out = import_official(method, tmp_path / "output", tiny_backbone, classnames, tmp_path / "prompt")
    learner = from_pretrained(out, backbone=tiny_backbone)
    config = json.loads((out / "config.json").read_text())
    assert config["metadata"]["imported_from"]["epoch"] == EPOCH
    with torch.no_grad():
        if method in ("maple", "ivlp", "promptsrc"):
            text, image = expected(images)
            assert (learner.text_features() - text).abs().max() < 1e-5
            ours = F.normalize(learner.encode_images(images), dim=-1)
            assert (ours - image).abs().max() < 1e-5
        elif method == "cocoop":
            feats = F.normalize(model.encode_image(images), dim=-1)
            assert (learner.text_features(feats) - expected(images)).abs().max() < 1e-5
        else:
            assert (learner.text_features() - expected(images)).abs().max() < 1e-5
    assert not list(tmp_path.glob("*.tmp"))  # nothing left beside the output


def test_a_run_folder_stands_for_its_best_checkpoint(tiny_backbone, classnames, tmp_path):
    """As Dassl's load_model: model-best.pth.tar where the run kept one, else the last epoch's file."""
    model = tiny_backbone.model
    first, trained, name, _ = coop_file(model, classnames, seed=1)
    last, _, _, expected_last = coop_file(model, classnames, seed=2)
    best = dassl_save(tmp_path / "output", name, first, trained)
    dassl_save(tmp_path / "later", name, last, trained)
    (tmp_path / "later" / name / f"model.pth.tar-{EPOCH}").rename(tmp_path / "output" / name / "model.pth.tar-20")
    learner, _ = import_official("coop", tmp_path / "output", tiny_backbone, classnames, tmp_path / "last")
    with torch.no_grad():
        assert (learner.text_features() - expected_last(None)).abs().max() < 1e-5
    best.rename(best.with_name("model-best.pth.tar"))
    _, out = import_official("coop", tmp_path / "output", tiny_backbone, classnames, tmp_path / "best")
    assert json.loads((out / "config.json").read_text())["metadata"]["imported_from"]["file"] == "model-best.pth.tar"


def test_shapes_set_the_options(tiny_backbone, classnames, tmp_path):
    model = tiny_backbone.model
    for method, expect in [("nemesis", {"n_ctx": 3, "csc": True, "ctx_init": None}),
                           ("maple", {"n_ctx": 2, "prompt_depth": 3, "ctx_init": "a photo of a"}),
                           ("ivlp", {"n_ctx_text": 2, "n_ctx_vision": 3, "prompt_depth_text": 3,
                                     "prompt_depth_vision": 4})]:
        state, trained, name, _ = FILES[method](model, classnames)
        path = dassl_save(tmp_path / method, name, state, trained)
        learner, _ = import_official(method, path, tiny_backbone, classnames, tmp_path / f"{method}-prompt")
        assert expect.items() <= learner.options().items()


def test_class_specific_contexts_follow_their_classes(tiny_backbone, classnames, tmp_path):
    state, trained, name, expected = FILES["nemesis"](tiny_backbone.model, classnames)
    path = dassl_save(tmp_path, name, state, trained)
    learner, _ = import_official("nemesis", path, tiny_backbone, classnames, tmp_path / "prompt")
    order = [3, 0, 4, 1, 2]
    with torch.no_grad():
        swapped = learner.for_classes([classnames[i] for i in order]).text_features()
    assert (swapped - expected(None)[order]).abs().max() < 1e-5


def test_prograd_template_init_is_an_option(tiny_backbone, classnames, tmp_path):
    """ProGrad's placeholder 'X {template words}': where the words have more BPE tokens than words ('itap'
    is two), the saved token_suffix holds the extra ones; only the matching option reproduces them."""
    model = tiny_backbone.model
    state, trained, name, expected = coop_file(model, classnames, n_ctx=4, prefix="X itap of a", seed=13)
    path = dassl_save(tmp_path, name, state, trained)
    with pytest.raises(ArtifactError, match=r"token_suffix\) of 5 of 5 classes .* ctx_init_template for ProGrad"):
        import_official("prograd", path, tiny_backbone, classnames, tmp_path / "refused")
    assert not (tmp_path / "refused").exists()
    learner, _ = import_official("prograd", path, tiny_backbone, classnames, tmp_path / "prompt",
                                 {"ctx_init_template": "itap of a {}."})
    with torch.no_grad():
        assert (learner.text_features() - expected(None)).abs().max() < 1e-5


# -- refusals: one message each, nothing written ---------------------------------------------------------------------

def refused(tmp_path, method, path, backbone, classnames, match, error=ArtifactError, options=None):
    out = tmp_path / "prompt"
    with pytest.raises(error, match=match):
        import_official(method, path, backbone, classnames, out, options)
    assert not out.exists() and not list(tmp_path.glob("*.tmp"))


def test_refuses_another_methods_file(tiny_backbone, classnames, tmp_path):
    state, trained, name, _ = maple_file(tiny_backbone.model, classnames)
    path = dassl_save(tmp_path, name, state, trained)
    refused(tmp_path, "coop", path, tiny_backbone, classnames,
            r"not CoOp's prompt learner for vlprompt-tiny: it has no tensor 'ctx'\. Its keys are those of a MaPLe "
            r"checkpoint; import it with `vlprompt import maple \.\.\.`")
    refused(tmp_path, "coop", tmp_path, tiny_backbone, classnames,  # the run folder: no prompt_learner/ in it
            r"folder without a prompt_learner checkpoint: .* it holds MultiModalPromptLearner/ \(saved by MaPLe\)")


def test_refuses_a_cocoop_file_as_kgcoop(tiny_backbone, classnames, tmp_path):
    state, trained, name, _ = cocoop_file(tiny_backbone.model, classnames)
    path = dassl_save(tmp_path, name, state, trained)
    refused(tmp_path, "kgcoop", path, tiny_backbone, classnames,
            r"it has no tensor 'bias_vectors'\. Its keys are those of a CoCoOp checkpoint; import it with "
            r"`vlprompt import cocoop")


def test_refuses_another_backbone_width(tiny_backbone, classnames, tmp_path):
    """A ViT-B/16 CoOp context (width 512) for the 128-wide tiny model."""
    state = {"ctx": rand(16, 512, seed=0), "token_prefix": rand(5, 1, 512, seed=1),
             "token_suffix": rand(5, 60, 512, seed=2)}
    path = dassl_save(tmp_path, "prompt_learner", state, ["ctx"])
    refused(tmp_path, "coop", path, tiny_backbone, classnames,
            r"'ctx' has width 512 where the text width of vlprompt-tiny is 128")


def test_refuses_a_whole_clip_model(tiny_backbone, classnames, tmp_path):
    path = tmp_path / "ViT-B-16.pt"
    torch.save(tiny_backbone.model.state_dict(), path)
    refused(tmp_path, "maple", path, tiny_backbone, classnames,
            r"is a whole CLIP model's state dict \(\d+ tensors\), not a Dassl checkpoint: a MaPLe checkpoint")


def test_refuses_a_bare_state_dict(tiny_backbone, classnames, tmp_path):
    path = tmp_path / "ctx.pt"
    torch.save({"ctx": rand(4, 128, seed=0)}, path)
    refused(tmp_path, "coop", path, tiny_backbone, classnames,
            r"is a bare state dict of 1 tensors \(ctx\), not a Dassl checkpoint")


def test_refuses_a_file_that_is_no_checkpoint(tiny_backbone, classnames, tmp_path):
    path = tmp_path / "model.pth.tar-10"
    path.write_text("not a checkpoint\n")
    refused(tmp_path, "coop", path, tiny_backbone, classnames, r"is not a readable PyTorch checkpoint .* truncated")


def test_refuses_a_truncated_file(tiny_backbone, classnames, tmp_path):
    state, trained, name, _ = coop_file(tiny_backbone.model, classnames)
    path = dassl_save(tmp_path, name, state, trained)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    refused(tmp_path, "coop", path, tiny_backbone, classnames,
            r"is not a readable PyTorch checkpoint .*truncated or damaged")


def test_refuses_nan_tensors(tiny_backbone, classnames, tmp_path):
    state, trained, name, _ = coop_file(tiny_backbone.model, classnames)
    state["ctx"][1, 3] = float("nan")
    path = dassl_save(tmp_path, name, state, trained)
    refused(tmp_path, "coop", path, tiny_backbone, classnames, r"NaN or infinite values in ctx: the run .* diverged")


class Payload:
    """A class a malicious (or merely foreign) pickle would name."""


def test_refuses_pickled_objects_it_would_have_to_create(tiny_backbone, classnames, tmp_path):
    state, trained, name, _ = coop_file(tiny_backbone.model, classnames)
    path = tmp_path / "model.pth.tar-1"
    torch.save({"state_dict": state, "epoch": 1, "extra": Payload()}, path)
    refused(tmp_path, "coop", path, tiny_backbone, classnames,
            r"pickles Python objects of tests?\.?.*Payload, which a weights-only read does not create")


def test_refuses_another_class_list_or_order(tiny_backbone, classnames, tmp_path):
    state, trained, name, _ = coop_file(tiny_backbone.model, classnames)
    path = dassl_save(tmp_path, name, state, trained)
    swapped = [classnames[1], classnames[0], *classnames[2:]]
    refused(tmp_path, "coop", path, tiny_backbone, swapped,
            r"token_suffix\) of 2 of 5 classes \('blue square', 'red circle'\) differ .* order is not the one CoOp")


def test_refuses_class_specific_contexts_for_another_class_count(tiny_backbone, classnames, tmp_path):
    state, trained, name, _ = coop_file(tiny_backbone.model, classnames, csc=True)
    path = dassl_save(tmp_path, name, state, trained)
    refused(tmp_path, "coop", path, tiny_backbone, classnames[:4],
            r"one context per class for 5 classes, but 4 class names were given")


def test_refuses_a_checkpoint_of_another_clip(tiny_backbone, classnames, tmp_path):
    other = load_backbone("vlprompt-tiny", None, seed=1)
    state, trained, name, _ = maple_file(other.model, classnames)
    path = dassl_save(tmp_path, name, state, trained)
    refused(tmp_path, "maple", path, tiny_backbone, classnames,
            r"start-of-text embedding saved in the checkpoint \(token_prefix\) is not that of vlprompt-tiny "
            r".*another CLIP")
    # without the token buffers, the CLIP weights saved beside the prompts tell the same
    state = {k: v for k, v in state.items() if "token_" not in k}
    path = dassl_save(tmp_path / "no-tokens", name, state, trained)
    refused(tmp_path, "maple", path, tiny_backbone, classnames,
            r"\d+ of the \d+ CLIP weights saved with the prompts \(e\.g\. image_encoder\..*\) differ from those of "
            r"vlprompt-tiny")


def test_refuses_unknown_tensors(tiny_backbone, classnames, tmp_path):
    state, trained, name, _ = coop_file(tiny_backbone.model, classnames)
    state["adapter.fc.0.weight"] = rand(32, 128, seed=0)
    path = dassl_save(tmp_path, name, state, trained)
    refused(tmp_path, "coop", path, tiny_backbone, classnames,
            r"it holds tensors CoOp's prompt learner does not have: adapter\.fc\.0\.weight")


def test_refuses_options_the_shapes_fix_and_a_missing_file(tiny_backbone, classnames, tmp_path):
    state, trained, name, _ = coop_file(tiny_backbone.model, classnames)
    path = dassl_save(tmp_path, name, state, trained)
    refused(tmp_path, "coop", path, tiny_backbone, classnames, r"n_ctx comes from the checkpoint's shapes",
            ConfigError, {"n_ctx": 8})
    refused(tmp_path, "coop", path, tiny_backbone, classnames, r"coop has no option ctx_innit; the options an import "
            r"of CoOp takes: ctx_init, class_token_position, ctx_init_template", ConfigError, {"ctx_innit": "a"})
    refused(tmp_path, "coop", tmp_path / "missing", tiny_backbone, classnames,
            r"checkpoint .*missing not found; give the file")
    refused(tmp_path, "dpt", path, tiny_backbone, classnames, r"choose one of: coop, prograd", ConfigError)


def test_never_replaces_a_foreign_folder(tiny_backbone, classnames, tmp_path):
    state, trained, name, _ = coop_file(tiny_backbone.model, classnames)
    path = dassl_save(tmp_path, name, state, trained)
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(OutputExistsError):
        import_official("coop", path, tiny_backbone, classnames, out)
    assert [p.name for p in out.iterdir()] == ["notes.txt"]


# -- the command --------------------------------------------------------------------------------------------------

def test_cli_round_trip(classnames, tmp_path, image_folder_factory, capsys):
    """`vlprompt import` in a process of its own, then `vlprompt predict` on what it wrote; the same import with
    the classes in another order is refused in one line."""
    backbone = load_backbone("vlprompt-tiny")  # the shipped weights, as the command loads them by default
    state, trained, name, expected = cocoop_file(backbone.model, classnames)
    dassl_save(tmp_path / "output", name, state, trained)
    (tmp_path / "classes.txt").write_text("\n".join(classnames) + "\n")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2] / "src")}
    argv = ["import", "cocoop", str(tmp_path / "output"), "--backbone", "vlprompt-tiny",
            "--classes", str(tmp_path / "classes.txt"), "--out"]
    done = subprocess.run([sys.executable, "-m", "vlprompt", *argv, str(tmp_path / "p")], capture_output=True,
                          text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert "CoCoOp checkpoint imported as a cocoop prompt for 5 classes" in done.stdout
    learner = from_pretrained(tmp_path / "p")
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        feats = F.normalize(backbone.model.encode_image(images), dim=-1)
        assert (learner.text_features(feats) - expected(images)).abs().max() < 1e-5
    folder = image_folder_factory(tmp_path / "imgs", classnames[:1], per_class=1, splits=("test",))
    assert main(["predict", str(folder), "--prompt", str(tmp_path / "p")]) == 0
    assert "0.png: " in capsys.readouterr().out
    (tmp_path / "classes.txt").write_text("\n".join(reversed(classnames)) + "\n")
    assert main(argv + [str(tmp_path / "q")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "token_suffix" in err
    assert not (tmp_path / "q").exists()


def test_classes_come_from_a_file_or_a_dataset(classnames, tmp_path, image_folder_factory):
    (tmp_path / "classes.txt").write_text("\n".join(classnames) + "\n\n")
    assert read_classes(str(tmp_path / "classes.txt"), None, "all") == classnames
    folder = image_folder_factory(tmp_path / "imgs", classnames, per_class=1)
    everything = read_classes(f"folder:{folder}", None, "all")
    assert sorted(everything) == sorted(classnames)
    assert read_classes(f"folder:{folder}", None, "base") == everything[:3]  # base-to-new: the first half, rounded up
    with pytest.raises(ConfigError, match="no such file; for a standard dataset give --root"):
        read_classes(str(tmp_path / "missing.txt"), None, "all")
    assert parse_options(["ctx_init=a photo of a", "class_token_position=middle", "ctx_init_template=null"]) == {
        "ctx_init": "a photo of a", "class_token_position": "middle", "ctx_init_template": None}
    with pytest.raises(ConfigError, match="is not KEY=VALUE"):
        parse_options(["ctx_init"])
