"""TCAF training losses (paper Eq. 15-18), computed as the official code computes them.

All three are means with weight 1: l = l_ce + l_reg + l_rec.
  l_ce  = CE(theta_o @ W_proj(E)^T, y)  plain dot products, no temperature (Eq. 16); E are the word
          vectors of the classes the labels index (the seen training classes).
  l_reg = mean((theta_o - theta_w)^2)   over B * d_out elements (Eq. 17)
  l_rec = mean((rho_o - w)^2) + mean((rho_w - w)^2), each over B * d_word elements (Eq. 18)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def ce_loss(theta_o: Tensor, class_theta_w: Tensor, labels: Tensor) -> Tensor:
    """theta_o (B, D), class_theta_w (C, D), labels (B,) row indices into the classes -> scalar."""
    return F.cross_entropy(theta_o @ class_theta_w.T, labels)  # logits (B, C)


def reg_loss(theta_o: Tensor, theta_w: Tensor) -> Tensor:
    """theta_o, theta_w (B, D) -> scalar; gradients flow into both sides, as in the official code."""
    return F.mse_loss(theta_o, theta_w)


def rec_loss(rho_o: Tensor, rho_w: Tensor, w: Tensor) -> Tensor:
    """rho_o, rho_w, w (B, d_word) -> scalar."""
    return F.mse_loss(rho_o, w) + F.mse_loss(rho_w, w)


def total_loss(*, ce: Tensor | None, reg: Tensor | None, rec: Tensor | None, like: Tensor) -> dict[str, Tensor]:
    """Sum the enabled terms; disabled ones are reported as 0 so that logs keep the same columns."""
    zero = torch.zeros((), dtype=like.dtype, device=like.device)
    terms = {"ce": zero if ce is None else ce, "reg": zero if reg is None else reg, "rec": zero if rec is None else rec}
    return {"total": terms["ce"] + terms["reg"] + terms["rec"], **terms}
