"""Multi-process training: the train stage hands itself to torchrun when ``train.nproc`` > 1.

dvc.yaml always calls ``python -m stages train --backbone B``; with ``train.nproc: N`` (and not
already inside torchrun) that command starts ``torchrun --standalone --nproc_per_node N`` on the
same command line, whose N ranks train with DistributedDataParallel (:mod:`stages.train.runtime`).
"""

from __future__ import annotations

import os
import sys

from stages.errors import UserError


def under_torchrun() -> bool:
    """True inside a process started by torchrun (it sets ``LOCAL_RANK`` and ``WORLD_SIZE``)."""
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


def torchrun_args(nproc: int, stage_args: list[str]) -> list[str]:
    """The torchrun command line (without the program name) that reruns ``python -m stages <stage_args>``."""
    return ["--standalone", f"--nproc_per_node={nproc}", "-m", "stages", *stage_args]


def run_under_torchrun(nproc: int, stage_args: list[str]) -> None:
    """Run ``python -m stages <stage_args>`` as ``nproc`` torchrun ranks on this machine; a failed
    rank is a :class:`UserError` naming the exit (the ranks' own logs say why)."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import main as torchrun

    argv = torchrun_args(nproc, stage_args)
    print(f"[train] launching: torchrun {' '.join(argv)}", file=sys.stderr)
    try:
        torchrun(argv)
    except ChildFailedError as exc:
        raise UserError(f"torchrun training with {nproc} processes failed: {exc}") from None
