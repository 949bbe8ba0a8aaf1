"""f-VAEGAN-D2 (Xian et al., CVPR 2019) as the AVCA-GZSL benchmark trains it on averaged audio-visual features.

A feature generator conditioned on the class vector w learns to produce the (L2-normalised) audio-visual
feature x = normalize([audio; video]) (audio first, 0..255 VGGish codes and C3D fc7 as they come); a softmax
classifier trained on real seen features plus generated features of the unseen classes then classifies::

    x  = normalize([a; v])                       (B, audio_dim + video_dim)
    G(z, w)    = sigmoid(L(relu(L([z; w]))))     generator (the official ``Decoder``), z ~ N(0, I)
    E(x, w)    = (mu, log_var) of q(z | x, w)    encoder: L([x; w]) -> relu -> two linear heads
    D(x, w)    = L(lrelu_0.2(L([x; w])))         conditional WGAN critic (the official ``MLP_CRITIC``)
    D2(x)      = L(lrelu_0.2(L(x)))              unconditional critic (``MLP_CRITIC_V``)

One training step on a batch of positives (x, w), as ``vae_gan_d2_xu_fsl.py`` runs it (ExplainableML/AVCA-GZSL
at 2711aeb; written from reading it, see docs/methods/fvaegan.md):

1. critics: with z ~ N(0, I) and x~ = G(z, w) held fixed,
   ``D loss = D(x~, w) - D(x, w) + 10 GP(D)`` and ``D2 loss = ud (D2(x~) - D2(x) + 10 GP(D2))``, GP the WGAN-GP
   penalty (|grad| - 1)^2 on a random interpolation of x and x~; one Adam step of both critics;
2. on every ``generator_every``-th step of an epoch (the first included): with the critics frozen,
   ``z_e = mu + exp(log_var / 2) eps``, ``x^ = G(z_e, w)``,
   ``vae = BCE_sum(x^, x) + KL_sum(q(z|x,w) || N(0, I))``, ``g = -D(x^, w) - D(G(z, w), w)`` (the same z as in 1),
   ``total = gan_weight g + vae_weight vae``; one Adam step of G and E.

D2 is trained but never enters the generator's loss (so it changes nothing but the random-number stream).

The shared training loop (``model/methods/train.py``) calls ``losses`` -> backward -> ``optimizer.step()`` once per
batch. Here ``losses`` runs step 1 itself, with the optimiser that ``build_optimizer`` returned (one Adam holding
the four networks' parameters; a parameter without a gradient is not touched by Adam, so it behaves as the four
official optimisers), and returns the generator objective of step 2 as ``"total"`` for the loop's backward and
step. The official epoch loop leaves its ``for`` after the first batch, so an official epoch is one critic step
and one generator step: :data:`TRAIN_DEFAULTS` reproduces it with ``batches_per_epoch: 1``.

Evaluation (``distances``): for the class vectors it is given, a linear softmax classifier is trained on the real
features of the classes seen in training and on ``syn_num`` generated features of every other class, and the
distances are its negative log-probabilities. The real features come from a bank filled with the training
batches (this module only ever sees batches; the official code uses the whole training split); the bank is part
of the state dict, so a loaded checkpoint evaluates the same way. The classifier is cached per set of class
vectors and refitted whenever the generator or the bank has changed.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from model.methods.base import AveragedBatch, AveragedMethod, adam
from model.methods.checkpoints import state_mismatches
from model.methods.common import AveragedMethodAPI, FieldChecks, MethodConfig

BANK_DTYPES = {"float16": torch.float16, "float32": torch.float32}


@dataclass(kw_only=True)
class FVAEGANConfig(MethodConfig):
    """Sizes, loss weights, the evaluation classifier and the real-feature bank of f-VAEGAN-D2.

    Defaults: the official UCF run (run_scripts/UCF-GZSL/f-vaegan.sh with args_gen.py's defaults) at the cls
    feature sizes; :data:`PRESETS` holds what differs per dataset (``syn_num``)."""

    # --- inputs --------------------------------------------------------------------------------------------
    audio_dim: int = 128  # averaged VGGish codes on their 0..255 scale (normalised jointly with the video)
    video_dim: int = 4096  # averaged C3D fc7
    word_dim: int = 300  # --attSize: the class vectors that condition G, E and D

    # --- sizes (args_gen.py: --latent_size 300, decoder_layer_sizes [512, res], encoder [res, 300], --ndh 512)
    latent_dim: int = 300
    generator_hidden_dim: int = 512
    encoder_hidden_dim: int = 300
    critic_hidden_dim: int = 512

    # --- training ------------------------------------------------------------------------------------------
    gan_weight: float = 1e5  # --gan_weight: weight of the generator's WGAN term
    vae_weight: float = 1.0  # --vae_weight
    unconditional_weight: float = 1.0  # --ud_weight: D2's losses and penalty
    gp_weight: float = 10.0  # --lambda1: WGAN-GP weight
    beta1: float = 0.5  # --beta1 of the four Adam optimisers
    generator_every: int = 5  # a generator step on steps 0, 5, 10, ... of each epoch (``batch_idx % 5 == 0``)

    # --- the evaluation classifier (classifier_fsl.CLASSIFIER) -----------------------------------------------
    syn_num: int = 1000  # --syn_num: generated features per class without real features
    classifier_epochs: int = 30  # --nepoch_classifier
    classifier_lr: float = 1e-3  # --classifier_lr
    classifier_beta1: float = 0.5
    classifier_batch_size: int | None = None  # None: syn_num, as the official call passes it
    classifier_seed: int = 42  # the classifier's own generator (noise, init, order): repeatable evaluation

    # --- real features of the training classes (see the module docstring) -----------------------------------
    bank_per_class: int = 128  # real features kept per class (the latest ones)
    bank_negatives: bool = True  # the batches' negatives are real training samples too
    bank_dtype: str = "float16"  # storage of the normalised features (the bank is in the state dict)

    # --- reference quirks (REFERENCE_QUIRKS; off by default) -------------------------------------------------
    classifier_single_shuffle: bool = False

    def __post_init__(self) -> None:
        check = FieldChecks(self)
        check.positive_ints("audio_dim", "video_dim", "word_dim", "latent_dim", "generator_hidden_dim",
                            "encoder_hidden_dim", "critic_hidden_dim", "generator_every", "syn_num",
                            "classifier_epochs", "bank_per_class")
        bs = self.classifier_batch_size
        check(bs is None or (isinstance(bs, int) and bs > 0), "classifier_batch_size",
              f"must be a positive integer or null, got {bs!r}")
        for key in ("gan_weight", "vae_weight", "unconditional_weight", "gp_weight", "classifier_lr"):
            check(getattr(self, key) >= 0, key, f"must be >= 0, got {getattr(self, key)}")
        for key in ("beta1", "classifier_beta1"):
            check(0.0 <= getattr(self, key) < 1.0, key, f"must be in [0, 1), got {getattr(self, key)}")
        check(self.bank_dtype in BANK_DTYPES, "bank_dtype", f"use one of {sorted(BANK_DTYPES)}, got {self.bank_dtype!r}")

    @property
    def feature_dim(self) -> int:
        return self.audio_dim + self.video_dim


# Per-dataset settings of the official runs (run_scripts/<dataset>/f-vaegan.sh, both stages): only --syn_num
# differs. (The VGGSound stage-1 script also passes --reg_loss, which the f-VAEGAN script never reads.)
PRESETS: dict[str, dict[str, Any]] = {
    "ucf": {"syn_num": 1000},
    "vggsound": {"syn_num": 10000},
    "activitynet": {"syn_num": 1000},
}

# The official training protocol as TrainConfig keys, the same on every dataset: --lr 1e-3 for the four Adam
# optimisers (betas (0.5, 0.999), no weight decay); batches of 64 (args_gen.py's --bs and --batch_size defaults;
# the run scripts set neither); 50 epochs (--nepoch's default; --epochs 50 is also passed but not read); an epoch
# is one batch, because the loop breaks out after its first generator step, which comes at batch 0; no scheduler
# (--lr_scheduler is passed but this script builds none); seed 42.
TRAIN_DEFAULTS: dict[str, Any] = {
    "lr": 1e-3, "weight_decay": 0.0, "lr_scheduler": False, "epochs": 50, "batches_per_epoch": 1,
    "batch_size": 64, "seed": 42,
}

# Behaviours of the official code that change numbers and that f-VAEGAN-D2's paper does not have, as
# FVAEGANConfig field -> what the official code does. Off by default; on in the "reference" preset.
REFERENCE_QUIRKS: dict[str, str] = {
    "classifier_single_shuffle":
        "the evaluation classifier shuffles its training set once and then visits it in that same order in "
        "every epoch (classifier_fsl.CLASSIFIER.fit_gfsl); off: a new order every epoch",
}

# f-VAEGAN-D2 on the cls benchmarks (test, %): the MFT paper's Table 2, the only published source found
# (neither the TCAF paper nor the AVCA supplementary lists it on cls features).
PUBLISHED: dict[str, dict[str, float]] = {
    "vggsound": {"S": 12.77, "U": 0.95, "HM": 1.77, "ZSL": 1.91},
    "ucf": {"S": 17.29, "U": 8.47, "HM": 11.37, "ZSL": 11.11},
    "activitynet": {"S": 4.36, "U": 2.14, "HM": 2.87, "ZSL": 2.40},
}


# ------------------------------------------------------------------------------- the registry's module API
# (the audio enters on its 0..255 scale and is normalised jointly with the video, as officially: the pipeline's
# audio_input_scale is not used)

_API = AveragedMethodAPI("fvaegan", FVAEGANConfig, lambda cfg: FVAEGAN(cfg), presets=PRESETS,
                         quirks=REFERENCE_QUIRKS, train_defaults=TRAIN_DEFAULTS, presets_named="an f-VAEGAN preset")
dataset_config, make_config, build = _API.dataset_config, _API.make_config, _API.build
train_defaults, config_from_dict = _API.train_defaults, _API.config_from_dict


# ------------------------------------------------------------------------------------------------ networks


def _critic_init(module: nn.Module) -> None:
    """The official ``weights_init`` of the critics: every Linear N(0, 0.02), bias 0, in creation order."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            m.weight.data.normal_(0.0, 0.02)
            m.bias.data.zero_()


class Generator(nn.Module):
    """(z, w) -> Linear -> ReLU -> Linear -> sigmoid: a feature in (0, 1)^feature_dim. PyTorch's default Linear
    initialisation, as the official ``Decoder``."""

    def __init__(self, latent_dim: int, word_dim: int, hidden_dim: int, feature_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(latent_dim + word_dim, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, feature_dim)

    def forward(self, z: Tensor, w: Tensor) -> Tensor:
        return torch.sigmoid(self.fc2(F.relu(self.fc1(torch.cat((z, w), dim=1)))))


class Encoder(nn.Module):
    """(x, w) -> Linear -> ReLU -> (mean, log variance) of the latent code. Default Linear initialisation."""

    def __init__(self, feature_dim: int, word_dim: int, hidden_dim: int, latent_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(feature_dim + word_dim, hidden_dim)
        self.mean = nn.Linear(hidden_dim, latent_dim)
        self.log_var = nn.Linear(hidden_dim, latent_dim)

    def forward(self, x: Tensor, w: Tensor) -> tuple[Tensor, Tensor]:
        h = F.relu(self.fc1(torch.cat((x, w), dim=1)))
        return self.mean(h), self.log_var(h)


class Critic(nn.Module):
    """A one-hidden-layer WGAN critic: Linear -> LeakyReLU(0.2) -> Linear -> a score per row. Conditional
    (input [x; w], the official ``MLP_CRITIC``) when ``word_dim`` > 0, else on x alone (``MLP_CRITIC_V``)."""

    def __init__(self, feature_dim: int, word_dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.conditional = word_dim > 0
        self.fc1 = nn.Linear(feature_dim + word_dim, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, 1)
        _critic_init(self)

    def forward(self, x: Tensor, w: Tensor | None = None) -> Tensor:  # -> (B, 1)
        h = torch.cat((x, w), dim=1) if self.conditional else x
        return self.fc2(F.leaky_relu(self.fc1(h), 0.2))


def gradient_penalty(critic: Critic, real: Tensor, fake: Tensor, w: Tensor | None = None) -> Tensor:
    """WGAN-GP's mean (||grad_x critic(x_hat)||_2 - 1)^2 at x_hat = alpha real + (1 - alpha) fake, one alpha ~ U(0, 1)
    per row (drawn from the global RNG, as officially), with the graph kept for the critic's update."""
    alpha = torch.rand(real.shape[0], 1, device=real.device, dtype=real.dtype)
    differentiable = torch.is_grad_enabled()
    with torch.enable_grad():  # the penalty is a gradient, whatever the caller's grad mode
        x_hat = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
        out = critic(x_hat, w)
        (grad,) = torch.autograd.grad(out, x_hat, torch.ones_like(out), create_graph=differentiable)
        return ((grad.norm(2, dim=1) - 1) ** 2).mean()


# ---------------------------------------------------------------------------------------- the classifier


@dataclass
class SoftmaxClassifier:
    """The fitted evaluation classifier: log p = log_softmax(x W^T + b) over ``n`` classes, x normalised."""

    weight: Tensor  # (n, feature_dim)
    bias: Tensor  # (n,)

    def log_probs(self, x: Tensor) -> Tensor:
        """(N, n) log-probabilities of already normalised features ``x`` (the official test features are
        normalised once, before the classifier)."""
        return F.log_softmax(F.linear(x, self.weight, self.bias), dim=1)


def fit_softmax_classifier(features: Tensor, targets: Tensor, n_classes: int, *, epochs: int, batch_size: int,
                           lr: float, beta1: float, generator: torch.Generator,
                           single_shuffle: bool) -> SoftmaxClassifier:
    """Train the official evaluation classifier (classifier_fsl.CLASSIFIER with LINEAR_LOGSOFTMAX) on ``features``
    (rows are L2-normalised per batch) and ``targets`` (0..n_classes-1): a Linear layer initialised N(0, 0.02) with
    zero bias, NLL of its log-softmax, Adam(lr, (beta1, 0.999)), ``epochs`` passes in batches of ``batch_size``
    (the last one partial), and the classifier after the last epoch.

    Random numbers come from ``generator`` in the official order: the Linear layer's default initialisation (drawn
    and overwritten, so that the stream advances as officially), its N(0, 0.02) weights, one permutation of the
    rows, and with ``single_shuffle`` off a new permutation before every later epoch."""
    n, dim = features.shape
    device = features.device
    weight = torch.empty(n_classes, dim, device=device)
    bias = torch.empty(n_classes, device=device)
    bound = 1.0 / math.sqrt(dim) if dim else 0.0
    weight.uniform_(-bound, bound, generator=generator)  # nn.Linear's own init, overwritten next
    bias.uniform_(-bound, bound, generator=generator)
    weight.normal_(0.0, 0.02, generator=generator)
    bias.zero_()
    weight.requires_grad_(True)
    bias.requires_grad_(True)
    optimizer = adam([weight, bias], lr=lr, betas=(beta1, 0.999))
    order = torch.randperm(n, generator=generator, device=generator.device).to(device)
    for epoch in range(epochs):
        if epoch > 0 and not single_shuffle:
            order = torch.randperm(n, generator=generator, device=generator.device).to(device)
        for start in range(0, n, batch_size):
            rows = order[start:start + batch_size]
            x = F.normalize(features[rows], dim=1)
            loss = F.nll_loss(F.log_softmax(F.linear(x, weight, bias), dim=1), targets[rows])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return SoftmaxClassifier(weight.detach(), bias.detach())


# ------------------------------------------------------------------------------------------------- model


class FVAEGAN(AveragedMethod):
    name: ClassVar[str] = "fvaegan"
    compilable: ClassVar[bool] = False  # losses run the critics' backward and optimiser step themselves
    published: ClassVar[dict[str, dict[str, float]]] = PUBLISHED

    def __init__(self, cfg: FVAEGANConfig | None = None) -> None:
        super().__init__()
        cfg = cfg or FVAEGANConfig()
        self.cfg = cfg
        dim = cfg.feature_dim
        # Created in the official order (netG, netD, netD2, Encoder), so a seeded model starts from the official
        # initialisation.
        self.generator = Generator(cfg.latent_dim, cfg.word_dim, cfg.generator_hidden_dim, dim)
        self.critic = Critic(dim, cfg.word_dim, cfg.critic_hidden_dim)
        self.critic_unconditional = Critic(dim, 0, cfg.critic_hidden_dim)
        self.encoder = Encoder(dim, cfg.word_dim, cfg.encoder_hidden_dim, cfg.latent_dim)
        # The real-feature bank: the class vectors of the classes met in training (first-met order), how many
        # of their features were offered, and the kept features (normalised; rows of one class in slot order).
        self.register_buffer("bank_vectors", torch.zeros(0, cfg.word_dim))
        self.register_buffer("bank_counts", torch.zeros(0, dtype=torch.long))
        self.register_buffer("bank_labels", torch.zeros(0, dtype=torch.long))
        self.register_buffer("bank_features", torch.zeros(0, dim, dtype=BANK_DTYPES[cfg.bank_dtype]))
        # True once observe_training_split has put a whole training split in the bank: batches then add nothing.
        self.register_buffer("bank_from_split", torch.zeros((), dtype=torch.bool))
        self._optimizer: torch.optim.Optimizer | None = None
        self._epoch_step = 0  # the official batch_idx: steps since the model last entered train mode
        self._bank_version = 0
        self._banked_split: tuple | None = None  # what observe_training_split last banked (see _split_key)
        self._classifiers: list[tuple[Tensor, tuple, SoftmaxClassifier, Tensor]] = []

    # ------------------------------------------------------------------------------------------- helpers
    @property
    def param_dtype(self) -> torch.dtype:
        return self.generator.fc1.weight.dtype

    def features(self, audio: Tensor, video: Tensor) -> Tensor:
        """x = normalize([audio; video]) (audio first, both as given), as the official script feeds every net."""
        cfg = self.cfg
        if audio.ndim != 2 or audio.shape[1] != cfg.audio_dim:
            raise ValueError(f"audio must be [N, {cfg.audio_dim}], got {tuple(audio.shape)}; check model.audio_dim")
        if video.ndim != 2 or video.shape[1] != cfg.video_dim:
            raise ValueError(f"video must be [N, {cfg.video_dim}], got {tuple(video.shape)}; check model.video_dim")
        return F.normalize(torch.cat((audio, video), dim=1).to(self.param_dtype), dim=1)

    def _words(self, w: Tensor) -> Tensor:
        if w.ndim != 2 or w.shape[1] != self.cfg.word_dim:
            raise ValueError(f"class vectors must be [N, {self.cfg.word_dim}], got {tuple(w.shape)}; "
                             "set model.word_dim to the class-embedding size")
        return w.to(self.param_dtype)

    def _critic_parameters(self) -> list[nn.Parameter]:
        return [*self.critic.parameters(), *self.critic_unconditional.parameters()]

    # ------------------------------------------------------------------------------------------ training
    def build_optimizer(self, lr: float, weight_decay: float) -> torch.optim.Optimizer:
        """One Adam (betas (beta1, 0.999)) with a parameter group per official optimiser: G, E, D, D2. The model
        keeps a reference: ``losses`` steps the critics with it, the training loop the generator and encoder."""
        groups = [{"params": list(m.parameters())}
                  for m in (self.generator, self.encoder, self.critic, self.critic_unconditional)]
        self._optimizer = adam(groups, lr=lr, betas=(self.cfg.beta1, 0.999), weight_decay=weight_decay)
        return self._optimizer

    def train(self, mode: bool = True) -> FVAEGAN:
        if mode and not self.training:
            self._epoch_step = 0  # a new epoch: the official batch_idx restarts
        if mode:
            self._classifiers.clear()  # the generator is about to change
        return super().train(mode)

    def critic_losses(self, x: Tensor, w: Tensor, fake: Tensor) -> dict[str, Tensor]:
        """The critics' terms on real ``x`` and generated ``fake`` (no gradient to the generator). Backward runs
        term by term in the official order (so the gradients accumulate as officially) when ``self.training``
        and grad mode is on; the returned values are detached."""
        cfg = self.cfg
        fake = fake.detach()
        backward = self.training and torch.is_grad_enabled()
        terms: dict[str, Tensor] = {}

        def add(key: str, value: Tensor, sign: float) -> None:
            if backward:
                (sign * value).backward()
            terms[key] = value.detach()

        add("d_real", self.critic(x, w).mean(), -1.0)
        add("d2_real", cfg.unconditional_weight * self.critic_unconditional(x).mean(), -1.0)
        add("d_fake", self.critic(fake, w).mean(), 1.0)
        add("d2_fake", cfg.unconditional_weight * self.critic_unconditional(fake).mean(), 1.0)
        add("gp", cfg.gp_weight * gradient_penalty(self.critic, x, fake, w), 1.0)
        add("gp2", cfg.unconditional_weight * (cfg.gp_weight * gradient_penalty(self.critic_unconditional, x, fake)),
            1.0)
        return terms

    def generator_losses(self, x: Tensor, w: Tensor, noise: Tensor) -> dict[str, Tensor]:
        """The generator/encoder terms with the critics frozen (no gradient reaches them): the VAE loss on the
        encoded batch and the conditional critic's scores of the reconstruction and of G(noise, w)."""
        cfg = self.cfg
        critic_params = self._critic_parameters()
        flags = [p.requires_grad for p in critic_params]
        for p in critic_params:
            p.requires_grad_(False)
        try:
            mean, log_var = self.encoder(x, w)
            eps = torch.randn(x.shape[0], cfg.latent_dim, device=x.device, dtype=x.dtype)
            recon = self.generator(eps * torch.exp(0.5 * log_var) + mean, w)
            bce = F.binary_cross_entropy(recon, x, reduction="sum")
            kld = -0.5 * torch.sum(1 + log_var - mean.pow(2) - log_var.exp())
            vae = bce + kld
            g_recon = self.critic(recon, w).mean()
            g_fake = self.critic(self.generator(noise, w), w).mean()
            g_cost = -g_recon - g_fake
            total = cfg.gan_weight * g_cost + cfg.vae_weight * vae
        finally:
            for p, flag in zip(critic_params, flags, strict=True):
                p.requires_grad_(flag)
        return {"total": total, "vae": vae.detach(), "bce": bce.detach(), "kld": kld.detach(),
                "g_cost": g_cost.detach(), "g_recon": g_recon.detach(), "g_fake": g_fake.detach()}

    def losses(self, batch: AveragedBatch) -> dict[str, Tensor]:
        """One official step (module docstring): in train mode the critics' update happens here, with the
        optimiser from ``build_optimizer``; ``"total"`` is the generator objective that the caller backpropagates
        and steps (a zero without parameters on steps without a generator update). In eval mode nothing is
        updated and the terms are those of the current networks. The batch's real features join the bank."""
        x = self.features(batch.audio, batch.video)
        w = self._words(batch.word)
        if self.training:
            if self._optimizer is None:
                raise RuntimeError("FVAEGAN.losses updates the critics itself with the optimiser from "
                                   "build_optimizer(); call build_optimizer first (the training loop does)")
            if not bool(self.bank_from_split):
                self.add_real_features(x, w)
            if self.cfg.bank_negatives and not bool(self.bank_from_split):
                self.add_real_features(self.features(batch.neg_audio, batch.neg_video), self._words(batch.neg_word))
        step, self._epoch_step = self._epoch_step, self._epoch_step + 1
        noise = torch.randn(x.shape[0], self.cfg.latent_dim, device=x.device, dtype=x.dtype)
        with torch.no_grad():
            fake = self.generator(noise, w)
        if self.training:
            self._optimizer.zero_grad(set_to_none=True)
        d = self.critic_losses(x, w, fake)
        if self.training:
            self._optimizer.step()
            self._optimizer.zero_grad(set_to_none=True)
        out = {"d_cost": d["d_fake"] - d["d_real"] + d["gp"], "wasserstein": d["d_real"] - d["d_fake"],
               "gp": d["gp"], "d2_cost": d["d2_fake"] - d["d2_real"] + d["gp2"],
               "wasserstein2": d["d2_real"] - d["d2_fake"], "gp2": d["gp2"]}
        if step % self.cfg.generator_every == 0:
            out.update(self.generator_losses(x, w, noise))
        else:  # no generator step: nothing for the loop's backward to reach
            zero = torch.zeros((), device=x.device)
            out.update({k: zero for k in ("vae", "bce", "kld", "g_cost", "g_recon", "g_fake")})
            out["total"] = torch.zeros((), device=x.device, requires_grad=True)
        return out

    # ----------------------------------------------------------------------------------- real-feature bank
    @torch.no_grad()
    def observe_training_split(self, split: Any) -> None:
        """Put every video of a training split in the bank, as the official classifier uses the whole training
        split (``split``: an AveragedSplit, or anything with ``audio``, ``video``, ``labels`` and
        ``class_vectors``). The bank is replaced, holds the split's rows without the per-class cap, and the
        training batches no longer add to it. Calling it again with the same split changes nothing, and is
        skipped (the training loop calls it every epoch, and an epoch here is one batch)."""
        key = self._split_key(split)
        if key is not None and self._banked_split == (key, self._bank_key()):
            return
        features = self.features(split.audio, split.video)
        vectors = split.class_vectors[split.labels]
        self._clear_bank()
        self.add_real_features(features, vectors, cap=None)
        self.bank_from_split.fill_(True)
        self._banked_split = None if key is None else (key, self._bank_key())

    @staticmethod
    def _split_key(split: Any) -> tuple | None:
        """The split object (weakly) and the storage and in-place version of each tensor the bank is made from;
        None where the split cannot be referenced weakly (then it is banked at every call)."""
        try:
            ref = weakref.ref(split)
        except TypeError:
            return None
        tensors = (split.audio, split.video, split.labels, split.class_vectors)
        return (ref, *((t.device, t.data_ptr(), t.shape, t._version) for t in tensors))

    def _bank_key(self) -> tuple:
        """The bank as it stands: a batch, a load_state_dict or a cleared bank changes it."""
        bank = (self.bank_vectors, self.bank_counts, self.bank_labels, self.bank_features, self.bank_from_split)
        return (self._bank_version, *((t.data_ptr(), t.shape, t._version) for t in bank))

    def _clear_bank(self) -> None:
        for key in ("bank_vectors", "bank_counts", "bank_labels", "bank_features"):
            own = getattr(self, key)
            setattr(self, key, own.new_zeros((0, *own.shape[1:])))
        self.bank_from_split.fill_(False)
        self._bank_version += 1
        self._classifiers.clear()

    @torch.no_grad()
    def add_real_features(self, features: Tensor, class_vectors: Tensor, *, cap: int | None = -1) -> None:
        """Keep real training features (rows of normalize([audio; video])) with their class vectors: at most
        ``cap`` per class (default ``bank_per_class``; None: all), a full class replacing its oldest kept
        feature. Classes are told apart by their vectors, so the bank needs no class ids."""
        if features.shape[0] == 0:
            return
        if cap == -1:
            cap = self.cfg.bank_per_class
        if cap is None:
            cap = int(self.bank_counts.max()) + len(features) if len(self.bank_counts) else len(features)
        vectors = class_vectors.to(self.bank_vectors.dtype)
        classes = self._match_bank(vectors)
        unknown = classes < 0
        while bool(unknown.any()):  # classes not in the bank yet, in order of first appearance
            r = int(torch.nonzero(unknown)[0])
            same = (vectors == vectors[r]).all(dim=1) & unknown
            classes[same] = len(self.bank_vectors)
            unknown &= ~same
            self.bank_vectors = torch.cat((self.bank_vectors, vectors[r:r + 1]))
            self.bank_counts = torch.cat((self.bank_counts, self.bank_counts.new_zeros(1)))
        feats = features.to(self.bank_features.dtype)
        first = {}
        for r, c in enumerate(classes.tolist()):
            first.setdefault(c, []).append(r)
        appended, overwrite = [], []
        for c, rows in first.items():
            done = int(self.bank_counts[c])
            rows_t = torch.tensor(rows, device=feats.device)
            n_new = max(0, min(len(rows), cap - done))
            if n_new:
                appended.append((c, rows_t[:n_new]))
            if len(rows) > n_new:
                rest = rows_t[n_new:]
                slots = (done + n_new + torch.arange(len(rest), device=feats.device)) % cap
                overwrite.append((c, rest[-cap:], slots[-cap:]))
            self.bank_counts[c] += len(rows)
        if appended:
            self.bank_features = torch.cat((self.bank_features, *(feats[rows] for _, rows in appended)))
            self.bank_labels = torch.cat((self.bank_labels, *(self.bank_labels.new_full((len(rows),), c)
                                                              for c, rows in appended)))
        for c, rows, slots in overwrite:
            positions = torch.nonzero(self.bank_labels == c).flatten()  # slot order = insertion order
            self.bank_features[positions[slots]] = feats[rows]
        self._bank_version += 1
        self._classifiers.clear()

    def _match_bank(self, vectors: Tensor) -> Tensor:
        """For each row of ``vectors``, the bank class with exactly that vector, or -1."""
        out = torch.full((len(vectors),), -1, dtype=torch.long, device=vectors.device)
        if len(self.bank_vectors):
            eq = (vectors[:, None, :] == self.bank_vectors.to(vectors.device)[None, :, :]).all(dim=2)  # (N, Cb)
            hit = eq.any(dim=1)
            out[hit] = eq[hit].float().argmax(dim=1)
        return out

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs) -> None:
        # The bank's size depends on the training data: take the stored size before the copy.
        for key in ("bank_vectors", "bank_counts", "bank_labels", "bank_features"):
            stored = state_dict.get(prefix + key)
            own = getattr(self, key)
            if isinstance(stored, Tensor) and stored.shape != own.shape:
                setattr(self, key, own.new_empty(stored.shape))
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)
        self._bank_version += 1
        self._classifiers.clear()

    # ---------------------------------------------------------------------------------------- evaluation
    @torch.no_grad()
    def synthesize(self, class_vectors: Tensor, num: int, generator: torch.Generator | None = None, *,
                   out: Tensor | None = None) -> Tensor:
        """``num`` generated features per class vector, class by class ([len * num, feature_dim], written to
        ``out`` when given); each class draws its noise (num, latent_dim) in turn, as the official
        ``generate_syn_feature``."""
        w = self._words(class_vectors)
        if out is None:
            out = torch.empty(len(w) * num, self.cfg.feature_dim, device=w.device, dtype=w.dtype)
        assert out.shape == (len(w) * num, self.cfg.feature_dim), (tuple(out.shape), len(w), num)
        for i in range(len(w)):
            z = torch.randn(num, self.cfg.latent_dim, generator=generator, device=w.device, dtype=w.dtype)
            out[i * num:(i + 1) * num] = self.generator(z, w[i].expand(num, -1))
        return out

    def fit_classifier(self, class_vectors: Tensor,
                       generator: torch.Generator | None = None) -> tuple[SoftmaxClassifier, Tensor]:
        """Train the evaluation classifier for ``class_vectors`` (C, word_dim): the bank's real features of the
        classes among them, then ``syn_num`` generated features of each class without real ones (in column
        order). Classifier outputs are numbered by first appearance in that training set, as the official
        mapping; returns the classifier and, per column, its output index. ``generator`` defaults to one seeded
        with ``classifier_seed`` on the model's device."""
        cfg = self.cfg
        device = self.generator.fc1.weight.device
        if generator is None:
            generator = torch.Generator(device=device)
            generator.manual_seed(cfg.classifier_seed)
        cv = self._words(class_vectors.to(device))
        with torch.inference_mode(False), torch.enable_grad():
            bank_of_column = self._match_bank(cv.to(self.bank_vectors.dtype))  # (C,) bank class or -1
            column_of_bank = torch.full((len(self.bank_vectors),), -1, dtype=torch.long, device=device)
            hit = bank_of_column >= 0
            column_of_bank[bank_of_column[hit]] = torch.nonzero(hit).flatten()
            keep = column_of_bank[self.bank_labels] >= 0 if len(self.bank_labels) else self.bank_labels.bool()
            real_columns = column_of_bank[self.bank_labels[keep]]
            missing = torch.nonzero(~hit).flatten()
            n_real = len(real_columns)
            # One buffer for the real and the generated rows (VGGSound generates 10000 per class).
            features = torch.empty(n_real + len(missing) * cfg.syn_num, cfg.feature_dim, device=device,
                                   dtype=cv.dtype)
            features[:n_real] = self.bank_features[keep]
            self.synthesize(cv[missing], cfg.syn_num, generator, out=features[n_real:])
            columns = torch.cat((real_columns, missing.repeat_interleave(cfg.syn_num)))
            # Output index of each column: order of first appearance among the training rows.
            order = torch.unique_consecutive(columns).tolist()
            index = torch.full((len(cv),), -1, dtype=torch.long, device=device)
            for k, c in enumerate(dict.fromkeys(order)):
                index[c] = k
            classifier = fit_softmax_classifier(
                features, index[columns], len(cv), epochs=cfg.classifier_epochs,
                batch_size=cfg.classifier_batch_size or cfg.syn_num, lr=cfg.classifier_lr,
                beta1=cfg.classifier_beta1, generator=generator, single_shuffle=cfg.classifier_single_shuffle)
        return classifier, index

    def _stamp(self) -> tuple:
        return (self._bank_version, *((p.device, p.data_ptr(), p._version) for p in self.generator.parameters()))

    def classifier_for(self, class_vectors: Tensor) -> tuple[SoftmaxClassifier, Tensor]:
        """The fitted classifier for these class vectors, from the cache when neither the generator nor the bank
        has changed since it was fitted."""
        stamp = self._stamp()
        for vectors, when, classifier, index in self._classifiers:
            if when == stamp and vectors.shape == class_vectors.shape and torch.equal(
                    vectors, class_vectors.to(vectors.device, vectors.dtype)):
                return classifier, index
        classifier, index = self.fit_classifier(class_vectors)
        self._classifiers = [e for e in self._classifiers if e[1] == stamp][-3:]
        self._classifiers.append((class_vectors.detach().clone(), stamp, classifier, index))
        return classifier, index

    def distances(self, audio: Tensor, video: Tensor, class_vectors: Tensor) -> Tensor:
        """[N, C] = -log p(class | x) of the classifier fitted for ``class_vectors`` (lower = closer)."""
        classifier, index = self.classifier_for(class_vectors)
        return -classifier.log_probs(self.features(audio, video))[:, index]

    # ------------------------------------------------------------------------------- official checkpoints
    def load_official_state_dicts(self, official: Mapping[str, Mapping[str, Tensor]]) -> FVAEGAN:
        """Load the official networks ({"netG", "netD", "netD2", "Encoder"}: their state dicts) strictly; the bank
        is left as it is."""
        state = convert_official_state_dicts(official)
        own = {k: v for k, v in self.state_dict().items() if not k.startswith("bank_")}
        missing, extra, wrong = state_mismatches(own, state, "official")
        if missing or extra or wrong:
            raise ValueError(f"official f-VAEGAN networks do not match this config (missing: {missing[:8]}; "
                             f"unexpected: {extra[:8]}; shape mismatches: {wrong[:8]})")
        self.load_state_dict(state, strict=False)
        return self


_OFFICIAL_NETS = {"netG": "generator", "netD": "critic", "netD2": "critic_unconditional", "Encoder": "encoder"}
_OFFICIAL_LAYERS = {"generator": {"MLP.L0": "fc1", "MLP.L1": "fc2"},
                    "encoder": {"MLP.L0": "fc1", "linear_means": "mean", "linear_log_var": "log_var"},
                    "critic": {"fc1": "fc1", "fc2": "fc2"},
                    "critic_unconditional": {"fc1": "fc1", "fc2": "fc2"}}


def convert_official_state_dicts(official: Mapping[str, Mapping[str, Tensor]]) -> dict[str, Tensor]:
    """The official networks' state dicts ({"netG": ..., "netD": ..., "netD2": ..., "Encoder": ...}; the files
    that --netG, --netD, --netD2 and --Encoder load) in this module's names."""
    out: dict[str, Tensor] = {}
    unknown = [k for k in official if k not in _OFFICIAL_NETS]
    for net, state in official.items():
        ours = _OFFICIAL_NETS.get(net)
        if ours is None:
            continue
        for key, value in state.items():
            layer, _, param = key.rpartition(".")
            if layer not in _OFFICIAL_LAYERS[ours]:
                unknown.append(f"{net}.{key}")
                continue
            out[f"{ours}.{_OFFICIAL_LAYERS[ours][layer]}.{param}"] = value
    if unknown:
        raise ValueError(f"unknown official f-VAEGAN keys: {sorted(unknown)[:8]} (expected the state dicts of "
                         f"{sorted(_OFFICIAL_NETS)})")
    return out
