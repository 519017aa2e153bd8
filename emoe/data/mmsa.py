"""Loader for the MMSA feature pickles of CMU-MOSI, CMU-MOSEI and CH-SIMS.

Security: a pickle runs code while it loads, so only load files you trust (e.g. downloaded from the
MMSA authors' links and checked). Convert a file once with ``python -m emoe.data convert IN.pkl OUT``
and load the result with ``load_converted``/``load_data``: that format never unpickles anything.

File layout (a pickled dict): top level ``train``/``valid``/``test``; each split holds ``text``
(N, L, 768) features, ``text_bert`` (N, 3, L) token ids/mask/segments, ``audio`` (N, L_a, d_a),
``vision`` (N, L_v, d_v), ``regression_labels`` (N,), ``id`` and ``raw_text`` (N,) strings; unaligned
files add ``audio_lengths``/``vision_lengths``; CH-SIMS adds ``regression_labels_T/A/V``.
"""

from __future__ import annotations

import os
import pickle
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np

from emoe.data.arrays import DataSet, Split
from emoe.data.checks import DataError

__all__ = [
    "KNOWN_SIZES",
    "LABEL_KINDS",
    "PICKLE_NAMES",
    "SPLITS",
    "Expect",
    "LabelKind",
    "MMSAArrays",
    "build_dataset",
    "check_arrays",
    "check_split",
    "expected_sizes",
    "load_mmsa",
    "read_mmsa",
    "to_mmsa_arrays",
    "validate_mmsa",
]

SPLITS: tuple[str, str, str] = ("train", "valid", "test")
#: Split sizes (train, valid, test) of the public MMSA files.
KNOWN_SIZES: dict[str, tuple[int, int, int]] = {
    "mosi": (1284, 229, 686),
    "mosei": (16326, 1871, 4659),
    "sims": (1368, 456, 457),
}
# A file is recognised when its (d_audio, d_vision) match and its path names the data set.
_SIGNATURES: dict[str, tuple[int, int]] = {"mosi": (5, 20), "mosei": (74, 35), "sims": (33, 709)}
_PATH_HINTS: dict[str, tuple[str, ...]] = {"mosi": ("mosi",), "mosei": ("mosei",), "sims": ("sims",)}
_UNI_KEYS = ("regression_labels_T", "regression_labels_V", "regression_labels_A")  # order l, v, a

#: None = check sizes when the file is recognised; a data set name, (train, valid, test) sizes or a
#: dict of them = check against those; False = do not check.
Expect = str | tuple[int, int, int] | Mapping[str, int] | Literal[False] | None
LabelKind = Literal["mosi", "sims", "classification"]
LABEL_KINDS: tuple[str, ...] = get_args(LabelKind)


@dataclass(frozen=True)
class MMSAArrays:
    """Validated, cleaned arrays of an MMSA file (canonical keys per split), before picking a text input.

    Keys: text, text_bert, audio, vision, labels, ids, raw_text, audio_lengths, vision_lengths,
    uni_labels, class_labels (each optional except audio, vision, labels and one of the two texts).
    """

    splits: dict[str, dict[str, np.ndarray]]
    source: str
    dataset: str | None  # "mosi" | "mosei" | "sims" when recognised
    label_kind: str


def _unpickle(path: Path) -> Any:
    if not path.exists():
        raise DataError(f"{path}: file not found")
    if path.is_dir():
        raise DataError(f"{path}: is a directory, expected an MMSA .pkl file (or use load_converted)")
    try:
        with path.open("rb") as fh:
            return pickle.load(fh)
    except EOFError as exc:
        raise DataError(f"{path}: truncated pickle (ended early): {exc}") from exc
    except (pickle.UnpicklingError, ValueError, TypeError, AttributeError, ImportError, IndexError,
            KeyError, UnicodeDecodeError, MemoryError) as exc:
        raise DataError(f"{path}: not a readable MMSA pickle (corrupt or another format): "
                        f"{type(exc).__name__}: {exc}") from exc
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc}") from exc


