"""Network parts that several averaged methods share: the linear block of the official embedding networks, the
embedding networks of CJME and AVGZSLNet, and the concatenated input of DeViSE / ALE / SJE and APN."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from model.methods.base import AveragedBatch, AveragedMethod
from model.methods.common import FieldChecks, MethodConfig
from model.metrics import class_distances

# Official state-dict prefixes of f_a, f_v, f_t (the benchmark's TripletNet) -> TripletEmbeddings' nets.
TRIPLET_NET_PREFIXES = {
    "triplet_net.embedding_net1.fc.": "audio_net.net.",
    "triplet_net.embedding_net2.fc.": "video_net.net.",
    "triplet_net.embedding_net3.fc.": "word_net.net.",
}


@dataclass(kw_only=True)
class TripletNetSizes(MethodConfig):
    """The sizes of f_a, f_v, f_t: the first fields of CJME's and AVGZSLNet's configs."""

    # --- inputs (the official cls features are fed as they are: audio on the 0..255 scale, raw C3D)
    audio_dim: int = 128  # --input_size_audio
    video_dim: int = 4096  # --input_size_video
    word_dim: int = 300  # word-vector size (hard-coded 300 in the official f_t and AVGZSLNet's decoder)
    # --- embedding networks f_a, f_v, f_t
    hidden_dim: int = 1024  # --embeddings_hidden_size (f_a, f_v)
    word_hidden_dim: int = 300  # f_t's hidden size, hard-coded in the official code
    out_dim: int = 64  # joint embedding size, hard-coded in the official code

    def __post_init__(self) -> None:
        FieldChecks(self).positive_ints("audio_dim", "video_dim", "word_dim", "hidden_dim", "word_hidden_dim",
                                        "out_dim")


def linear_block(in_dim: int, out_dim: int, *, dropout: float, batch_norm: bool) -> list[nn.Module]:
    """Linear -> [BN] -> ReLU -> Dropout, created in that order: the block the official embedding nets are
    built from (AVGZSLNet's and CJME's hidden layer; ClipClap's hidden and output layers)."""
    layers: list[nn.Module] = [nn.Linear(in_dim, out_dim)]
    if batch_norm:
        layers.append(nn.BatchNorm1d(out_dim))
    return [*layers, nn.ReLU(), nn.Dropout(dropout)]


class EmbeddingNet(nn.Module):
    """Linear -> [BN] -> ReLU -> Dropout -> Linear [-> ReLU]: the official ``EmbeddingNet`` of AVGZSLNet and,
    with ``final_relu``, CJME's ``EmbeddingNetCJME``, whose final ReLU makes every embedding >= 0.

    ``net`` has the module indices of the official ``fc`` Sequential, so official state dicts map onto it by
    renaming the prefix only; the modules are created in the official order, so a seeded construction starts
    from the official initial weights.
    """

    def __init__(
        self, in_dim: int, hidden_dim: int, out_dim: int, *, dropout: float, batch_norm: bool, final_relu: bool
    ) -> None:
        super().__init__()
        layers = [*linear_block(in_dim, hidden_dim, dropout=dropout, batch_norm=batch_norm),
                  nn.Linear(hidden_dim, out_dim)]
        if final_relu:
            layers.append(nn.ReLU())
        self.net = nn.Sequential(*layers)
        self.in_dim = in_dim

    def forward(self, x: Tensor) -> Tensor:  # (N, in_dim) -> (N, out_dim)
        assert x.ndim == 2 and x.shape[1] == self.in_dim, f"expected (N, {self.in_dim}), got {tuple(x.shape)}"
        return self.net(x)


def one_batch(net: nn.Module, *parts: Tensor) -> list[Tensor]:
    """``net`` on all parts in one call (one BatchNorm batch), split back into the parts."""
    return list(net(torch.cat(parts)).split([len(p) for p in parts]))


class TripletEmbeddings(AveragedMethod):
    """The audio, video and word embedding nets f_a, f_v, f_t of CJME and AVGZSLNet (``audio_net``,
    ``video_net``, ``word_net``, which the subclass creates in its official constructor order) on positives and
    their negatives, and on the class vectors."""

    audio_net: EmbeddingNet
    video_net: EmbeddingNet
    word_net: EmbeddingNet

    @property
    def param_dtype(self) -> torch.dtype:
        raise NotImplementedError

    def embed(
        self, audio: Tensor, video: Tensor, word: Tensor, neg_audio: Tensor, neg_video: Tensor, neg_word: Tensor,
    ) -> tuple[list[Tensor], dict[str, Tensor]]:
        """The six inputs (B, A|V|W) in the parameters' dtype, and the embeddings of the positives (a_p, v_p,
        t_p) and of the negatives (a_q, v_q, t_q), each (B, out_dim)."""
        x = [t.to(self.param_dtype) for t in (audio, video, word, neg_audio, neg_video, neg_word)]
        assert all(t.shape[0] == x[0].shape[0] for t in x), (
            f"batch sizes differ: {[tuple(t.shape) for t in x]}")
        if self.cfg.bn_per_call:
            # The official call order (a, v, t of the positives, then of the negatives): BN statistics and
            # dropout masks come out the same.
            a_p, v_p, t_p = self.audio_net(x[0]), self.video_net(x[1]), self.word_net(x[2])
            a_q, v_q, t_q = self.audio_net(x[3]), self.video_net(x[4]), self.word_net(x[5])
        else:
            a_p, a_q = one_batch(self.audio_net, x[0], x[3])
            v_p, v_q = one_batch(self.video_net, x[1], x[4])
            t_p, t_q = one_batch(self.word_net, x[2], x[5])
        return x, {"a_p": a_p, "v_p": v_p, "t_p": t_p, "a_q": a_q, "v_q": v_q, "t_q": t_q}

    def class_embeddings(self, class_vectors: Tensor) -> Tensor:
        """f_t of the class vectors: (C, W) -> (C, out_dim)."""
        assert class_vectors.ndim == 2 and class_vectors.shape[1] == self.cfg.word_dim, (
            f"class vectors must be (C, {self.cfg.word_dim}), got {tuple(class_vectors.shape)}; "
            "set word_dim to the class-embedding size")
        return self.word_net(class_vectors.to(self.param_dtype))

    def modality_distances(self, audio: Tensor, video: Tensor, class_vectors: Tensor) -> tuple[Tensor, Tensor]:
        """[N, C] ||a - t_c|| and [N, C] ||v - t_c|| for N videos and C class vectors (the caller sets the mode
        and no_grad)."""
        dtype = self.param_dtype
        a, v = self.audio_net(audio.to(dtype)), self.video_net(video.to(dtype))  # (N, D)
        t = self.class_embeddings(class_vectors)  # (C, D)
        return class_distances(a, t), class_distances(v, t)


class ConcatFeatureMethod(AveragedMethod):
    """A method over x = [video; audio] (video first, as the official code), compared with the class vectors:
    DeViSE / ALE / SJE and APN. Needs ``cfg`` with audio_dim, video_dim, word_dim, normalise_inputs and
    l2_evaluation, and ``param_dtype``."""

    uses_negative_features = False  # the ranking losses compare each sample with every class, not with a negative

    @property
    def param_dtype(self) -> torch.dtype:
        raise NotImplementedError

    def features(self, audio: Tensor, video: Tensor) -> Tensor:
        """x = [video; audio] (video first, as the official code), L2-normalised when cfg.normalise_inputs."""
        cfg = self.cfg
        if audio.ndim != 2 or audio.shape[1] != cfg.audio_dim:
            raise ValueError(f"audio must be [N, {cfg.audio_dim}], got {tuple(audio.shape)}; check model.audio_dim")
        if video.ndim != 2 or video.shape[1] != cfg.video_dim:
            raise ValueError(f"video must be [N, {cfg.video_dim}], got {tuple(video.shape)}; check model.video_dim")
        x = torch.cat([video, audio], dim=1).to(self.param_dtype)
        return F.normalize(x, dim=1) if cfg.normalise_inputs else x

    def _class_matrix(self, class_vectors: Tensor) -> Tensor:
        if class_vectors.ndim != 2 or class_vectors.shape[1] != self.cfg.word_dim:
            raise ValueError(f"class vectors must be [C, {self.cfg.word_dim}], got {tuple(class_vectors.shape)}; "
                             "set model.word_dim to the class-embedding size")
        return class_vectors.to(self.param_dtype)

    @staticmethod
    def _labels(batch: AveragedBatch) -> Tensor:
        """The batch's labels as column indices into its class vectors, checked."""
        labels = batch.labels.long()
        n_classes = batch.class_vectors.shape[0]
        # Not while torch.compile traces the step (train.compile): reading the values is a graph break; the
        # training loop's sampler only draws columns of the split's classes.
        if labels.numel() and not torch.compiler.is_compiling() and (
                int(labels.min()) < 0 or int(labels.max()) >= n_classes):
            raise ValueError(f"batch labels must be columns of class_vectors (0..{n_classes - 1})")
        return labels

    def _distances(self, predicted: Tensor, class_vectors: Tensor) -> Tensor:
        """[N, C] from predicted class vectors (N, word_dim): L2 to the raw class vectors (quirk
        ``l2_evaluation``, the official evaluation), else minus the compatibility."""
        classes = self._class_matrix(class_vectors)
        if self.cfg.l2_evaluation:
            return torch.cdist(predicted, classes)
        return -(predicted @ classes.t())
