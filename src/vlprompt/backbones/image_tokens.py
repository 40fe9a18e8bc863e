"""Image tokens: the global image feature together with one feature per image region.

Learners that compare class prompts with image regions (PLOT, methods in docs/methods/plot.md) need
the tower's local features in the joint embedding space, not only its pooled output:
- a ModifiedResNet (RN50, ...): its attention pool run with every position as a query, as PLOT's
  code does: output 0 is the pooled feature open_clip returns, outputs 1..HW the regions';
- a ViT with class-token pooling: every output token through ``ln_post`` and ``proj``, token 0 being
  the pooled feature open_clip returns (PLOT's own code has no ViT path; this one is ours).
Either way, ``encode_image_tokens(...)[:, 0]`` is the frozen model's image feature.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vlprompt.errors import BackboneError


def _resnet_tokens(visual: nn.Module, images: torch.Tensor) -> torch.Tensor:
    x = visual.stem(images)
    for layer in (visual.layer1, visual.layer2, visual.layer3, visual.layer4):
        x = layer(x)
    pool = visual.attnpool
    x = x.reshape(x.shape[0], x.shape[1], -1).permute(2, 0, 1)  # (HW, B, C)
    x = torch.cat([x.mean(dim=0, keepdim=True), x], dim=0)
    x = x + pool.positional_embedding[:, None, :].to(x.dtype)
    x, _ = F.multi_head_attention_forward(
        query=x, key=x, value=x, embed_dim_to_check=x.shape[-1], num_heads=pool.num_heads,
        q_proj_weight=pool.q_proj.weight, k_proj_weight=pool.k_proj.weight, v_proj_weight=pool.v_proj.weight,
        in_proj_weight=None, in_proj_bias=torch.cat([pool.q_proj.bias, pool.k_proj.bias, pool.v_proj.bias]),
        bias_k=None, bias_v=None, add_zero_attn=False, dropout_p=0.0, out_proj_weight=pool.c_proj.weight,
        out_proj_bias=pool.c_proj.bias, use_separate_proj_weight=True, training=False, need_weights=False)
    return x.permute(1, 0, 2)  # (B, 1 + HW, D)


def _vit_tokens(visual: nn.Module, images: torch.Tensor) -> torch.Tensor:
    x = visual.transformer(visual._embeds(images))
    x = visual.ln_post(x)
    return x @ visual.proj if visual.proj is not None else x


def check_token_tower(visual: nn.Module) -> None:
    """Refuse image towers without region features in the joint space."""
    kind = type(visual).__name__
    if kind == "ModifiedResNet":
        return
    if kind != "VisionTransformer":
        raise BackboneError(f"region (local) image features need open_clip's ModifiedResNet (RN50, ...) or ViT "
                            f"image tower; this backbone has {kind}")
    if (getattr(visual, "attn_pool", None) is not None or getattr(visual, "pool_type", "tok") != "tok"
            or getattr(visual, "final_ln_after_pool", False)):
        raise BackboneError("region (local) image features need a ViT with class-token pooling and ln_post "
                            "before pooling (as in OpenAI's CLIP); this ViT pools otherwise")


def regions_from_attention_pool(visual: nn.Module) -> bool:
    """Whether the regions come out of the pooling that CLIP trained against the text (a ResNet's attention
    pool); a ViT's patch tokens were never trained against it and carry little class signal there."""
    return type(visual).__name__ == "ModifiedResNet"


def encode_image_tokens(visual: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """(B, 1 + R, D) unnormalised features: the pooled image feature, then the R regions' ones."""
    check_token_tower(visual)
    if regions_from_attention_pool(visual):
        return _resnet_tokens(visual, images)
    return _vit_tokens(visual, images)


def image_token_count(visual: nn.Module) -> int:
    """1 + R: the tokens ``encode_image_tokens`` gives per image at the tower's input size."""
    check_token_tower(visual)
    if regions_from_attention_pool(visual):
        return visual.attnpool.positional_embedding.shape[0]
    return visual.positional_embedding.shape[0]