def _strings(x: Any) -> np.ndarray:
    arr = np.asarray(x)
    if arr.dtype.kind == "S":
        return np.char.decode(arr, "utf-8")
    return arr.astype(np.str_)


def _numbers(x: Any, where: str, key: str, *, column: bool = False) -> np.ndarray:
    """``x`` as a numeric array (numbers kept as they are, anything else as float64); with ``column``, an
    (N, 1) array becomes (N,). Dimensions and values are ``check_split``'s to judge."""
    arr = np.asarray(x)
    if arr.dtype.kind not in "biuf":
        try:
            arr = arr.astype(np.float64)
        except (TypeError, ValueError) as exc:
            raise DataError(f"{where}: '{key}' is not numeric: {exc}") from exc
    if column and arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    return arr


def _floats(x: Any, where: str, key: str, *, column: bool = False) -> np.ndarray:
    """``x`` as float32 (see ``_numbers``)."""
    return _numbers(x, where, key, column=column).astype(np.float32, copy=False)


def _finite_or_zero(arr: np.ndarray, where: str, key: str, warn: bool) -> np.ndarray:
    bad = ~np.isfinite(arr)
    if not bad.any():
        return arr
    if warn:
        warnings.warn(f"{where}: '{key}' has {int(bad.sum())} non-finite values, replaced by 0", stacklevel=4)
    arr = arr.copy()
    arr[bad] = 0.0
    return arr


def _read_split(raw: Any, where: str) -> dict[str, np.ndarray]:
    """One pickled split under the canonical keys, as numpy arrays (float32 features and labels; non-finite
    audio and vision replaced by 0, as the reference does: -inf in audio is an artefact of the MMSA files).
    Keys that are absent stay absent: ``check_split`` names them."""
    if not isinstance(raw, Mapping):
        raise DataError(f"{where}: expected a dict of arrays, got {type(raw).__name__}")
    out: dict[str, np.ndarray] = {}
    if "text" in raw:
        out["text"] = _floats(raw["text"], where, "text")
    if "text_bert" in raw:
        out["text_bert"] = _numbers(raw["text_bert"], where, "text_bert")
    for key in ("audio", "vision"):
        if key in raw:
            out[key] = _finite_or_zero(_floats(raw[key], where, key), where, key, warn=key == "vision")
    if "regression_labels" in raw:
        out["labels"] = _floats(raw["regression_labels"], where, "regression_labels", column=True)
    if "classification_labels" in raw:
        out["class_labels"] = _numbers(raw["classification_labels"], where, "classification_labels", column=True)
    for key, name in (("id", "ids"), ("raw_text", "raw_text")):
        if key in raw:
            out[name] = _strings(raw[key])
    for key in ("audio_lengths", "vision_lengths"):
        if key in raw:
            out[key] = _numbers(raw[key], where, key, column=True)
    if all(k in raw for k in _UNI_KEYS):
        uni = [_floats(raw[k], where, k, column=True) for k in _UNI_KEYS]
        if len({u.shape for u in uni}) > 1 or uni[0].ndim != 1:
            raise DataError(f"{where}: {'/'.join(_UNI_KEYS)} must be 1-D arrays of one length, "
                            f"got shapes {[u.shape for u in uni]}")
        out["uni_labels"] = np.stack(uni, axis=1)
    return out


#: How a canonical key is called in an MMSA pickle (messages about a pickle use the file's own names).
PICKLE_NAMES: dict[str, str] = {"labels": "regression_labels", "class_labels": "classification_labels",
                                "ids": "id", "uni_labels": "regression_labels_T/V/A"}
