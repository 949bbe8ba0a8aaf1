"""Obtain the benchmark's official class and video lists.

Two sources, both producing the folder layout documented in ``docs/splits.md``:

* a local folder given in the config (``official.local_dir``), laid out like the upstream
  ``avgzsl_benchmark_datasets`` folder plus ``<DS>/mapping/*.json``;
* the public repositories of the benchmark's authors at pinned commits, fetched over HTTPS from
  ``raw.githubusercontent.com``; every file is checked against a pinned sha256 *before* it is
  parsed or written.

Upstream ships two formats we do not want to unpickle blindly: the TCAF mapping ``.pickle``
files and the fastText ``.npy`` (a pickled dict). They are decoded with an allow-listed
unpickler (numpy scalars/arrays, containers only) after the checksum passed, and converted to
``<DS>/mapping/main_audio.json`` and ``<DS>/class-split/word_embeddings_<x>_normed.npz``
(arrays ``names`` and ``vectors`` in the dict's order), the same layout as a local copy.

Only what the split builder and the ``official`` embedding backend need is downloaded: all
``class-split`` lists, the fastText ``.npy`` and, for VGGSound only, the main audio mapping
(the source of the two VGGSound train lists whose CSVs were never released).
"""

from __future__ import annotations

import codecs
import hashlib
import io
import json
import pickle
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, ClassVar

import numpy as np

from data_splits.common import SPLIT_NAMES, atomic_write_bytes, check_keys

AVCA_REPO = "ExplainableML/AVCA-GZSL"
AVCA_COMMIT = "2711aeb5d7257ece4c5464fa46d7849a4edf6470"
TCAF_REPO = "ExplainableML/TCAF-GZSL"
TCAF_COMMIT = "0ca2059bc018c4f4c0975833f63e61ad042f7312"
RAW_URL = "https://raw.githubusercontent.com/{repo}/{commit}/{path}"

SPLIT_KINDS: dict[str, str] = {"cls": "cls_split", "main": "main_split"}


class OfficialListsError(RuntimeError):
    """The official lists are missing, incomplete or fail their checksum."""


@dataclass(frozen=True)
class DatasetSpec:
    """Names under which a dataset appears in the official folder."""

    key: str  # config key: ucf | vggsound | activitynet | demo
    folder: str  # <DS>
    prefix: str  # <ds> in <ds>_w2v_class_names.csv
    embeddings_prefix: str  # word_embeddings_<x>_normed (upstream says "activity" for ActivityNet)
    # UCF lists spell HandStandPushups while the folder (and all_class.txt) says HandstandPushups;
    # the reference loader lower-cases UCF and ActivityNet names, VGGSound is matched exactly.
    case_insensitive: bool

    @property
    def embeddings_file(self) -> str:
        return f"word_embeddings_{self.embeddings_prefix}_normed"


DATASETS: dict[str, DatasetSpec] = {
    "ucf": DatasetSpec("ucf", "UCF", "ucf", "ucf", True),
    "vggsound": DatasetSpec("vggsound", "VGGSound", "vggsound", "vggsound", False),
    "activitynet": DatasetSpec("activitynet", "ActivityNet", "activitynet", "activity", True),
    "demo": DatasetSpec("demo", "demo", "demo", "demo", True),
}


def dataset_spec(dataset: str) -> DatasetSpec:
    try:
        return DATASETS[dataset]
    except KeyError:
        raise ValueError(f"unknown dataset {dataset!r}; expected one of {sorted(DATASETS)}") from None


def split_kind_dir(split_kind: str) -> str:
    try:
        return SPLIT_KINDS[split_kind]
    except KeyError:
        raise ValueError(f"unknown split_kind {split_kind!r}; expected one of {sorted(SPLIT_KINDS)}") from None


