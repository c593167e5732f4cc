"""One torch thread for the tests of tiny models (imported by the conftest of folders that want it):
on a 2-core machine shared with other work, two contending threads ran them 3-40x slower."""

import pytest
import torch


@pytest.fixture(autouse=True)
def one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
