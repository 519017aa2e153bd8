"""A safe, memory-mappable on-disk format for MMSA data: plain ``.npy`` arrays plus ``manifest.json``.

Converting once (``python -m emoe.data convert IN.pkl OUT_DIR``) removes the need to unpickle: the
converted directory is read with ``np.load(allow_pickle=False)``, so loading it cannot run code, and
arrays are memory-mapped (read-only) so several trials on one machine share the page cache.

Layout: ``OUT_DIR/<split>/<key>.npy`` for text, text_bert, audio, vision, labels, ids (fixed-width
unicode), lengths and unimodal labels; ``OUT_DIR/<split>/raw_text.json``; ``OUT_DIR/manifest.json``
with each file's shape, dtype, size and SHA-256, the source file name and hash, the label kind and the
split-size expectation the conversion was checked with (``expect``, honoured again when loading). The
manifest is written last (atomically), so a directory with a manifest is a complete conversion.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path, PurePosixPath
from typing import Any, Literal, TypeGuard

import numpy as np

from emoe import __version__
from emoe.data.arrays import DataSet
from emoe.data.checks import DataError
from emoe.data.mmsa import (
    KNOWN_SIZES,
    LABEL_KINDS,
    SPLITS,
    Expect,
    LabelKind,
    MMSAArrays,
    build_dataset,
    check_arrays,
    expected_sizes,
    load_mmsa,
    read_mmsa,
    to_mmsa_arrays,
)
from emoe.data.verify import sha256_file, verify_checksums

__all__ = ["FORMAT", "MANIFEST", "convert_mmsa", "load_converted", "load_data", "manifest_expect",
           "manifest_problems", "read_manifest", "read_raw_text", "write_converted"]

FORMAT = "emoe-mmsa-npy"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
_PICKLE_SUFFIXES = (".pkl", ".pickle")
_SHA256 = re.compile(r"[0-9a-f]{64}")


def _expect_to_json(expect: Expect) -> str | list[int] | None:
    """The manifest's form of ``expect``: "none", a data set name, three sizes, or None (recognise)."""
    if expect is None:
        return None
    if expect is False:
        return "none"
    if isinstance(expect, str):
        return expect.lower()
    sizes = expected_sizes(expect, None, "expect")
    return list(sizes) if sizes is not None else None


def manifest_expect(manifest: dict[str, Any]) -> Expect:
    """The ``expect`` a directory was converted with (None when the manifest records none)."""
    value = manifest.get("expect")
    if value == "none":
        return False
    if isinstance(value, str):
        return value
    if isinstance(value, list) and len(value) == 3:
        return (int(value[0]), int(value[1]), int(value[2]))
    return None


def _entry(root: Path, rel: str, arr: np.ndarray | None) -> dict[str, Any]:
    path = root / rel
    entry: dict[str, Any] = {"file": rel, "bytes": path.stat().st_size, "sha256": sha256_file(path)}
    if arr is not None:
        entry.update(shape=list(arr.shape), dtype=arr.dtype.str)
    return entry


def write_converted(arrays: MMSAArrays, out_dir: str | os.PathLike[str], *, overwrite: bool = False,
                    source_sha256: str | None = None, expect: Expect = None) -> Path:
    """Write validated arrays as ``.npy`` files plus manifest; returns the manifest path.

    ``expect`` (what the arrays were checked with) is recorded, so a subset converted with
    ``expect=False`` loads later without repeating it."""
    root = Path(out_dir)
    if root.exists() and not root.is_dir():
        raise DataError(f"{root}: exists and is not a directory")
    if root.exists() and any(root.iterdir()) and not overwrite:
        raise DataError(f"{root}: directory is not empty (pass overwrite=True / --overwrite to replace)")
    (root / MANIFEST).unlink(missing_ok=True)  # an interrupted rewrite must not look complete
    splits: dict[str, Any] = {}
    for split in SPLITS:
        (root / split).mkdir(parents=True, exist_ok=True)
        files: dict[str, Any] = {}
        for key, arr in arrays.splits[split].items():
            if key == "raw_text":
                rel = f"{split}/raw_text.json"
                (root / rel).write_text(json.dumps(arr.tolist(), ensure_ascii=False), encoding="utf-8")
                files[key] = _entry(root, rel, None)
                continue
            if arr.dtype.kind == "O":
                raise DataError(f"{arrays.source} [{split}]: '{key}' is an object array; refusing to save it")
            rel = f"{split}/{key}.npy"
            np.save(root / rel, np.ascontiguousarray(arr), allow_pickle=False)
            files[key] = _entry(root, rel, arr)
        splits[split] = {"n": len(arrays.splits[split]["labels"]), "files": files}
    manifest = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "written_by": f"emoe {__version__}",
        "source": Path(arrays.source).name, "source_sha256": source_sha256,
        "dataset": arrays.dataset, "label_kind": arrays.label_kind, "splits": splits,
    }
    if expect is not None:
        manifest["expect"] = _expect_to_json(expect)
    tmp = root / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    os.replace(tmp, root / MANIFEST)
    return root / MANIFEST


