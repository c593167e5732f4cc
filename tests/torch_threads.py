"""Torch thread counts for tests. ``one_torch_thread`` (autouse where a folder's conftest imports
it) is for the tests of tiny models: on a 2-core machine shared with other work, two contending
threads ran them 3-40x slower. ``torch_threads(n)`` sets any count for a block."""

from contextlib import contextmanager

import pytest
import torch


@contextmanager
def torch_threads(n: int):
    """``n`` intra-op torch threads inside the block, the previous count restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def one_torch_thread():
    with torch_threads(1):
        yield
