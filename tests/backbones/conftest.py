import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    """One torch thread: on the shared 2-core machine, two threads contend and run 3-5x slower."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
