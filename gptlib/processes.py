"""Several processes: torchrun starts one per GPU (or several on a CPU) and sets RANK, WORLD_SIZE...

    torchrun --standalone --nproc_per_node=2 gpt_final_version.py --preset=tiny

Every process trains the same model on its own slice of each batch (DistributedDataParallel averages
the gradients); only rank 0 prints, evaluates into files, saves and samples.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist

from gptlib import devices


@dataclass
@dataclass
class Processes:
    """Where this process stands among those torchrun started; one process without torchrun."""
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    backend: str = ""

    @property
    def is_main(self) -> bool:  # rank 0 alone prints, evaluates into files, saves and samples
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def mean(self, value: float) -> float:
        """The mean of a number over all processes (every process gets it)."""
        if not self.distributed:
            return value
        return self._all_reduce([value], dist.ReduceOp.SUM)[0] / self.world_size

    def agree(self, values: list[float]) -> list[float]:
        """The largest of each value over all processes, on every process: flags (stop now?) and
        clocks (how long has the run taken?) then lead every process to the same decision."""
        if not self.distributed:
            return values
        return self._all_reduce(values, dist.ReduceOp.MAX)

    def wait_for_all(self) -> None:
        if self.distributed:
            dist.barrier()

    def _all_reduce(self, values: list[float], op) -> list[float]:
        tensor = torch.tensor(values, dtype=torch.float64)
        if self.backend == "nccl":
            tensor = tensor.cuda()
        dist.all_reduce(tensor, op=op)
        return tensor.tolist()


def start_processes(device: str) -> tuple[Processes, str]:
    """Join torchrun's process group when started by torchrun: nccl on cuda (one GPU per process),
    gloo on the CPU. Only rank 0 writes to the terminal. Returns this process's device: `device`
    itself, or under torchrun on cuda the GPU of this process's local rank."""
    if "RANK" not in os.environ or int(os.environ.get("WORLD_SIZE", "1")) == 1:
        return Processes(), device
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    world_size = int(os.environ["WORLD_SIZE"])
    setup = devices.distributed_setup(device, local_rank, devices.probe(device))  # mps: refused, with the fix
    if setup.device.startswith("cuda"):
        torch.cuda.set_device(setup.device)
    dist.init_process_group(backend=setup.backend, device_id=setup.device_id)
    if rank != 0:  # one progress bar and one report, not world_size of them
        sys.stdout = open(os.devnull, "w")
    return Processes(rank, local_rank, world_size, setup.backend), setup.device



def stop_processes(processes: Processes) -> None:
    if processes.distributed:
        dist.destroy_process_group()


def agree_on(value: str, processes: Processes) -> str:
    """Rank 0's value for every process (a timestamped default path could differ by a second)."""
    if not processes.distributed:
        return value
    shared = [value]
    dist.broadcast_object_list(shared, src=0)
    return shared[0]
