"""Files that are never seen half-written: write a temporary file, fsync it, rename it into place.

Used by checkpoints (``uda.engine.checkpoint``), the offline dataset builds (``uda.data``) and the run
summary, so that a kill at any moment leaves either the old file or the new one, never a partial one.
"""
from __future__ import annotations

import io
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any


def fsync_dir(path: Path) -> None:
    """Make a rename inside ``path`` durable (best effort: some filesystems refuse a directory fsync)."""
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


def write_durable(data: bytes, path: Path, before_replace: Callable[[], None] | None = None) -> None:
    """Write ``data`` to ``path`` via a temporary file + fsync + rename; never a partial ``path``.

    ``before_replace`` runs once the new bytes are safely on disk, just before the rename.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if before_replace is not None:
            before_replace()
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def load_failure(e: BaseException) -> str:
    """Why ``torch.load(weights_only=True)`` failed, as one plain line of ours (torch's own message runs to
    several paragraphs with terminal escape codes)."""
    import re

    text = str(e)
    if "weights_only" in text or "Weights only load failed" in text:
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
        what = f" (such as {found.group(1)})" if found else ""
        return (f"refused: it holds objects other than tensors and plain containers{what}, and uda loads weights "
                f"only, never code from a file")
    first = re.sub(r"\x1b\[[0-9;]*m", "", text).strip().splitlines()
    return f"unreadable ({type(e).__name__}: {first[0][:200]})" if first else f"unreadable ({type(e).__name__})"


def torch_bytes(obj: Any) -> bytes:
    """``torch.save(obj)`` into memory (so its digest can be taken before anything touches the disk)."""
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def tensor_bytes(t: Any) -> bytes:
    """A tensor's dtype, shape and raw bytes (any dtype, viewed as uint8): what bit identity compares."""
    import torch

    flat = t.detach().cpu().contiguous().reshape(-1)
    raw = flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b""
    return f"{t.dtype}{tuple(t.shape)}".encode() + raw


def save_file(obj: Any, path: Path) -> None:
    """``torch.save`` that never leaves a partial file (for caches; checkpoints use ``checkpoint.save_atomic``)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_durable(torch_bytes(obj), Path(path))


def write_text_atomic(text: str, path: Path) -> None:
    """Replace ``path`` with ``text`` in one rename (its presence can mark a finished job, e.g. summary.json)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
