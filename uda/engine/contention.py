"""Whether other processes keep this run's cores busy: timings taken beside a busy process are not the
machine's speed (a second training on 2 cores cut a run from ~5,700 to ~200 img/s, with nothing in the log).

Between two looks, the busy time of the cores this process may use (``/proc/stat``, those of its affinity
mask) minus this process's own CPU time is what others used; ``share`` is that over the cores' capacity.
Linux only: elsewhere nothing is measured and the run records ``"contended": null``.
"""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path

log = logging.getLogger("uda")

THRESHOLD = 0.25  # others used over a quarter of our cores' time: half a core of two
STAT = Path("/proc/stat")
MIN_INTERVAL_S = 10.0  # looks closer than this are skipped: a blip of a few seconds is not contention


def cores() -> list[int]:
    """The cores this process may run on (its affinity mask, as SLURM and taskset set it)."""
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return list(range(os.cpu_count() or 1))


def default_threads() -> int:
    """torch threads for trainer.threads=0: $OMP_NUM_THREADS where set, else the cores this process may use."""
    env = os.environ.get("OMP_NUM_THREADS", "")
    return int(env) if env.isdigit() and int(env) > 0 else len(cores())


def _busy_s(ids: set[int]) -> float | None:
    """Seconds the cores ``ids`` spent busy since boot (all but idle and iowait), from /proc/stat."""
    try:
        lines = STAT.read_text().splitlines()
    except OSError:
        return None
    tick, busy = os.sysconf("SC_CLK_TCK"), 0
    for line in lines:
        name, *fields = line.split()
        if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in ids:
            v = [int(x) for x in fields[:8]]  # user nice system idle iowait irq softirq steal
            busy += sum(v) - v[3] - v[4]
    return busy / tick


def _own_s() -> float:
    """CPU seconds of this process and its descendants (DataLoader workers are ours, not contention)."""
    tick, parents, times = os.sysconf("SC_CLK_TCK"), {}, {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):  # a process that ended meanwhile
            continue
        pid = int(stat.parent.name)
        parents[pid], times[pid] = int(fields[1]), (int(fields[11]) + int(fields[12])) / tick  # ppid, utime+stime
    ours, frontier = {os.getpid()}, [os.getpid()]
    while frontier:
        kids = [p for p, pp in parents.items() if pp in frontier and p not in ours]
        ours.update(kids)
        frontier = kids
    return sum(times.get(p, 0.0) for p in ours)


class Contention:
    """Looks at the share of this run's cores that other processes used since the previous look."""

    def __init__(self, threshold: float = THRESHOLD):
        self.ids, self.threshold = set(cores()), threshold
        self.contended: bool | None = None  # None: not measurable here
        self.worst = 0.0
        self._warned = False
        self._last = self._sample()

    def _sample(self) -> tuple[float, float, float] | None:
        busy = _busy_s(self.ids)
        return None if busy is None else (busy, _own_s(), time.monotonic())

    def look(self, where: str) -> float | None:
        """Others' share of our cores since the last look; warns once when it passes the threshold."""
        last = self._last
        if last is None or time.monotonic() - last[2] < MIN_INTERVAL_S:  # not measurable, or too short to say
            return None
        now = self._last = self._sample()
        if now is None:
            return None
        others = max(0.0, (now[0] - last[0]) - (now[1] - last[1]))
        share = others / ((now[2] - last[2]) * len(self.ids))
        self.worst = max(self.worst, share)
        self.contended = bool(self.contended) or share > self.threshold
        if share > self.threshold and not self._warned:
            self._warned = True
            log.warning("other processes used %.0f%% of this run's %d cores %s: its timings are not this "
                        "machine's speed (summary.json records contended: true); run one training at a time, or "
                        "give each its own cores (taskset, trainer.threads)", 100 * share, len(self.ids), where)
        return share

    def record(self) -> dict[str, object]:
        return {"contended": self.contended, "contention_max_share": round(self.worst, 3)}
