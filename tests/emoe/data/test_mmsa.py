"""The MMSA pickle loader: layouts (aligned, unaligned, BERT tokens, CH-SIMS) and every documented error."""

from __future__ import annotations

import pickle
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from emoe.config import ModelConfig
from emoe.data import DataError, check_compatible, load_mmsa
from emoe.data.mmsa import validate_mmsa
from tests.emoe.data.mmsa_files import make_mmsa_dict, write_mmsa_pickle

Factory = Callable[..., tuple[Path, dict[str, Any]]]


def test_aligned_features_loaded_as_written(mmsa_pickle: Factory) -> None:
    path, raw = mmsa_pickle()
    data = load_mmsa(path)
    assert data.label_kind == "mosi" and data.name == str(path)
    for name, split in data.splits().items():
        src = raw[name]
        np.testing.assert_array_equal(split.text, src["text"])
        np.testing.assert_array_equal(split.vision, src["vision"])
        np.testing.assert_array_equal(split.labels, src["regression_labels"])
        assert split.text.dtype == np.float32 and split.labels.dtype == np.float32
        assert list(split.ids) == list(src["id"]) and split.ids.dtype.kind == "U"  # no object arrays
        # -inf in audio becomes 0, everything else untouched
        expected_audio = np.where(np.isneginf(src["audio"]), 0.0, src["audio"])
        np.testing.assert_array_equal(split.audio, expected_audio)
        assert np.isfinite(split.audio).all()
        assert split.audio_lengths is None and split.uni_labels is None
    assert data.dims == {"d_text": 16, "len_text": 6, "d_audio": 4, "len_audio": 6, "d_vision": 6,
                         "len_vision": 6}


def test_unaligned_keeps_lengths(mmsa_pickle: Factory) -> None:
    path, raw = mmsa_pickle(len_audio=15, len_vision=20)
    data = load_mmsa(path)
    assert data.dims["len_audio"] == 15 and data.dims["len_vision"] == 20
    np.testing.assert_array_equal(data.test.audio_lengths, raw["test"]["audio_lengths"])
    np.testing.assert_array_equal(data.test.vision_lengths, raw["test"]["vision_lengths"])
    assert data.test.audio_lengths.dtype == np.int64


def test_bert_tokens(mmsa_pickle: Factory) -> None:
    path, raw = mmsa_pickle()
    data = load_mmsa(path, text="bert")
    assert data.train.text.dtype == np.int64 and data.train.text.shape == (12, 3, 6)
    np.testing.assert_array_equal(data.train.text, raw["train"]["text_bert"])
    assert data.dims["d_text"] == 768 and data.dims["len_text"] == 6
    check_compatible(data, ModelConfig(**data.dims, text_input="bert", bert_path="/weights"))


def test_sims_inferred_with_unimodal_labels(mmsa_pickle: Factory) -> None:
    path, raw = mmsa_pickle(sims=True)
    data = load_mmsa(path)
    assert data.label_kind == "sims"
    # order l, v, a = T, V, A
    np.testing.assert_array_equal(data.valid.uni_labels[:, 1], raw["valid"]["regression_labels_V"])
    np.testing.assert_array_equal(data.valid.uni_labels[:, 2], raw["valid"]["regression_labels_A"])
    assert load_mmsa(path, label_kind="mosi").label_kind == "mosi"
    cls = load_mmsa(path, label_kind="classification")
    assert cls.train.labels.dtype == np.int64


def test_nan_vision_replaced_with_warning(tmp_path: Path) -> None:
    raw = make_mmsa_dict()
    raw["valid"]["vision"][1, 2, 3] = np.nan
    write_mmsa_pickle(tmp_path / "d.pkl", raw)
    with pytest.warns(UserWarning, match=r"\[valid\]: 'vision' has 1 non-finite"):
        data = load_mmsa(tmp_path / "d.pkl")
    assert data.valid.vision[1, 2, 3] == 0.0


def _write(path: Path, obj: Any) -> Path:
    path.write_bytes(pickle.dumps(obj))
    return path


