"""Mean class accuracy, S/U/HM/ZSL and calibrated stacking against a hand-worked example."""

import math

import pytest
import torch

from model.metrics import BIAS_GRID, bias_grid, class_distances, gzsl_metrics

# Classes: c0, c1 seen; c2, c3 unseen. Seven samples; rows are L2 distances to (c0, c1, c2, c3).
D = torch.tensor(
    [
        [1.0, 2.0, 1.5, 9.0],  # s0, label c0
        [1.0, 0.5, 3.0, 9.0],  # s1, label c0
        [2.0, 1.0, 1.3, 9.0],  # s2, label c1
        [1.0, 2.0, 1.1, 9.0],  # s3, label c2
        [0.5, 2.0, 1.0, 9.0],  # s4, label c2
        [3.0, 3.0, 0.2, 9.0],  # s5, label c2
        [2.0, 2.0, 0.9, 1.0],  # s6, label c3
    ]
)
LABELS = torch.tensor([0, 0, 1, 2, 2, 2, 3])
UNSEEN = torch.tensor([False, False, True, True])

# Hand-worked predictions argmin(D + beta * [c seen]):
# beta=0.0: s0->c0 ok, s1->c1 x, s2->c1 ok, s3->c0 x, s4->c0 x, s5->c2 ok, s6->c2 x
#   recall c0=1/2 c1=1 c2=1/3 c3=0  -> S=3/4, U=1/6, HM=2*(3/4)(1/6)/(3/4+1/6)=3/11
# beta=0.2: s3 -> c2 (1.2 > 1.1) ok; s4: 0.7 < 1.0 still c0 x; s2: 1.2 < 1.3 still c1 ok
#   recall c0=1/2 c1=1 c2=2/3 c3=0  -> S=3/4, U=1/3, HM=2*(3/4)(1/3)/(3/4+1/3)=6/13  <- best
# beta=0.4: s2 -> c2 (1.4 > 1.3) x
#   recall c0=1/2 c1=0 c2=2/3 c3=0  -> S=1/4, U=1/3, HM=2*(1/4)(1/3)/(1/4+1/3)=2/7
# beta=0.6: s0 -> c2 (1.6 > 1.5) x, s4 -> c2 (1.1 > 1.0) ok -> S=0, U=1/2, HM=0 (and 0 beyond)
# ZSL (unseen samples s3..s6, candidates c2/c3 only): s3,s4,s5 -> c2 ok; s6 -> c2 (0.9 < 1.0) x
#   recall c2=1, c3=0 -> ZSL=1/2


def test_grid_is_0_to_3_step_0_2():
    assert len(BIAS_GRID) == 16
    assert BIAS_GRID[0] == 0 and BIAS_GRID[-1] == 3
    assert torch.allclose(BIAS_GRID[1:] - BIAS_GRID[:-1], torch.full((15,), 0.2, dtype=torch.float64))
    with pytest.raises(ValueError):
        bias_grid(0, 3, 0)


def test_hand_worked_grid_search():
    r = gzsl_metrics(D, LABELS, UNSEEN)
    assert r.bias == pytest.approx(0.2)
    assert r.S == pytest.approx(3 / 4)
    assert r.U == pytest.approx(1 / 3)
    assert r.HM == pytest.approx(6 / 13)
    assert r.ZSL == pytest.approx(1 / 2)
    assert r.grid_HM[:4] == pytest.approx([3 / 11, 6 / 13, 2 / 7, 0.0])
    assert r.grid_HM[4:] == pytest.approx([0.0] * 12)


def test_hand_worked_fixed_bias():
    r = gzsl_metrics(D, LABELS, UNSEEN, bias=0.4)
    assert (r.S, r.U, r.HM, r.bias) == pytest.approx((1 / 4, 1 / 3, 2 / 7, 0.4))
    assert r.ZSL == pytest.approx(1 / 2)  # ZSL does not depend on the bias
    assert r.grid is None
    r0 = gzsl_metrics(D, LABELS, UNSEEN, bias=0.0)
    assert (r0.S, r0.U, r0.HM) == pytest.approx((3 / 4, 1 / 6, 3 / 11))


def test_ties_keep_first_bias_and_zero_scores_give_zero_hm():
    # Predictions do not change over the grid -> all HM equal -> the first bias (0) is chosen.
    d = torch.tensor([[0.0, 10.0], [10.0, 0.0]])
    r = gzsl_metrics(d, torch.tensor([0, 1]), torch.tensor([False, True]))
    assert r.bias == 0.0 and r.HM == pytest.approx(1.0)
    # All wrong: HM = 0 (the epsilon in the denominator avoids 0/0).
    r = gzsl_metrics(d, torch.tensor([1, 0]), torch.tensor([False, True]), bias=0.0)
    assert r.HM == 0.0 and not math.isnan(r.HM)


def test_mean_class_accuracy_is_not_sample_accuracy():
    # c0 has 3 samples all right, c1 one sample wrong: sample accuracy 3/4, mean class accuracy S=1/2.
    d = torch.tensor([[0.0, 1.0, 5.0]] * 3 + [[0.0, 1.0, 5.0]] + [[5.0, 5.0, 0.0]])
    labels = torch.tensor([0, 0, 0, 1, 2])
    r = gzsl_metrics(d, labels, torch.tensor([False, False, True]), bias=0.0)
    assert r.S == pytest.approx(0.5) and r.U == pytest.approx(1.0)


def test_vectorised_grid_equals_one_bias_at_a_time():
    g = torch.Generator().manual_seed(0)
    emb, cls = torch.rand(300, 8, generator=g), torch.rand(10, 8, generator=g)
    labels = torch.randint(10, (300,), generator=g)
    unseen = torch.arange(10) >= 6
    dist = class_distances(emb, cls)
    assert torch.allclose(dist, torch.cdist(emb.double(), cls.double()).float(), atol=1e-5)
    full = gzsl_metrics(dist, labels, unseen, chunk_size=37)  # chunking must not matter
    singles = [gzsl_metrics(dist, labels, unseen, bias=float(b)).HM for b in BIAS_GRID]
    assert full.grid_HM == pytest.approx(singles)
    assert full.HM == pytest.approx(max(singles))
    assert full.bias == pytest.approx(float(BIAS_GRID[singles.index(max(singles))]))
