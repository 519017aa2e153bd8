"""Checking a converted directory's files against the SHA-256 sums of its manifest, once per file version.

Hashing reads every byte (seconds for a 4 GB MOSEI), and a study checks its data each time it starts, so
a file that hashed correctly is remembered in a small cache: ``.emoe-verified.json`` in the data directory,
or, where that directory cannot be written, ``$XDG_CACHE_HOME/emoe/verified/`` (``~/.cache`` by default).
A cache that cannot be read or written is ignored; it never makes a load fail.

An entry is trusted only while the file's size, modification time, status-change time (ctime) and inode
are the ones recorded and the manifest still lists the same SHA-256. Any write through the file system
changes the ctime (which, unlike the mtime, cannot be set back by ``touch``), so a rewritten or edited
file is hashed again. The limit: a change below the file system (a failing disk, bytes edited on the raw
device, a clock set back before the write) keeps all of these and is not seen. File times tick
coarsely (milliseconds), so a file changed within ``RECENT_NS`` of its check is not remembered: a second
write in the same tick could otherwise hide behind an unchanged stamp. ``python -m emoe.data info
--verify`` always hashes every byte.

``cached_sha256`` gives one file's SHA-256 under the same rules (a study's provenance records the hash of
its source pickle); its entries live only in the user cache, so nothing is written beside the user's file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

from emoe.data.checks import DataError

__all__ = ["CACHE_NAME", "RECENT_NS", "cache_paths", "cached_sha256", "sha256_file", "verify_checksums"]

#: File name of the cache inside a data directory (readers of the directory skip names starting with it).
CACHE_NAME = ".emoe-verified.json"
_CACHE_FORMAT = "emoe-verified"
#: A file whose mtime or ctime is this recent when hashed is verified but not remembered.
RECENT_NS = 2_000_000_000


def sha256_file(path: Path) -> str:
    """SHA-256 of a file's bytes, read in 4 MiB chunks."""
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def cache_paths(root: Path) -> tuple[Path, ...]:
    """Where the cache of data directory ``root`` may be: in it, then in the user cache directory."""
    try:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    except RuntimeError:  # no home directory to be found
        return (root / CACHE_NAME,)
    key = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:20]
    return root / CACHE_NAME, base / "emoe" / "verified" / f"{key}.json"


def _stamp(path: Path, sha256: str) -> list[Any]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, sha256]


def _read_cache(root: Path, places: tuple[Path, ...] | None = None) -> dict[str, list[list[Any]]]:
    """Remembered stamps per file, from every cache place (a stale one in a read-only directory must not
    hide a current one in the user cache)."""
    files: dict[str, list[list[Any]]] = {}
    for path in cache_paths(root) if places is None else places:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and data.get("format") == _CACHE_FORMAT and isinstance(data.get("files"), dict):
            for rel, stamp in data["files"].items():
                if isinstance(stamp, list):
                    files.setdefault(rel, []).append(stamp)
    return files


def _write_cache(root: Path, files: dict[str, list[Any]], places: tuple[Path, ...] | None = None) -> None:
    text = json.dumps({"format": _CACHE_FORMAT, "version": 1, "dir": str(root.resolve()), "files": files})
    for path in cache_paths(root) if places is None else places:
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(text, encoding="utf-8")
            os.replace(tmp, path)
            return
        except OSError:  # read-only data directory (or cache): try the next place, else go without
            with contextlib.suppress(OSError):
                tmp.unlink()


def verify_checksums(root: Path, manifest: dict[str, Any], *, cache: bool = True) -> None:
    """Raise ``DataError`` naming every file listed in ``manifest`` whose SHA-256 differs (or is missing).

    With ``cache``, files whose size, times and inode match a remembered verification are not hashed
    again, and newly verified files are remembered (see the module docstring for what that can miss).
    """
    cached = _read_cache(root) if cache else {}
    verified: dict[str, list[Any]] = {}
    bad: list[str] = []
    hashed = False
    for split in manifest["splits"].values():
        for entry in split["files"].values():
            rel, expected = entry["file"], entry["sha256"]
            path = root / rel
            try:
                stamp = _stamp(path, expected)
            except OSError:
                bad.append(f"{path}: missing (listed in the manifest)")
                continue
            if stamp in cached.get(rel, []):
                verified[rel] = stamp
                continue
            hashed = True
            if sha256_file(path) != expected:
                bad.append(f"{path}: SHA-256 differs from the manifest (file modified or corrupt)")
                continue
            if _settled(stamp) and _stamp(path, expected) == stamp:  # unchanged while it was read
                verified[rel] = stamp
    if bad:
        raise DataError("; ".join(bad) + (f" [{len(bad)} files]" if len(bad) > 1 else ""))
    if cache and hashed:
        _write_cache(root, verified)


def _settled(stamp: list[Any]) -> bool:
    """Whether a file's times are old enough for its stamp to be remembered (``RECENT_NS``)."""
    return time.time_ns() - max(stamp[1], stamp[2]) > RECENT_NS


def cached_sha256(path: Path) -> str:
    """One file's SHA-256, hashed again only when its size, times or inode changed since it was remembered.

    The stamp rules are ``verify_checksums``'s; the entry is kept in the user cache only (one JSON file
    per directory), next to the other files of that directory already remembered there.
    """
    path = Path(path)
    root, rel = path.parent, path.name
    places = cache_paths(root)[1:]
    cached = _read_cache(root, places)
    before = _stamp(path, "")[:4]
    for stamp in cached.get(rel, []):
        if stamp[:4] == before and isinstance(stamp[4], str) and stamp[4]:
            return stamp[4]
    digest = sha256_file(path)
    stamp = _stamp(path, digest)
    if places and stamp[:4] == before and _settled(stamp):  # unchanged while it was read
        files = {name: stamps[-1] for name, stamps in cached.items()}
        files[rel] = stamp
        _write_cache(root, files, places)
    return digest
