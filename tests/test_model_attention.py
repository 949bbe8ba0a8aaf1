"""Attention masks of every variant, element by element, and masked attention without NaN."""

import copy
import math

import pytest
import torch

from model.attention import (
    MultiHeadAttention,
    attention_bias,
    build_attention_mask,
    cast_bias,
    segment_ids,
)

pytestmark = pytest.mark.usefixtures("single_torch_thread")


# Small case: class token + 2 audio + 3 video tokens. Sample 0 has no padding; sample 1 has its
# second audio token and its third video token padded.
#            cls a1 a2 v1 v2 v3
VALID = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 0, 1, 1, 0]], dtype=torch.bool)

# Rows are queries, columns keys.
EXPECTED = {
    "cross": [  # A_c + A_x: class token <-> all; audio <-> video; nothing within a modality
        [
            [1, 1, 1, 1, 1, 1],
            [1, 0, 0, 1, 1, 1],
            [1, 0, 0, 1, 1, 1],
            [1, 1, 1, 0, 0, 0],
            [1, 1, 1, 0, 0, 0],
            [1, 1, 1, 0, 0, 0],
        ],
        [
            [1, 1, 0, 1, 1, 0],
            [1, 0, 0, 1, 1, 0],
            [0, 0, 0, 0, 0, 0],
            [1, 1, 0, 0, 0, 0],
            [1, 1, 0, 0, 0, 0],
            [0, 0, 0, 0, 0, 0],
        ],
    ],
    "self": [  # A_c + A_self: class token <-> all; within a modality only
        [
            [1, 1, 1, 1, 1, 1],
            [1, 1, 1, 0, 0, 0],
            [1, 1, 1, 0, 0, 0],
            [1, 0, 0, 1, 1, 1],
            [1, 0, 0, 1, 1, 1],
            [1, 0, 0, 1, 1, 1],
        ],
        [
            [1, 1, 0, 1, 1, 0],
            [1, 1, 0, 0, 0, 0],
            [0, 0, 0, 0, 0, 0],
            [1, 0, 0, 1, 1, 0],
            [1, 0, 0, 1, 1, 0],
            [0, 0, 0, 0, 0, 0],
        ],
    ],
    "full": [  # A_c + A_self + A_x: every valid pair
        [[1, 1, 1, 1, 1, 1]] * 6,
        [
            [1, 1, 0, 1, 1, 0],
            [1, 1, 0, 1, 1, 0],
            [0, 0, 0, 0, 0, 0],
            [1, 1, 0, 1, 1, 0],
            [1, 1, 0, 1, 1, 0],
            [0, 0, 0, 0, 0, 0],
        ],
    ],
}


@pytest.mark.parametrize("variant", ["cross", "self", "full"])
def test_mask_with_class_token_element_by_element(variant):
    seg = segment_ids(n_cls=1, n_audio=2, n_video=3)
    allowed = build_attention_mask(VALID, seg, variant=variant)
    expected = torch.tensor(EXPECTED[variant], dtype=torch.bool)
    assert allowed.shape == (2, 6, 6)
    for b in range(2):
        for i in range(6):
            for j in range(6):
                assert allowed[b, i, j] == expected[b, i, j], f"{variant}: sample {b}, query {i}, key {j}"


@pytest.mark.parametrize("variant", ["cross", "self", "full"])
def test_mask_without_class_token_drops_row_and_column_zero(variant):
    seg = segment_ids(n_cls=0, n_audio=2, n_video=3)
    allowed = build_attention_mask(VALID[:, 1:], seg, variant=variant)
    expected = torch.tensor(EXPECTED[variant], dtype=torch.bool)[:, 1:, 1:]
    assert torch.equal(allowed, expected)


def test_cross_mask_without_class_token_leaves_rows_without_keys():
    # Audio-only sample (all video padded): audio tokens have nobody to attend to.
    seg = segment_ids(n_cls=0, n_audio=2, n_video=3)
    valid = torch.tensor([[1, 1, 0, 0, 0]], dtype=torch.bool)
    allowed = build_attention_mask(valid, seg, variant="cross")
    assert not allowed.any()


def test_bias_is_finite_and_zero_where_allowed():
    seg = segment_ids(n_cls=1, n_audio=2, n_video=3)
    allowed = build_attention_mask(VALID, seg, variant="cross")
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        bias = attention_bias(allowed, dtype=dtype)
        assert bias.shape == (2, 1, 6, 6) and bias.dtype == dtype
        assert torch.isfinite(bias).all()
        assert (bias[:, 0][allowed] == 0).all()
        assert (bias[:, 0][~allowed] < -1e4).all()


