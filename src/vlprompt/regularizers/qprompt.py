"""QPrompt: quantization-aware training of the prompt, the quantization error acting as the regulariser.

The paper has no public code; everything beyond "normalise, 1-D K-Means codebook, straight-through,
constrained adaptive clustering (CAC)" is a documented reconstruction (methods.md §9.7,
docs/methods/qprompt.md). Each learnable prompt tensor, and the weight of each learnable linear layer,
gets a ``torch.nn.utils.parametrize`` quantizer, so the learner is unaware of it; biases stay full
precision. The values the model sees are the fp16 de-normalised codebook entries, exactly what the
bit-packed artifact stores, so a saved quantized prompt reloads to the very same numbers.
"""

from __future__ import annotations

import logging
import math
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from vlprompt.errors import ConfigError, check_choice
from vlprompt.learners.artifact import ARTIFACT_CODECS, artifact_file, read_config
from vlprompt.learners.base import PromptLearner
from vlprompt.learners.capabilities import Capability
from vlprompt.options import Options, option
from vlprompt.regularizers.base import Regularizer, TrainContext
from vlprompt.regularizers.registry import register_regularizer

log = logging.getLogger(__name__)

BITS = (1, 2, 4, 8)
KMEANS_INITS = ("kmeans++", "quantile")
#: the bits the paper's storage numbers imply (methods.md §9.7.5): 4 for deep prompts (QMaPLe), 1 otherwise
DEEP_PROMPT_BITS = 4
SHALLOW_PROMPT_BITS = 1
CODEC = "qprompt-packed"
MAGIC = b"VLPQ"
_HEADER = struct.Struct("<4sBBBI")  # magic, format version, bits, ndim, codebook rows
KL_EMPTY_BIN = 1e-10


