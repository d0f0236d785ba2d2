"""This process's memory, split the way a leak hunt needs it (the node's ``/diagnostics``, the soak).

Resident memory (RSS) counts whatever the allocator holds, freed or not: glibc keeps freed chunks in its
arenas and gives them back to the system in steps, so RSS swings by tens of MB while the program's own
memory stays flat (+-40 MB minute to minute in the 1-hour soak, which left a slope unresolved to
+-13 MB/h). A leak is memory the program still holds, which is what these read:

- ``heap_in_use_mb``: glibc's ``mallinfo2()`` over every arena, bytes in allocated chunks plus the
  blocks it mmapped (``uordblks + hblkhd``): every C and C++ allocation (torch tensors, numpy arrays, ONNX
  Runtime's arena, Fast DDS) and the Python objects over 512 bytes. None where the C library has no
  ``mallinfo2`` (glibc before 2.33, musl, macOS).
- ``python_blocks``: Python's small-object blocks in use (``sys.getallocatedblocks()``): a leak of Python
  objects (a list that only grows).

Where the rest of RSS is: RSS split by kind of page (``/proc``'s ``RssAnon``: heap, free chunks, Python's
arenas, stacks; ``RssFile``: the libraries' code and data; ``RssShmem``: shared memory mapped, Fast DDS's
segments). ``release_freed_memory`` hands the free chunks back (glibc ``malloc_trim``): the node calls it after
it lets a backend go, the moment hundreds of MB are freed at once (the 1-hour soak without it saw RSS climb
568 -> 968 MB, in steps at the heap's peaks, while the heap in use stayed flat: +2.9 MB/h), and every 10 s
for what bursts free in between (resident memory then follows the heap in use within a period, tested; it did
not lower the 1-hour soak's level between faults).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from pathlib import Path

_FIELDS = ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")


class _Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in _FIELDS]  # glibc's struct mallinfo2: ten size_t


def _libc_function(name: str, restype, argtypes: list):
    try:
        function = getattr(ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6"), name)
    except (OSError, AttributeError):
        return None
    function.restype, function.argtypes = restype, argtypes
    return function


_MALLINFO2 = _libc_function("mallinfo2", _Mallinfo2, [])
_MALLOC_TRIM = _libc_function("malloc_trim", ctypes.c_int, [ctypes.c_size_t])


def heap_in_use_mb() -> float | None:
    """MiB in chunks glibc's allocator has handed out and not had back (all arenas, mmapped blocks too);
    None without ``mallinfo2``. Walks the arenas' free lists: call it about once a second, not per frame."""
    if _MALLINFO2 is None:
        return None
    info = _MALLINFO2()
    return (info.uordblks + info.hblkhd) / 2**20


def release_freed_memory() -> bool:
    """Give the free chunks of every arena back to the system (glibc ``malloc_trim(0)``); takes milliseconds
    (22 ms for 290 MB here, 0.2 ms with little free): call it after freeing much at once or every few seconds,
    not per frame. Returns whether any memory went back (False also without glibc)."""
    return bool(_MALLOC_TRIM(0)) if _MALLOC_TRIM is not None else False


def _status_mb(pid: int | str, fields: tuple[str, ...]) -> dict[str, float]:
    """``fields`` (kB lines of ``/proc/<pid>/status``) in MiB; 0 for each once the process has ended or where
    ``/proc`` is absent."""
    values = dict.fromkeys(fields, 0.0)
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            name, _, rest = line.partition(":")
            if name in values:
                values[name] = int(rest.split()[0]) / 1024
    except OSError:
        pass
    return values


def rss_mb(pid: int | str = "self") -> float:
    """Resident memory (``VmRSS``) of process ``pid`` (this one by default) in MiB; 0 once it has ended or
    where ``/proc`` is absent."""
    return _status_mb(pid, ("VmRSS",))["VmRSS"]


def rss_parts_mb(pid: int | str = "self") -> dict[str, float]:
    """Resident memory of ``pid`` in MiB by kind of page: ``anon``, ``file`` and ``shmem`` (they add up to
    ``rss_mb``); zeros as ``rss_mb``."""
    parts = _status_mb(pid, ("RssAnon", "RssFile", "RssShmem"))
    return {"anon": parts["RssAnon"], "file": parts["RssFile"], "shmem": parts["RssShmem"]}


def memory_values() -> dict[str, str]:
    """Diagnostic strings: ``memory_rss_mb`` and its parts ``memory_rss_{anon,file,shmem}_mb``,
    ``memory_heap_in_use_mb`` ("n/a" without ``mallinfo2``) and ``memory_python_blocks``."""
    heap, parts = heap_in_use_mb(), rss_parts_mb()
    return {"memory_rss_mb": f"{sum(parts.values()):.1f}",  # VmRSS is the sum of the three: one read of /proc
            **{f"memory_rss_{part}_mb": f"{mb:.1f}" for part, mb in parts.items()},
            "memory_heap_in_use_mb": "n/a" if heap is None else f"{heap:.1f}",
            "memory_python_blocks": str(sys.getallocatedblocks())}
