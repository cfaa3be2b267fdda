"""keep_freed_memory: a large block freed stays with the process for the next one (glibc on Linux)."""
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent("""
    import os, sys
    import numpy as np
    from transseg.inference.heap import keep_freed_memory
    if sys.argv[1] == "kept":
        assert keep_freed_memory()
    def resident_mib():
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20
    before = resident_mib()
    block = np.ones(64 * 2 ** 20, np.uint8)        # 64 MiB: above glibc's largest mmap threshold (32 MiB)
    del block
    print(resident_mib() - before)                  # what the process still holds after freeing it
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux only")
def test_a_freed_block_stays_with_the_process_for_reuse():
    held = {mode: float(subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True,
                                       check=True).stdout) for mode in ("default", "kept")}
    assert held["default"] < 8, held                # unmapped at once: the next pass faults its pages in again
    assert held["kept"] > 56, held                  # kept in the heap: the next pass reuses the pages
