"""A tiny real project for the server's tests: the pipeline's own stage functions on a few
synthetic scenes (data, extract, splits, an untrained model, index, evaluate), built once."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from pathlib import Path

import pytest

from stages.config import Params
from tests.torch_threads import one_torch_thread  # noqa: F401  (autouse in this folder)

TINY = {
    "task": 2,
    "data": {"synthetic": {"train_images": 4, "test_images": 6, "image_size": 224, "max_object": 96}},
    "extract": {"crop_size": 32, "graph": {"max_objects": 30}},
    "train": {"method": "none", "input_size": 32},
    "index": {"gpu": False},
    "evaluate": {"topk": 20, "examples": 2},
}

BACKBONE, DATASET = "efficientnet_lite0", "synthetic"


@contextlib.contextmanager
def chdir(path: Path):
    before = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)


def tree_state(root: Path) -> dict[str, tuple[int, int]]:
    """(size, mtime_ns) of every file under ``root``: equal before and after means nothing was written."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="session")
def tiny_params() -> Params:
    return Params.model_validate(TINY)


@pytest.fixture(scope="session")
def tiny_project(tmp_path_factory, tiny_params) -> Path:
    """The project root of a tiny built run: data/, models/, index/, metrics/ (read-only for the tests)."""
    import torch

    from stages import data, evaluate, extract, groups, index, splits, train
    from stages.config import declared_view, stage_keys

    root = tmp_path_factory.mktemp("project")
    names = {"dataset": DATASET, "backbone": BACKBONE}
    # as the CLI runs them: each stage sees only its PARAMS and gets its matrix names
    stages = [(data, ["dataset"]), (extract, ["dataset"]), (splits, []), (groups, [])]
    stages += [(train, ["backbone"]), (index, ["backbone", "dataset"]), (evaluate, ["backbone", "dataset"])]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with chdir(root):
            for stage, axes in stages:
                resolved = {axis: names[axis] for axis in axes}
                stage.run(declared_view(tiny_params, stage_keys(stage.PARAMS, **resolved)), **resolved)
    finally:
        torch.set_num_threads(threads)
    return root


@pytest.fixture(scope="session")
def engine(tiny_project, tiny_params):
    from stages.serve.engine import Engine, Selection

    engine = Engine(tiny_params, tiny_project)
    engine.warm_up(Selection(BACKBONE, DATASET))
    return engine


def make_app(engine, **kwargs):
    from stages.serve.app import create_app
    from stages.serve.engine import Selection

    return create_app(engine, Selection(BACKBONE, DATASET), **kwargs)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def live_server(engine):
    """The app under a real uvicorn on 127.0.0.1 (a free port), in a thread; yields its base URL."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(make_app(engine, k=5), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)
