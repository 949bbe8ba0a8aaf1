"""Output side of TCAF (paper Sec. 3.2-3.3): O_proj, D_o, W_proj and D_w.

theta_o = O_proj(c_o)   dim -> hidden -> out_dim      two blocks, drop_proj_o
rho_o   = D_o(theta_o)  out_dim -> hidden -> word_dim two blocks, drop_proj_o
theta_w = W_proj(w)     word_dim -> out_dim           one block,  drop_proj_w
rho_w   = D_w(theta_w)  out_dim -> word_dim           one block,  drop_proj_w

Each block is Linear -> BN -> ReLU -> Dropout (paper and official code alike).
"""

from __future__ import annotations

from model.config import TCAFConfig
from model.layers import MLPBlock


def output_projection(cfg: TCAFConfig) -> MLPBlock:
    """O_proj: class token (or averaged tokens) -> theta_o, the embedding used for classification."""
    return MLPBlock(in_dim=cfg.dim, out_dim=cfg.out_dim, hidden_dim=cfg.decoder_hidden_dim,
                    dropout=cfg.dropout_proj_o, hidden_batch_norm=cfg.hidden_batch_norm)


def output_decoder(cfg: TCAFConfig) -> MLPBlock:
    """D_o: theta_o -> rho_o, a reconstruction of the class word vector.

    Its output size is word_dim. The official code uses the transformer width, which only works
    because both are 300 with fastText vectors.
    """
    return MLPBlock(in_dim=cfg.out_dim, out_dim=cfg.word_dim, hidden_dim=cfg.decoder_hidden_dim,
                    dropout=cfg.dropout_proj_o, hidden_batch_norm=cfg.hidden_batch_norm)


def word_projection(cfg: TCAFConfig) -> MLPBlock:
    """W_proj: class word vector w -> theta_w in the joint space."""
    return MLPBlock(in_dim=cfg.word_dim, out_dim=cfg.out_dim, hidden_dim=None, dropout=cfg.dropout_proj_w)


def word_decoder(cfg: TCAFConfig) -> MLPBlock:
    """D_w: theta_w -> rho_w, a reconstruction of the class word vector."""
    return MLPBlock(in_dim=cfg.out_dim, out_dim=cfg.word_dim, hidden_dim=None, dropout=cfg.dropout_proj_w)