# sha256 of the upstream list files (byte-identical to the reference copy they were computed from).
LIST_SHA256: dict[str, str] = {
    "ActivityNet/class-split/activitynet_w2v_class_names.csv": "ecbaea266b8e85b60baf84e07ffdb813943117929292e4fc0b17192a72ef551b",
    "ActivityNet/class-split/all_class.txt": "04fb013bc87532de8438e0ae8eeb765445b63c1a36ed6ecf19526813406d0366",
    "ActivityNet/class-split/cls_split/stage_1_train.csv": "90b41c583a2e5a540e421a36fd7af917d316517b222401396b48267b8b507c8e",
    "ActivityNet/class-split/cls_split/stage_1_train.txt": "402306351792a70d0a3fc99af253ed7422154daed01266806eda22d88627bfda",
    "ActivityNet/class-split/cls_split/stage_1_val_seen.csv": "b84447e52aa65f017c144101bd7a1a8d1abb082e8455d3ca108d20109e367b96",
    "ActivityNet/class-split/cls_split/stage_1_val_seen.txt": "402306351792a70d0a3fc99af253ed7422154daed01266806eda22d88627bfda",
    "ActivityNet/class-split/cls_split/stage_1_val_unseen.csv": "bea262739d2db4fb5516a6bca5d5219b270e72a54c21461a26801aa8ed0e0422",
    "ActivityNet/class-split/cls_split/stage_1_val_unseen.txt": "3f968b45d6571c6f59e4bd84a988c809b2ee4fc39ba64ec85fae68a9701362dd",
    "ActivityNet/class-split/cls_split/stage_2_test_seen.csv": "e6cade4647b01e5ebea3c1ba5b8a1cb804b023b0ef31585cd2d11291efe7f38f",
    "ActivityNet/class-split/cls_split/stage_2_test_seen.txt": "4f925fa727e4d3710f8e4e67f3474f61df3c638ce83c64eeffafc9a6715f2111",
    "ActivityNet/class-split/cls_split/stage_2_test_unseen.csv": "8a95875a571fdbab250bfca5719aac00ec1ad44ffc31447b8dee80e2a5f30f2c",
    "ActivityNet/class-split/cls_split/stage_2_test_unseen.txt": "80f100e37f0f4263e41a2b4d0cc2eaa277f0ab7d2f173965d3ea5f819bc6a4fe",
    "ActivityNet/class-split/cls_split/stage_2_train.csv": "8f6dcb17fc71fae34a5176f73c6a9a259c531694a5977b1d1cf5d5d59215bc9c",
    "ActivityNet/class-split/cls_split/stage_2_train.txt": "4f925fa727e4d3710f8e4e67f3474f61df3c638ce83c64eeffafc9a6715f2111",
    "ActivityNet/class-split/main_split/stage_1_train.csv": "90b41c583a2e5a540e421a36fd7af917d316517b222401396b48267b8b507c8e",
    "ActivityNet/class-split/main_split/stage_1_train.txt": "402306351792a70d0a3fc99af253ed7422154daed01266806eda22d88627bfda",
    "ActivityNet/class-split/main_split/stage_1_val_seen.csv": "b84447e52aa65f017c144101bd7a1a8d1abb082e8455d3ca108d20109e367b96",
    "ActivityNet/class-split/main_split/stage_1_val_seen.txt": "402306351792a70d0a3fc99af253ed7422154daed01266806eda22d88627bfda",
    "ActivityNet/class-split/main_split/stage_1_val_unseen.csv": "bea262739d2db4fb5516a6bca5d5219b270e72a54c21461a26801aa8ed0e0422",
    "ActivityNet/class-split/main_split/stage_1_val_unseen.txt": "3f968b45d6571c6f59e4bd84a988c809b2ee4fc39ba64ec85fae68a9701362dd",
    "ActivityNet/class-split/main_split/stage_2_test_seen.csv": "e6cade4647b01e5ebea3c1ba5b8a1cb804b023b0ef31585cd2d11291efe7f38f",
    "ActivityNet/class-split/main_split/stage_2_test_seen.txt": "4f925fa727e4d3710f8e4e67f3474f61df3c638ce83c64eeffafc9a6715f2111",
    "ActivityNet/class-split/main_split/stage_2_test_unseen.csv": "8a95875a571fdbab250bfca5719aac00ec1ad44ffc31447b8dee80e2a5f30f2c",
    "ActivityNet/class-split/main_split/stage_2_test_unseen.txt": "97b71e17e8720ed7eb7f0422e21f6fec0bb6267963bb50fcf829f9bb2478ae6d",
    "ActivityNet/class-split/main_split/stage_2_train.csv": "8f6dcb17fc71fae34a5176f73c6a9a259c531694a5977b1d1cf5d5d59215bc9c",
    "ActivityNet/class-split/main_split/stage_2_train.txt": "4f925fa727e4d3710f8e4e67f3474f61df3c638ce83c64eeffafc9a6715f2111",
    "UCF/class-split/all_class.txt": "745c32303fc09d541d15d3db235ea37cb84de2260ad76e6151b431a91ee6667e",
    "UCF/class-split/cls_split/stage_1_train.csv": "70f53de4884a2c219478f7f2b19222e720aa2ab7242339f369eb52a2b314a5a8",
    "UCF/class-split/cls_split/stage_1_train.txt": "96381f5b16f6cb52447d0dabbc38cd164ea11fe7a14c250cd28bf715080103ff",
    "UCF/class-split/cls_split/stage_1_val_seen.csv": "f40f6173466c21c352c35d8df3c7e4a9497af640f54a393d3053935142acb4ba",
    "UCF/class-split/cls_split/stage_1_val_seen.txt": "96381f5b16f6cb52447d0dabbc38cd164ea11fe7a14c250cd28bf715080103ff",
    "UCF/class-split/cls_split/stage_1_val_unseen.csv": "f6085ae6aa3bf7e9eba079d1dea7214691a783099e6e1c52a6c94f89e74b153c",
    "UCF/class-split/cls_split/stage_1_val_unseen.txt": "5a90efb19165f93331b25b5bc6f376d87c34a9ae00296e789a06eb5ff8fc0e9c",
    "UCF/class-split/cls_split/stage_2_test_seen.csv": "09c681d23369158012e50e4a9527d8f0b470f07eab87630e387c5114a66c780a",
    "UCF/class-split/cls_split/stage_2_test_seen.txt": "17fcf3d3bad572b6bc056b8247d6c2360b8cd71f2e6c701bdd3dde719d413283",
    "UCF/class-split/cls_split/stage_2_test_unseen.csv": "da37e073c5458acbcfa8f2aa9d234f2a4d8a7b1714f59e0bece88f3b7f9405bd",
    "UCF/class-split/cls_split/stage_2_test_unseen.txt": "a73fef65c3c218a326369d74001fe7ecac01ab1256ce4876cb26c0958b8d0ee8",
    "UCF/class-split/cls_split/stage_2_train.csv": "299ec37579c82f5c091c8e199a9e39fdc459781cb7f55ad566613fe7675cfa6b",
    "UCF/class-split/cls_split/stage_2_train.txt": "17fcf3d3bad572b6bc056b8247d6c2360b8cd71f2e6c701bdd3dde719d413283",
    "UCF/class-split/main_split/stage_1_train.csv": "70f53de4884a2c219478f7f2b19222e720aa2ab7242339f369eb52a2b314a5a8",
    "UCF/class-split/main_split/stage_1_train.txt": "96381f5b16f6cb52447d0dabbc38cd164ea11fe7a14c250cd28bf715080103ff",
    "UCF/class-split/main_split/stage_1_val_seen.csv": "f40f6173466c21c352c35d8df3c7e4a9497af640f54a393d3053935142acb4ba",
    "UCF/class-split/main_split/stage_1_val_seen.txt": "96381f5b16f6cb52447d0dabbc38cd164ea11fe7a14c250cd28bf715080103ff",
    "UCF/class-split/main_split/stage_1_val_unseen.csv": "f6085ae6aa3bf7e9eba079d1dea7214691a783099e6e1c52a6c94f89e74b153c",
    "UCF/class-split/main_split/stage_1_val_unseen.txt": "5a90efb19165f93331b25b5bc6f376d87c34a9ae00296e789a06eb5ff8fc0e9c",
    "UCF/class-split/main_split/stage_2_test_seen.csv": "09c681d23369158012e50e4a9527d8f0b470f07eab87630e387c5114a66c780a",
    "UCF/class-split/main_split/stage_2_test_seen.txt": "17fcf3d3bad572b6bc056b8247d6c2360b8cd71f2e6c701bdd3dde719d413283",
    "UCF/class-split/main_split/stage_2_test_unseen.csv": "da37e073c5458acbcfa8f2aa9d234f2a4d8a7b1714f59e0bece88f3b7f9405bd",
    "UCF/class-split/main_split/stage_2_test_unseen.txt": "a8234adc6a75982c8a8085a3c845b2bc06d3e99f0cdb1cb8155c74a7be910dac",
    "UCF/class-split/main_split/stage_2_train.csv": "299ec37579c82f5c091c8e199a9e39fdc459781cb7f55ad566613fe7675cfa6b",
    "UCF/class-split/main_split/stage_2_train.txt": "17fcf3d3bad572b6bc056b8247d6c2360b8cd71f2e6c701bdd3dde719d413283",
    "UCF/class-split/ucf_w2v_class_names.csv": "7f253b50dc88cfdb9bcb0a245798e98bd2ccfb241c03435945a5ac0caef078d6",
    "VGGSound/class-split/all_class.txt": "45c537f971c8ea8e175c8cebd4bdd2b4c4f579dd4e3c4309e4be6e482168b871",
    "VGGSound/class-split/cls_split/stage_1_train.txt": "c0d357ebffe098b5641305e4c48ba3aa832e52c5d3f4431da5ad2c3a19c71e6c",
    "VGGSound/class-split/cls_split/stage_1_val_seen.csv": "3ddd0e1644abdd4b0f604fd979f7c81e95d8a3e7df73d796bf9b5e15ce467c2d",
    "VGGSound/class-split/cls_split/stage_1_val_seen.txt": "c0d357ebffe098b5641305e4c48ba3aa832e52c5d3f4431da5ad2c3a19c71e6c",
    "VGGSound/class-split/cls_split/stage_1_val_unseen.csv": "9acb917ce3b6bc15c7cd4b4b6afaf6b23b0f3fa725d75838a1bb5608053ca74e",
    "VGGSound/class-split/cls_split/stage_1_val_unseen.txt": "00559740d31ef162a29bdfeda7c11cc06fe71af92684348e5117f9cb80381747",
    "VGGSound/class-split/cls_split/stage_2_test_seen.csv": "5f7b95cbdbb5aa2ed3da63b3876aad6ee3c9a1d8b8ad0c0c085fb322ee0a35f8",
    "VGGSound/class-split/cls_split/stage_2_test_seen.txt": "ea282dfb3ae59303a6140f9c0e758c5a8ba3a10cf5f2b96855b972fe26e59972",
    "VGGSound/class-split/cls_split/stage_2_test_unseen.csv": "e0f8f872cef22fe9f55d8ace0d79c962d2148e81fda6939422766a1d93652567",
    "VGGSound/class-split/cls_split/stage_2_test_unseen.txt": "9d1e75480148c73ea9188ba7521f048ed94c2f0c0516ba090dc2a65bb4534e4b",
    "VGGSound/class-split/cls_split/stage_2_train.txt": "ea282dfb3ae59303a6140f9c0e758c5a8ba3a10cf5f2b96855b972fe26e59972",
    "VGGSound/class-split/main_split/stage_1_train.txt": "c0d357ebffe098b5641305e4c48ba3aa832e52c5d3f4431da5ad2c3a19c71e6c",
    "VGGSound/class-split/main_split/stage_1_val_seen.csv": "3ddd0e1644abdd4b0f604fd979f7c81e95d8a3e7df73d796bf9b5e15ce467c2d",
    "VGGSound/class-split/main_split/stage_1_val_seen.txt": "c0d357ebffe098b5641305e4c48ba3aa832e52c5d3f4431da5ad2c3a19c71e6c",
    "VGGSound/class-split/main_split/stage_1_val_unseen.csv": "9acb917ce3b6bc15c7cd4b4b6afaf6b23b0f3fa725d75838a1bb5608053ca74e",
    "VGGSound/class-split/main_split/stage_1_val_unseen.txt": "00559740d31ef162a29bdfeda7c11cc06fe71af92684348e5117f9cb80381747",
    "VGGSound/class-split/main_split/stage_2_test_seen.csv": "5f7b95cbdbb5aa2ed3da63b3876aad6ee3c9a1d8b8ad0c0c085fb322ee0a35f8",
    "VGGSound/class-split/main_split/stage_2_test_seen.txt": "ea282dfb3ae59303a6140f9c0e758c5a8ba3a10cf5f2b96855b972fe26e59972",
    "VGGSound/class-split/main_split/stage_2_test_unseen.csv": "e0f8f872cef22fe9f55d8ace0d79c962d2148e81fda6939422766a1d93652567",
    "VGGSound/class-split/main_split/stage_2_test_unseen.txt": "ba0fd0bf1523eeff8577726b10691ce3a80f8b6f450864dfd8f9604c01cfd24b",
    "VGGSound/class-split/main_split/stage_2_train.txt": "ea282dfb3ae59303a6140f9c0e758c5a8ba3a10cf5f2b96855b972fe26e59972",
    "VGGSound/class-split/vggsound_w2v_class_names.csv": "a36bcc7492f352638a8223e971f3c7ee7e1643a791b1e7ee54a98ccb363d4ed0",
}

