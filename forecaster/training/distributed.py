"""One training script, one process or many: torch.distributed under torchrun.

`torchrun --nproc-per-node N -m forecaster train ...` starts N copies with
RANK, LOCAL_RANK and WORLD_SIZE set (and, across machines, torchrun's own
--nnodes / --rdzv-endpoint). Each copy joins the process group (gloo on CPU,
NCCL on CUDA), trains on its shard of every batch under DDP, which averages
gradients, and only rank 0 writes or prints. Run alone, the same code is one
process of a world of one.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..devices import DEVICES
from ..errors import DeviceError


@dataclass(frozen=True)
class World:
    rank: int
    size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes files and prints."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def sum(self, *values: float) -> list[float]:
        """The sums of these numbers over every process (the numbers themselves alone)."""
        if not self.distributed:
            return list(values)
        tensor = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(tensor)
        return tensor.tolist()

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def broadcast_text(self, text: str) -> str:
        """Rank 0's `text` on every process (the others' own is ignored)."""
        if not self.distributed:
            return text
        data = torch.tensor(list(text.encode()) if self.is_main else [], dtype=torch.uint8, device=self.device)
        length = torch.tensor([len(data)], dtype=torch.int64, device=self.device)
        dist.broadcast(length, 0)
        if not self.is_main:
            data = torch.empty(int(length.item()), dtype=torch.uint8, device=self.device)
        dist.broadcast(data, 0)
        return bytes(data.cpu().tolist()).decode()

    def any(self, flag: bool) -> bool:
        """True on every process when it is true on one (a stop asked of any rank)."""
        return self.sum(float(flag))[0] > 0


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def pick_device(requested: str, local_rank: int = 0) -> torch.device:
    """auto: CUDA when torch can use it, else CPU; cuda: CUDA or a DeviceError."""
    if requested not in DEVICES:
        raise DeviceError(f"unknown device {requested!r}: choose {', '.join(DEVICES)}")
    if requested == "cpu" or (requested == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise DeviceError(
            "CUDA was requested but torch cannot use it here (a CPU build of torch, or no "
            "GPU): install a CUDA build (see docs/operations.md, GPUs) or use --device cpu/auto"
        )
    return torch.device("cuda", local_rank % torch.cuda.device_count())


def join(requested_device: str) -> World:
    """This process's place: alone, or its rank in the torchrun job (joining the group)."""
    if not launched_by_torchrun():
        return World(0, 1, pick_device(requested_device))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    device = pick_device(requested_device, local_rank)
    if not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=dt.timedelta(minutes=30))
    return World(dist.get_rank(), dist.get_world_size(), device)


def leave(world: World) -> None:
    if world.distributed and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
