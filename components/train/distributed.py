"""Where this process stands in a distributed run, read from the environment.

The same variables come from three launchers:
- ``torchrun`` sets ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``;
- a Kubeflow PyTorchJob pod gets ``RANK`` (the pod's index), ``WORLD_SIZE`` (pods x
  ``nprocPerNode``), ``MASTER_ADDR`` and ``MASTER_PORT`` from the Training Operator;
- the Training Operator also sets ``PET_NNODES``, ``PET_NPROC_PER_NODE`` (always: "1" by
  default) and ``PET_NODE_RANK``, which ``torchrun`` in the pod reads as its own arguments
  before setting the variables above for each process; with ``nprocPerNode`` > 1 its
  ``WORLD_SIZE`` counts processes and ``RANK`` is the pod's, so torchrun must run.

No ``WORLD_SIZE`` (or 1) means a plain single process.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistributedContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def context_from_env(env: Mapping[str, str] = os.environ) -> DistributedContext:
    """Read and check the launcher's variables; raise ValueError naming a bad one."""

    def integer(name: str, default: int) -> int:
        raw = env.get(name, "")
        if raw == "":
            return default
        try:
            return int(raw)
        except ValueError:
            raise ValueError(f"environment variable {name}={raw!r} is not an integer") from None

    if integer("PET_NPROC_PER_NODE", 1) > 1 and not env.get("LOCAL_RANK"):
        raise ValueError(
            f"PET_NPROC_PER_NODE={env['PET_NPROC_PER_NODE']} but LOCAL_RANK is not set: with several processes "
            "per pod the pod's command must start training through torchrun, which reads the PET_* variables"
        )
    world_size = integer("WORLD_SIZE", 1)
    rank = integer("RANK", 0)
    local_rank = integer("LOCAL_RANK", 0)
    if world_size < 1:
        raise ValueError(f"WORLD_SIZE must be >= 1, got {world_size}")
    if not 0 <= rank < world_size:
        raise ValueError(f"RANK must be in [0, WORLD_SIZE={world_size}), got {rank}")
    if world_size > 1:
        missing = [name for name in ("MASTER_ADDR", "MASTER_PORT") if not env.get(name)]
        if missing:
            raise ValueError(f"WORLD_SIZE={world_size} but {', '.join(missing)} is not set")
    return DistributedContext(rank=rank, world_size=world_size, local_rank=local_rank)


def device_for(context: DistributedContext) -> torch.device:
    """One GPU per process (``cuda:LOCAL_RANK``) when CUDA is present, CPU otherwise."""
    if torch.cuda.is_available():
        torch.cuda.set_device(context.local_rank)
        return torch.device("cuda", context.local_rank)
    return torch.device("cpu")


def init_process_group(context: DistributedContext, device: torch.device) -> bool:
    """Join the process group (NCCL on GPUs, Gloo on CPU); True when this call created it."""
    if not context.distributed or dist.is_initialized():
        return False
    dist.init_process_group(
        backend="nccl" if device.type == "cuda" else "gloo",
        init_method="env://",
        rank=context.rank,
        world_size=context.world_size,
    )
    return True