# sha256 of upstream files that are converted on download (hashes of the upstream bytes).
CONVERTED_SHA256: dict[str, str] = {
    "w2v_features/word_embeddings_ucf_normed.npy":
        "6e53e961dfda18be1b9aaa0f10c9eebcd66fa80be1ece7468b3223243ab12186",
    "w2v_features/word_embeddings_vggsound_normed.npy":
        "3030c52ead5afc3d8c19cccbd524d268d59bd498fe958a16cea058e56a926562",
    "w2v_features/word_embeddings_activity_normed.npy":
        "59faf7b4135ed3beb0e98bcd3a9a5cdf29e3af655c96b6f10879e39ea5b7943c",
    "splitting_scripts_main/mapping_audio_files_main_features_VGGSound.pickle":
        "f41fcf082563e2c5faf4fad437a4ea160f7857e801b5dadd2641ad00488f5b7c",
}


@dataclass(frozen=True)
class RemoteFile:
    """One upstream file and where (and how) it lands in the official folder."""

    repo: str
    commit: str
    repo_path: str
    local_rel: str  # path under the official folder
    sha256: str  # of the upstream bytes
    convert: str = "copy"  # copy | mapping_json | embeddings_npz

    def url(self, template: str = RAW_URL) -> str:
        return template.format(repo=self.repo, commit=self.commit, path=self.repo_path)


