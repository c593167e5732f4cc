"""Where and how a training run executes: device, mixed precision, ``torch.compile`` and the
torchrun / DistributedDataParallel process group.

Under ``torchrun --nproc_per_node N -m stages train`` (environment ``WORLD_SIZE`` > 1) each
process is one rank: every rank samples the same global batch and takes its slice
(:meth:`Runtime.rows`), the backbone features of all slices are gathered with an autograd-aware
all_gather so the losses are those of the single-process global batch, and only rank 0 writes.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn

from stages.config import TrainParams
from stages.errors import InputError

log = logging.getLogger(__name__)
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class Runtime:
    device: torch.device
    autocast_dtype: torch.dtype | None = None  # None: fp32
    compile: bool = False
    rank: int = 0
    world: int = 1
    owns_group: bool = field(default=False, repr=False)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    def autocast(self):
        """Mixed precision for the network forwards (CUDA only); losses stay fp32."""
        if self.autocast_dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    @contextmanager
    def deterministic_kernels(self) -> Iterator[None]:
        """On the CPU, PyTorch's deterministic kernels for the duration (the previous setting is
        restored after), so that a retraining with the same seed is bit-identical. The CPU kernel
        that broke it: the accumulating ``index_put_`` (the backward of ``feat[rows]`` when a crop
        is in several heads' sets) adds with parallel atomics on 2+ threads, in an order that
        changes from run to run. The deterministic mode is free within the noise of a CPU step
        (``deterministic_ratio_*`` in benchmarks/results/train_step.json); its debugging aid,
        NaN-filling new tensors, is left off (it cost a few % of a step). CUDA keeps its faster
        non-deterministic kernels (atomics in the backward passes), so GPU runs are reproducible
        only to rounding."""
        if self.device.type != "cpu":
            yield
            return
        det = torch.utils.deterministic
        before = (
            torch.are_deterministic_algorithms_enabled(),
            torch.is_deterministic_algorithms_warn_only_enabled(),
            det.fill_uninitialized_memory,
        )
        torch.use_deterministic_algorithms(True)
        det.fill_uninitialized_memory = False
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(before[0], warn_only=before[1])
            det.fill_uninitialized_memory = before[2]

    def grad_scaler(self) -> torch.amp.GradScaler | None:
        return torch.amp.GradScaler(self.device.type) if self.autocast_dtype == torch.float16 else None

    def rows(self, n: int) -> tuple[int, int]:
        """This rank's slice [lo, hi) of a global batch of n crops (n divisible by the world)."""
        if n % self.world:
            raise InputError(
                f"train: the global batch ({n} crops) must be divisible by the {self.world} processes (train.nproc)"
            )
        b = n // self.world
        return self.rank * b, (self.rank + 1) * b

    def gather_blocks(self, local: torch.Tensor, blocks: int) -> torch.Tensor:
        """[blocks * b, ...] per rank (e.g. view 1 then view 2 of its b crops) -> the global
        [blocks * B, ...] in the single-process order (view 1 of all crops, then view 2, ...).
        Gradients flow back to every rank's own rows."""
        if not self.distributed:
            return local
        parts = dist_fn.all_gather(local) if local.requires_grad else _all_gather_nograd(local)
        chunks = [p.chunk(blocks) for p in parts]
        return torch.cat([c[k] for k in range(blocks) for c in chunks])

    def gather_rows(self, local: torch.Tensor, n: int) -> torch.Tensor:
        """Concatenate every rank's rows of an evenly padded split (see :meth:`shard`) into [n, ...]."""
        if not self.distributed:
            return local
        size = -(-n // self.world)
        padded = local.new_zeros((size, *local.shape[1:]))
        padded[: len(local)] = local
        return torch.cat(_all_gather_nograd(padded))[:n]

    def shard(self, n: int) -> slice:
        """This rank's part of n items split into equal chunks (the last ones may be short)."""
        size = -(-n // self.world)
        return slice(min(n, self.rank * size), min(n, (self.rank + 1) * size))

    def average_grads(self, params: list[torch.Tensor]) -> None:
        """Average the gradients of parameters every rank computes from the same gathered rows
        (the heads): equal in exact arithmetic, this keeps them equal bit for bit where GPU
        kernels are not deterministic, so the replicas never drift. One flat all_reduce."""
        grads = [p.grad for p in params if p.grad is not None]
        if not self.distributed or not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat.div_(self.world)
        torch._foreach_copy_(grads, [f.view_as(g) for f, g in zip(flat.split([g.numel() for g in grads]), grads)])

    def broadcast(self, obj):
        """Rank 0's ``obj`` on every rank."""
        if not self.distributed:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def close(self) -> None:
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()


def _all_gather_nograd(x: torch.Tensor) -> list[torch.Tensor]:
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.contiguous())
    return parts


def resolve_runtime(cfg: TrainParams) -> Runtime:
    """Device, precision and compile from the params; join the torchrun process group when the
    environment names more than one process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise InputError("train.device is 'cuda' but no CUDA device is available (use 'auto' or 'cpu')")
    use_cuda = cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available())
    if use_cuda:
        torch.cuda.set_device(local_rank % torch.cuda.device_count())
        device = torch.device("cuda", torch.cuda.current_device())
    else:
        device = torch.device("cpu")
    if world == 1 and cfg.nproc > 1:
        log.warning("train.nproc = %d but not launched by torchrun: training in one process", cfg.nproc)
    owns = False
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
        owns = True
    if use_cuda:
        name = "bf16" if cfg.precision == "auto" else cfg.precision
        if name == "bf16" and not torch.cuda.is_bf16_supported():
            name = "fp16"
        dtype = PRECISIONS[name]
    else:
        if cfg.precision not in ("auto", "fp32"):
            log.warning("train.precision = %s applies on CUDA only; the CPU trains in fp32", cfg.precision)
        dtype = None
    compile_ = use_cuda if cfg.compile == "auto" else bool(cfg.compile)
    return Runtime(device, dtype, compile_, rank if world > 1 else 0, world, owns)
