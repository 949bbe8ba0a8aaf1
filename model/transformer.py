"""Pre-norm audio-visual transformer layers (paper Eq. 3-4, 9, 13)."""

from __future__ import annotations

from torch import Tensor, nn

from model.attention import MultiHeadAttention


class FeedForward(nn.Module):
    """g_FF: Linear -> GELU -> Dropout -> Linear -> Dropout (Eq. 13)."""

    def __init__(self, *, dim: int, hidden_dim: int, dropout: float) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, dim)
        self.act = nn.GELU()
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.fc2(self.dropout(self.act(self.fc1(x)))))


class Block(nn.Module):
    """x = x + Attn(LN(x)); x = x + FF(LN'(x)), where LN' is LN itself when the norm is shared."""

    def __init__(
        self, *, dim: int, heads: int, dim_head: int, mlp_dim: int, dropout: float, shared_norm: bool
    ) -> None:
        super().__init__()
        # Official construction order (attention, FFN, norm) so that seeded initialisation matches.
        self.attn = MultiHeadAttention(dim=dim, heads=heads, dim_head=dim_head, dropout=dropout)
        self.ff = FeedForward(dim=dim, hidden_dim=mlp_dim, dropout=dropout)
        self.norm = nn.LayerNorm(dim)
        # The paper writes the same g^LN before attention and FFN and the official code has one
        # LayerNorm per layer; a second one is available for experiments.
        self.norm_ff = None if shared_norm else nn.LayerNorm(dim)

    def forward(self, x: Tensor, *, bias: Tensor, has_key: Tensor) -> Tensor:  # x (B, N, dim)
        x = x + self.attn(self.norm(x), bias=bias, has_key=has_key)
        norm_ff = self.norm if self.norm_ff is None else self.norm_ff
        return x + self.ff(norm_ff(x))


class Transformer(nn.Module):
    def __init__(
        self,
        *,
        dim: int,
        depth: int,
        heads: int,
        dim_head: int,
        mlp_dim: int,
        dropout: float,
        shared_norm: bool = True,
        final_norm: bool = False,
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            Block(dim=dim, heads=heads, dim_head=dim_head, mlp_dim=mlp_dim, dropout=dropout, shared_norm=shared_norm)
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(dim) if final_norm else None

    def forward(self, x: Tensor, *, bias: Tensor, has_key: Tensor) -> Tensor:
        """x (B, N, dim); bias (B, 1, N, N) additive mask built once per batch; has_key (B, N, 1)."""
        for layer in self.layers:
            x = layer(x, bias=bias, has_key=has_key)
        return x if self.norm is None else self.norm(x)