def remote_files(dataset: str) -> list[RemoteFile]:
    """Files to download for ``dataset`` (benchmarks only: ``demo`` is generated locally)."""
    spec = dataset_spec(dataset)
    prefix = f"{spec.folder}/"
    files = [
        RemoteFile(AVCA_REPO, AVCA_COMMIT, f"avgzsl_benchmark_datasets/{rel}", rel, digest)
        for rel, digest in LIST_SHA256.items()
        if rel.startswith(prefix)
    ]
    if not files:
        raise OfficialListsError(
            f"dataset {dataset!r} has no published lists to download; set official.local_dir to a folder "
            f"laid out as in docs/splits.md"
        )
    npy = f"w2v_features/{spec.embeddings_file}.npy"
    files.append(
        RemoteFile(AVCA_REPO, AVCA_COMMIT, npy, f"{spec.folder}/class-split/{spec.embeddings_file}.npz",
                   CONVERTED_SHA256[npy], "embeddings_npz")
    )
    if dataset == "vggsound":
        pkl = "splitting_scripts_main/mapping_audio_files_main_features_VGGSound.pickle"
        files.append(
            RemoteFile(TCAF_REPO, TCAF_COMMIT, pkl, "VGGSound/mapping/main_audio.json",
                       CONVERTED_SHA256[pkl], "mapping_json")
        )
    return files


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def verify_sha256(data: bytes, expected: str, name: str) -> None:
    """Raise if ``data`` does not hash to ``expected``; ``name`` says which file it was."""
    got = sha256_bytes(data)
    if got != expected:
        raise OfficialListsError(
            f"sha256 mismatch for {name}: expected {expected}, got {got}. The download is corrupt or the "
            f"pinned commit changed; delete the partial output and retry, or point official.local_dir "
            f"to a verified copy."
        )


class NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that can only rebuild numpy arrays, numpy scalars and builtin containers.

    The benchmark's pickles (mapping lists, released features) were written by numpy 1.x (``numpy.core``);
    numpy 2 keeps these callables under ``numpy._core``. Anything else (``os.system``, ``builtins.eval``,
    ...) is refused before it runs, so a tampered file cannot run code. ``error`` is the exception raised,
    with ``source`` and ``hint`` in its message.
    """

    _ALLOWED: ClassVar[dict[tuple[str, str], object]] = {
        ("numpy", "dtype"): np.dtype,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy.core.multiarray", "scalar"): np._core.multiarray.scalar,
        ("numpy._core.multiarray", "scalar"): np._core.multiarray.scalar,
        ("numpy.core.multiarray", "_reconstruct"): np._core.multiarray._reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): np._core.multiarray._reconstruct,
        # Protocol 5 (Python 3.8's HIGHEST_PROTOCOL) rebuilds arrays from a byte buffer.
        ("numpy.core.numeric", "_frombuffer"): np._core.numeric._frombuffer,
        ("numpy._core.numeric", "_frombuffer"): np._core.numeric._frombuffer,
        # Protocols 0-2 spell bytes as codecs.encode(text, "latin1"): harmless, so older pickles load too.
        ("_codecs", "encode"): codecs.encode,
    }

    def __init__(self, fh: IO[bytes], source: str = "pickle", error: type[Exception] = pickle.UnpicklingError,
                 hint: str = ""):
        super().__init__(fh)
        self.source, self.error, self.hint = source, error, hint

    def find_class(self, module: str, name: str):
        try:
            return self._ALLOWED[(module, name)]
        except KeyError:
            raise self.error(
                f"{self.source}: the pickle asks for {module}.{name}, which this file never holds; refusing to load "
                f"it (it could run code){self.hint}"
            ) from None


def safe_unpickle(data: bytes) -> object:
    return NumpyOnlyUnpickler(io.BytesIO(data), "official-list pickle").load()


def _as_str(x: object) -> str:
    return x.decode("utf-8") if isinstance(x, bytes | np.bytes_) else str(x)


def mapping_pickle_to_json(data: bytes) -> bytes:
    """TCAF mapping pickle {h5 path: [video names as bytes]} -> JSON {path: [str]} (order kept)."""
    obj = safe_unpickle(data)
    if not isinstance(obj, dict):
        raise OfficialListsError(f"mapping pickle holds a {type(obj).__name__}, expected a dict")
    out = {str(k): [_as_str(v) for v in vals] for k, vals in obj.items()}
    return json.dumps(out, indent=0).encode("utf-8")


def load_npy_object(data: bytes) -> object:
    """Read a ``np.save``d object array without ``allow_pickle`` (header parsed, payload allow-listed)."""
    fp = io.BytesIO(data)
    version = np.lib.format.read_magic(fp)
    if version == (1, 0):
        shape, _, dtype = np.lib.format.read_array_header_1_0(fp)
    else:
        shape, _, dtype = np.lib.format.read_array_header_2_0(fp)
    if dtype != np.dtype(object):
        return np.frombuffer(fp.read(), dtype=dtype).reshape(shape)
    arr = safe_unpickle(fp.read())
    return arr.item() if isinstance(arr, np.ndarray) and arr.shape == () else arr


def embeddings_dict_to_arrays(obj: object, source: str) -> tuple[np.ndarray, np.ndarray]:
    """{readable name: vector} -> (names, float32 vectors [C, D]) in the dict's order."""
    if not isinstance(obj, dict) or not obj:
        raise OfficialListsError(f"{source}: expected a non-empty dict {{class name: vector}}")
    names = np.array([str(k) for k in obj])
    vectors = np.stack([np.asarray(v, dtype=np.float32).reshape(-1) for v in obj.values()])
    return names, vectors


