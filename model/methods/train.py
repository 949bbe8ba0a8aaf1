"""Training and evaluation of the averaged-feature methods through the shared epoch loop.

:class:`AveragedRecipe` plugs into :func:`model.train.run_stage` (the resumable epoch loop with model
selection on val HM and the LR scheduler) and so into the two-stage protocol of ``model/pipeline.py``:
only the data path (averaged splits, positive/negative batches) and the step (the method's own losses and
optimiser) differ from TCAF. Evaluation is the same calibrated stacking on the method's distances.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable

import torch

from model.methods.base import AveragedBatch, AveragedMethod
from model.methods.data import AveragedSplit, NegativePairSampler, average_split, make_averaged_batch
from model.metrics import GZSLResult, gzsl_metrics
from model.packing import SplitData
from model.train import check_compile_support
from model.train_config import TrainConfig


class AveragedRecipe:
    """The step and data path of an :class:`AveragedMethod`; splits are averaged once and cached."""

    def __init__(self, device: torch.device | str) -> None:
        self.device = torch.device(device)
        self._cache: dict[int, tuple[SplitData, AveragedSplit]] = {}
        self._compiled: dict[int, tuple[weakref.ref, Callable[[AveragedBatch], dict[str, torch.Tensor]]]] = {}

    def averaged(self, split: SplitData | AveragedSplit) -> AveragedSplit:
        if isinstance(split, AveragedSplit):
            return split
        hit = self._cache.get(id(split))
        if hit is None or hit[0] is not split:  # id() alone could be reused by a new object
            hit = (split, average_split(split, self.device))
            self._cache[id(split)] = hit
        return hit[1]

    def build_optimizer(self, model: AveragedMethod, cfg: TrainConfig) -> torch.optim.Optimizer:
        return model.build_optimizer(cfg.lr, cfg.weight_decay)

    def sampler(self, split: SplitData | AveragedSplit, cfg: TrainConfig, seed: int) -> NegativePairSampler:
        return NegativePairSampler(self.averaged(split), cfg.batch_size, cfg.batches_per_epoch, seed)

    def losses_fn(self, model: AveragedMethod, cfg: TrainConfig) -> Callable[[AveragedBatch], dict[str, torch.Tensor]]:
        """``model.losses``, or with ``train.compile`` its ``torch.compile``-d version (made once per model).

        Inductor is told to draw random numbers with the eager kernels (``fallback_random``) rather than its own
        generator, so dropout masks come from the eager random stream; where the compiled code draws them in the
        eager order (DeViSE, ALE, SJE, APN, CJME, AVGZSLNet) a compiled run follows the eager one up to float
        rounding (``tests/test_method_training.py``); AVCA's compiled step draws them in another order (other
        masks of the same dropout, docs/training.md). A method whose step is not one traceable function
        (``compilable`` False: f-VAEGAN-D2 updates its critics inside ``losses``) keeps the eager step."""
        if not getattr(cfg, "compile", False) or not model.compilable:
            return model.losses
        hit = self._compiled.get(id(model))
        if hit is None or hit[0]() is not model:
            check_compile_support(self.device)  # no compiler: an error before the first step, naming the switch
            compiled = torch.compile(model.losses, options={"fallback_random": True})
            first = [True]

            def losses(batch: AveragedBatch) -> dict[str, torch.Tensor]:
                if not first[0]:
                    return compiled(batch)
                try:  # the first call compiles: whatever else stops inductor shows here
                    out = compiled(batch)
                except Exception as e:  # re-raised with what to change
                    raise RuntimeError(f"train.compile: torch.compile of {type(model).__name__}'s training step "
                                       f"failed ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
                                       "it needs a C++ compiler on the CPU (triton on a GPU); set train.compile: "
                                       "false to train in eager mode") from e
                first[0] = False
                return out

            hit = (weakref.ref(model), losses)
            self._compiled[id(model)] = hit
        return hit[1]

    def train_one_epoch(self, model: AveragedMethod, optimizer: torch.optim.Optimizer, sampler: NegativePairSampler,
                        device: torch.device, cfg: TrainConfig, *, desc: str = "train") -> dict[str, float]:
        """``cfg.batches_per_epoch`` steps; the epoch mean of every loss term (summed on the device)."""
        model.train()
        observe = getattr(model, "observe_training_split", None)
        if observe is not None:  # a generative method that classifies with the whole training split (f-VAEGAN-D2)
            observe(sampler.split)
        sums: dict[str, torch.Tensor] = {}
        # bf16 autocast is opt-in (train.amp), as for TCAF: faster on CPUs and GPUs with bf16 units, not bit-exact
        amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.amp == "bf16")
        losses_fn, negatives = self.losses_fn(model, cfg), model.uses_negative_features
        for idx, neg_idx in sampler.plan():
            batch = make_averaged_batch(sampler.split, idx, neg_idx, negative_features=negatives)
            with amp:
                losses = losses_fn(batch)
            optimizer.zero_grad(set_to_none=True)
            losses["total"].backward()
            optimizer.step()
            model.after_step(batch)
            for k, v in losses.items():
                sums[k] = sums.get(k, 0) + v.detach().float()
        assert "total" in sums, f"{type(model).__name__}.losses must return a 'total' term"
        return {k: float(v) / sampler.n_batches for k, v in sums.items()}

    @torch.no_grad()
    def distances(self, model: AveragedMethod, split: SplitData | AveragedSplit, batch_size: int) -> torch.Tensor:
        """[N, C] distances of every video of the split to its classes, in eval mode."""
        data = self.averaged(split)
        model.eval()
        parts = [model.distances(data.audio[i:i + batch_size], data.video[i:i + batch_size], data.class_vectors)
                 for i in range(0, len(data), batch_size)]
        out = torch.cat(parts)
        assert out.shape == (len(data), data.n_classes), (out.shape, len(data), data.n_classes)
        return out

    def evaluate(self, model: AveragedMethod, split: SplitData | AveragedSplit, device: torch.device,
                 cfg: TrainConfig, *, bias: float | None = None, grid: torch.Tensor | None = None) -> GZSLResult:
        data = self.averaged(split)
        return gzsl_metrics(self.distances(model, data, cfg.eval_batch_size), data.labels, data.unseen,
                            bias=bias, grid=grid)
