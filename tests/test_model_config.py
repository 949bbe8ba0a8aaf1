"""TCAFConfig validation, presets and the parameter counts of the paper's configurations."""

import subprocess
import sys

import pytest

from model.config import (
    DATASET_PRESETS,
    REFERENCE_QUIRKS,
    TCAFConfig,
    apply_preset,
    dataset_config,
    model_section_problems,
)
from model.tcaf import TCAF

pytestmark = pytest.mark.usefixtures("single_torch_thread")


def n_params(net) -> int:
    return sum(p.numel() for p in net.parameters() if p.requires_grad)


def test_from_dict_rejects_unknown_key_naming_it():
    with pytest.raises(ValueError, match="transformer_depth"):
        TCAFConfig.from_dict({"transformer_depth": 6})


def test_from_dict_round_trip():
    cfg = TCAFConfig.from_dict({"depth": 2, "attention": "full", "word_dim": 384})
    assert TCAFConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("attention", "both", "attention"),
        ("modalities", "video", "modalities"),
        ("time_embedding", "fixed", "time_embedding"),
        ("dropout_enc", 1.0, "dropout_enc"),
        ("pos_dim", 63, "pos_dim"),
        ("depth", 0, "depth"),
    ],
)
def test_invalid_values_raise_naming_the_field(field, value, match):
    with pytest.raises(ValueError, match=match):
        TCAFConfig(**{field: value})


def test_all_losses_off_is_rejected():
    with pytest.raises(ValueError, match="at least one loss"):
        TCAFConfig(loss_ce=False, loss_reg=False, loss_rec=False)


def test_unimodal_cross_attention_is_rejected():
    with pytest.raises(ValueError, match="cross"):
        TCAFConfig(modalities="audio", attention="cross")
    TCAFConfig(modalities="audio", attention="full")


def test_importing_model_config_does_not_import_torch():
    # The workflow checks the model section with it while it builds the DAG, before any job.
    code = "import sys, model.config; assert 'torch' not in sys.modules, [m for m in sys.modules if 'torch' in m]"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stderr


@pytest.mark.parametrize(
    ("section", "dataset", "keys"),
    [
        ({"modalities": "audio"}, None,
         ["'model.modalities' ('audio')", "'model.attention' ('cross', the default)"]),
        ({"modalities": "visual", "attention": "cross"}, "ucf",
         ["'model.modalities'", "'model.attention' ('cross')"]),
        ({"pos_dim": 17}, None, ["'model.pos_dim' (17)", "use 18 or 16"]),
        ({"loss_ce": False, "loss_reg": False, "loss_rec": False}, None,
         ["'model.loss_ce'", "'model.loss_rec'"]),
        ({"depth": 2.0}, None, ["'model'", "depth"]),  # anything else TCAFConfig rejects, in its words
    ],
    ids=["one-modality-default-cross", "one-modality-cross", "odd-pos-dim", "no-loss", "float-depth"],
)
def test_model_section_problems_name_the_keys(section, dataset, keys):
    problems = model_section_problems(section, dataset)
    assert len(problems) == 1, problems
    for key in keys:
        assert key in problems[0]
    with pytest.raises(ValueError):  # training would reject the same section
        TCAFConfig.from_dict({**DATASET_PRESETS.get(dataset, {}), **section})


@pytest.mark.parametrize("dataset", [None, "ucf", "vggsound", "activitynet"])
def test_model_section_problems_accept_what_training_accepts(dataset):
    sections = (None, {}, {"modalities": "audio", "attention": "full"}, {"modalities": "visual", "attention": "self"},
                {"pos_dim": 2, "time_embedding": "none"}, {"loss_ce": False}, {"depth": 1, "dropout_enc": 0.0})
    for section in sections:
        assert model_section_problems(section, dataset) == []
        TCAFConfig.from_dict({**DATASET_PRESETS.get(dataset, {}), **(section or {})})


def test_model_section_problems_list_every_rule_broken():
    problems = model_section_problems({"modalities": "audio", "pos_dim": 9})
    assert len(problems) == 2 and "'model.attention'" in problems[0] and "'model.pos_dim'" in problems[1]


def test_quirks_are_off_by_default_and_named_in_the_registry():
    cfg = TCAFConfig()
    model_quirks = [k.split(".", 1)[1] for k in REFERENCE_QUIRKS if k.startswith("model.")]
    assert set(model_quirks) == {
        "normalise_video_over_time",
        "integer_time_stamps_at_eval",
        "encoder_bn_over_padding",
    }
    assert all(getattr(cfg, k) is False for k in model_quirks)
    assert all(doc.strip() for doc in REFERENCE_QUIRKS.values())


def test_apply_preset_reference_and_paper_with_explicit_override():
    base = {"model": {"depth": 6, "integer_time_stamps_at_eval": False}, "train": {"lr": 1e-4}}
    ref = apply_preset(base, "reference")
    assert ref["model"]["normalise_video_over_time"] is True
    assert ref["model"]["encoder_bn_over_padding"] is True
    assert ref["model"]["integer_time_stamps_at_eval"] is False  # written explicitly: the user wins
    assert ref["model"]["depth"] == 6 and ref["train"] == {"lr": 1e-4}
    assert "normalise_video_over_time" not in base["model"]  # input untouched
    paper = apply_preset({}, "paper")
    assert paper["model"]["normalise_video_over_time"] is False
    TCAFConfig.from_dict(ref["model"])
    with pytest.raises(ValueError, match="preset"):
        apply_preset(base, "official")


def test_dataset_presets_follow_the_paper():
    assert dataset_config("vggsound").depth == 8
    assert dataset_config("ucf").depth == dataset_config("activitynet").depth == 6
    assert dataset_config("activitynet").dropout_transformer == 0.4
    assert set(DATASET_PRESETS) == {"ucf", "vggsound", "activitynet"}
    with pytest.raises(ValueError, match="dataset"):
        dataset_config("kinetics")


def test_parameter_count_matches_official_ucf_and_vggsound():
    # Paper / official code: 7.27 M (UCF, ActivityNet) and 8.66 M (VGGSound); the official model
    # measured 7,269,972 and 8,655,028 trainable parameters.
    assert n_params(TCAF(dataset_config("ucf"))) == 7_269_972
    assert n_params(TCAF(dataset_config("vggsound"))) == 8_655_028


def test_word_dim_from_data_changes_only_word_side_sizes():
    minilm = n_params(TCAF(dataset_config("ucf", word_dim=384)))
    # W_proj input (+84*64), D_w output (+64*84 + 84 bias + 2*84 BN) and D_o output (+512*84 + 84 + 2*84).
    assert minilm - 7_269_972 == 84 * 64 + (64 * 84 + 84 + 168) + (512 * 84 + 84 + 168)
