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
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from pathlib import Path

_FIELDS = ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")


class _Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in _FIELDS]  # glibc's struct mallinfo2: ten size_t


def _load_mallinfo2():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        function = libc.mallinfo2
    except (OSError, AttributeError):
        return None
    function.restype = _Mallinfo2
    function.argtypes = []
    return function


_MALLINFO2 = _load_mallinfo2()


def heap_in_use_mb() -> float | None:
    """MiB in chunks glibc's allocator has handed out and not had back (all arenas, mmapped blocks too);
    None without ``mallinfo2``. Walks the arenas' free lists: call it about once a second, not per frame."""
    if _MALLINFO2 is None:
        return None
    info = _MALLINFO2()
    return (info.uordblks + info.hblkhd) / 2**20


def rss_mb(pid: int | str = "self") -> float:
    """Resident memory (``VmRSS``) of process ``pid`` (this one by default) in MiB; 0 once it has ended or
    where ``/proc`` is absent."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def memory_values() -> dict[str, str]:
    """``memory_rss_mb``, ``memory_heap_in_use_mb`` ("n/a" without ``mallinfo2``) and
    ``memory_python_blocks`` as diagnostic strings."""
    heap = heap_in_use_mb()
    return {"memory_rss_mb": f"{rss_mb():.1f}",
            "memory_heap_in_use_mb": "n/a" if heap is None else f"{heap:.1f}",
            "memory_python_blocks": str(sys.getallocatedblocks())}