def embeddings_npy_to_npz(data: bytes) -> bytes:
    """Upstream ``word_embeddings_*_normed.npy`` bytes -> ``.npz`` bytes with ``names``/``vectors``."""
    names, vectors = embeddings_dict_to_arrays(load_npy_object(data), "word-embedding .npy")
    buf = io.BytesIO()
    np.savez(buf, names=names, vectors=vectors)
    return buf.getvalue()


_CONVERTERS: dict[str, Callable[[bytes], bytes]] = {
    "copy": lambda b: b,
    "mapping_json": mapping_pickle_to_json,
    "embeddings_npz": embeddings_npy_to_npz,
}


def convert_remote(remote: RemoteFile, data: bytes) -> bytes:
    """Checksum the upstream bytes, then convert them to the local layout's format."""
    verify_sha256(data, remote.sha256, remote.repo_path)
    return _CONVERTERS[remote.convert](data)


def http_get(url: str, timeout_s: float = 60.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout_s) as resp:
        return resp.read()


@dataclass
class OfficialConfig:
    """``official:`` section of the config."""

    local_dir: str | None = None  # folder laid out like docs/splits.md section 1
    download: bool = True  # fall back to the pinned upstream files when local_dir is unset
    url: str = RAW_URL  # template with {repo}, {commit}, {path} (e.g. a mirror)
    verify: bool = True  # check list files of a local copy against the pinned sha256 too
    timeout_s: float = 60.0

    @classmethod
    def from_dict(cls, d: dict | None) -> OfficialConfig:
        return cls(**check_keys(cls, d, "official"))