def reference_attention(attn: MultiHeadAttention, x, allowed):
    """Explicit per-head softmax over allowed keys; rows without keys mix nothing."""
    B, N, _ = x.shape
    H, dh = attn.heads, attn.dim_head
    q, k, v = attn.qkv(x).split(H * dh, dim=-1)
    out = torch.zeros(B, N, H * dh)
    for b in range(B):
        for h in range(H):
            sl = slice(h * dh, (h + 1) * dh)
            for i in range(N):
                keys = allowed[b, i].nonzero().flatten()
                if len(keys) == 0:
                    continue
                logits = (k[b, keys, sl] @ q[b, i, sl]) / math.sqrt(dh)
                out[b, i, sl] = torch.softmax(logits, 0) @ v[b, keys, sl]
    return attn.proj(out)


@pytest.mark.parametrize("variant", ["cross", "self", "full"])
def test_attention_matches_explicit_softmax_and_has_no_nan(variant):
    torch.manual_seed(0)
    attn = MultiHeadAttention(dim=8, heads=2, dim_head=4, dropout=0.0).eval()
    valid = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 0, 1, 1, 0], [1, 0, 0, 0, 0, 0]], dtype=torch.bool)
    seg = segment_ids(n_cls=1, n_audio=2, n_video=3)
    allowed = build_attention_mask(valid, seg, variant=variant)
    x = torch.randn(3, 6, 8)
    x[~valid] = 1e4  # huge values at padded positions must not leak into valid tokens
    out = attn(x, bias=attention_bias(allowed, dtype=x.dtype), has_key=allowed.any(-1, keepdim=True))
    assert torch.isfinite(out).all()
    ref = reference_attention(attn, x, allowed)
    torch.testing.assert_close(out[valid], ref[valid], rtol=1e-5, atol=1e-5)


def test_all_padded_rows_give_finite_gradients():
    attn = MultiHeadAttention(dim=8, heads=2, dim_head=4, dropout=0.0)
    seg = segment_ids(n_cls=0, n_audio=2, n_video=3)
    valid = torch.zeros(2, 5, dtype=torch.bool)
    allowed = build_attention_mask(valid, seg, variant="cross")
    x = torch.randn(2, 5, 8, requires_grad=True)
    out = attn(x, bias=attention_bias(allowed, dtype=x.dtype), has_key=allowed.any(-1, keepdim=True))
    out.sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(x.grad).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_queries_with_float32_bias_stay_finite(dtype):
    torch.manual_seed(0)
    attn = MultiHeadAttention(dim=8, heads=2, dim_head=4, dropout=0.0).to(dtype)
    seg = segment_ids(n_cls=0, n_audio=2, n_video=3)
    valid = torch.tensor([[1, 1, 0, 0, 0], [0, 0, 0, 0, 0]], dtype=torch.bool)  # rows without keys
    allowed = build_attention_mask(valid, seg, variant="cross")
    x = torch.randn(2, 5, 8, dtype=dtype)
    bias = attention_bias(allowed, dtype=torch.float32)
    cast = cast_bias(bias, dtype)
    assert cast.dtype == dtype and torch.isfinite(cast).all() and (cast[bias == 0] == 0).all()
    out = attn(x, bias=bias, has_key=allowed.any(-1, keepdim=True))
    assert out.dtype == dtype and torch.isfinite(out).all()


@pytest.mark.parametrize("variant", ["cross", "full"])
def test_bf16_cpu_attention_matches_float32_and_keeps_padding_out(variant):
    # bf16 on CPU takes the matmul + float32-softmax path instead of SDPA (a speed choice only):
    # it must give the float32 result within bf16 rounding, ignore padded keys, and stay finite
    # (with finite gradients) for rows without keys.
    torch.manual_seed(0)
    attn = MultiHeadAttention(dim=16, heads=2, dim_head=8, dropout=0.0).eval()
    valid = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 0, 1, 1, 0], [1, 0, 0, 0, 0, 0]], dtype=torch.bool)
    allowed = build_attention_mask(valid, segment_ids(n_cls=1, n_audio=2, n_video=3), variant=variant)
    x = torch.randn(3, 6, 16)
    x[~valid] = 1e4
    has_key = allowed.any(-1, keepdim=True)
    ref = reference_attention(attn, x, allowed)
    low = copy.deepcopy(attn).to(torch.bfloat16)
    xb = x.to(torch.bfloat16).requires_grad_()
    out = low(xb, bias=attention_bias(allowed, dtype=torch.bfloat16), has_key=has_key)
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()
    torch.testing.assert_close(out.float()[valid], ref[valid], rtol=0.05, atol=0.05)
    out.float().sum().backward()
    assert torch.isfinite(xb.grad).all()
    # Under autocast too (the training switch train.amp: bf16): same result as the bf16 module.
    with torch.autocast("cpu", dtype=torch.bfloat16):
        auto = attn(x, bias=attention_bias(allowed, dtype=torch.bfloat16), has_key=has_key)
    torch.testing.assert_close(auto.float()[valid], ref[valid], rtol=0.05, atol=0.05)
