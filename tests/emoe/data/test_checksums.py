"""Checksums of a converted directory (issue 10, row 13): a file whose bytes differ from the manifest is
refused, a verified file is not hashed again while unchanged, and the cache never makes a load fail."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import emoe.data.verify as verify
from emoe.data import DataError, convert_mmsa, load_data

Factory = Callable[..., tuple[Path, dict[str, Any]]]


@pytest.fixture(autouse=True)
def user_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The user cache directory of these tests, and no 'recently changed' window (files here are new)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(verify, "RECENT_NS", 0)
    return tmp_path / "xdg"


@pytest.fixture
def hashes(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Every file hashed, in order."""
    seen: list[Path] = []
    real = verify.sha256_file

    def counting(path: Path) -> str:
        seen.append(path)
        return real(path)

    monkeypatch.setattr(verify, "sha256_file", counting)
    return seen


@pytest.fixture
def converted(tmp_path: Path, mmsa_pickle: Factory) -> Path:
    path, _ = mmsa_pickle()
    convert_mmsa(path, tmp_path / "conv")
    return tmp_path / "conv"


def _flip(path: Path, at: int = -1) -> None:
    raw = bytearray(path.read_bytes())
    raw[at] ^= 0xFF
    path.write_bytes(bytes(raw))


def _next_tick(path: Path) -> None:
    """Wait until the file system's clock has moved past ``path``'s ctime (timestamps tick in ms)."""
    probe = path.with_name(".probe")
    while True:
        probe.write_bytes(b"")
        if probe.stat().st_ctime_ns > path.stat().st_ctime_ns:
            probe.unlink()
            return


def _load(root: Path) -> Any:
    return load_data(root, verify_hash=True, hash_cache=True)


def test_flipped_bytes_of_the_same_size_are_refused_naming_the_file(converted: Path, hashes: list[Path]) -> None:
    audio = converted / "train" / "audio.npy"
    _flip(audio)
    with pytest.raises(DataError, match=r"train/audio\.npy: SHA-256 differs from the manifest"):
        _load(converted)
    raw_text = converted / "test" / "raw_text.json"  # listed files that are not arrays are checked too
    raw_text.write_text(raw_text.read_text().replace("sentence", "sentenze"))
    with pytest.raises(DataError, match=r"test/raw_text\.json: SHA-256 differs"):
        _load(converted)


def test_a_verified_directory_is_not_hashed_again_until_a_file_changes(converted: Path,
                                                                       hashes: list[Path]) -> None:
    _load(converted)
    n_files = len(hashes)
    assert n_files >= 15 and (converted / verify.CACHE_NAME).is_file()
    _load(converted)
    assert len(hashes) == n_files  # remembered: nothing read again

    vision = converted / "valid" / "vision.npy"
    st = vision.stat()
    _next_tick(vision)
    _flip(vision, at=-5)  # same size ...
    os.utime(vision, ns=(st.st_atime_ns, st.st_mtime_ns))  # ... and the old modification time
    assert vision.stat().st_size == st.st_size and vision.stat().st_mtime_ns == st.st_mtime_ns
    with pytest.raises(DataError, match=r"valid/vision\.npy: SHA-256 differs"):
        _load(converted)
    assert hashes[n_files:] == [vision]  # only the changed file was read


def test_a_recently_changed_file_is_checked_but_not_remembered(converted: Path, hashes: list[Path],
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(verify, "RECENT_NS", 3600 * 10**9)
    _load(converted)
    first = len(hashes)
    _load(converted)
    assert len(hashes) == 2 * first


def test_a_read_only_data_directory_keeps_its_cache_in_the_user_cache(converted: Path, hashes: list[Path],
                                                                      user_cache: Path) -> None:
    (converted / verify.CACHE_NAME).mkdir()  # the data directory's cache place cannot be written
    _load(converted)
    n_files = len(hashes)
    (cached,) = (user_cache / "emoe" / "verified").glob("*.json")
    assert json.loads(cached.read_text())["dir"] == str(converted.resolve())
    _load(converted)
    assert len(hashes) == n_files


def test_a_cache_that_cannot_be_written_or_read_never_fails_a_load(converted: Path, hashes: list[Path],
                                                                   user_cache: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    (converted / verify.CACHE_NAME).mkdir()
    blocker = user_cache.parent / "not_a_dir"
    blocker.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))  # the user cache cannot be created either
    _load(converted)
    _load(converted)
    assert len(hashes) == 2 * len({*hashes})  # verified each time, without a cache
    (converted / verify.CACHE_NAME).rmdir()
    (converted / verify.CACHE_NAME).write_text("{garbage")
    _load(converted)
    (converted / verify.CACHE_NAME).write_text(json.dumps({"format": "emoe-verified", "files": {"x": 1}}))
    _load(converted)


def test_a_cache_copied_with_the_directory_is_not_trusted_for_the_copy(converted: Path, hashes: list[Path],
                                                                       tmp_path: Path) -> None:
    import shutil

    _load(converted)
    n_files = len(hashes)
    copy = tmp_path / "copy"
    shutil.copytree(converted, copy)  # same sizes and mtimes, other inodes
    _flip(copy / "train" / "labels.npy")
    with pytest.raises(DataError, match=r"copy/train/labels\.npy: SHA-256 differs"):
        _load(copy)
    assert len(hashes) > n_files


def test_info_verify_always_hashes_every_file(converted: Path, hashes: list[Path]) -> None:
    from emoe.data.__main__ import main

    _load(converted)
    n_files = len(hashes)
    assert main(["info", str(converted), "--verify"]) == 0
    assert len(hashes) == 2 * n_files
