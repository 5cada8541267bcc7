"""The process's own peak memory, for runs and benchmarks.

A module of its own, importing nothing heavy, so a benchmark that measures its peak does not
raise it by importing the training code.
"""

from __future__ import annotations

import sys

__all__ = ["peak_rss_mib"]


def peak_rss_mib() -> float:
    """This process's peak resident memory in MiB.

    On Linux the high-water mark of its own memory (``VmHWM``): ``ru_maxrss`` also holds the
    parent's peak at the time a spawned process (a benchmark's seed or measurement) started,
    which the kernel carries through fork and exec. Elsewhere ``ru_maxrss`` (bytes on macOS,
    KiB otherwise).
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (2**20 if sys.platform == "darwin" else 1024), 1)
