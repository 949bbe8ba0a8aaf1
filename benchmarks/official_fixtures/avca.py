"""Record what the official AVCA computes, for tests/test_method_avca.py.

Builds the official AVCA model (``src/model_improvements.py`` of ExplainableML/AVCA-GZSL at commit
2711aeb5d7257ece4c5464fa46d7849a4edf6470) on CPU at small sizes with a fixed seed, runs one official
training step on small random inputs (positives and their negatives, as ``train_step`` feeds them) and the
official evaluation embedding pass, and saves everything a re-implementation must reproduce to
``tests/fixtures/methods/avca.pt`` (about 180 KB).

Run as benchmarks/official_fixtures/common.py says: ``.venv/bin/python benchmarks/official_fixtures/avca.py
--official <work tree of the official code>``.

The official files are used unchanged. What this script changes in its own process, and why:

* ``torch.optim.lr_scheduler.ReduceLROnPlateau`` drops the ``verbose`` argument, which torch 2.11 no longer
  accepts (the official constructor passes ``verbose=True``; the scheduler is never stepped here);
* ``einops`` is replaced by a two-pattern ``rearrange`` when it is not installed (the official attention
  only splits and merges heads: ``b n (h d) -> b h n d`` and back);
* the sizes the official model hard-codes (300 for the word vectors and for the encoder / transformer width,
  3 heads of 100, MLP 64) are shrunk by wrapping the ``__init__`` of the official ``EmbeddingNet`` and
  ``Transformer`` while the model is built, and ``pos_emb1D`` (``randn(2, 300)``) is replaced by
  ``randn(2, dim)`` after construction; the official optimiser is built in the constructor and does not hold
  ``pos_emb1D`` either way. The parameter count at the real UCF cls config is taken from an unshrunk model.

Recorded (float32, CPU): the initial official state dict; the inputs; in train mode with dropout 0, every
forward output of the official training step, every loss term (read from the locals of the official
``AVCA.backward``), the gradients after its backward, the state after its ``optimizer_gen`` step, the state
after the train-mode ``get_embeddings`` that ``train_step`` runs after each step; then, in eval mode, the
evaluation embeddings and distances (``torch.cdist(theta_v, theta_w)``). A second run with the UCF dropout
rates and a fixed RNG seed records the losses, theta_v and the BN statistics after the same step and
post-step pass, to check that a re-implementation draws its dropout masks in the official order. Also: the
names of the parameters that ``optimizer_gen`` steps, and the official parameter counts.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # the sibling module: stand-ins, patches and saving shared by these scripts
    COMMIT,
    buffers,
    detached_state,
    gradients,
    hyper_parameters,
    import_official,
    install_einops_stub,
    install_reduce_lr_without_verbose,
    make_inputs,
    on_return,
    record_and_save,
    tensor_locals,
)

# Small sizes: every width differs from the others so that a wiring mistake changes a shape.
SMALL = {"audio": 6, "video": 10, "word": 12, "dim": 15, "encoder_hidden": 16, "decoder_hidden": 14,
         "out": 8, "depth": 2, "heads": 3, "dim_head": 5, "mlp": 8}
BATCH, N_CLASSES, N_EVAL = 8, 5, 7
SEED = 0
DROPOUT_SEED = 1234
UCF_DROPOUTS = {"dropout_encoder": 0.2, "dropout_decoder": 0.3, "additional_dropout": 0.5}

# The order in which the official AVCA constructor builds its EmbeddingNets, and which of their sizes is the
# hard-coded 300: ("in" | "out", "word" | "dim"). Checked against the built model below.
EMBEDDING_NETS = (("A_enc", "out", "dim"), ("V_enc", "out", "dim"), ("W_proj", "in", "word"),
                  ("D", "out", "word"), ("A_proj", "in", "dim"), ("V_proj", "in", "dim"),
                  ("A_rec", "out", "dim"), ("V_rec", "out", "dim"))


def install_shims() -> None:
    """In-process replacements for what torch 2.11 / this environment lacks (see the module docstring)."""
    install_reduce_lr_without_verbose()
    install_einops_stub()


def params_model(*, small: bool, dropouts: dict[str, float]) -> dict:
    """The official ``get_model_params`` dict of the UCF cls run (lr 1e-3, hidden 512/512, depth 1, momentum
    0.99, both additional triplets, reg loss), at small sizes when ``small``."""
    return {"dim_out": SMALL["out"] if small else 64, "lr": 1e-3,
            "first_additional_triplet": 1, "second_additional_triplet": 1, "additional_triplets_loss": True,
            "reg_loss": True, "depth_transformer": SMALL["depth"] if small else 1,
            "encoder_hidden_size": SMALL["encoder_hidden"] if small else 512,
            "decoder_hidden_size": SMALL["decoder_hidden"] if small else 512, "momentum": 0.99,
            **dropouts}


def build_official(mi: types.ModuleType, *, small: bool, dropouts: dict[str, float]) -> nn.Module:
    """The official AVCA, built from the current RNG state; shrunk to SMALL when ``small``."""
    pm = params_model(small=small, dropouts=dropouts)
    if not small:
        return mi.AVCA(pm, input_size_audio=128, input_size_video=4096)
    # The official __init__s are wrapped in place (not the classes replaced: EmbeddingNet calls
    # super(EmbeddingNet, self), which must still name the official class).
    emb_init, transformer_init = mi.EmbeddingNet.__init__, mi.Transformer.__init__
    roles = iter(EMBEDDING_NETS)

    def embedding_net(self, input_size, output_size, dropout, use_bn, momentum, hidden_size=None):
        _, side, size = next(roles)
        if side == "in":
            assert input_size == 300, f"expected the hard-coded input 300, got {input_size}"
            input_size = SMALL[size]
        else:
            assert output_size == 300, f"expected the hard-coded output 300, got {output_size}"
            output_size = SMALL[size]
        emb_init(self, input_size, output_size, dropout, use_bn, momentum, hidden_size=hidden_size)

    def transformer(self, dim, depth, heads, dim_head, mlp_dim, dropout=0.0):
        assert (dim, heads, dim_head, mlp_dim) == (300, 3, 100, 64), "official transformer sizes changed"
        transformer_init(self, SMALL["dim"], depth, SMALL["heads"], SMALL["dim_head"], SMALL["mlp"], dropout)

    mi.EmbeddingNet.__init__, mi.Transformer.__init__ = embedding_net, transformer
    try:
        model = mi.AVCA(pm, input_size_audio=SMALL["audio"], input_size_video=SMALL["video"])
    finally:
        mi.EmbeddingNet.__init__, mi.Transformer.__init__ = emb_init, transformer_init
    assert next(roles, None) is None, "the official constructor built another number of EmbeddingNets"
    # The roles landed where the table says: check every net's input and output width.
    expect = {"A_enc": ("audio", "dim"), "V_enc": ("video", "dim"), "W_proj": ("word", "out"),
              "D": ("out", "word"), "A_proj": ("dim", "out"), "V_proj": ("dim", "out"),
              "A_rec": ("out", "dim"), "V_rec": ("out", "dim")}
    for name, (i, o) in expect.items():
        linears = [m for m in getattr(model, name).modules() if isinstance(m, nn.Linear)]
        got = (linears[0].in_features, linears[-1].out_features)
        assert got == (SMALL[i], SMALL[o]), f"{name}: {got} != {(SMALL[i], SMALL[o])}"
    model.pos_emb1D = nn.Parameter(torch.randn(2, SMALL["dim"]))  # not in optimizer_gen, as officially
    return model


# Official attribute set by AVCA.forward -> the name it is saved under (the same names).
FORWARD_OUTPUTS = ("phi_a", "phi_v", "phi_a_neg", "phi_v_neg", "theta_w", "theta_w_neg", "rho_w", "rho_w_neg",
                   "phi_attn", "phi_attn_neg", "audio_fe_attn", "video_fe_attn", "audio_fe_neg_attn",
                   "video_fe_neg_attn", "theta_v", "theta_v_neg", "theta_a", "theta_a_neg", "phi_v_rec",
                   "phi_a_rec", "se_em_hat1", "se_em_hat2", "rho_a", "rho_a_neg", "rho_v", "rho_v_neg")
# Locals of the official AVCA.backward -> loss term names of the re-implementation.
LOSS_LOCALS = {"l_rec": "l_rec", "l_ct": "l_ct", "l_w": "l_w", "l_t": "l_t", "l_r": "l_r",
               "loss_gen": "total",
               "l_cta": "l_ct_a", "l_ctv": "l_ct_v", "l_ta": "l_w_ta", "l_at": "l_w_at", "l_tv": "l_w_tv",
               "l_vt": "l_w_vt", "first_pair": "l_t_first", "second_pair": "l_t_second"}


def official_step(mi: types.ModuleType, model: nn.Module,
                  x: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """One official training step (train mode) as ``train_step`` runs it; the loss terms are read from the
    locals of ``AVCA.backward`` when it returns."""
    captured: dict[str, torch.Tensor] = {}
    model.train()
    with on_return((mi.AVCA.backward.__code__, lambda frame, _: captured.update(tensor_locals(frame)))):
        # The official argument order: audio, video, class ids, word, negative audio, video, word.
        model.optimize_params(x["audio"], x["video"], x["labels"], x["word"], x["neg_audio"], x["neg_video"],
                              x["neg_word"], optimize=True)
    missing = set(LOSS_LOCALS) - set(captured)
    assert not missing, f"official backward locals not found: {missing}"
    return {LOSS_LOCALS[k]: captured[k] for k in LOSS_LOCALS}


def record(official: Path) -> dict:
    install_shims()
    (mi,) = import_official(official, "model_improvements")
    torch.set_num_threads(1)
    x = make_inputs(SMALL, batch=BATCH, n_classes=N_CLASSES, n_eval=N_EVAL, seed=SEED, eval_labels=False)
    out: dict = {"commit": COMMIT, "small": dict(SMALL), "inputs": x, "seed": SEED}

    torch.manual_seed(SEED)
    full = build_official(mi, small=False, dropouts=UCF_DROPOUTS)
    out["param_count_ucf"] = sum(p.numel() for p in full.parameters())
    del full

    # --- dropout 0: forward outputs, losses, gradients, the optimiser step, the post-step pass, evaluation
    torch.manual_seed(SEED)
    zero = {"dropout_encoder": 0.0, "dropout_decoder": 0.0, "additional_dropout": 0.0}
    model = build_official(mi, small=True, dropouts=zero)
    out["param_count_small"] = sum(p.numel() for p in model.parameters())
    out["state_init"] = detached_state(model)
    names = {id(p): n for n, p in model.named_parameters()}
    stepped = [p for group in model.optimizer_gen.param_groups for p in group["params"]]
    out["optimizer_params"] = [names[id(p)] for p in stepped]
    out["optimizer_hparams"] = hyper_parameters(model.optimizer_gen)

    out["losses"] = official_step(mi, model, x)
    out["forward"] = {k: getattr(model, k).detach().clone() for k in FORWARD_OUTPUTS}
    out["grads"] = gradients(model)
    out["state_after_step"] = detached_state(model)
    # train_step then embeds the positives once more, in train mode (outputs unused; BN statistics move).
    model.get_embeddings(x["audio"], x["video"], x["word"])
    out["buffers_after_post_step"] = buffers(model)

    model.eval()
    with torch.no_grad():
        theta_a, theta_v, theta_w = model.get_embeddings(x["eval_audio"], x["eval_video"], x["class_vectors"])
        out["eval"] = {"theta_a": theta_a, "theta_v": theta_v, "theta_w": theta_w,
                       "distances": torch.cdist(theta_v, theta_w)}

    # --- UCF dropout rates, seeded just before the step: same masks only if drawn in the official order
    torch.manual_seed(SEED)
    model = build_official(mi, small=True, dropouts=UCF_DROPOUTS)
    assert all(torch.equal(v, out["state_init"][k]) for k, v in model.state_dict().items()), "init not seeded"
    torch.manual_seed(DROPOUT_SEED)
    dropout_losses = official_step(mi, model, x)
    model.get_embeddings(x["audio"], x["video"], x["word"])
    out["dropout"] = {"rates": dict(UCF_DROPOUTS), "seed": DROPOUT_SEED, "losses": dropout_losses,
                      "theta_v": model.theta_v.detach().clone(), "buffers_after_post_step": buffers(model)}
    return out


if __name__ == "__main__":
    record_and_save(__doc__, "avca", holding="model_improvements.py", record=record,
                    summary=lambda data: f"official parameter count at the UCF cls config: "
                                         f"{data['param_count_ucf']:,}; small: {data['param_count_small']:,}")