#: Dimensions of every canonical array, and the dtype kind it must have: "f" float, "U" text, "n" numbers
#: that must be non-negative whole numbers (``_whole``; stored as int64).
_LAYOUT: dict[str, tuple[int, str]] = {
    "text": (3, "f"), "text_bert": (3, "n"), "audio": (3, "f"), "vision": (3, "f"), "labels": (1, "f"),
    "uni_labels": (2, "f"), "class_labels": (1, "n"), "audio_lengths": (1, "n"), "vision_lengths": (1, "n"),
    "ids": (1, "U"), "raw_text": (1, "U"),
}
_KINDS = {"f": ("f", "floating-point numbers"), "U": ("U", "strings"), "n": ("biuf", "numbers")}
#: Arrays that must be finite. Audio and vision are not checked: a pickle's non-finite values are replaced
#: by 0 as it is read (so a conversion writes none), and they are the largest arrays of unaligned data, so
#: a converted directory's are not read again here (NaN put there by hand shows as diverged trials).
_FINITE = ("text", "labels", "uni_labels")
_CHUNK = 1 << 23  # elements per block of the finiteness check (32 MiB of float32): bounded memory


def _all_finite(arr: np.ndarray) -> bool:
    """Whether every value is finite, checked in blocks of rows (a memory-mapped array is never copied whole)."""
    rows = max(1, _CHUNK // max(1, int(np.prod(arr.shape[1:], dtype=np.int64))))
    return all(bool(np.isfinite(arr[i:i + rows]).all()) for i in range(0, len(arr), rows))


def check_split(split: Mapping[str, np.ndarray], where: str,
                names: Mapping[str, str] | None = None) -> dict[str, np.ndarray]:
    """Check one split's canonical arrays (the rules both loaders share) and return them.

    Required keys present; each array's dimensions and dtype kind (``_LAYOUT``); modalities with at least
    one step and one feature; BERT tokens as (N, 3, L); text features, labels and unimodal labels finite;
    token ids, class labels and lengths non-negative whole numbers, returned as int64; every array with the labels' sample count. Raises ``DataError`` naming
    ``where`` and the key, called as ``names`` says (the pickle's own names).
    """
    def name(key: str) -> str:
        return (names or {}).get(key, key)

    missing = [name(k) for k in ("audio", "vision", "labels") if k not in split]
    if "text" not in split and "text_bert" not in split:
        missing.append("text (or text_bert)")
    if missing:
        raise DataError(f"{where}: missing key(s) {', '.join(missing)}; present: {sorted(map(name, split))}")
    for key, arr in split.items():
        ndim, kind = _LAYOUT.get(key, (max(arr.ndim, 1), arr.dtype.kind))  # other keys: one row a sample
        if arr.ndim != ndim:
            raise DataError(f"{where}: '{name(key)}' must have {ndim} dimension{'s' * (ndim != 1)}, "
                            f"got shape {arr.shape}")
        kinds, want = _KINDS.get(kind, (kind, kind))
        if arr.dtype.kind not in kinds:
            raise DataError(f"{where}: '{name(key)}' must hold {want}, got dtype {arr.dtype}")
    for key in ("text", "text_bert", "audio", "vision"):
        if key in split and 0 in split[key].shape[1:]:
            raise DataError(f"{where}: '{name(key)}' has shape {split[key].shape}: a modality needs at least one "
                            "time step and one feature per sample")
    if "text_bert" in split and split["text_bert"].shape[1] != 3:
        raise DataError(f"{where}: '{name('text_bert')}' must be (N, 3, L) ids/mask/segments, "
                        f"got shape {split['text_bert'].shape}")
    if "uni_labels" in split and split["uni_labels"].shape[1] != 3:
        raise DataError(f"{where}: '{name('uni_labels')}' must be (N, 3) labels (l, v, a), "
                        f"got shape {split['uni_labels'].shape}")
    for key in _FINITE:
        if key in split and not _all_finite(split[key]):
            raise DataError(f"{where}: '{name(key)}' contain non-finite values (NaN or infinity)")
    out = dict(split)
    for key in (k for k, (_, kind) in _LAYOUT.items() if kind == "n" and k in split):
        out[key] = _whole(split[key], f"{where}: '{name(key)}'")
    n = len(out["labels"])
    wrong = [f"{name(k)} has {len(v)}" for k, v in out.items() if len(v) != n]
    if wrong:
        raise DataError(f"{where}: sample counts disagree: {name('labels')} has {n} but {', '.join(wrong)}")
    return out


def _whole(arr: np.ndarray, what: str) -> np.ndarray:
    """``arr`` as int64 after checking that every value is a finite whole number >= 0; ``DataError`` starting
    with ``what`` lists the bad values. (Lengths are not bounded by their modality's steps: training does not
    read them, and a file whose lengths count the frames before padding cut them must still load.)"""
    with np.errstate(invalid="ignore"):
        bad = arr < 0
        if arr.dtype.kind == "f":
            bad |= ~np.isfinite(arr) | (arr != np.round(arr))
    if bad.any():
        values = np.unique(arr[bad])
        shown = ", ".join(f"{v:g}" for v in values[:5]) + (f" ({len(values)} distinct)" if len(values) > 5 else "")
        raise DataError(f"{what} must be non-negative whole numbers, got {shown} in {int(bad.sum())} place(s)")
    return arr.astype(np.int64, copy=False)


def check_arrays(splits: Mapping[str, Mapping[str, np.ndarray]], source: str,
                 names: Mapping[str, str] | None = None) -> dict[str, dict[str, np.ndarray]]:
    """``check_split`` on each split, then what the splits must share: keys, per-sample shapes, and the
    text length of features and BERT tokens. Used by the pickle and the converted loader alike."""
    checked = {s: check_split(splits[s], f"{source} [{s}]", names) for s in SPLITS}
    keys = set(checked["train"])
    for s in SPLITS[1:]:
        if set(checked[s]) != keys:
            raise DataError(f"{source}: splits hold different keys: train {sorted(keys)}, "
                            f"{s} {sorted(checked[s])}")
    for key in ("text", "text_bert", "audio", "vision", "uni_labels"):
        if key in keys:
            shapes = {s: checked[s][key].shape[1:] for s in SPLITS}
            if len(set(shapes.values())) > 1:
                raise DataError(f"{source}: '{key}' shapes disagree between splits: {shapes}")
    train = checked["train"]
    if "text" in keys and "text_bert" in keys and train["text"].shape[1] != train["text_bert"].shape[2]:
        raise DataError(f"{source}: 'text' has {train['text'].shape[1]} steps but 'text_bert' "
                        f"{train['text_bert'].shape[2]}")
    return checked


def to_mmsa_arrays(splits: dict[str, dict[str, np.ndarray]], source: str, *, dataset: str | None,
                   expect: Expect = None, label_kind: str | None = None) -> MMSAArrays:
    """Checked splits as ``MMSAArrays``: the split sizes ``expect`` asks for (see ``expected_sizes``; None
    uses those of ``dataset``), and the label kind given or inferred (``sims`` for labels in [-1, 1] with
    T/A/V labels, else ``mosi``), which must fit the arrays."""
    sizes = expected_sizes(expect, dataset, source)
    got = tuple(len(splits[s]["labels"]) for s in SPLITS)
    if sizes is not None and got != sizes:
        what = dataset if expect is None else (expect.lower() if isinstance(expect, str) else "expected")
        raise DataError(f"{source}: split sizes train/valid/test are {'/'.join(map(str, got))} but {what} is "
                        f"{'/'.join(map(str, sizes))} (truncated or a different file?; pass expect=False "
                        "to load a subset)")
    keys = set(splits["train"])
    if label_kind is None:
        in_range = all(np.abs(splits[s]["labels"]).max(initial=0.0) <= 1.0 for s in SPLITS)
        label_kind = "sims" if in_range and "uni_labels" in keys else "mosi"
    elif label_kind not in LABEL_KINDS:
        raise DataError(f"{source}: label_kind must be {', '.join(LABEL_KINDS)}, got {label_kind!r}")
    if label_kind == "classification" and "class_labels" not in keys:
        raise DataError(f"{source}: label_kind='classification' needs class labels in every split "
                        "('classification_labels' in a pickle)")
    return MMSAArrays(splits=splits, source=source, dataset=dataset, label_kind=label_kind)


def _recognise(source: str, splits: dict[str, dict[str, np.ndarray]]) -> str | None:
    train = splits["train"]
    sig = (train["audio"].shape[2], train["vision"].shape[2])
    lowered = source.lower()
    for name, expected in _SIGNATURES.items():
        if sig == expected and any(h in lowered for h in _PATH_HINTS[name]):
            return name
    return None


def expected_sizes(expect: Expect, recognised: str | None, source: str) -> tuple[int, ...] | None:
    """The (train, valid, test) sizes to check, or None for no check (see ``Expect``)."""
    if expect is False:
        return None
    if expect is None:
        return KNOWN_SIZES[recognised] if recognised else None
    if isinstance(expect, str):
        if expect.lower() not in KNOWN_SIZES:
            raise DataError(f"{source}: expect={expect!r} is not a known data set ({list(KNOWN_SIZES)})")
        return KNOWN_SIZES[expect.lower()]
    if isinstance(expect, Mapping):
        return tuple(int(expect[s]) for s in SPLITS)
    if len(expect) != 3:
        raise DataError(f"{source}: expect must give three sizes (train, valid, test), got {expect!r}")
    return tuple(int(x) for x in expect)


def validate_mmsa(raw: Any, source: str, *, expect: Expect = None,
                  label_kind: LabelKind | None = None) -> MMSAArrays:
    """Check and clean an unpickled MMSA dict; every problem is a ``DataError`` naming ``source``."""
    if not isinstance(raw, Mapping):
        raise DataError(f"{source}: expected a dict with train/valid/test, got {type(raw).__name__}")
    missing = [s for s in SPLITS if s not in raw]
    if missing:
        raise DataError(f"{source}: missing split(s) {', '.join(missing)}; present: {sorted(map(str, raw))}")
    splits = check_arrays({s: _read_split(raw[s], f"{source} [{s}]") for s in SPLITS}, source, PICKLE_NAMES)
    return to_mmsa_arrays(splits, source, dataset=_recognise(source, splits), expect=expect,
                          label_kind=label_kind)


def read_mmsa(path: str | os.PathLike[str], *, expect: Expect = None,
              label_kind: LabelKind | None = None) -> MMSAArrays:
    """Unpickle (trusted files only) and validate an MMSA file."""
    p = Path(path)
    return validate_mmsa(_unpickle(p), str(p), expect=expect, label_kind=label_kind)


def build_dataset(arrays: MMSAArrays, *, text: Literal["features", "bert"] = "features",
                  name: str | None = None) -> DataSet:
    """Pick the text input and assemble a ``DataSet`` (shared by the pickle and converted loaders)."""
    key = {"features": "text", "bert": "text_bert"}.get(text)
    if key is None:
        raise DataError(f"{arrays.source}: text must be 'features' or 'bert', got {text!r}")
    if key not in arrays.splits["train"]:
        raise DataError(f"{arrays.source}: text={text!r} needs '{key}', which the file does not hold")
    classification = arrays.label_kind == "classification"
    splits = {}
    for s, d in arrays.splits.items():
        splits[s] = Split(
            text=d[key], audio=d["audio"], vision=d["vision"],
            labels=d["class_labels"] if classification else d["labels"],
            ids=d.get("ids"), audio_lengths=d.get("audio_lengths"), vision_lengths=d.get("vision_lengths"),
            uni_labels=d.get("uni_labels"),
        )
    return DataSet(train=splits["train"], valid=splits["valid"], test=splits["test"],
                   name=name or arrays.source, label_kind=arrays.label_kind)


def load_mmsa(path: str | os.PathLike[str], *, text: Literal["features", "bert"] = "features",
              expect: Expect = None, label_kind: LabelKind | None = None) -> DataSet:
    """Load an MMSA pickle as a ``DataSet``. Unpickling runs code: trusted files only (see module doc).

    ``expect``: None checks split sizes when the file is recognised (MOSI, MOSEI, CH-SIMS by feature
    sizes and path), a name/sizes checks against those, False skips the check. ``label_kind`` is
    inferred (``sims`` for labels in [-1, 1] with T/A/V labels, else ``mosi``) unless given.
    """
    return build_dataset(read_mmsa(path, expect=expect, label_kind=label_kind), text=text)