def test_file_errors(tmp_path: Path, mmsa_pickle: Factory) -> None:
    with pytest.raises(DataError, match=r"nope.pkl: file not found"):
        load_mmsa(tmp_path / "nope.pkl")
    junk = tmp_path / "junk.pkl"
    junk.write_bytes(b"this is not a pickle at all")
    with pytest.raises(DataError, match=r"junk.pkl: not a readable MMSA pickle"):
        load_mmsa(junk)
    path, _ = mmsa_pickle()
    cut = tmp_path / "cut.pkl"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(DataError, match=r"cut\.pkl: (truncated|not a readable)"):
        load_mmsa(cut)
    with pytest.raises(DataError, match="expected a dict"):
        load_mmsa(_write(tmp_path / "list.pkl", [1, 2, 3]))


def test_structure_errors(tmp_path: Path) -> None:
    raw = make_mmsa_dict()
    del raw["valid"]
    with pytest.raises(DataError, match=r"s.pkl: missing split\(s\) valid"):
        load_mmsa(_write(tmp_path / "s.pkl", raw))
    with pytest.raises(DataError, match=r"\[train\]: missing key\(s\) vision"):
        load_mmsa(_write(tmp_path / "k.pkl", make_mmsa_dict(drop=["vision"])))
    with pytest.raises(DataError, match="needs 'text_bert'"):
        load_mmsa(_write(tmp_path / "b.pkl", make_mmsa_dict(drop=["text_bert"])), text="bert")
    raw = make_mmsa_dict()
    raw["test"]["audio"] = raw["test"]["audio"][:, :, :3]
    with pytest.raises(DataError, match="'audio' shapes disagree between splits"):
        load_mmsa(_write(tmp_path / "a.pkl", raw))
    raw = make_mmsa_dict()
    raw["train"]["vision"] = raw["train"]["vision"][:-1]
    with pytest.raises(DataError, match=r"\[train\]: sample counts disagree: regression_labels has 12 but "
                                        r"vision has 11"):
        load_mmsa(_write(tmp_path / "n.pkl", raw))
    raw = make_mmsa_dict()
    raw["train"]["text"] = raw["train"]["text"][:, :, 0]
    with pytest.raises(DataError, match="'text' must have 3 dimensions"):
        load_mmsa(_write(tmp_path / "t.pkl", raw))
    raw = make_mmsa_dict()
    raw["test"]["regression_labels"][0] = np.nan
    with pytest.raises(DataError, match="'regression_labels' contain non-finite"):
        load_mmsa(_write(tmp_path / "y.pkl", raw))


def test_split_sizes_checked(tmp_path: Path) -> None:
    # recognised as MOSI: MOSI feature sizes and a path that names it -> the known sizes are enforced
    path = tmp_path / "MOSI" / "Processed" / "aligned_50.pkl"
    write_mmsa_pickle(path, d_audio=5, d_vision=20)
    with pytest.raises(DataError, match="12/5/7 but mosi is 1284/229/686"):
        load_mmsa(path)
    assert len(load_mmsa(path, expect=False).train) == 12
    other = tmp_path / "data.pkl"
    write_mmsa_pickle(other)
    assert len(load_mmsa(other, expect=(12, 5, 7)).test) == 7
    assert len(load_mmsa(other, expect={"train": 12, "valid": 5, "test": 7}).test) == 7
    with pytest.raises(DataError, match="12/5/7 but expected is 12/5/8"):
        load_mmsa(other, expect=(12, 5, 8))
    with pytest.raises(DataError, match="mosei"):
        load_mmsa(other, expect="mosei")


def test_validate_accepts_in_memory_dicts_without_modifying_them() -> None:
    raw = make_mmsa_dict()
    audio = raw["train"]["audio"].copy()
    arrays = validate_mmsa(raw, "memory")
    np.testing.assert_array_equal(raw["train"]["audio"], audio)  # -inf still there in the caller's dict
    assert np.isfinite(arrays.splits["train"]["audio"]).all()


def test_check_compatible_lists_every_mismatch(mmsa_pickle: Factory) -> None:
    path, _ = mmsa_pickle(len_audio=15, len_vision=20)
    data = load_mmsa(path)
    check_compatible(data, ModelConfig(**data.dims, kernel_l=3))
    bad = ModelConfig(d_text=768, d_audio=5, d_vision=20, len_text=6, len_audio=15, len_vision=20, kernel_l=3)
    with pytest.raises(DataError) as info:
        check_compatible(data, bad)
    msg = str(info.value)
    assert "d_text: the model expects 768 but the data have 16" in msg
    assert "d_audio: the model expects 5 but the data have 4" in msg
    assert "d_vision" in msg and "len_audio" not in msg
    with pytest.raises(DataError, match="needs token triples"):
        check_compatible(data, ModelConfig(**data.dims, kernel_l=3, text_input="bert", bert_path="/w"))
    with pytest.raises(DataError, match="n_outputs"):
        check_compatible(data, ModelConfig(**data.dims, kernel_l=3, n_outputs=4))


