"""ClipClap-GZSL (Kurzendörfer, Mercea, Koepke, Akata; CVPRW 2024) as its official code trains and evaluates it.

On one CLIP image embedding and one CLAP audio embedding per video, and a class vector that concatenates the
class name's CLIP and CLAP text embeddings::

    [v; a] (B, V+A) -- O_enc: Linear-BN-ReLU-Dropout ------------> o (B,512)
    o -------------- O_proj: two layers (512 -> 512 -> 64) -------> theta_o --> D_o (64 -> 512 -> 512) --> rho_o
    t (B, W) ------- W_enc: Linear-BN-ReLU-Dropout ------------> w (B,512)
    w -------------- W_proj: Linear-BN-ReLU-Dropout (512 -> 64) -> theta_w --> D_w (64 -> 512) ---------> rho_w

    ce    = CrossEntropy(theta_o @ W_proj(W_enc(T))^T, y)     T: the class vectors of the training split
    reg   = MSE(theta_o, theta_w)
    rec   = MSE(w, rho_o) + MSE(w, rho_w)                     (w is not detached)
    total = ce + reg + rec

Every embedding net ends in BN -> ReLU -> Dropout, so theta_o, theta_w and every reconstruction are >= 0.
Classification (the official evaluation) is by the nearest ``theta_w`` of each class (torch.cdist, L2) to
``theta_o``. With ``modality: audio`` (``video``) only the audio (video) embedding enters O_enc and only the
CLAP (CLIP) part of the class vector enters W_enc; ``word_embeddings`` picks the part of the class vector that
W_enc reads when both modalities are used (official flag values "clip", "wavcaps", "both"; "clap" here).

The class vector's first ``text_split`` entries are the CLIP text embedding, the rest the CLAP one (official:
512 + 1024 = 1536). The official code hard-codes 1536 / 1024 / 512 for the inputs and 512 for the width of
O_enc and W_enc; here they are config keys, read from the data where the data has them. Behaviours of the
official code (dkurzend/ClipClap-GZSL, 56b8e1b) that change numbers and that the paper does not describe are
switches listed in :data:`REFERENCE_QUIRKS`, off by default and on under ``preset: reference``;
docs/methods/clipclap.md says what each does.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from model.methods.base import AveragedBatch, AveragedMethod
from model.methods.checkpoints import (
    load_strictly,
    official_shape,
    read_data_parallel_state_dict,
    rename_prefixes,
)
from model.methods.common import BENCHMARK_TRAIN_DEFAULTS, AveragedMethodAPI, FieldChecks, MethodConfig
from model.methods.nets import linear_block
from model.published import PUBLISHED

OFFICIAL_COMMIT = "56b8e1b920622c06aaac2b265470d0892c9f8b42"  # dkurzend/ClipClap-GZSL
MODALITIES = ("both", "audio", "video")
WORD_EMBEDDINGS = ("both", "clip", "clap")


@dataclass(kw_only=True)
class ClipClapConfig(MethodConfig):
    """Sizes, dropouts and loss switches of ClipClap; the defaults are the official run of every dataset
    (config/clipclap.yaml with the README's command lines)."""

    # --- inputs --------------------------------------------------------------------------------------------
    audio_dim: int = 1024  # CLAP audio embedding (WavCaps HTSAT-BERT, L2-normalised)
    video_dim: int = 512  # CLIP image embedding (ViT-B/32, L2-normalised)
    word_dim: int = 1536  # class vector: [CLIP text embedding | CLAP text embedding]
    text_split: int = 512  # how many leading entries of the class vector are the CLIP text embedding
    modality: str = "both"  # --modality: which embeddings enter O_enc ("both": [video; audio])
    word_embeddings: str = "both"  # --word_embeddings: the part of the class vector W_enc reads (modality both)

    # --- sizes (official: 512 hard-coded, --decoder_hidden_size 512, dim_out 64) ------------------------
    embed_dim: int = 512  # output of O_enc and W_enc, input of O_proj / W_proj, output of D_o / D_w
    decoder_hidden_dim: int = 512  # hidden layer of O_proj and D_o
    out_dim: int = 64  # theta width

    # --- dropouts ----------------------------------------------------------------------------------------
    dropout_encoder: float = 0.1  # O_enc, W_enc (hard-coded 0.1; --embedding_dropout is not read)
    dropout_decoder: float = 0.1  # --decoder_dropout: O_proj, D_o
    dropout_additional: float = 0.1  # --additional_dropout: W_proj, D_w

    # --- BatchNorm: --embeddings_batch_norm adds the BN after the hidden layer of O_proj and D_o ------------
    batch_norm: bool = True

    # --- losses (config/clipclap.yaml: all on, weights 1) --------------------------------------------------
    cross_entropy_loss: bool = True
    reg_loss: bool = True
    rec_loss: bool = True

    # --- reference quirks of the official code (see REFERENCE_QUIRKS; all off by default) --------------------
    post_step_train_embeddings: bool = False

    def __post_init__(self) -> None:
        check = FieldChecks(self)
        check.positive_ints("audio_dim", "video_dim", "word_dim", "embed_dim", "decoder_hidden_dim", "out_dim")
        check.dropouts("dropout_encoder", "dropout_decoder", "dropout_additional")
        check(self.modality in MODALITIES, "modality", f"must be one of {MODALITIES}, got {self.modality!r}")
        check(self.word_embeddings in WORD_EMBEDDINGS, "word_embeddings",
              f"must be one of {WORD_EMBEDDINGS}, got {self.word_embeddings!r}")
        if self.text_slice != slice(None):
            check(isinstance(self.text_split, int) and 0 < self.text_split < self.word_dim, "text_split",
                  f"must be in (0, word_dim={self.word_dim}) when the class vector is split "
                  f"(modality {self.modality!r}, word_embeddings {self.word_embeddings!r}), got {self.text_split!r}; "
                  "the class vectors must be [CLIP text | CLAP text] embeddings")

    @property
    def input_dim(self) -> int:
        """Width of O_enc's input."""
        return {"both": self.video_dim + self.audio_dim, "audio": self.audio_dim, "video": self.video_dim}[
            self.modality]

    @property
    def text_slice(self) -> slice:
        """The entries of the class vector that W_enc reads (the official w[:, 512:] / w[:, :512] / w)."""
        clip, clap = slice(None, self.text_split), slice(self.text_split, None)
        if self.modality == "audio":
            return clap
        if self.modality == "video":
            return clip
        return {"both": slice(None), "clip": clip, "clap": clap}[self.word_embeddings]

    @property
    def text_dim(self) -> int:
        return len(range(self.word_dim)[self.text_slice])


# The official runs use config/clipclap.yaml on all three datasets: the model is the same everywhere.
PRESETS: dict[str, dict[str, Any]] = {"ucf": {}, "vggsound": {}, "activitynet": {}}

# The official training (config/clipclap.yaml, README command lines): Adam over every parameter with the L2
# weight decay 1e-5 that the model's constructor hard-codes, ReduceLROnPlateau("max", patience 3, factor 0.1)
# on the val HM, 300 class-balanced batches of 64 per epoch, seed 42; lr and epochs per dataset below.
TRAIN_DEFAULTS: dict[str, Any] = {**BENCHMARK_TRAIN_DEFAULTS, "weight_decay": 1e-5, "batch_size": 64,
                                  "batches_per_epoch": 300, "lr": 7e-5, "epochs": 20}
TRAIN_PRESETS: dict[str, dict[str, Any]] = {
    "ucf": {"lr": 7e-5, "epochs": 20},
    "vggsound": {"lr": 1e-4, "epochs": 15},
    "activitynet": {"lr": 1e-4, "epochs": 15},
}

REFERENCE_QUIRKS: dict[str, str] = {
    "post_step_train_embeddings":
        "after each optimiser step, train_step re-embeds the positives with get_embeddings in train mode "
        "(outputs unused), which moves the BN running statistics of O_enc, W_enc, O_proj and W_proj and draws "
        "dropout masks; off: no such pass (after_step does nothing)",
}

# ------------------------------------------------------------------------------- the registry's module API

_API = AveragedMethodAPI("clipclap", ClipClapConfig, lambda cfg: ClipClap(cfg), presets=PRESETS,
                         quirks=REFERENCE_QUIRKS, train_defaults=TRAIN_DEFAULTS, presets_named="a ClipClap preset")
dataset_config, make_config, build, config_from_dict = (_API.dataset_config, _API.make_config, _API.build,
                                                        _API.config_from_dict)


def train_defaults(name: str, dataset: str | None) -> dict[str, Any]:
    """The official training settings for ``dataset`` (lr and epochs differ; the UCF run's without one)."""
    _API.check_name(name)
    return {**TRAIN_DEFAULTS, **TRAIN_PRESETS.get(dataset or "", {})}


# ------------------------------------------------------------------------------------------------ modules


class EmbeddingNet(nn.Module):
    """Linear -> BN -> ReLU -> Dropout, or with ``hidden_dim`` Linear -> [BN] -> ReLU -> Dropout -> Linear -> BN
    -> ReLU -> Dropout (the official ``EmbeddingNet``; ``batch_norm`` is the optional first BN).

    ``net`` has the module indices of the official ``fc`` Sequential, so official state dicts map onto it by
    renaming the prefix; the modules are created in the official order (seeded construction gives the official
    initial weights).
    """

    def __init__(self, in_dim: int, out_dim: int, *, dropout: float, hidden_dim: int | None = None,
                 batch_norm: bool = True) -> None:
        super().__init__()
        layers = linear_block(in_dim, hidden_dim, dropout=dropout, batch_norm=batch_norm) if hidden_dim else []
        layers += linear_block(hidden_dim or in_dim, out_dim, dropout=dropout, batch_norm=True)
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def modality_input(cfg: ClipClapConfig, audio: Tensor, video: Tensor) -> Tensor:
    """What enters the fused encoder: [video; audio] (official order), or one of them."""
    if audio.shape[-1] != cfg.audio_dim or video.shape[-1] != cfg.video_dim:
        raise ValueError(f"inputs of {audio.shape[-1]}-d audio and {video.shape[-1]}-d video, but the method's "
                         f"model.audio_dim / model.video_dim are {cfg.audio_dim} / {cfg.video_dim}: set them to the "
                         "store's feature sizes (or leave them out to read them from the data)")
    if cfg.modality == "audio":
        return audio
    if cfg.modality == "video":
        return video.float()
    return torch.cat((video.float(), audio), dim=1)


def text_input(cfg: ClipClapConfig, word: Tensor) -> Tensor:
    """The part of the class vectors the word encoder reads."""
    if word.shape[-1] != cfg.word_dim:
        raise ValueError(f"class vectors of {word.shape[-1]} dimensions, but model.word_dim is {cfg.word_dim}: "
                         "leave model.word_dim out (it defaults to the class embeddings) or rebuild them")
    return word[:, cfg.text_slice]


# ------------------------------------------------------------------------------------------------- model


class ClipClap(AveragedMethod):
    name = "clipclap"
    published: ClassVar[dict[str, dict[str, float]]] = PUBLISHED["clipclap"]

    def __init__(self, cfg: ClipClapConfig | None = None) -> None:
        super().__init__()
        cfg = cfg or ClipClapConfig()
        self.cfg = cfg
        # Created in the official constructor order (O_enc, W_enc, O_proj, D_o, W_proj, D_w).
        self.input_encoder = EmbeddingNet(cfg.input_dim, cfg.embed_dim, dropout=cfg.dropout_encoder)
        self.word_encoder = EmbeddingNet(cfg.text_dim, cfg.embed_dim, dropout=cfg.dropout_encoder)
        self.input_proj = EmbeddingNet(cfg.embed_dim, cfg.out_dim, hidden_dim=cfg.decoder_hidden_dim,
                                       dropout=cfg.dropout_decoder, batch_norm=cfg.batch_norm)
        self.input_decoder = EmbeddingNet(cfg.out_dim, cfg.embed_dim, hidden_dim=cfg.decoder_hidden_dim,
                                          dropout=cfg.dropout_decoder, batch_norm=cfg.batch_norm)
        self.word_proj = EmbeddingNet(cfg.embed_dim, cfg.out_dim, dropout=cfg.dropout_additional)
        self.word_decoder = EmbeddingNet(cfg.out_dim, cfg.embed_dim, dropout=cfg.dropout_additional)

    def encode(self, audio: Tensor, video: Tensor) -> Tensor:
        """o: the fused audio-visual embedding (O_enc's output)."""
        return self.input_encoder(modality_input(self.cfg, audio, video))

    def forward(self, audio: Tensor, video: Tensor, word: Tensor) -> dict[str, Tensor]:
        """The official forward on positives and their class vectors (official names), in its call order
        (O_enc, W_enc, O_proj, D_o, W_proj, D_w: it decides the dropout masks)."""
        o = self.encode(audio, video)
        w = self.word_encoder(text_input(self.cfg, word))
        theta_o = self.input_proj(o)
        rho_o = self.input_decoder(theta_o)
        theta_w = self.word_proj(w)
        rho_w = self.word_decoder(theta_w)
        return {"o": o, "w": w, "theta_o": theta_o, "rho_o": rho_o, "theta_w": theta_w, "rho_w": rho_w}

    def class_embeddings(self, class_vectors: Tensor) -> Tensor:
        """theta_w of every class: W_proj(W_enc(T))."""
        return self.word_proj(self.word_encoder(text_input(self.cfg, class_vectors)))

    def needs_class_scores(self) -> bool:
        """Whether the losses score every video against every class of the split."""
        return self.cfg.cross_entropy_loss

    def loss_terms(self, out: Mapping[str, Tensor], class_vectors: Tensor, labels: Tensor) -> dict[str, Tensor]:
        """ce, reg, rec and their sum (a switched-off term is 0, as officially), then any terms a subclass adds
        (:meth:`extra_loss_terms`). The class embeddings of the scores are computed once, in the current mode,
        so in training they pass the BNs as a batch of classes (officially)."""
        zero = out["theta_o"].new_zeros(())
        terms = {"ce": zero, "reg": zero, "rec": zero}
        scores = out["theta_o"] @ self.class_embeddings(class_vectors).t() if self.needs_class_scores() else None
        if self.cfg.cross_entropy_loss:
            terms["ce"] = F.cross_entropy(scores, labels)
        if self.cfg.reg_loss:
            terms["reg"] = F.mse_loss(out["theta_o"], out["theta_w"])
        if self.cfg.rec_loss:
            terms["rec"] = F.mse_loss(out["rho_o"], out["w"]) + F.mse_loss(out["rho_w"], out["w"])
        total = terms["rec"] + terms["reg"] + terms["ce"]  # the official order of the sum
        for key, (value, weight) in self.extra_loss_terms(out, scores, class_vectors, labels).items():
            terms[key] = value
            total = total + weight * value
        terms["total"] = total
        return terms

    def extra_loss_terms(self, out: Mapping[str, Tensor], scores: Tensor | None, class_vectors: Tensor,
                         labels: Tensor) -> dict[str, tuple[Tensor, float]]:
        """Terms a method built on ClipClap adds to the loss: name -> (value, weight in the total). None here."""
        return {}

    def losses(self, batch: AveragedBatch) -> dict[str, Tensor]:
        """One official training step's losses on the positives (ClipClap draws no negatives)."""
        return self.loss_terms(self(batch.audio, batch.video, batch.word), batch.class_vectors, batch.labels)

    def embeddings(self, audio: Tensor, video: Tensor, class_vectors: Tensor) -> tuple[Tensor, Tensor]:
        """(theta_o, theta_w) in the official ``get_embeddings`` call order (O_enc, W_enc, O_proj, W_proj)."""
        o = self.encode(audio, video)
        w = self.word_encoder(text_input(self.cfg, class_vectors))
        return self.input_proj(o), self.word_proj(w)

    def distances(self, audio: Tensor, video: Tensor, class_vectors: Tensor) -> Tensor:
        """[N, C] L2 distances between theta_o and each class's theta_w (the official evaluation)."""
        theta_o, theta_w = self.embeddings(audio, video, class_vectors)
        return torch.cdist(theta_o, theta_w)

    def after_step(self, batch: AveragedBatch) -> None:
        """Reference quirk ``post_step_train_embeddings``: the official ``train_step`` embeds the positives once
        more in train mode after each step, which moves only the BN running statistics (and draws dropout)."""
        if self.cfg.post_step_train_embeddings and self.training:
            with torch.no_grad():
                self.embeddings(batch.audio, batch.video, batch.word)

    def build_optimizer(self, lr: float, weight_decay: float) -> torch.optim.Optimizer:
        """Adam (coupled L2 weight decay) over every parameter in construction order, as the official
        ``optimizer_gen``; official values lr 7e-5 (UCF) / 1e-4, weight decay 1e-5."""
        return torch.optim.Adam(self.parameters(), lr=lr, weight_decay=weight_decay)


# ------------------------------------------------------------------------------------------------ official
# Official module -> this module's (the Sequential indices are the same).
OFFICIAL_PREFIXES = {"O_enc.fc.": "input_encoder.net.", "W_enc.fc.": "word_encoder.net.",
                     "O_proj.fc.": "input_proj.net.", "D_o.fc.": "input_decoder.net.",
                     "W_proj.fc.": "word_proj.net.", "D_w.fc.": "word_decoder.net."}


def official_state_dict(source: str | Path | Mapping[str, Any]) -> dict[str, Tensor]:
    """The official state dict of a checkpoint file (``{"epoch", "model", "optimizer", "metric"}`` as
    src/utils.save_best_model writes it), of such a dict, or the state dict itself; a ``module.`` prefix is
    dropped."""
    return read_data_parallel_state_dict(source, "ClipClap_model", "O_enc.fc.")


def convert_official_state_dict(source: str | Path | Mapping[str, Any]) -> dict[str, Tensor]:
    """Rename an official ClipClap state dict into this module's layout (tensors unchanged)."""
    return rename_prefixes(official_state_dict(source), OFFICIAL_PREFIXES, "ClipClap_model")


def config_from_official_state_dict(source: str | Path | Mapping[str, Any], **overrides: Any) -> ClipClapConfig:
    """The sizes and BN setting of an official state dict; the inputs (``audio_dim``, ``video_dim``,
    ``word_dim``, ``text_split``, ``modality``, ``word_embeddings``) and dropouts come from ``overrides`` or the
    defaults and are checked against the state dict's input widths."""
    state = official_state_dict(source)

    def shape(key: str) -> tuple[int, ...]:
        return official_shape(state, key, "ClipClap_model")

    batch_norm = "O_proj.fc.1.running_mean" in state
    hidden, embed = shape("O_proj.fc.0.weight")
    fields = {"embed_dim": embed, "decoder_hidden_dim": hidden,
              "out_dim": shape(f"O_proj.fc.{4 if batch_norm else 3}.weight")[0], "batch_norm": batch_norm}
    cfg = ClipClapConfig.from_dict({**fields, **overrides})
    got = (shape("O_enc.fc.0.weight")[1], shape("W_enc.fc.0.weight")[1])
    if got != (cfg.input_dim, cfg.text_dim):
        raise ValueError(f"the official state dict reads {got[0]}-d inputs and {got[1]}-d class vectors, the config "
                         f"{cfg.input_dim} and {cfg.text_dim} (modality {cfg.modality!r}, word_embeddings "
                         f"{cfg.word_embeddings!r}); pass the run's audio_dim, video_dim, word_dim, text_split, "
                         "modality and word_embeddings")
    return cfg


def load_official_checkpoint(model: ClipClap, source: str | Path | Mapping[str, Any]) -> ClipClap:
    """Load an official ClipClap checkpoint (file, checkpoint dict or state dict) into ``model``, strictly."""
    return load_strictly(model, convert_official_state_dict(source), what="ClipClap_model",
                         fix="build the config with "
                             "model.methods.clipclap.config_from_official_state_dict(checkpoint, ...)")
