"""Freed memory kept by the process for the next forward pass, where glibc would hand it back at once.

A CPU forward pass allocates its activations afresh each time (BEiT/ViT-Base + UPerNet at 512²,
batch 4: about 2 GB). glibc serves every block over 32 MiB with its own ``mmap`` and unmaps it when
freed, so the next pass touches brand-new pages again: about 500,000 page faults and 1.2-1.4 s of
kernel time per pass of 14 s, measured on a 2-core EPYC. Served from the heap, and with the heap
never trimmed, the second pass onwards faults almost never (bf16: 13.3 against 14.2 s per pass, the
medians of two processes each; 13.9 against 15.1 s inside ``transseg_predict``). The price: the
process keeps its peak memory until it exits, which is why only the command does this, not the
Python ``Predictor`` inside someone else's program.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

logger = logging.getLogger(__name__)
M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4        # mallopt parameters, from glibc's malloc.h


def keep_freed_memory() -> bool:
    """Serve every allocation from glibc's heap and never trim it; False (and nothing done) off glibc/Linux."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):          # musl and others: no mallopt
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    done = mallopt(M_MMAP_MAX, 0) == 1 and mallopt(M_TRIM_THRESHOLD, -1) == 1    # -1: never trim (mallopt(3))
    logger.debug("freed memory kept for reuse: %s", done)
    return done