def convert_mmsa(pkl_path: str | os.PathLike[str], out_dir: str | os.PathLike[str], *,
                 expect: Expect = None, label_kind: LabelKind | None = None,
                 overwrite: bool = False) -> Path:
    """Convert a (trusted) MMSA pickle once; the result loads without unpickling. Returns the manifest."""
    arrays = read_mmsa(pkl_path, expect=expect, label_kind=label_kind)
    return write_converted(arrays, out_dir, overwrite=overwrite, source_sha256=sha256_file(Path(pkl_path)),
                           expect=expect)


def read_manifest(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read ``manifest.json`` of a converted directory and check its structure (``manifest_problems``)."""
    root = Path(path)
    mpath = root / MANIFEST
    if not root.is_dir():
        raise DataError(f"{root}: not found or not a directory")
    if not mpath.is_file():
        raise DataError(f"{root}: no {MANIFEST}: not a converted data directory (or the conversion "
                        "did not finish)")
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{mpath}: unreadable manifest: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise DataError(f"{mpath}: not an {FORMAT} manifest")
    version = manifest.get("format_version")
    if _is_int(version) and version > FORMAT_VERSION:
        raise DataError(f"{mpath}: format version {version} is newer than this code reads ({FORMAT_VERSION}); "
                        "update emoe")
    problems = manifest_problems(manifest)
    if problems:
        raise DataError("\n".join(f"{mpath}: {p}" for p in problems))
    return manifest


def _is_int(value: object) -> TypeGuard[int]:
    """A JSON whole number (true and false are not numbers here)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _shown(value: object) -> str:
    """``repr(value)``, cut to 60 characters (a manifest may put a whole object where a number belongs)."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _get(obj: dict[str, Any], key: str, where: str, problems: list[str], *, optional: bool = False) -> Any:
    """``obj[key]``, or None with "missing key" noted in ``problems`` (unless ``optional``)."""
    if key not in obj and not optional:
        problems.append(f"{where + ': ' if where else ''}missing key '{key}'")
    return obj.get(key)


def _entry_problems(entry: object, where: str, *, array: bool) -> list[str]:
    """What is wrong with one file entry: file (a relative path inside the directory), bytes, sha256, and
    for an array its shape and dtype."""
    if not isinstance(entry, dict):
        return [f"{where}: expected an object with file, bytes, sha256, got {_shown(entry)}"]
    problems: list[str] = []
    file = _get(entry, "file", where, problems)
    if file is not None:
        parts = PurePosixPath(file).parts if isinstance(file, str) else ()
        if not parts or parts[0] == "/" or ".." in parts or "\\" in file:
            problems.append(f"{where}.file: must be a relative path inside the directory, got {_shown(file)}")
    size = _get(entry, "bytes", where, problems)
    if size is not None and not (_is_int(size) and size >= 0):
        problems.append(f"{where}.bytes: must be a whole number of bytes, got {_shown(size)}")
    digest = _get(entry, "sha256", where, problems)
    if digest is not None and not (isinstance(digest, str) and _SHA256.fullmatch(digest)):
        problems.append(f"{where}.sha256: must be 64 lower-case hex digits, got {_shown(digest)}")
    if array:
        shape = _get(entry, "shape", where, problems)
        if shape is not None and not (isinstance(shape, list) and all(_is_int(n) and n >= 0 for n in shape)):
            problems.append(f"{where}.shape: must be a list of whole numbers, got {_shown(shape)}")
        dtype = _get(entry, "dtype", where, problems)
        if dtype is not None and not isinstance(dtype, str):
            problems.append(f"{where}.dtype: must be a numpy dtype string such as '<f4', got {_shown(dtype)}")
    return problems


def manifest_problems(manifest: dict[str, Any]) -> list[str]:
    """Every way ``manifest``'s structure differs from what ``write_converted`` writes, as ``key: problem``
    (a hand-edited or foreign manifest must not reach the loader as a KeyError or TypeError)."""
    problems: list[str] = []
    version = _get(manifest, "format_version", "", problems)
    if version is not None and not (_is_int(version) and version >= 1):
        problems.append(f"format_version: must be a whole number from 1 to {FORMAT_VERSION}, got {_shown(version)}")
    kind = _get(manifest, "label_kind", "", problems)
    if kind is not None and kind not in LABEL_KINDS:
        problems.append(f"label_kind: must be one of {', '.join(LABEL_KINDS)}, got {_shown(kind)}")
    source = _get(manifest, "source", "", problems)
    if source is not None and not isinstance(source, str):
        problems.append(f"source: must be the source file's name, got {_shown(source)}")
    dataset = _get(manifest, "dataset", "", problems, optional=True)
    if dataset is not None and not (isinstance(dataset, str) and dataset in KNOWN_SIZES):
        problems.append(f"dataset: must be null or one of {', '.join(KNOWN_SIZES)}, got {_shown(dataset)}")
    expect = _get(manifest, "expect", "", problems, optional=True)
    named = isinstance(expect, str) and (expect == "none" or expect in KNOWN_SIZES)
    sizes = isinstance(expect, list) and len(expect) == 3 and all(_is_int(n) and n >= 0 for n in expect)
    if expect is not None and not (named or sizes):
        problems.append(f"expect: must be null, 'none', a data set ({', '.join(KNOWN_SIZES)}) or three split "
                        f"sizes, got {_shown(expect)}")
    splits = _get(manifest, "splits", "", problems)
    if splits is None:
        return problems
    if not isinstance(splits, dict):
        return [*problems, f"splits: must be an object with {', '.join(SPLITS)}, got {_shown(splits)}"]
    missing = [s for s in SPLITS if s not in splits]
    if missing:
        problems.append(f"splits: missing split(s) {', '.join(missing)}")
    for name, split in splits.items():
        where = f"splits.{name}"
        if not isinstance(split, dict):
            problems.append(f"{where}: must be an object with 'files', got {_shown(split)}")
            continue
        files = _get(split, "files", where, problems)
        if files is not None and not isinstance(files, dict):
            problems.append(f"{where}.files: must be an object (key: file entry), got {_shown(files)}")
            continue
        for key, entry in (files or {}).items():
            problems += _entry_problems(entry, f"{where}.files.{key}", array=key != "raw_text")
    return problems


def _load_array(root: Path, entry: dict[str, Any], *, mmap: bool) -> np.ndarray:
    path = root / entry["file"]
    if not path.is_file():
        raise DataError(f"{path}: missing (listed in {root / MANIFEST})")
    size = path.stat().st_size
    if size != entry["bytes"]:
        raise DataError(f"{path}: {size} bytes but the manifest says {entry['bytes']} "
                        "(truncated or modified)")
    try:
        arr = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: unreadable .npy file: {exc}") from exc
    if list(arr.shape) != entry["shape"] or arr.dtype.str != entry["dtype"]:
        raise DataError(f"{path}: holds {arr.dtype.str} {list(arr.shape)} but the manifest says "
                        f"{entry['dtype']} {entry['shape']}")
    return arr


def load_converted(path: str | os.PathLike[str], *, mmap: bool = True,
                   text: Literal["features", "bert"] = "features", expect: Expect = None,
                   label_kind: LabelKind | None = None, verify_hash: bool = False,
                   hash_cache: bool = False) -> DataSet:
    """Load a converted directory without unpickling (``allow_pickle=False``), memory-mapped by default.

    Every listed file must exist with the recorded size, shape and dtype, and the arrays pass the checks a
    pickle's do (``emoe.data.mmsa.check_arrays``: dimensions, dtypes, finite labels and text features,
    sample counts; read in blocks, about as fast as copying the arrays once). ``verify_hash`` also checks
    every file's SHA-256 against the manifest, which reads every byte; with ``hash_cache`` a file
    verified before and unchanged since (size, times, inode: ``emoe.data.verify``) is not read again.
    ``expect``/``label_kind`` as in ``load_mmsa``; ``expect=None`` uses the one recorded at conversion.
    """
    root = Path(path)
    manifest = read_manifest(root)
    splits: dict[str, dict[str, np.ndarray]] = {}
    for split in SPLITS:
        files = manifest["splits"][split]["files"]
        splits[split] = {key: _load_array(root, entry, mmap=mmap)
                         for key, entry in files.items() if key != "raw_text"}
    if verify_hash:
        verify_checksums(root, manifest, cache=hash_cache)
    source = str(root)
    arrays = to_mmsa_arrays(check_arrays(splits, source), source, dataset=manifest.get("dataset"),
                            expect=manifest_expect(manifest) if expect is None else expect,
                            label_kind=label_kind or manifest.get("label_kind"))
    return build_dataset(arrays, text=text)


def read_raw_text(path: str | os.PathLike[str], split: str) -> list[str]:
    """The raw sentences of one split of a converted directory (kept out of ``DataSet``)."""
    root = Path(path)
    entry = read_manifest(root)["splits"][split]["files"].get("raw_text")
    if entry is None:
        raise DataError(f"{root}: split {split!r} has no raw_text")
    file = root / entry["file"]
    if not file.is_file():
        raise DataError(f"{file}: missing (listed in {root / MANIFEST})")
    return list(json.loads(file.read_text(encoding="utf-8")))


def load_data(path: str | os.PathLike[str], *, text: Literal["features", "bert"] = "features",
              expect: Expect = None, label_kind: LabelKind | None = None, mmap: bool = True,
              verify_hash: bool = False, hash_cache: bool = False) -> DataSet:
    """Load by path: a directory -> ``load_converted``; a ``.pkl``/``.pickle`` file -> ``load_mmsa``."""
    p = Path(path)
    if p.is_dir():
        return load_converted(p, mmap=mmap, text=text, expect=expect, label_kind=label_kind,
                              verify_hash=verify_hash, hash_cache=hash_cache)
    if p.suffix.lower() in _PICKLE_SUFFIXES:
        return load_mmsa(p, text=text, expect=expect, label_kind=label_kind)
    if not p.exists():
        raise DataError(f"{p}: not found")
    raise DataError(f"{p}: unknown data format (expected a converted directory or a .pkl/.pickle file)")
