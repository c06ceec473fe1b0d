"""Who owns a trial of ``uda tune`` (or its source-only run): generations of claim files in the study
directory, touched while the trial trains, and the rules by which a resumed study or another worker continues
a trial whose owner is gone (docs/notes/tuning.md, "Who continues an interrupted trial").
"""
from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from uda.errors import ConfigError


def _process(pid: int) -> str:
    """A token of the live process ``pid`` ("" if none): its start time where /proc has it, so that a reused
    pid does not pass for the process that claimed a trial; a zombie (killed, not yet reaped) is none."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return ""
    except PermissionError:
        pass
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()  # state, ..., starttime
        return "" if fields[0] == "Z" else fields[19]
    except (OSError, IndexError):
        return "alive"


def owner() -> dict[str, Any]:
    """This process as a claim: host, pid, start token, and the SLURM job, task and requeue count it runs as."""
    return {"host": socket.gethostname(), "pid": os.getpid(), "token": _process(os.getpid()),
            "job": os.environ.get("SLURM_JOB_ID"), "task": os.environ.get("SLURM_PROCID"),
            "restart": int(os.environ.get("SLURM_RESTART_COUNT") or 0)}


# A trial (or source-only) is owned through generations of claim files, claims/<name>.<k>: the owner JSON, made
# whole before it appears (a hard link, exclusive and atomic, also over NFS), the newest generation the owner.
# While it trains, the owner touches its claim every HEARTBEAT_S; a claim on another host untouched for STALE_S
# is gone. Taking over generation k is creating k + 1: of the workers that judge k gone together, one wins.
CLAIMS = "claims"
HEARTBEAT_S, STALE_S = 60.0, 600.0


def held(d: Path, name: str) -> tuple[int, dict[str, Any] | None, float] | None:
    """The newest claim on ``name`` in study ``d``: (its generation, its owner, seconds since it was last
    touched); None where nobody claimed it. An owner that cannot be read is None (``gone`` judges it by its
    beat alone); a beat that cannot be read either is now (judged alive: a claim is never taken on a guess)."""
    gens = sorted((int(k), q) for q in (d / CLAIMS).glob(f"{name}.*")
                  for k in [q.name.rsplit(".", 1)[1]] if k.isdigit())
    for gen, path in reversed(gens):
        touched = time.time()
        try:
            with open(path) as f:  # the owner and the beat of one file, even if a newer one appears meanwhile
                touched = os.fstat(f.fileno()).st_mtime
                who = json.load(f)
        except FileNotFoundError:
            continue
        except (OSError, ValueError):  # unreadable (permissions, a stale NFS handle) or half written
            who = None
            with contextlib.suppress(OSError):
                touched = path.stat().st_mtime
        return gen, who, max(0.0, time.time() - touched)
    return None


NO_LINKS = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOSYS}  # link(2) on a file system without hard links


def claim(d: Path, name: str, gen: int = 0) -> Path | None:
    """Create generation ``gen`` of ``name``'s claim, owned by this process: its path, or None where another
    process created it first. ConfigError where the study directory's file system has no hard links."""
    path = d / CLAIMS / f"{name}.{gen}"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{socket.gethostname()}.{os.getpid()}")
    tmp.write_text(json.dumps(owner()))
    try:
        try:
            os.link(tmp, path)
        except OSError as e:  # NFS may report a link that succeeded as failed: the count below tells
            if e.errno in NO_LINKS and not path.exists():
                raise ConfigError(f"{d}: its file system has no hard links ({e.strerror}), which uda tune claims "
                                  f"trials with; choose a study directory elsewhere with hydra.sweep.dir=...") from None
            if e.errno != errno.EEXIST and not path.exists():  # not taken by another: this one cannot claim at all
                raise ConfigError(f"{d}: cannot create the claim {path.name} ({e.strerror}); the same command "
                                  f"resumes the study once the directory can be written") from None
        return path if tmp.stat().st_nlink == 2 else None
    finally:
        tmp.unlink(missing_ok=True)



def take(d: Path, name: str, age_s: float = math.inf) -> Path | None:
    """This process's claim on ``name`` where it may train it: the first claim (where nobody claimed it, once it is
    ``age_s`` > STALE_S old: a process claims its trial right after asking for it, and another host's clock may
    be minutes off), or the next generation of a claim whose owner is gone (``gone``); None where it is
    another's."""
    h = held(d, name)
    if h is None:
        return claim(d, name) if age_s > STALE_S else None
    gen, who, beat_s = h
    return claim(d, name, gen + 1) if gone(who, beat_s) else None


def gone(who: dict[str, Any] | None, beat_s: float) -> bool:
    """Whether a claim's owner is gone: a process of this host that no longer runs, an earlier run of this SLURM
    job and task (requeued, possibly onto another node: the job id stays, its restart count grows), or, on
    another host, a worker whose claim is ``beat_s`` > STALE_S seconds untouched (a job SLURM ended
    unrequeued, a lost node). Clocks are those of the cluster, synchronised (MUNGE, which SLURM authenticates
    with, needs them within minutes)."""
    me = owner()
    if who and who.get("host") == me["host"]:  # this host knows its processes (a stopped one still runs)
        return _process(int(who.get("pid", -1))) != who.get("token")
    if who and who.get("job") and (who.get("job"), who.get("task")) == (me["job"], me["task"]) \
            and int(who.get("restart") or 0) < me["restart"]:
        return True
    return beat_s > STALE_S


def superseded(mine: Path | None) -> bool:
    """Whether another worker took the claim ``mine`` over (a newer generation exists); False where it cannot
    be read (a flaky file system: the heartbeat looks again)."""
    if mine is None:
        return False
    name, gen = mine.name.rsplit(".", 1)
    try:
        newest = held(mine.parent.parent, name)
    except OSError:
        return False
    return newest is not None and newest[0] > int(gen)


@contextlib.contextmanager
def beating(mine: Path | None, lose: Callable[[], None]):
    """Touch the claim ``mine`` now and every HEARTBEAT_S seconds until the block ends (a daemon thread); where
    another worker took the trial over meanwhile (a newer generation), ``lose()`` once: the trial is no longer
    this worker's to train. A touch or a look that fails (a flaky file system) is tried again at the next beat:
    where the claim cannot be touched, the trial cannot write its run directory either."""
    if mine is None:
        yield
        return
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(HEARTBEAT_S):
            with contextlib.suppress(OSError):
                os.utime(mine)
            if superseded(mine):
                lose()
                return

    with contextlib.suppress(OSError):
        os.utime(mine)
    thread = threading.Thread(target=beat, name="uda-tune-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)  # a touch hung on a dead mount must not hold up a requeue
