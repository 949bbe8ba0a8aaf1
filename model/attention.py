"""Attention masks of the paper's variants (Eq. 11-12, Table 3) and masked multi-head attention.

Sequence layout: [class token?, audio_1..audio_Ta, video_1..video_Tv]. A query i may attend to key j
when both tokens are valid (not padding) and the variant's block pattern allows the pair:

  variant  | class token row/col | audio->audio, video->video | audio<->video
  "cross"  | yes (A_c)           | no                          | yes (A_x)      <- TCAF
  "self"   | yes (A_c)           | yes (A_self)                | no
  "full"   | yes (A_c)           | yes                         | yes

In "cross" a token therefore never attends to itself: A_x has no diagonal blocks (as in the
official code). A query row with no allowed key (a padded token, or a valid token whose partner
modality is entirely padding when there is no class token) mixes no values (a zero vector before
the output projection) instead of producing NaN or an average over padding.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel

CLS, AUDIO_SEG, VIDEO_SEG = 0, 1, 2  # segment ids of the sequence positions


def segment_ids(*, n_cls: int, n_audio: int, n_video: int, device: torch.device | None = None) -> Tensor:
    """(N,) long segment id of every sequence position."""
    return torch.cat(
        [
            torch.full((n_cls,), CLS, dtype=torch.long, device=device),
            torch.full((n_audio,), AUDIO_SEG, dtype=torch.long, device=device),
            torch.full((n_video,), VIDEO_SEG, dtype=torch.long, device=device),
        ]
    )


def block_pattern(segments: Tensor, *, variant: str) -> Tensor:
    """(N, N) bool: which (query, key) segment pairs the variant allows, ignoring padding."""
    q, k = segments.unsqueeze(1), segments.unsqueeze(0)  # (N, 1), (1, N)
    involves_cls = (q == CLS) | (k == CLS)
    if variant == "cross":
        return involves_cls | (q != k)
    if variant == "self":
        return involves_cls | (q == k)
    if variant == "full":
        return torch.ones(q.shape[0], k.shape[1], dtype=torch.bool, device=segments.device)
    raise ValueError(f"unknown attention variant {variant!r}; use 'cross', 'self' or 'full'")


def build_attention_mask(valid: Tensor, segments: Tensor, *, variant: str) -> Tensor:
    """valid (B, N) bool, segments (N,) -> allowed (B, N, N) bool [batch, query, key]."""
    assert valid.dim() == 2 and valid.shape[1] == segments.shape[0], (
        f"valid {tuple(valid.shape)} does not match {segments.shape[0]} sequence positions"
    )
    pattern = block_pattern(segments, variant=variant)  # (N, N)
    return pattern & valid.unsqueeze(2) & valid.unsqueeze(1)


def attention_bias(allowed: Tensor, *, dtype: torch.dtype) -> Tensor:
    """allowed (B, N, N) -> additive bias (B, 1, N, N) for SDPA.

    A finite large negative (not -inf) keeps fully masked rows finite: with -inf their softmax is
    0/0 = NaN, and NaN times a zero weight would still poison valid tokens in the value product.
    Half the dtype's minimum leaves headroom so that logit + bias cannot overflow to -inf.
    """
    fill = torch.finfo(dtype).min / 2
    bias = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill_(~allowed, fill)
    return bias.unsqueeze(1)


def cast_bias(bias: Tensor, dtype: torch.dtype) -> Tensor:
    """The bias in the query dtype. Under fp16 autocast the float32 fill would round to -inf: clamp first."""
    if bias.dtype == dtype:
        return bias
    return bias.clamp(min=torch.finfo(dtype).min / 2).to(dtype)


def low_precision_cpu_attention(q: Tensor, k: Tensor, v: Tensor, bias: Tensor) -> Tensor:
    """softmax(q k^T / sqrt(d) + bias) v for bf16/fp16 q, k, v on CPU: products in q's dtype, softmax in fp32.

    Why not SDPA: PyTorch's CPU flash kernel is several times slower in bf16 than in fp32 for the
    short sequences of TCAF (its backward dominates a bf16 training step), while plain batched
    matmuls use the CPU's bf16 units. The logits and softmax are kept in float32, where the
    finite large-negative fill of ``bias`` is exact, so masked keys get weight 0 and fully masked
    rows stay finite, as with SDPA.
    """
    logits = torch.matmul(q, k.transpose(-1, -2)).float() * (q.shape[-1] ** -0.5) + bias.float()
    return torch.matmul(logits.softmax(-1).to(v.dtype), v)


def needs_math_attention(device: torch.device) -> bool:
    """Whether SDPA must use its math backend: on CUDA under ``torch.use_deterministic_algorithms``, when
    gradients are recorded.

    The fused CUDA kernels that take an additive mask (memory-efficient attention; flash attention takes
    none) accumulate the key/value gradients with atomic adds, so their backward is not deterministic;
    torch only warns about it. Their forward is deterministic, so evaluation (no grad) keeps them. The
    math backend is softmax(q k^T / sqrt(d) + bias) v in plain matmuls: deterministic, at the cost of
    materialising the (B, H, N, N) attention weights for the backward. On the CPU every SDPA backend is
    deterministic, so nothing changes there.
    """
    return device.type == "cuda" and torch.is_grad_enabled() and torch.are_deterministic_algorithms_enabled()


def sdpa_backend(device: torch.device) -> contextlib.AbstractContextManager:
    """The SDPA backend context for ``device``: the math backend where :func:`needs_math_attention`."""
    return sdpa_kernel(SDPBackend.MATH) if needs_math_attention(device) else contextlib.nullcontext()


class MultiHeadAttention(nn.Module):
    """Bias-free Q/K/V projections (fused), SDPA, output Linear + dropout; no dropout on attention weights."""

    def __init__(self, *, dim: int, heads: int, dim_head: int, dropout: float) -> None:
        super().__init__()
        self.heads, self.dim_head = heads, dim_head
        inner = heads * dim_head
        self.qkv = nn.Linear(dim, 3 * inner, bias=False)  # rows: [q; k; v], each head-major
        self.proj = nn.Linear(inner, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, *, bias: Tensor, has_key: Tensor) -> Tensor:
        """x (B, N, dim), bias (B, 1, N, N) additive, has_key (B, N, 1) -> (B, N, dim)."""
        B, N, _ = x.shape
        q, k, v = self.qkv(x).view(B, N, 3, self.heads, self.dim_head).permute(2, 0, 3, 1, 4)  # 3 x (B, H, N, dh)
        if q.device.type == "cpu" and q.dtype in (torch.bfloat16, torch.float16):
            out = low_precision_cpu_attention(q, k, v, bias)
        else:
            with sdpa_backend(q.device):
                out = F.scaled_dot_product_attention(q, k, v, attn_mask=cast_bias(bias, q.dtype))  # (B, H, N, dh)
        out = out.transpose(1, 2).reshape(B, N, self.heads * self.dim_head)  # (B, N, H*dh)
        # Rows with no allowed key got a uniform average over all values (finite but meaningless).
        out = out * has_key.to(out.dtype)
        return self.dropout(self.proj(out))
