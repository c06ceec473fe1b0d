"""Data-parallel training over ``torch.distributed`` (one process per device, started by ``torchrun``).

Every rank holds the whole method and draws its own shard of each global batch; before each optimizer
step the stepped groups' gradients are averaged over the ranks in one flat all-reduce, so every rank
applies the same update and the parameters stay identical. This is what DistributedDataParallel
does for a single forward/backward per iteration; it is done explicitly here because the methods
step several optimizers per iteration on different losses, with parts of the network frozen in each
sub-step (DSN, ADDA, the GAN methods), which DDP's reducer (one backward per forward, a fixed set of
parameters receiving gradients) does not allow without wrapping every sub-network separately.

Only rank 0 writes checkpoints, TensorBoard, metrics and the summary; every rank reads the checkpoint
to resume. A run with ``WORLD_SIZE`` unset or 1 never touches ``torch.distributed``.
"""
from __future__ import annotations

import datetime
import os
from collections.abc import Iterable
from typing import Any

import torch
import torch.distributed as dist


def env_world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def env_rank() -> int:
    return int(os.environ.get("RANK", "0"))


def init(device: torch.device) -> None:
    """Join the process group torchrun describes (gloo on CPU, nccl on CUDA); no-op for one process."""
    if env_world_size() <= 1 or dist.is_initialized():
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, timeout=datetime.timedelta(minutes=30))


def world() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main() -> bool:
    return rank() == 0


def local_device(device: torch.device) -> torch.device:
    """cuda -> this rank's GPU (LOCAL_RANK); CPU unchanged."""
    if device.type == "cuda" and env_world_size() > 1:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    return device


def broadcast_object(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if world() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_objects(obj: Any) -> list[Any] | None:
    """[obj of rank 0, obj of rank 1, ...] on rank 0, None elsewhere."""
    if world() == 1:
        return [obj]
    out = [None] * world() if is_main() else None
    dist.gather_object(obj, out, dst=0)
    return out


def broadcast_module(module: torch.nn.Module) -> None:
    """Rank 0's parameters and buffers everywhere (as DDP does at construction)."""
    if world() == 1:
        return
    with torch.no_grad():
        for t in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(t.data, src=0)


def any_flag(flag: bool, device: torch.device) -> bool:
    """True on every rank when it is True on any rank (a stop request, a non-finite loss)."""
    if world() == 1:
        return flag
    t = torch.tensor([float(flag)], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def average_gradients(params: Iterable[torch.nn.Parameter], bad: bool) -> bool:
    """Average the gradients of ``params`` over the ranks in one flat all-reduce.

    ``bad``: this rank's loss was non-finite (its gradients are not usable). Returns True when any
    rank was bad, so that every rank skips the update together. Parameters without a gradient on
    this rank contribute zeros and keep ``grad=None``.
    """
    params = [p for p in params if p.requires_grad]
    if world() == 1:
        return bad
    device = params[0].device if params else torch.device("cpu")
    grads = [p.grad if (p.grad is not None and not bad) else torch.zeros_like(p) for p in params]
    flag = torch.tensor([float(bad)], device=device, dtype=torch.float32)
    flat = torch.cat([g.reshape(-1).float() for g in grads] + [flag])
    dist.all_reduce(flat)
    if flat[-1].item() > 0:
        return True
    flat = flat[:-1] / world()
    offset = 0
    for p in params:
        n = p.numel()
        if p.grad is not None:
            p.grad.copy_(flat[offset:offset + n].view_as(p.grad))
        offset += n
    return False


def max_param_difference(module: torch.nn.Module) -> float:
    """The largest |difference| between any rank's parameters and rank 0's (all-gathered; for checks)."""
    if world() == 1:
        return 0.0
    with torch.no_grad():
        flat = torch.cat([p.detach().reshape(-1).float() for p in module.parameters()])
        copies = [torch.empty_like(flat) for _ in range(world())]
        dist.all_gather(copies, flat)
        return max(float((c - copies[0]).abs().max()) for c in copies[1:])


def barrier() -> None:
    if world() > 1:
        dist.barrier()


def shutdown() -> None:
    """Leave the process group once every rank is done with it.

    The barrier first: rank 0 returns from the final ``broadcast_object`` while the other ranks may
    still be receiving, and tearing down gloo with that work in flight can abort the process at
    interpreter exit ("terminate called without an active exception") after a finished run.
    """
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