def test_finiteness_is_checked_in_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    """The check reads a (memory-mapped) array a block of rows at a time and still sees every value."""
    from emoe.data import mmsa

    monkeypatch.setattr(mmsa, "_CHUNK", 10)  # 10 elements: one (2, 3) row per block
    arr = np.zeros((7, 2, 3), np.float32)
    assert mmsa._all_finite(arr) and mmsa._all_finite(arr[:0])
    arr[-1, -1, -1] = np.inf  # the last element of the last block
    assert not mmsa._all_finite(arr)
    arr[-1, -1, -1], arr[3, 0, 0] = 0, np.nan
    assert not mmsa._all_finite(arr)


def _lengths(value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(raw: dict[str, Any]) -> None:
        raw["valid"]["audio_lengths"] = [value] * len(raw["valid"]["audio"])
    return edit


def _first_class_labels(*values: float) -> Callable[[dict[str, Any]], None]:
    def edit(raw: dict[str, Any]) -> None:
        raw["train"]["classification_labels"][:len(values)] = values
    return edit


# case: (edit of an unaligned MMSA dict (audio 8 steps), the message)
WHOLE_NUMBERS: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
    "class labels NaN, -1, 0.5": (
        _first_class_labels(np.nan, -1, 0.5),
        r"\[train\]: 'classification_labels' must be non-negative whole numbers, got -1, 0\.5, nan in 3 place"),
    "class labels infinite": (_first_class_labels(np.inf), r"\[train\]: 'classification_labels' .* got inf"),
    "lengths NaN": (_lengths(float("nan")), r"\[valid\]: 'audio_lengths' must be non-negative whole numbers, "
                                            r"got nan in 5 place"),
    "lengths negative": (_lengths(-1), r"\[valid\]: 'audio_lengths' .* got -1"),
    "lengths not numbers": (_lengths("x"), r"\[valid\]: 'audio_lengths' is not numeric"),
    "token ids fractional": (lambda raw: raw["test"]["text_bert"].__setitem__((0, 0, 0), 2.5),
                             r"\[test\]: 'text_bert' must be non-negative whole numbers, got 2\.5"),
}


@pytest.mark.parametrize("case", list(WHOLE_NUMBERS))
def test_class_labels_lengths_and_tokens_must_be_whole_numbers(case: str) -> None:
    """Checked before the cast to int64, which turned NaN into INT64_MIN and 0.5 into 0 without a word."""
    edit, message = WHOLE_NUMBERS[case]
    raw = make_mmsa_dict(len_audio=8)
    edit(raw)
    with pytest.raises(DataError, match=f"^memory {message}"):
        validate_mmsa(raw, "memory", label_kind="classification")


def test_whole_number_floats_and_zero_lengths_are_fine() -> None:
    raw = make_mmsa_dict(len_audio=8)
    raw["train"]["audio_lengths"] = np.zeros(12)  # float zeros: a sample with no audio
    raw["train"]["classification_labels"][:] = 2.0
    train = validate_mmsa(raw, "memory", label_kind="classification").splits["train"]
    assert train["class_labels"].dtype == np.int64 and set(train["class_labels"]) == {2}
    assert train["audio_lengths"].dtype == np.int64 and not train["audio_lengths"].any()


@pytest.mark.parametrize(("key", "cut", "shape"), [("audio", np.s_[:, :0], "(12, 0, 4)"),
                                                   ("text", np.s_[:, :, :0], "(12, 6, 0)"),
                                                   ("vision", np.s_[:, :, :0], "(12, 6, 0)")])
def test_a_modality_without_steps_or_features_is_the_data_s_problem(key: str, cut: Any, shape: str) -> None:
    """It used to pass the loader and come back as a configuration error (model.len_audio: must be a
    positive integer, got 0), once per grid point, without naming the file."""
    raw = make_mmsa_dict()
    for split in raw.values():
        split[key] = split[key][cut]
    with pytest.raises(DataError, match=rf"^memory \[train\]: '{key}' has shape {re.escape(shape)}: a modality "
                                        "needs at least one time step and one feature"):
        validate_mmsa(raw, "memory")
