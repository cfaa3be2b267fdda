"""Measuring helpers shared by the benchmark scripts: process-tree memory, timed commands, the machine."""
from __future__ import annotations

import os
import platform
import subprocess
import threading
import time
from pathlib import Path


# ------------------------------------------------------------------------------------ process tree memory
def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as handle:
                fields = handle.read().rsplit(b")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(entry))
        except (OSError, IndexError, ValueError):
            continue
    return children


def _direct_children(pid: int) -> list[int]:
    """Children from /proc/PID/task/*/children: a few small reads, not a scan of every process."""
    children = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as handle:
            children.extend(int(c) for c in handle.read().split())
    return children


def _tree(pid: int) -> list[int]:
    result, stack = [], [pid]
    try:
        while stack:
            current = stack.pop()
            result.append(current)
            stack.extend(_direct_children(current))
        return result
    except FileNotFoundError:   # a process ended between reads, or a kernel without the children files
        pass
    except OSError:
        return result or [pid]
    children, result, stack = _children_map(), [], [pid]
    while stack:
        current = stack.pop()
        result.append(current)
        stack.extend(children.get(current, []))
    return result


def _memory(pid: int, pss_too: bool = True) -> tuple[int, int]:
    """(RSS, PSS) of one process in bytes; zeros once it has gone.

    PSS walks every mapping of the process under its memory-map lock, which slows a process that
    maps and unmaps as much as torch does; ``pss_too=False`` reads only the RSS counter.
    """
    rss = pss = 0
    try:
        with open(f"/proc/{pid}/statm") as handle:
            rss = int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        if not pss_too:
            return rss, 0
        with open(f"/proc/{pid}/smaps_rollup") as handle:
            for line in handle:
                if line.startswith("Pss:"):
                    pss = int(line.split()[1]) * 1024
                    break
    except (OSError, ValueError, IndexError):
        pass
    return rss, pss


class TreeSampler(threading.Thread):
    """Polls a process tree and keeps the peak of the summed RSS and PSS."""

    def __init__(self, pid: int, interval: float = 0.05, pss: bool = True):
        super().__init__(daemon=True)
        self.pid, self.interval, self.pss = pid, interval, pss
        self.peak_rss = self.peak_pss = self.peak_processes = self.peak_single_rss = 0
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            pids = _tree(self.pid)
            samples = [_memory(p, self.pss) for p in pids]
            totals = [sum(values) for values in zip(*samples)] or [0, 0]
            self.peak_single_rss = max([self.peak_single_rss] + [rss for rss, _ in samples])
            self.peak_rss, self.peak_pss = max(self.peak_rss, totals[0]), max(self.peak_pss, totals[1])
            self.peak_processes = max(self.peak_processes, len(pids))
            self.stopped.wait(self.interval)


def timed(command: list[str], env: dict, log: Path, interval: float = 0.05, pss: bool = True) -> dict:
    """Run a command; wall time, peak tree memory, and its exit status (output goes to ``log``)."""
    with open(log, "w") as output:
        start = time.perf_counter()
        process = subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT)
        sampler = TreeSampler(process.pid, interval, pss)
        sampler.start()
        status = process.wait()
        wall = time.perf_counter() - start
        sampler.stopped.set()
        sampler.join()
    if status != 0:
        raise SystemExit(f"{' '.join(command)} failed with status {status}; see {log}")
    return {"seconds": wall, "peak_rss": sampler.peak_rss, "peak_pss": sampler.peak_pss,
            "peak_single_rss": sampler.peak_single_rss, "processes": sampler.peak_processes}


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        memory = int(open("/proc/meminfo").readline().split()[1]) / 2 ** 20
    except OSError:
        memory = float("nan")
    return (f"{cpu}, {os.cpu_count()} cores, {memory:.0f} GiB RAM, {platform.system()} {platform.release()}, "
            f"Python {platform.python_version()}")


def gib(value: float) -> str:
    return f"{value / 2 ** 30:.2f} GiB"
