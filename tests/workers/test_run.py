"""``workers.run``: what every way of training shares. Here: the CPU loop keeps the memory a step frees."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# A CPU training step's pattern: activation-sized blocks (20 × 4 MiB), written, then freed together. Prints, from
# glibc's own accounting (mallinfo2), the bytes of those blocks that came from mmap (each a fresh mapping, its pages
# faulted in one by one), and the free bytes the heap holds once they are freed (what the next step can reuse). Its
# own process: the setting is process-wide and stays.
PROBE = """
import ctypes, sys, torch
class Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd",
                                                     "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]
libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = Mallinfo2
if sys.argv[1] == "keep":
    from workers.run import keep_freed_memory
    assert keep_freed_memory()
before = libc.mallinfo2().hblkhd
blocks = [torch.ones(2**20) for _ in range(20)]
mmapped = libc.mallinfo2().hblkhd - before
del blocks
print(mmapped, libc.mallinfo2().fordblks)
"""
MIB = 2**20


def _probe(mode: str) -> tuple[int, int]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, mode], cwd=ROOT, capture_output=True, text=True, check=True, timeout=120
    )
    mmapped, kept = out.stdout.split()[-2:]
    return int(mmapped), int(kept)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_a_process_that_keeps_freed_memory_serves_a_step_from_the_heap_and_keeps_it():
    mmapped, kept = _probe("keep")
    assert mmapped < 4 * MIB  # not one of the 20 blocks from a fresh mapping
    assert kept >= 80 * MIB  # and all of them still there for the next step
    # glibc's defaults, for the record: the first 4 MiB block comes from mmap (its threshold starts at 128 KiB).
    assert _probe("default")[0] >= 4 * MIB
