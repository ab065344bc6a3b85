"""What the process may use of the machine it runs on."""

from __future__ import annotations

import os
from typing import Optional


def usable_cores() -> int:
    """The cores this process may run on: its CPU affinity, which containers and `taskset`
    narrow, rather than the machine's count."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def available_memory() -> Optional[int]:
    """Bytes the kernel says new work can take without swapping (Linux's MemAvailable), or
    None where it does not say."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None