@dataclass
class ObtainResult:
    """Where the lists now are and how they got there (recorded next to the splits)."""

    root: Path
    source: str  # "local" | "download"
    files: dict[str, str] = field(default_factory=dict)  # local_rel -> sha256 of the written bytes


def required_files(dataset: str, split_kinds: Iterable[str]) -> list[str]:
    """Relative paths every source must provide for ``split_kinds`` (CSVs may be replaced by mappings)."""
    spec = dataset_spec(dataset)
    base = f"{spec.folder}/class-split"
    rels = [f"{base}/all_class.txt", f"{base}/{spec.prefix}_w2v_class_names.csv"]
    for kind in split_kinds:
        rels += [f"{base}/{split_kind_dir(kind)}/{s}.txt" for s in SPLIT_NAMES]
    return rels


def check_local(dataset: str, root: Path, split_kinds: Iterable[str] = ("cls",), verify: bool = True) -> None:
    """Fail early, naming every missing file, if ``root`` lacks the lists for ``dataset``."""
    kinds = list(split_kinds)
    missing = [rel for rel in required_files(dataset, kinds) if not (root / rel).is_file()]
    spec = dataset_spec(dataset)
    for kind in kinds:
        for split in SPLIT_NAMES:
            csv_rel = f"{spec.folder}/class-split/{split_kind_dir(kind)}/{split}.csv"
            maps = [root / spec.folder / "mapping" / f"{k}_audio.json" for k in (kind, "main")]
            if not (root / csv_rel).is_file() and not any(m.is_file() for m in maps):
                missing.append(f"{csv_rel} (or {spec.folder}/mapping/{kind}_audio.json / main_audio.json)")
    if missing:
        raise OfficialListsError(
            f"official lists for {dataset!r} incomplete under {root}: missing {missing[:8]}"
            f"{' ...' if len(missing) > 8 else ''}. Point official.local_dir at a folder laid out as in "
            f"docs/splits.md, or unset it to download the pinned upstream files."
        )
    if verify:
        for rel, digest in LIST_SHA256.items():
            if rel.startswith(f"{spec.folder}/") and (root / rel).is_file():
                verify_sha256((root / rel).read_bytes(), digest, str(root / rel))


