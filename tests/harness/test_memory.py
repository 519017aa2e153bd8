"""Trials give freed batch memory back to the OS: glibc's allocator settings used by the trainable.

Each case runs in a fresh interpreter (the settings are process-wide). Skipped where the C library is
not glibc (no mallopt/malloc_trim): there the functions are no-ops returning False.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from harness.tune.memory import _libc

pytestmark = pytest.mark.skipif(_libc() is None, reason="needs glibc's mallopt and malloc_trim")

PRELUDE = textwrap.dedent("""
    import ctypes
    from harness.tune.memory import _libc, release_free_heap, use_mmap_for_large_blocks

    libc = _libc()
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]

    def anonymous_kib():
        for line in open("/proc/self/smaps_rollup"):
            if line.startswith("Anonymous:"):
                return int(line.split()[1])

    def touch(p, n):
        ctypes.memset(p, 1, n)  # make the pages resident
        return p

    # Freeing a mapped 20 MiB block raises glibc's adaptive threshold to 20 MiB: what a trial's first
    # MOSEI-sized batch does. After that, batch-sized blocks come from the heap. The rise is set here
    # explicitly, so the case does not depend on the adaptive rule being on (a MALLOC_* variable or a
    # glibc tunable in the environment turns it off, and then every 4 MiB block is mapped anyway).
    assert libc.mallopt(-3, 20 << 20) == 1  # M_MMAP_THRESHOLD
""")


def run(code: str) -> str:
    # glibc reads allocator settings from the environment at start-up: run with none of them, so the
    # cases measure the defaults a trial starts from plus what the trainable sets.
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    proc = subprocess.run([sys.executable, "-c", PRELUDE + textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=60, env=env)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def _heap_left_after_freeing(pin_mmap: bool, trim: bool) -> int:
    out = run(f"""
        if {pin_mmap}:
            assert use_mmap_for_large_blocks()
        before = anonymous_kib()
        blocks = [touch(libc.malloc(4 << 20), 4 << 20) for _ in range(40)]  # 160 MiB of batch copies
        small = touch(libc.malloc(256 << 10), 256 << 10)  # a live block above them: the heap cannot shrink
        for b in blocks:
            libc.free(b)
        if {trim}:
            release_free_heap()
        print(anonymous_kib() - before)
    """)
    return int(out) >> 10  # MiB still held


def test_freed_batch_blocks_stay_in_the_heap_unless_mapped_or_trimmed():
    assert _heap_left_after_freeing(pin_mmap=False, trim=False) > 100  # the problem: ~160 MiB kept
    assert _heap_left_after_freeing(pin_mmap=True, trim=False) < 8  # mapped blocks are unmapped on free
    assert _heap_left_after_freeing(pin_mmap=False, trim=True) < 8  # malloc_trim returns free heap pages
