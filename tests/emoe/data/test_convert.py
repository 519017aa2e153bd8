"""The converted format: identical arrays to the pickle, loaded without unpickling, memory-mapped, checked."""

from __future__ import annotations

import hashlib
import json
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from emoe.data import DataError, convert_mmsa, load_converted, load_data, load_mmsa, read_raw_text
from emoe.data.arrays import DataSet
from tests.emoe.data.mmsa_files import rewrite_converted

Factory = Callable[..., tuple[Path, dict[str, Any]]]
FIELDS = ("text", "audio", "vision", "labels", "ids", "audio_lengths", "vision_lengths", "uni_labels")


def _no_unpickling(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the converted format must load without unpickling")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)


def _assert_identical(a: DataSet, b: DataSet) -> None:
    assert a.label_kind == b.label_kind and a.dims == b.dims
    for name in ("train", "valid", "test"):
        sa, sb = a.splits()[name], b.splits()[name]
        for field in FIELDS:
            x, y = getattr(sa, field), getattr(sb, field)
            assert (x is None) == (y is None), field
            if x is not None:
                assert x.dtype == y.dtype and x.shape == y.shape, field
                assert np.array_equal(x, y), field


@pytest.mark.parametrize("kw", [{}, {"len_audio": 9, "len_vision": 11, "sims": True}])
def test_converted_identical_to_pickle_without_unpickling(
        tmp_path: Path, mmsa_pickle: Factory, monkeypatch: pytest.MonkeyPatch, kw: dict[str, Any]) -> None:
    path, _ = mmsa_pickle(**kw)
    out = tmp_path / "converted"
    convert_mmsa(path, out)
    from_pickle = {t: load_mmsa(path, text=t) for t in ("features", "bert")}
    _no_unpickling(monkeypatch)
    with pytest.raises(AssertionError, match="without unpickling"):
        load_mmsa(path)  # the patch is effective
    for text, expected in from_pickle.items():
        converted = load_converted(out, text=text)
        _assert_identical(converted, expected)
        assert isinstance(converted.train.audio, np.memmap)
        assert not converted.train.audio.flags.writeable  # read-only: shared safely between trials
    eager = load_converted(out, mmap=False)
    assert not isinstance(eager.train.text, np.memmap)
    _assert_identical(eager, from_pickle["features"])


def test_manifest_records_every_file(tmp_path: Path, mmsa_pickle: Factory) -> None:
    path, raw = mmsa_pickle()
    out = tmp_path / "c"
    manifest_path = convert_mmsa(path, out)
    manifest = json.loads(manifest_path.read_text())
    assert manifest["format"] == "emoe-mmsa-npy" and manifest["label_kind"] == "mosi"
    assert manifest["source"] == "data.pkl"
    assert manifest["source_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    train = manifest["splits"]["train"]
    assert train["n"] == 12
    for entry in train["files"].values():
        file = out / entry["file"]
        assert hashlib.sha256(file.read_bytes()).hexdigest() == entry["sha256"]
        assert file.stat().st_size == entry["bytes"]
    assert train["files"]["text"]["shape"] == [12, 6, 16] and train["files"]["text"]["dtype"] == "<f4"
    assert train["files"]["ids"]["dtype"].startswith("<U")  # fixed-width unicode, no object array
    assert read_raw_text(out, "valid") == list(raw["valid"]["raw_text"])


def test_damaged_directories_are_reported_by_file(tmp_path: Path, mmsa_pickle: Factory) -> None:
    path, _ = mmsa_pickle()
    out = tmp_path / "c"
    convert_mmsa(path, out)
    audio = out / "valid" / "audio.npy"
    original = audio.read_bytes()
    audio.write_bytes(original[:-10])
    with pytest.raises(DataError, match=r"valid/audio\.npy: \d+ bytes but the manifest says"):
        load_converted(out)
    flipped = bytearray(original)
    flipped[-1] ^= 0xFF
    audio.write_bytes(bytes(flipped))
    load_converted(out)  # same size: only a hash check notices
    with pytest.raises(DataError, match=r"valid/audio\.npy: SHA-256 differs"):
        load_converted(out, verify_hash=True)
    audio.unlink()
    with pytest.raises(DataError, match=r"valid/audio\.npy: missing"):
        load_converted(out)
    (out / "manifest.json").write_text("{not json")
    with pytest.raises(DataError, match="unreadable manifest"):
        load_converted(out)
    (out / "manifest.json").unlink()
    with pytest.raises(DataError, match=r"no manifest\.json"):
        load_converted(out)


def test_refuses_to_overwrite_unless_asked(tmp_path: Path, mmsa_pickle: Factory) -> None:
    path, _ = mmsa_pickle()
    out = tmp_path / "c"
    convert_mmsa(path, out)
    with pytest.raises(DataError, match="not empty"):
        convert_mmsa(path, out)
    path2, _ = mmsa_pickle("other.pkl", sizes=(3, 2, 2), seed=1)
    convert_mmsa(path2, out, overwrite=True)
    assert len(load_converted(out).train) == 3


def test_load_data_dispatches_by_path(tmp_path: Path, mmsa_pickle: Factory) -> None:
    path, _ = mmsa_pickle()
    out = tmp_path / "c"
    convert_mmsa(path, out)
    assert not isinstance(load_data(path).train.text, np.memmap)
    assert isinstance(load_data(out).train.text, np.memmap)
    assert len(load_data(out, expect=(12, 5, 7)).valid) == 5
    with pytest.raises(DataError, match="split sizes train/valid/test are 12/5/7 but expected is 1/2/3"):
        load_data(out, expect=(1, 2, 3))
    with pytest.raises(DataError, match=r"missing.pkl: file not found"):
        load_data(tmp_path / "missing.pkl")
    other = tmp_path / "data.csv"
    other.write_text("a,b\n")
    with pytest.raises(DataError, match="unknown data format"):
        load_data(other)


# A hand-edited conversion whose manifest agrees (sizes, checksums): the arrays get the pickle's checks.
EDITED: dict[str, tuple[str, Callable[[np.ndarray], np.ndarray], str]] = {
    "labels NaN": ("train/labels", lambda a: np.full_like(a, np.nan), r"\[train\]: 'labels' contain non-finite"),
    "text NaN in one value": ("test/text", lambda a: np.where(np.arange(a.size).reshape(a.shape) == 5, np.nan, a),
                              r"\[test\]: 'text' contain non-finite"),
    "text infinite": ("valid/text", lambda a: np.where(a > 0, np.inf, a), r"\[valid\]: 'text' contain non-finite"),
    "labels 2-D": ("train/labels", lambda a: np.stack([a, a], 1),
                   r"\[train\]: 'labels' must have 1 dimension, got shape \(12, 2\)"),
    "unimodal labels NaN": ("valid/uni_labels", lambda a: np.full_like(a, np.nan),
                            r"\[valid\]: 'uni_labels' contain non-finite"),
    "unimodal labels 4 columns": ("train/uni_labels", lambda a: np.concatenate([a, a[:, :1]], 1),
                                  r"'uni_labels' must be \(N, 3\)"),
    "text as integers": ("train/text", lambda a: a.astype(np.int64),
                         r"\[train\]: 'text' must hold floating-point numbers, got dtype int64"),
    "ids as numbers": ("train/ids", lambda a: np.arange(len(a)), r"'ids' must hold strings"),
    "vision count": ("test/vision", lambda a: a[:-1],
                     r"\[test\]: sample counts disagree: labels has 7 but vision has 6"),
}


@pytest.mark.parametrize("case", list(EDITED))
def test_hand_edited_arrays_get_the_pickle_checks(case: str, tmp_path: Path, mmsa_pickle: Factory) -> None:
    rel, edit, message = EDITED[case]
    path, _ = mmsa_pickle(sims=True)
    out = tmp_path / "c"
    convert_mmsa(path, out)
    load_converted(out, verify_hash=True)  # the control
    rewrite_converted(out, f"{rel}.npy", edit(np.load(out / f"{rel}.npy")))
    with pytest.raises(DataError, match=f"{out}.*{message}"):
        load_converted(out, verify_hash=True)


def test_an_added_array_needs_one_row_per_sample(tmp_path: Path, mmsa_pickle: Factory) -> None:
    path, _ = mmsa_pickle()
    out = tmp_path / "c"
    convert_mmsa(path, out)
    for split, n in (("train", 12), ("valid", 5), ("test", 7)):  # another key, a row a sample: carried along
        rewrite_converted(out, f"{split}/extra.npy", np.arange(float(n)))
    load_converted(out)
    rewrite_converted(out, "train/extra.npy", np.ones((), np.float32))  # a scalar: len() would raise
    with pytest.raises(DataError, match=rf"{out} \[train\]: 'extra' must have 1 dimension, got shape \(\)"):
        load_converted(out)


def test_converted_class_labels_are_checked_and_whole_floats_accepted(tmp_path: Path, mmsa_pickle: Factory) -> None:
    path, raw = mmsa_pickle()
    out = tmp_path / "c"
    convert_mmsa(path, out, label_kind="classification")
    labels = np.load(out / "train/class_labels.npy")
    rewrite_converted(out, "train/class_labels.npy", labels.astype(np.float32))  # whole floats: read as ints
    data = load_converted(out)
    assert data.train.labels.dtype == np.int64
    np.testing.assert_array_equal(data.train.labels, raw["train"]["classification_labels"])
    labels[3] = -1
    rewrite_converted(out, "train/class_labels.npy", labels)
    with pytest.raises(DataError, match=rf"{out} \[train\]: 'class_labels' must be non-negative whole numbers, "
                                        "got -1 in 1 place"):
        load_converted(out)


def _edit(path: str, value: Any = None, *, delete: bool = False) -> Callable[[dict[str, Any]], None]:
    """An edit of a manifest: set (or delete) the value at a dotted path."""
    def edit(manifest: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        obj = manifest
        for key in parents:
            obj = obj[key]
        if delete:
            del obj[last]
        else:
            obj[last] = value
    return edit


# A hand-edited or foreign manifest (review A #4): one line per problem, naming manifest.json and the key.
MANIFESTS: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
    "no label_kind": (_edit("label_kind", delete=True), "missing key 'label_kind'"),
    "unknown label_kind": (_edit("label_kind", "banana"),
                           "label_kind: must be one of mosi, sims, classification, got 'banana'"),
    "format_version a string": (_edit("format_version", "2"),
                                "format_version: must be a whole number from 1 to 1, got '2'"),
    "format_version true": (_edit("format_version", True), "format_version: must be a whole number"),
    "format_version newer": (_edit("format_version", 7), "format version 7 is newer than this code reads"),
    "no files": (_edit("splits.train.files", delete=True), "splits.train: missing key 'files'"),
    "files a list": (_edit("splits.valid.files", []), "splits.valid.files: must be an object"),
    "split a string": (_edit("splits.test", "x"), "splits.test: must be an object with 'files', got 'x'"),
    "splits missing one": (_edit("splits.valid", delete=True), "splits: missing split(s) valid"),
    "entry without bytes": (_edit("splits.train.files.text.bytes", delete=True),
                            "splits.train.files.text: missing key 'bytes'"),
    "bytes a string": (_edit("splits.train.files.text.bytes", "4736"),
                       "splits.train.files.text.bytes: must be a whole number of bytes, got '4736'"),
    "entry outside the directory": (_edit("splits.train.files.audio.file", "../../elsewhere.npy"),
                                    "splits.train.files.audio.file: must be a relative path inside the "
                                    "directory, got '../../elsewhere.npy'"),
    "entry absolute": (_edit("splits.test.files.vision.file", "/etc/passwd"),
                       "splits.test.files.vision.file: must be a relative path inside the directory"),
    "sha256 not hex": (_edit("splits.train.files.labels.sha256", "abc"),
                       "splits.train.files.labels.sha256: must be 64 lower-case hex digits, got 'abc'"),
    "shape a string": (_edit("splits.train.files.labels.shape", "12"),
                       "splits.train.files.labels.shape: must be a list of whole numbers, got '12'"),
    "dtype missing": (_edit("splits.train.files.labels.dtype", delete=True),
                      "splits.train.files.labels: missing key 'dtype'"),
    "raw_text without sha256": (_edit("splits.train.files.raw_text.sha256", delete=True),
                                "splits.train.files.raw_text: missing key 'sha256'"),
    "unknown dataset": (_edit("dataset", "imdb"), "dataset: must be null or one of mosi, mosei, sims, got 'imdb'"),
    "expect two sizes": (_edit("expect", [1, 2]), "expect: must be null, 'none', a data set"),
    "huge value shown short": (_edit("label_kind", {"x": "y" * 500}),
                               "label_kind: must be one of mosi, sims, classification, got {'x': 'yyyyy"),
}


@pytest.mark.parametrize("case", list(MANIFESTS))
def test_a_bad_manifest_is_named_by_key(case: str, tmp_path: Path, mmsa_pickle: Factory) -> None:
    edit, message = MANIFESTS[case]
    path, _ = mmsa_pickle()
    out = tmp_path / "c"
    manifest_path = convert_mmsa(path, out)
    manifest = json.loads(manifest_path.read_text())
    edit(manifest)
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(DataError) as info:
        load_converted(out, verify_hash=True)
    assert f"{manifest_path}: {message}" in str(info.value)
    assert len(str(info.value)) < 400


def test_every_manifest_problem_is_listed_on_its_own_line(tmp_path: Path, mmsa_pickle: Factory) -> None:
    path, _ = mmsa_pickle()
    out = tmp_path / "c"
    manifest_path = convert_mmsa(path, out)
    manifest = json.loads(manifest_path.read_text())
    del manifest["label_kind"]
    del manifest["splits"]["test"]["files"]["audio"]["bytes"]
    manifest["splits"]["train"]["files"]["labels"]["file"] = "../labels.npy"
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(DataError) as info:
        load_converted(out)
    assert str(info.value).splitlines() == [
        f"{manifest_path}: missing key 'label_kind'",
        f"{manifest_path}: splits.train.files.labels.file: must be a relative path inside the directory, "
        "got '../labels.npy'",
        f"{manifest_path}: splits.test.files.audio: missing key 'bytes'"]


def test_a_manifest_without_labels_names_the_split(tmp_path: Path, mmsa_pickle: Factory) -> None:
    path, _ = mmsa_pickle()
    out = tmp_path / "c"
    manifest_path = convert_mmsa(path, out)
    manifest = json.loads(manifest_path.read_text())
    del manifest["splits"]["train"]["files"]["labels"]
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(DataError, match=rf"^{out} \[train\]: missing key\(s\) labels; present: "):
        load_converted(out)
