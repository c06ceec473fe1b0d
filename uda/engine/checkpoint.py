"""Checkpoints: one file holds models, optimizers, scaler, RNG states, step and config.

Writing (``save_atomic``, through ``uda.io``): the state is serialised in memory, its SHA-256 recorded in the
directory's ``manifest.json`` (itself replaced atomically), the bytes written to a temporary file and fsync'ed,
the previous ``last.pt`` hard-linked as ``prev.pt``, and the temporary file renamed over ``last.pt``. A kill
at any point leaves at least one complete checkpoint whose digest the manifest knows.

Reading (``load``): the file's digest must be one the manifest recorded (a flipped bit or a truncated
file is caught even where the zip container would still parse), then ``torch.load(weights_only=True)``
(plain tensors and containers only: no pickled code runs). ``load_latest`` falls back from
``last.pt`` to ``prev.pt`` with a warning naming both.
"""
from __future__ import annotations

import errno
import hashlib
import io
import json
import logging
import os
import random
from pathlib import Path
from typing import Any

import torch

from uda.errors import UserError
from uda.io import load_failure, torch_bytes, write_durable

log = logging.getLogger("uda")

LAST, PREV, MANIFEST = "last.pt", "prev.pt", "manifest.json"
_RECENT = 4  # digests of the newest last/prev generations the manifest keeps


class CheckpointError(UserError):
    """No usable checkpoint, or one could not be written."""


def _read_manifest(directory: Path) -> dict[str, Any] | None:
    try:
        m = json.loads((directory / MANIFEST).read_text())
        return m if isinstance(m, dict) and isinstance(m.get("recent"), list) else None
    except (OSError, ValueError):
        return None


def _known_digests(directory: Path) -> set[str] | None:
    m = _read_manifest(directory)
    if m is None:
        return None
    return set(m["recent"]) | set(m.get("files", {}).values())


def _keep_as_previous(last: Path, prev: Path) -> None:
    """prev.pt := last.pt by a hard link renamed into place, so last.pt never disappears."""
    tmp = prev.with_name(f".{prev.name}.tmp{os.getpid()}")
    tmp.unlink(missing_ok=True)
    try:
        os.link(last, tmp)
        os.replace(tmp, prev)
    except OSError:  # no hard links on this filesystem: a brief window without last.pt (prev.pt loads)
        tmp.unlink(missing_ok=True)
        os.replace(last, prev)


def save_atomic(obj: Any, path: Path, *, keep_previous: bool = True) -> None:
    """Save ``obj`` to ``path``; with ``keep_previous`` an old ``last.pt`` survives as ``prev.pt``.

    Raises CheckpointError (naming the intact previous checkpoint) when the disk refuses the write.
    """
    path = Path(path)
    directory = path.parent
    try:
        directory.mkdir(parents=True, exist_ok=True)
        data = torch_bytes(obj)
        digest = hashlib.sha256(data).hexdigest()
        m = _read_manifest(directory) or {"recent": [], "files": {}}
        if path.name in (LAST, PREV):
            m["recent"] = [digest, *[d for d in m["recent"] if d != digest]][:_RECENT]
        else:
            m.setdefault("files", {})[path.name] = digest
        # the manifest knows the new digest before any checkpoint file changes
        write_durable(json.dumps(m, indent=1).encode(), directory / MANIFEST)
        keep = keep_previous and path.name == LAST and path.exists()
        write_durable(data, path, before_replace=(lambda: _keep_as_previous(path, directory / PREV)) if keep else None)
    except OSError as e:
        intact = [p.name for p in (directory / LAST, directory / PREV) if p.exists()]
        what = "no space left on device" if e.errno == errno.ENOSPC else str(e)
        keep = f"; the previous checkpoint(s) {', '.join(intact)} in {directory} are intact" if intact else ""
        raise CheckpointError(f"could not write checkpoint {path}: {what}{keep}") from e


def load(path: Path) -> dict[str, Any]:
    """Load one checkpoint file, verified against the manifest; CheckpointError says why it is unusable."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read ({e.strerror or e})") from e
    known = _known_digests(path.parent)
    if known is not None and hashlib.sha256(data).hexdigest() not in known:
        raise CheckpointError(f"{path}: checksum mismatch (corrupt or truncated, {len(data)} bytes)")
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 -- torch raises several types for damaged or unsafe files
        raise CheckpointError(f"{path}: {load_failure(e)}") from e
    if not isinstance(state, dict) or "step" not in state:
        raise CheckpointError(f"{path}: not a uda checkpoint (no 'step' entry)")
    return state


def exists(directory: Path) -> bool:
    return any((Path(directory) / n).exists() for n in (LAST, PREV))


def load_latest(directory: Path) -> tuple[dict[str, Any], Path]:
    """The newest usable checkpoint in ``directory``: ``last.pt``, else ``prev.pt`` (with a warning)."""
    directory = Path(directory)
    problems = []
    for name in (LAST, PREV):
        p = directory / name
        if not p.exists():
            problems.append(f"{p}: missing")
            continue
        try:
            state = load(p)
        except CheckpointError as e:
            problems.append(str(e))
            continue
        if name == PREV:
            log.warning("%s is unusable (%s); falling back to %s (step %d)",
                        directory / LAST, problems[0].split(": ", 1)[-1], p, state["step"])
        return state, p
    raise CheckpointError("no usable checkpoint: " + "; ".join(problems))


def cleanup_temporaries(directory: Path) -> None:
    """Remove temporary files a killed writer left behind."""
    for p in Path(directory).glob(".*.tmp*"):
        p.unlink(missing_ok=True)


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
