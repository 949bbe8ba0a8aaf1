"""Shapes and behaviour of the building blocks: masked BN, MLP blocks, embeddings, transformer, heads."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from model.attention import attention_bias, build_attention_mask, segment_ids
from model.config import TCAFConfig
from model.embeddings import (
    AUDIO,
    VIDEO,
    FourierTimeEmbedding,
    PositionEncoder,
    build_modality_encoder,
    normalise_audio,
    normalise_video,
)
from model.heads import output_decoder, output_projection, word_decoder, word_projection
from model.layers import MaskedBatchNorm1d, MLPBlock
from model.transformer import Block, FeedForward, Transformer

pytestmark = pytest.mark.usefixtures("single_torch_thread")


SMALL = TCAFConfig(
    audio_dim=6,
    video_dim=10,
    word_dim=7,
    dim=12,
    pos_dim=4,
    encoder_hidden_dim=9,
    decoder_hidden_dim=5,
    out_dim=3,
    depth=2,
    heads=2,
    dim_head=3,
    mlp_dim=8,
)


def test_masked_batchnorm_without_mask_is_batchnorm():
    torch.manual_seed(0)
    ours, ref = MaskedBatchNorm1d(5), nn.BatchNorm1d(5)
    x = torch.randn(7, 5) * 3 + 1
    torch.testing.assert_close(ours(x), ref(x))
    torch.testing.assert_close(ours.running_var, ref.running_var)


def test_masked_batchnorm_equals_batchnorm_on_valid_rows():
    torch.manual_seed(0)
    ours, ref = MaskedBatchNorm1d(5), nn.BatchNorm1d(5)
    x = torch.randn(9, 5) * 2 - 1
    mask = torch.tensor([1, 0, 1, 1, 0, 0, 1, 1, 0], dtype=torch.bool)
    y = ours(x, mask)
    torch.testing.assert_close(y[mask], ref(x[mask]))
    torch.testing.assert_close(ours.running_mean, ref.running_mean)
    torch.testing.assert_close(ours.running_var, ref.running_var)  # unbiased variance, as BN
    assert int(ours.num_batches_tracked) == 1
    # Eval mode uses the running statistics, mask or not.
    ours.eval(), ref.eval()
    torch.testing.assert_close(ours(x, mask), ref(x))


def test_masked_batchnorm_ignores_batches_with_under_two_valid_rows():
    bn = MaskedBatchNorm1d(3)
    x = torch.randn(4, 3)
    y = bn(x, torch.tensor([0, 0, 1, 0], dtype=torch.bool))
    assert torch.isfinite(y).all()
    assert torch.equal(bn.running_mean, torch.zeros(3)) and torch.equal(bn.running_var, torch.ones(3))


def test_mlp_block_layout_matches_embedding_net():
    two = MLPBlock(in_dim=6, out_dim=4, hidden_dim=8, dropout=0.1)
    kinds = [type(m).__name__ for m in two.net]
    assert kinds == [
        "Linear",
        "MaskedBatchNorm1d",
        "ReLU",
        "Dropout",
        "Linear",
        "MaskedBatchNorm1d",
        "ReLU",
        "Dropout",
    ]
    one = MLPBlock(in_dim=6, out_dim=4, hidden_dim=None, dropout=0.1)
    assert [type(m).__name__ for m in one.net] == ["Linear", "MaskedBatchNorm1d", "ReLU", "Dropout"]
    no_hidden_bn = MLPBlock(in_dim=6, out_dim=4, hidden_dim=8, dropout=0.1, hidden_batch_norm=False)
    assert len(no_hidden_bn.net) == 7
    x = torch.randn(3, 5, 6)
    y = two(x)
    assert y.shape == (3, 5, 4) and (y >= 0).all()  # ends in ReLU: non-negative outputs


def test_modality_encoder_shapes():
    enc = build_modality_encoder(in_dim=SMALL.video_dim, cfg=SMALL)
    assert enc(torch.randn(2, 4, 10)).shape == (2, 4, SMALL.dim)


def test_normalise_audio_and_video():
    mask = torch.tensor([[1, 1, 0]], dtype=torch.bool)
    a = torch.full((1, 3, 6), 255, dtype=torch.uint8)
    na = normalise_audio(a, mask, cfg=SMALL)
    assert (
        na.dtype == torch.float32
        and torch.equal(na[0, :2], torch.ones(2, 6))
        and torch.equal(na[0, 2], torch.zeros(6))
    )
    v = torch.rand(1, 3, 10) + 0.1
    per_token = normalise_video(v, mask, cfg=SMALL)
    torch.testing.assert_close(per_token[0, :2].norm(dim=-1), torch.ones(2))
    assert torch.equal(per_token[0, 2], torch.zeros(10))
    over_time = normalise_video(v, mask, cfg=TCAFConfig(normalise_video_over_time=True))
    torch.testing.assert_close(over_time[0].norm(dim=0), torch.ones(10))  # each channel over valid time
    torch.testing.assert_close(over_time[0, :2], F.normalize(v[0, :2], dim=0))


def test_fourier_time_embedding_matches_formula():
    torch.manual_seed(0)
    emb = FourierTimeEmbedding(dim=6, scale=10.0)
    assert emb.freqs.shape == (2, 3) and "freqs" in dict(emb.named_buffers())
    t = torch.tensor([[0.0, 0.96, 1.92]])
    out = emb(t)
    assert out.shape == (1, 3, 6)
    f = emb.freqs[0] + emb.freqs[1]
    phase = 2 * math.pi * t[0, 1] * f
    torch.testing.assert_close(
        out[0, 1], emb.proj(torch.cat([phase.sin(), phase.cos()])), rtol=1e-4, atol=1e-4
    )


def test_position_encoder_shapes_and_pad_embedding_only_on_padding():
    torch.manual_seed(0)
    pe = PositionEncoder(cfg=SMALL, audio_in=SMALL.dim, video_in=SMALL.dim).eval()
    x = torch.randn(2, 4, SMALL.dim)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]], dtype=torch.bool)
    t = torch.arange(4.0).expand(2, 4)
    a = pe(x, mask=mask, times=t, modality=AUDIO)
    v = pe(x, mask=mask, times=t, modality=VIDEO)
    assert a.shape == v.shape == (2, 4, SMALL.dim)
    assert not torch.allclose(a, v)  # modality embedding and projections differ
    # Hand computation of one valid and one padded token.
    emb = pe.modality.weight[AUDIO] + pe.time(t)[1]
    expected_valid = pe.audio_proj(torch.cat([x[1, 1], emb[1]]))
    expected_pad = pe.audio_proj(torch.cat([x[1, 3], emb[3] + pe.pad.weight[0]]))
    torch.testing.assert_close(a[1, 1], expected_valid)
    torch.testing.assert_close(a[1, 3], expected_pad)


def test_unimodal_position_encoder_has_no_modality_embedding_or_other_projection():
    cfg = TCAFConfig(modalities="visual", attention="full")
    pe = PositionEncoder(cfg=cfg, audio_in=cfg.dim, video_in=cfg.dim)
    assert pe.modality is None and pe.audio_proj is None and pe.video_proj is not None


def test_transformer_block_and_stack_shapes():
    torch.manual_seed(0)
    x = torch.randn(2, 6, 12)
    valid = torch.ones(2, 6, dtype=torch.bool)
    allowed = build_attention_mask(valid, segment_ids(n_cls=1, n_audio=2, n_video=3), variant="cross")
    bias, has_key = attention_bias(allowed, dtype=x.dtype), allowed.any(-1, keepdim=True)
    assert FeedForward(dim=12, hidden_dim=8, dropout=0.0)(x).shape == x.shape
    shared = Block(dim=12, heads=2, dim_head=3, mlp_dim=8, dropout=0.0, shared_norm=True)
    assert shared.norm_ff is None and shared(x, bias=bias, has_key=has_key).shape == x.shape
    separate = Block(dim=12, heads=2, dim_head=3, mlp_dim=8, dropout=0.0, shared_norm=False)
    assert isinstance(separate.norm_ff, nn.LayerNorm)
    stack = Transformer(dim=12, depth=3, heads=2, dim_head=3, mlp_dim=8, dropout=0.0)
    assert len(stack.layers) == 3 and stack.norm is None
    assert stack(x, bias=bias, has_key=has_key).shape == x.shape


def test_shared_norm_block_equals_hand_computation():
    torch.manual_seed(0)
    block = Block(dim=12, heads=2, dim_head=3, mlp_dim=8, dropout=0.0, shared_norm=True)
    with torch.no_grad():
        block.norm.weight.uniform_(0.5, 1.5), block.norm.bias.uniform_(-0.5, 0.5)
    x = torch.randn(1, 6, 12)
    valid = torch.ones(1, 6, dtype=torch.bool)
    allowed = build_attention_mask(valid, segment_ids(n_cls=1, n_audio=2, n_video=3), variant="full")
    y = block(x, bias=attention_bias(allowed, dtype=x.dtype), has_key=allowed.any(-1, keepdim=True))
    h = x + block.attn(block.norm(x), bias=torch.zeros(1, 1, 6, 6), has_key=torch.ones(1, 6, 1))
    expected = h + block.ff.fc2(F.gelu(block.ff.fc1(block.norm(h))))
    torch.testing.assert_close(y, expected)


def test_head_shapes():
    theta_o = output_projection(SMALL)(torch.randn(4, SMALL.dim))
    assert theta_o.shape == (4, SMALL.out_dim)
    assert output_decoder(SMALL)(theta_o).shape == (4, SMALL.word_dim)
    theta_w = word_projection(SMALL)(torch.randn(5, SMALL.word_dim))
    assert theta_w.shape == (5, SMALL.out_dim)
    assert word_decoder(SMALL)(theta_w).shape == (5, SMALL.word_dim)
    assert len(word_projection(SMALL).net) == 4 and len(output_projection(SMALL).net) == 8
