"""The process's own memory (the node's /diagnostics, the soak): what a leak grows, apart from the allocator's
retention that RSS also counts."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from panoptic_perception.core.memory import heap_in_use_mb, memory_values, release_freed_memory, rss_mb, rss_parts_mb

GLIBC = heap_in_use_mb() is not None


@pytest.mark.skipif(not GLIBC, reason="the C library has no mallinfo2 (glibc 2.33 and later)")
def test_heap_in_use_follows_allocations_held_and_freed():
    before = heap_in_use_mb()
    held = np.ones(64 * 2**20, np.uint8)  # 64 MiB, mmapped by malloc: counted in hblkhd
    small = [np.ones(50_000, np.uint8) for _ in range(400)]  # 20 MB of chunks from the arenas: uordblks
    during = heap_in_use_mb()
    del held, small
    after = heap_in_use_mb()
    assert during - before == pytest.approx(64 + 400 * 50_000 / 2**20, abs=4)
    assert after - before == pytest.approx(0, abs=4)


@pytest.mark.skipif(not GLIBC, reason="the C library has no mallinfo2 (glibc 2.33 and later)")
def test_freed_chunks_stay_resident_until_released():
    """Chunks freed below one still held stay in the arena, free and resident (RSS counts them, the heap in use
    does not) until release_freed_memory hands them back."""
    chunks = [np.ones(100_000, np.uint8) for _ in range(1500)]  # 143 MiB from the arenas, every page touched
    pin = chunks.pop()  # the last chunk stays: the arena's top cannot shrink past it
    release_freed_memory()
    before_free, heap_before = rss_mb(), heap_in_use_mb()
    del chunks
    freed = rss_mb()
    assert heap_in_use_mb() - heap_before == pytest.approx(-143, abs=6)
    assert freed - before_free > -20  # freed, yet still resident
    assert release_freed_memory()
    assert rss_mb() - freed < -120
    del pin


def test_python_blocks_count_small_objects_held():
    before = int(memory_values()["memory_python_blocks"])
    held = [(i, str(i)) for i in range(100_000)]  # a tuple and a str each: small-object blocks
    assert int(memory_values()["memory_python_blocks"]) - before >= 200_000
    del held


def test_rss_of_this_process_another_and_one_that_ended():
    values = memory_values()
    assert set(values) == {"memory_rss_mb", "memory_rss_anon_mb", "memory_rss_file_mb", "memory_rss_shmem_mb",
                           "memory_heap_in_use_mb", "memory_python_blocks"}
    assert float(values["memory_rss_mb"]) == pytest.approx(rss_mb(), rel=0.2) and rss_mb() > 20
    parts = rss_parts_mb()
    assert sum(parts.values()) == pytest.approx(rss_mb(), rel=0.05) and parts["anon"] > 0 and parts["file"] > 0
    child = subprocess.Popen([sys.executable, "-c", "print('ready', flush=True); input()"], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline() == "ready\n"  # an interpreter running, not a process still starting
        assert 1 < rss_mb(child.pid) < rss_mb()
    finally:
        child.communicate("\n")
    assert rss_mb(child.pid) == 0.0 and set(rss_parts_mb(child.pid).values()) == {0.0}  # ended and reaped
    assert rss_mb(os.getpid()) > 0