# -- 1-D K-Means --------------------------------------------------------------------------------
def assign(values: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """Index of the nearest of the sorted ``centroids`` for each value (ties go to the lower one)."""
    midpoints = (centroids[1:] + centroids[:-1]) / 2
    return torch.bucketize(values, midpoints)


def kmeans_1d(values: torch.Tensor, k: int, iters: int, init: str, seed: int = 0) -> torch.Tensor:
    """Sorted (k,) centroids of Lloyd's algorithm on 1-D ``values`` from a deterministic seeded start.

    ``init`` is "kmeans++" (D² sampling with a generator seeded by ``seed``) or "quantile" (the
    (i + 1/2)/k quantiles). Stops early once the centroids no longer move; an empty cluster keeps
    its centroid. With fewer distinct values than k some centroids coincide.
    """
    check_choice("qprompt.kmeans_init", init, KMEANS_INITS)
    values = values.detach().flatten().float()
    if init == "quantile":
        centroids = torch.quantile(values, (torch.arange(k, dtype=torch.float32, device=values.device) + 0.5) / k)
    else:
        gen = torch.Generator().manual_seed(seed)
        chosen = [values[int(torch.randint(len(values), (1,), generator=gen, device="cpu"))]]
        d2 = (values - chosen[0]).square()  # squared distance to the nearest chosen centroid
        for _ in range(1, k):
            if float(d2.sum()) == 0.0:
                chosen.append(chosen[-1])
                continue
            chosen.append(values[int(torch.multinomial(d2.cpu(), 1, generator=gen))])
            d2 = torch.minimum(d2, (values - chosen[-1]).square())
        centroids = torch.stack(chosen)
    centroids = centroids.sort().values
    for _ in range(iters):
        idx = assign(values, centroids)
        counts = torch.bincount(idx, minlength=k).float()
        sums = torch.zeros(k, device=values.device).index_add_(0, idx, values)
        updated = torch.where(counts > 0, sums / counts.clamp_min(1), centroids).sort().values
        if torch.equal(updated, centroids):
            break
        centroids = updated
    return centroids


def histogram_kl(current: torch.Tensor, cached: torch.Tensor) -> float:
    """KL(current ‖ cached) of two assignment histograms (counts); empty cached bins count as 1e-10."""
    p = current.double() / current.sum()
    q = (cached.double() / cached.sum()).clamp_min(KL_EMPTY_BIN)
    mask = p > 0
    return float((p[mask] * (p[mask] / q[mask]).log()).sum())


# -- the bit-packed storage format --------------------------------------------------------------
def pack_quantized(indices: torch.Tensor, codebook: torch.Tensor) -> bytes:
    """Serialise a quantized tensor: header, fp16 codebook rows, then b bits per element.

    ``codebook`` is (2^b,) or (C, 2^b) de-normalised levels (one row per channel of the last
    dimension); ``indices`` has the tensor's shape. Header (little-endian): magic "VLPQ", version,
    bits, ndim (1 byte each except the 4-byte magic), codebook rows (uint32), then ndim uint32 sizes:
    11 + 4·ndim bytes. Element i occupies bits [i·b, (i+1)·b) of the index stream, low bits first.
    """
    levels = codebook.shape[-1]
    bits = int(math.log2(levels))
    check_choice("codebook size (2^bits)", levels, tuple(2**b for b in BITS))
    rows = codebook.reshape(-1, levels)
    shape = tuple(indices.shape)
    header = _HEADER.pack(MAGIC, 1, bits, len(shape), rows.shape[0]) + struct.pack(f"<{len(shape)}I", *shape)
    flat = indices.detach().flatten().to(torch.int64).cpu()
    if len(flat) and (int(flat.min()) < 0 or int(flat.max()) >= levels):
        raise ValueError(f"indices must lie in [0, {levels}) for a {bits}-bit codebook")
    per_byte = 8 // bits
    flat = torch.cat([flat, flat.new_zeros(-len(flat) % per_byte)]).reshape(-1, per_byte)
    packed = (flat << (torch.arange(per_byte) * bits)).sum(1).to(torch.uint8)
    table = rows.detach().cpu().to(torch.float16).contiguous()
    return header + table.numpy().astype("<f2").tobytes() + packed.numpy().tobytes()


def packed_header(data: bytes) -> tuple[int, tuple[int, ...], int, int]:
    """(bits, shape, codebook rows, header bytes) of ``pack_quantized`` bytes."""
    if len(data) < _HEADER.size or data[:4] != MAGIC:
        raise ConfigError("not a QPrompt packed tensor (bad magic); the file is damaged or of another kind")
    _, version, bits, ndim, rows = _HEADER.unpack_from(data)
    if version != 1:
        raise ConfigError(f"QPrompt packed format version {version} is newer than this vlprompt reads (1)")
    shape = struct.unpack_from(f"<{ndim}I", data, _HEADER.size)
    return bits, shape, rows, _HEADER.size + 4 * ndim


def unpack_quantized(data: bytes) -> tuple[torch.Tensor, torch.Tensor]:
    """(indices with the stored shape, fp16 codebook rows (C, 2^b)) from ``pack_quantized`` bytes."""
    bits, shape, rows, offset = packed_header(data)
    levels = 2**bits
    table = torch.frombuffer(bytearray(data[offset : offset + rows * levels * 2]), dtype=torch.float16)
    offset += rows * levels * 2
    n = math.prod(shape)
    per_byte = 8 // bits
    packed = torch.frombuffer(bytearray(data[offset:]), dtype=torch.uint8).to(torch.int64)
    if len(packed) != -(-n // per_byte):
        raise ConfigError(f"QPrompt packed tensor is truncated: {len(packed)} index bytes for {n} elements")
    idx = (packed[:, None] >> (torch.arange(per_byte) * bits)) & (levels - 1)
    return idx.flatten()[:n].reshape(shape), table.reshape(rows, levels)


def dequantize(indices: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """Look up each element's level; codebook row c serves channel c of the last dimension (or all)."""
    rows = codebook.reshape(-1, codebook.shape[-1])
    flat = indices.reshape(-1, indices.shape[-1]) if indices.dim() else indices.reshape(1, 1)
    channel = torch.arange(flat.shape[0], device=flat.device)[:, None] % rows.shape[0]
    return rows[channel, flat].reshape(indices.shape)


@ARTIFACT_CODECS.register(CODEC)
def decode_packed(data: bytes) -> torch.Tensor:
    """The artifact codec's decoder: the fp32 tensor of quantized values."""
    indices, codebook = unpack_quantized(data)
    return dequantize(indices, codebook.float())


def storage_report(artifact_dir: str | Path) -> dict:
    """Bytes of a saved prompt, read from its files, against the paper's formula and fp16 storage.

    Per packed tensor: the file size, its header, and b·N/8 (rounded up) + 2^b·2 bytes per codebook
    row (the paper's b·N + 2^b·16 bits for per-tensor codebooks); tensors stored in full precision
    (biases) are listed apart, counted at 2 bytes per element as the paper's fp16 baselines are.
    """
    directory = Path(artifact_dir)
    config = read_config(directory)
    packed, total, fp16 = {}, 0, 0
    for name, entry in config.get("encoded", {}).items():
        if entry["codec"] != CODEC:
            continue
        data = artifact_file(directory, entry["file"]).read_bytes()
        bits, shape, rows, header = packed_header(data)
        n = math.prod(shape)
        packed[name] = {"bits": bits, "elements": n, "file_bytes": len(data), "header_bytes": header,
                        "formula_bytes": math.ceil(bits * n / 8) + rows * 2**bits * 2, "fp16_bytes": 2 * n}
        total += len(data) - header
        fp16 += 2 * n
    full = {name: 2 * math.prod(shape) for name, shape in config["tensors"].items()}
    return {"quantized": packed, "quantized_bytes_without_headers": total, "quantized_fp16_bytes": fp16,
            "full_precision_fp16_bytes": full}


# -- the quantizer parametrization ---------------------------------------------------------------
class _ForwardAs(torch.autograd.Function):
    """Return ``value`` exactly while the gradient flows to ``surrogate`` (the straight-through path)."""

    @staticmethod
    def forward(ctx, surrogate, value):
        return value.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad, None


class PromptQuantizer(nn.Module):
    """W ↦ W_q = fp16(σ · c[idx] + μ) with idx the nearest centroid of (W − μ)/σ; gradient straight through.

    The codebook ``c`` lives in the normalised space and is (re)fitted by the regularizer (CAC).
    """

    artifact_codec = CODEC

    def __init__(self, bits: int, per_channel: bool, stats_gradient: str):
        super().__init__()
        self.bits = bits
        self.per_channel = per_channel
        self.through = stats_gradient == "through"
        self.register_buffer("codebook", torch.zeros(2**bits), persistent=False)

    def normalise(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(Ŵ, μ, σ): per tensor, or per channel (vector along the last dimension) with ``per_channel``."""
        if self.per_channel:
            mu = w.mean(-1, keepdim=True)
            sigma = w.std(-1, correction=0, keepdim=True)
        else:
            mu, sigma = w.mean(), w.std(correction=0)
        sigma = sigma.clamp_min(1e-12)
        if not self.through:
            mu, sigma = mu.detach(), sigma.detach()
        return (w - mu) / sigma, mu, sigma

    def quantize(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(indices, de-normalised fp16 levels (C, 2^b)) of ``w`` under the current codebook."""
        w_hat, mu, sigma = self.normalise(w.detach())
        idx = assign(w_hat, self.codebook)
        mu_rows = mu.reshape(-1, 1) if self.per_channel else mu.reshape(1, 1)
        sigma_rows = sigma.reshape(-1, 1) if self.per_channel else sigma.reshape(1, 1)
        levels = (sigma_rows * self.codebook[None, :] + mu_rows).to(torch.float16)
        return idx, levels

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        idx, levels = self.quantize(w)
        value = dequantize(idx, levels).to(w.dtype)
        w_hat, _, sigma = self.normalise(w)
        # with detached statistics this is W + constant: the identity straight-through gradient
        surrogate = w + sigma * (self.codebook[idx] - w_hat).detach()
        return _ForwardAs.apply(surrogate, value)

    def encode(self, w: torch.Tensor) -> bytes:
        """The packed bytes of ``w``'s quantized values (for the prompt artifact)."""
        idx, levels = self.quantize(w)
        return pack_quantized(idx, levels)


def quantizable(learner: PromptLearner) -> dict[str, tuple[nn.Module, str]]:
    """Learnable tensors QPrompt quantizes, by name: prompt tensors and linear-layer weights (not biases)."""
    out = {}
    for name in learner.learnable_tensors():
        owner_name, _, attr = name.rpartition(".")
        owner = learner.get_submodule(owner_name)
        if isinstance(owner, nn.Linear):
            if attr == "weight":
                out[name] = (owner, attr)
        elif isinstance(owner, (PromptLearner, nn.ParameterList, nn.ParameterDict)):
            out[name] = (owner, attr)
        else:
            log.warning("qprompt leaves %s (a %s parameter) in full precision", name, type(owner).__name__)
    return out


@dataclass
class QPromptConfig(Options):
    owner = "qprompt"
    bits: int | None = option(None, "bits per weight (1, 2, 4 or 8); default 4 for learners with deep prompts "
                                    "(QMaPLe), else 1 (QCoOp)")
    kmeans_init: Literal["kmeans++", "quantile"] | None = option(None, "K-Means initialisation (not in the paper)",
                                                                 required=True)
    kmeans_iters: int | None = option(None, "Lloyd iterations per codebook fit (not in the paper)", required=True)
    cac_interval: int | None = option(None, "CAC: minimum steps between refits t (not in the paper)",
                                      required=True)
    cac_kl_threshold: float | None = option(None, "CAC: refit when the histogram KL reaches T_KL (not in the paper)",
                                            required=True)
    per_channel: bool = option(False, "one codebook scale per channel of the last dimension")
    stats_gradient: Literal["detached", "through"] = option("detached", "whether the gradient flows through the "
                                                                       "normalisation statistics")
    seed: int = option(0, "seed of the K-Means++ initialisation")

    def validate(self) -> None:
        if self.bits is not None and self.bits not in BITS:
            raise ConfigError(f"qprompt.bits={self.bits!r} is not valid; choose one of: {', '.join(map(str, BITS))}")
        for name, example in (("kmeans_init", "'kmeans++'"), ("kmeans_iters", "20"), ("cac_interval", "1"),
                              ("cac_kl_threshold", "0")):
            if getattr(self, name) is None:
                raise ConfigError(f"qprompt.{name} is required: the paper gives no value (methods.md §9.7); "
                                  f"choose one, e.g. {example}, and record it as not from the paper")
        if self.kmeans_iters < 1:
            raise ConfigError(f"qprompt.kmeans_iters={self.kmeans_iters} must be at least 1")
        if self.cac_interval < 1:
            raise ConfigError(f"qprompt.cac_interval={self.cac_interval} must be at least 1 (steps between refits)")
        if self.cac_kl_threshold < 0:
            raise ConfigError(f"qprompt.cac_kl_threshold={self.cac_kl_threshold} must be non-negative")


@register_regularizer
class QPrompt(Regularizer):
    """Quantizes the learner's prompt tensors (and linear weights) in every forward pass."""

    name = "qprompt"
    Config = QPromptConfig
    requires = frozenset({Capability.LEARNED_PROMPTS})

    def __init__(self, config: QPromptConfig | None = None, **options):
        super().__init__(config, **options)
        cfg = self.config
        self.bits = cfg.bits
        self.kmeans_init = cfg.kmeans_init
        self.kmeans_iters = cfg.kmeans_iters
        self.cac_interval = cfg.cac_interval
        self.cac_kl_threshold = cfg.cac_kl_threshold
        self.per_channel = cfg.per_channel
        self.stats_gradient = cfg.stats_gradient
        self.seed = cfg.seed
        self.quantizers: dict[str, PromptQuantizer] = {}
        self.targets: dict[str, tuple[nn.Module, str]] = {}
        self.cache: dict[str, dict] = {}
        self.refits = 0

    def setup(self, ctx: TrainContext) -> None:
        learner = ctx.learner
        deep = Capability.DEEP_PROMPTS in learner.offers
        bits = self.bits or (DEEP_PROMPT_BITS if deep else SHALLOW_PROMPT_BITS)
        targets = quantizable(learner)
        if not targets:
            raise ConfigError(f"qprompt found nothing to quantize in learner {learner.name!r}")
        for name, (owner, attr) in targets.items():
            quantizer = PromptQuantizer(bits, self.per_channel, self.stats_gradient).to(getattr(owner, attr).device)
            parametrize.register_parametrization(owner, attr, quantizer)
            self.quantizers[name] = quantizer
            self.targets[name] = (owner, attr)
            self.refit(name, ctx.step)
        log.info("qprompt: %d-bit quantization of %s", bits, ", ".join(self.quantizers))

    def latent(self, name: str) -> torch.Tensor:
        """The full-precision tensor that training updates."""
        owner, attr = self.targets[name]
        return owner.parametrizations[attr].original

    @torch.no_grad()
    def histogram(self, name: str) -> torch.Tensor:
        quantizer = self.quantizers[name]
        w_hat, _, _ = quantizer.normalise(self.latent(name))
        return torch.bincount(assign(w_hat.flatten(), quantizer.codebook), minlength=2**quantizer.bits).cpu()

    @torch.no_grad()
    def refit(self, name: str, step: int) -> None:
        """Fit the codebook to the current latent weights and cache their histogram and the step."""
        quantizer = self.quantizers[name]
        w_hat, _, _ = quantizer.normalise(self.latent(name))
        quantizer.codebook.copy_(kmeans_1d(w_hat, 2**quantizer.bits, self.kmeans_iters, self.kmeans_init, self.seed))
        self.cache[name] = {"histogram": self.histogram(name), "step": step}

    def cac_step(self, step: int) -> None:
        """Constrained adaptive clustering: refit where ≥ t steps passed and the KL reaches T_KL."""
        for name in self.quantizers:
            if step - self.cache[name]["step"] < self.cac_interval:
                continue
            if histogram_kl(self.histogram(name), self.cache[name]["histogram"]) >= self.cac_kl_threshold:
                self.refit(name, step)
                self.refits += 1

    def before_step(self, ctx: TrainContext, batch: dict) -> None:
        """Constrained adaptive clustering, once per step before the forward pass (no loss of its own)."""
        self.cac_step(ctx.step)

    def on_epoch_end(self, ctx: TrainContext) -> dict:
        with torch.no_grad():
            errors = [F.l1_loss(getattr(*self.targets[n]), self.latent(n)) for n in self.quantizers]
        return {"qprompt_refits": self.refits, "qprompt_mean_abs_error": float(torch.stack(errors).mean())}

    def state_dict(self) -> dict:
        return {"refits": self.refits,
                "tensors": {n: {"codebook": q.codebook.detach().cpu().clone(), **self.cache[n]}
                            for n, q in self.quantizers.items()}}

    def load_state_dict(self, state: dict) -> None:
        if not state:
            return
        self.refits = state["refits"]
        for name, saved in state["tensors"].items():
            self.quantizers[name].codebook.copy_(saved["codebook"])
            self.cache[name] = {"histogram": saved["histogram"], "step": saved["step"]}