def _copy_local(dataset: str, src: Path, dest: Path) -> dict[str, str]:
    spec = dataset_spec(dataset)
    written: dict[str, str] = {}
    for path in sorted((src / spec.folder).rglob("*")):
        if path.is_file() and path.suffix in {".txt", ".csv", ".json", ".npz"}:
            rel = path.relative_to(src).as_posix()
            data = path.read_bytes()
            atomic_write_bytes(dest / rel, data)
            written[rel] = sha256_bytes(data)
    return written


def download_official(
    dataset: str,
    dest: Path,
    cfg: OfficialConfig | None = None,
    fetch: Callable[[str], bytes] | None = None,
    files: list[RemoteFile] | None = None,
) -> dict[str, str]:
    """Download, verify and convert the pinned upstream files into ``dest``; returns rel -> sha256.

    ``fetch`` (URL -> bytes) and ``files`` are injectable so the verification and conversion path
    can be exercised without network access.
    """
    cfg = cfg or OfficialConfig()
    fetch = fetch or (lambda url: http_get(url, cfg.timeout_s))
    written: dict[str, str] = {}
    for remote in files if files is not None else remote_files(dataset):
        url = remote.url(cfg.url)
        try:
            raw = fetch(url)
        except OSError as exc:  # URLError, timeouts, DNS: all OSError subclasses
            raise OfficialListsError(
                f"could not download {url} ({exc}). Without network access, set official.local_dir to a "
                f"local copy laid out as in docs/splits.md."
            ) from exc
        data = convert_remote(remote, raw)
        atomic_write_bytes(dest / remote.local_rel, data)
        written[remote.local_rel] = sha256_bytes(data)
    return written


def obtain_official(
    dataset: str,
    dest: str | Path,
    cfg: OfficialConfig | None = None,
    split_kinds: Iterable[str] = ("cls", "main"),
    fetch: Callable[[str], bytes] | None = None,
) -> ObtainResult:
    """Put the official lists for ``dataset`` under ``dest`` (copied from local_dir, or downloaded).

    Writes ``dest/<DS>/...`` and ``dest/<DS>/provenance.json``; returns an :class:`ObtainResult`.
    """
    cfg = cfg or OfficialConfig()
    dest = Path(dest)
    spec = dataset_spec(dataset)
    kinds = list(split_kinds)
    if cfg.local_dir:
        src = Path(cfg.local_dir).expanduser()
        if not src.is_dir():
            raise OfficialListsError(
                f"official.local_dir {src} does not exist; fix the path or unset it to download the lists"
            )
        if dataset == "demo":  # the demo generator only writes cls lists
            kinds = [k for k in kinds if (src / spec.folder / "class-split" / split_kind_dir(k)).is_dir()]
        check_local(dataset, src, kinds, verify=cfg.verify)
        files, source = _copy_local(dataset, src, dest), "local"
    elif cfg.download:
        files, source = download_official(dataset, dest, cfg, fetch), "download"
        check_local(dataset, dest, kinds, verify=False)
    else:
        raise OfficialListsError(
            f"no source for the official {dataset!r} lists: set official.local_dir to a folder laid out as "
            f"in docs/splits.md, or set official.download: true (needs access to raw.githubusercontent.com)"
        )
    provenance = {
        "dataset": dataset,
        "source": source,
        "local_dir": cfg.local_dir,
        "avca": f"{AVCA_REPO}@{AVCA_COMMIT}",
        "tcaf": f"{TCAF_REPO}@{TCAF_COMMIT}",
        "files": files,
    }
    atomic_write_bytes(dest / spec.folder / "provenance.json", json.dumps(provenance, indent=1).encode())
    return ObtainResult(dest, source, files)
