"""The shared helpers of data_splits.common: devices, unknown keys, atomic writes, split names."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import pytest

from data_splits.common import (
    SPLIT_NAMES,
    atomic_open,
    atomic_torch_save,
    atomic_write_bytes,
    atomic_write_text,
    check_keys,
    parse_device,
    resolve_device,
)


def test_module_imports_without_torch():
    code = "import sys, data_splits.common; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


# ------------------------------------------------------------------------------------------ devices


def test_auto_and_cpu_on_a_machine_without_cuda(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device(None) == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")


@pytest.mark.parametrize("spec", ["cuda", "cuda:0", "cuda:1"])
def test_cuda_without_cuda_is_an_error_that_says_what_to_set(monkeypatch, spec):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(RuntimeError, match=rf"train\.device: {spec} asks for a CUDA GPU.*not available") as e:
        resolve_device(spec, key="train.device")
    assert "`train.device: auto`" in str(e.value) and "`train.device: cpu`" in str(e.value)


def test_cuda_with_cuda(monkeypatch, tmp_path):
    import torch

    from data_splits import devices

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setenv(devices.LOCK_DIR_ENV, str(tmp_path))
    devices.release_gpu()
    # two GPUs visible: the job's slot (tests/test_devices.py), here the first, both GPUs being free
    assert resolve_device("auto") == torch.device("cuda", 0)
    assert resolve_device("cuda") == torch.device("cuda", 0)
    devices.release_gpu()
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    assert resolve_device(torch.device("cuda", 0)) == torch.device("cuda", 0)
    with pytest.raises(RuntimeError, match=r"extract\.device: cuda:2 asks for CUDA device 2.*only 2") as e:
        resolve_device("cuda:2", key="extract.device")
    assert "`extract.device: auto`" in str(e.value) and "`extract.device: cpu`" in str(e.value)


@pytest.mark.parametrize("spec", ["tpu", "gpu", "cuda0", "cpu:0", "auto:1", "cuda:-1", "", "CUDA"])
def test_anything_else_is_a_clear_error(spec):
    with pytest.raises(ValueError, match=r"class_embeddings\.device: .* is not a device; use auto"):
        resolve_device(spec, key="class_embeddings.device")
    with pytest.raises(ValueError, match="is not a device"):
        parse_device(spec)


def test_parse_device_needs_no_torch():
    assert parse_device("auto") == ("auto", None) and parse_device(None) == ("auto", None)
    assert parse_device("cuda:3") == ("cuda", 3) and parse_device("cpu") == ("cpu", None)


# ------------------------------------------------------------------------------------- unknown keys


@dataclasses.dataclass
class _Section:
    alpha: int = 1
    beta: str = "b"


def test_check_keys_names_the_full_path_and_the_allowed_keys():
    assert check_keys(_Section, {"alpha": 2}, "demo.section") == {"alpha": 2}
    assert check_keys(_Section, None, "demo.section") == {}
    with pytest.raises(ValueError) as e:
        check_keys(_Section, {"alpha": 2, "gamma": 3}, "demo.section")
    assert str(e.value) == ("unknown key demo.section.gamma: 'gamma' is not a key of demo.section; "
                            "allowed keys: ['alpha', 'beta']")
    with pytest.raises(ValueError, match=r"unknown keys demo\.section\.x, demo\.section\.y: 'x', 'y' are not"):
        check_keys(_Section, {"x": 1, "y": 2}, "demo.section")
    with pytest.raises(ValueError, match=r"unknown key top\.z: .*allowed keys: \['a', 'b'\]"):
        check_keys(("b", "a"), {"z": 0}, "top")
    with pytest.raises(TypeError, match="demo.section: expected a mapping"):
        check_keys(_Section, [1, 2], "demo.section")


def test_every_config_section_uses_the_same_message():
    from data_splits.class_embeddings import EmbeddingConfig
    from data_splits.official import OfficialConfig
    from data_splits.synthetic import FormatSpec
    from extractors.c3d import VideoExtractorConfig
    from extractors.vggish import AudioExtractorConfig
    from model.config import TCAFConfig
    from model.train_config import EvalConfig, TrainConfig

    for cls, where in ((EmbeddingConfig, "class_embeddings"), (OfficialConfig, "official"),
                       (FormatSpec, "demo.formats[]"), (VideoExtractorConfig, "extract.video"),
                       (AudioExtractorConfig, "extract.audio"), (TCAFConfig, "model"), (TrainConfig, "train"),
                       (EvalConfig, "evaluate")):
        with pytest.raises(ValueError) as e:
            cls.from_dict({"no_such_key": 1})
        assert str(e.value).startswith(f"unknown key {where}.no_such_key: 'no_such_key' is not a key of {where}; "
                                       "allowed keys: ["), (cls, str(e.value))


# ------------------------------------------------------------------------------------ atomic writes


def test_atomic_writes_replace_the_file_whole(tmp_path):
    p = tmp_path / "sub" / "out.txt"
    atomic_write_text(p, "a\nb\n")
    assert p.read_bytes() == b"a\nb\n"
    atomic_write_bytes(p, b"xyz")
    assert p.read_bytes() == b"xyz"
    assert sorted(os.listdir(p.parent)) == ["out.txt"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    p = tmp_path / "out.json"
    p.write_text("old")
    with pytest.raises(RuntimeError, match="boom"), atomic_open(p, "w") as f:
        f.write("half")
        raise RuntimeError("boom")
    assert p.read_text() == "old" and os.listdir(tmp_path) == ["out.json"]


def test_temporary_names_are_unique_and_next_to_the_target(tmp_path):
    p = tmp_path / "x.bin"
    with atomic_open(p) as a, atomic_open(p) as b:
        assert a.name != b.name
        assert os.path.dirname(a.name) == str(tmp_path) and os.path.basename(a.name).startswith(".x.bin.tmp-")
        a.write(b"1")
        b.write(b"2")
    assert p.read_bytes() == b"1"  # a (closed last) wins, each whole


def test_written_files_get_umask_permissions_not_owner_only(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_bytes(tmp_path / "w.bin", b"x")
    finally:
        os.umask(old)
    assert (tmp_path / "w.bin").stat().st_mode & 0o777 == 0o644


def test_atomic_torch_save_round_trips(tmp_path):
    import torch

    obj = {"a": torch.arange(3), "b": [1, 2]}
    atomic_torch_save(obj, tmp_path / "ckpt" / "x.pt")
    back = torch.load(tmp_path / "ckpt" / "x.pt", weights_only=False)
    assert torch.equal(back["a"], obj["a"]) and back["b"] == [1, 2]
    assert os.listdir(tmp_path / "ckpt") == ["x.pt"]


def test_mode_must_write_a_whole_file(tmp_path):
    with pytest.raises(ValueError, match="mode"), atomic_open(tmp_path / "x", "a"):
        pass


# -------------------------------------------------------------------------------------- split names


def test_one_definition_of_the_split_names():
    from data_splits import synthetic

    assert SPLIT_NAMES == ("stage_1_train", "stage_1_val_seen", "stage_1_val_unseen", "stage_2_train",
                           "stage_2_test_seen", "stage_2_test_unseen")
    assert synthetic.SPLIT_NAMES is SPLIT_NAMES
