"""`splatseg train` under `torchrun`: torch.distributed ranks sharing one training run.

torchrun sets WORLD_SIZE, RANK, LOCAL_RANK, MASTER_ADDR and MASTER_PORT; with WORLD_SIZE > 1 the
trainer joins the process group (gloo on CPU, NCCL on CUDA) and:

- segments: each rank computes the missing cache files of every world_size-th view (rank::world);
- training views are sharded the same way (rank r trains on train views r, r + W, ...);
- features and queries stay identical on every rank: they start from the same seed (and are
  broadcast from rank 0 anyway), and every step's gradients are averaged over the ranks with one
  all-reduce before the optimiser step (each step therefore sees W views, one per rank);
- lifting sums (blend evidence, X-ray votes) are all-reduced, so every rank holds the evidence of
  all training views and computes the same lifted scores; feature maps are rendered by the rank that
  holds the view and summed onto rank 0 (zeros elsewhere: exact);
- only rank 0 writes checkpoints and the run (atomically, as a single process does).

Why an all-reduce of gradients and not DistributedDataParallel: FeatureField is a bag of
parameters with no forward(); its loss is built from `features` and `queries` directly, and
`query_clip` is unused on views without embeddings. DDP needs its wrapped forward() called and
`find_unused_parameters` for that; one flat all-reduce per step does the same synchronisation in a
few lines, with every parameter always reduced (a zero gradient where a rank did not use it).
"""

from __future__ import annotations

import contextlib
import datetime
import os
from dataclasses import dataclass

import torch

TIMEOUT_MINUTES = 30
"""How long a rank waits for the others at a collective before the run fails."""


@dataclass(frozen=True)
class Dist:
    """This process's place in the run: rank in [0, world_size); world_size 1 = a single process."""

    rank: int = 0
    world_size: int = 1
    backend: str | None = None

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, items: list) -> list:
        """This rank's share of `items`: every world_size-th, starting at rank."""
        return list(items[self.rank :: self.world_size])

    def barrier(self) -> None:
        if self.active:
            torch.distributed.barrier()

    def all_reduce_(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sums `tensor` over the ranks in place (nothing for a single process); returns it."""
        if self.active:
            torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.SUM)
        return tensor

    def all_reduce_max(self, tensor: torch.Tensor) -> torch.Tensor:
        """The elementwise maximum of `tensor` over the ranks (in place); returns it."""
        if self.active:
            torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.MAX)
        return tensor

    def reduce_to_main_(self, tensor: torch.Tensor) -> torch.Tensor:
        """The sum of `tensor` over the ranks, on rank 0 (in place; other ranks' copies are left
        unspecified); returns it."""
        if self.active:
            torch.distributed.reduce(tensor, dst=0, op=torch.distributed.ReduceOp.SUM)
        return tensor

    def broadcast_parameters_(self, module: torch.nn.Module) -> None:
        """Rank 0's parameters copied onto every rank."""
        if self.active:
            for p in module.parameters():
                torch.distributed.broadcast(p.data, src=0)

    def average_gradients_(self, module: torch.nn.Module) -> None:
        """Every parameter's gradient replaced by its mean over the ranks (one flat all-reduce;
        a parameter a rank left without gradient contributes zeros)."""
        if not self.active:
            return
        params = list(module.parameters())
        flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params])
        torch.distributed.all_reduce(flat, op=torch.distributed.ReduceOp.SUM)
        flat /= self.world_size
        offset = 0
        for p in params:
            n = p.numel()
            p.grad = flat[offset : offset + n].view_as(p).clone()
            offset += n

    def info(self) -> dict:
        """What run.json records of the run's processes."""
        return {"world_size": self.world_size, "backend": self.backend}


def world_from_env() -> tuple[int, int, int]:
    """(rank, world_size, local_rank) from the variables torchrun sets; (0, 1, 0) without them."""
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1:
        return 0, 1, 0
    rank = int(os.environ["RANK"]) if "RANK" in os.environ else None
    if rank is None or not 0 <= rank < world:
        raise ValueError(f"WORLD_SIZE={world} but RANK is {os.environ.get('RANK')!r}; start distributed runs with torchrun")
    return rank, world, int(os.environ.get("LOCAL_RANK", "0") or 0)


@contextlib.contextmanager
def distributed(device: torch.device):
    """Joins the torchrun process group for the duration (gloo on CPU, NCCL on CUDA; the local
    rank's GPU is selected) and yields this process's `Dist`; a single process yields Dist()."""
    rank, world, local_rank = world_from_env()
    if world == 1:
        yield Dist()
        return
    if not torch.distributed.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    backend = "nccl" if device.type == "cuda" else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    created = not torch.distributed.is_initialized()
    if created:
        torch.distributed.init_process_group(backend=backend, rank=rank, world_size=world,
                                             timeout=datetime.timedelta(minutes=TIMEOUT_MINUTES))
    try:
        yield Dist(rank, world, backend)
    finally:
        if created:
            torch.distributed.destroy_process_group()


def rank_device(device: torch.device) -> torch.device:
    """The device this rank works on: CUDA ranks take their LOCAL_RANK's GPU."""
    if device.type == "cuda" and world_from_env()[1] > 1:
        return torch.device("cuda", world_from_env()[2])
    return device
