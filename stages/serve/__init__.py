"""``serve``: a local web page over the built indexes (not a pipeline stage; reads, never writes).

The page shows a grid of a dataset's gallery images; opening one outlines its extracted objects;
clicking an object, drawing a box on any image, or uploading a photo and drawing a box returns
the top-k most similar objects of the collection (crop, image with the box, distance), more on
demand. Backbone, dataset and the trained / pretrained embedding are switched on the page among
the params ``backbones`` x ``datasets`` with a built index; a second page shows the run's
metrics and the evaluate stage's pictures.

FastAPI (Starlette) serves the JSON API and the static files of ``static/`` (plain HTML/JS/CSS,
no build step); uvicorn runs it. :mod:`stages.serve.engine` loads each model and FAISS index once,
lazily; the first selection is loaded before the server starts listening.
"""

from __future__ import annotations

import logging
import socket
from pathlib import Path

from stages.config import Params
from stages.errors import InputError, MissingInputError

log = logging.getLogger(__name__)


def compute_threads(n: int = 1) -> None:
    """Threads of torch and FAISS (OpenMP) in the server process. One by default: a query embeds one
    crop and searches one vector, where a thread team gains little and, on a CPU shared with other
    work, spinning OpenMP threads made a query 5-20x slower (benchmarks/serve.py)."""
    import faiss
    import torch

    torch.set_num_threads(n)
    faiss.omp_set_num_threads(n)


def check_port(host: str, port: int) -> None:
    """InputError when ``host:port`` cannot be bound (in use, or not an address of this machine)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            raise InputError(
                f"cannot listen on {host}:{port} ({exc.strerror}); pick another --port or --host"
            ) from None


def run(
    params: Params,
    host: str = "127.0.0.1",
    port: int = 8000,
    backbone: str | None = None,
    dataset: str | None = None,
    k: int = 10,
    max_upload_mb: float = 20.0,
    threads: int = 1,
    root: Path = Path("."),
) -> None:
    """Load the first selection, then serve the page on ``host:port`` until interrupted."""
    import uvicorn

    from stages.serve.app import create_app
    from stages.serve.engine import Engine, Selection

    engine = Engine(params, root)
    catalog = engine.catalog()
    if not catalog:
        raise MissingInputError(
            "no built index for any params backbone x dataset "
            f"({list(params.backbones)} x {list(params.datasets)}): run `dvc repro` first"
        )
    b, d = params.backbone(backbone), params.dataset(dataset)
    built = [e for e in catalog if e["backbone"] == b]
    # without --dataset: train_on when it is indexed, else the backbone's first indexed dataset
    entry = next((e for e in built if e["dataset"] == d), None if dataset else next(iter(built), None))
    if entry is None:
        raise MissingInputError(f"no built index for backbone {b!r} and dataset {d!r}: run `dvc repro`")
    default = Selection(entry["backbone"], entry["dataset"], entry["embeddings"][0])
    if host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("serve: listening on %s: every machine that can reach it can use the page", host)
    check_port(host, port)
    compute_threads(threads)
    log.info("serve: loading %s / %s (%s)", default.backbone, default.dataset, default.embedding)
    engine.warm_up(default)
    app = create_app(engine, default, k=k, max_upload_mb=max_upload_mb, host=host)
    shown = f"[{host}]" if ":" in host else host
    log.info("serve: open http://%s:%d/ (Ctrl+C stops)", shown, port)
    uvicorn.run(app, host=host, port=port, log_level="warning")
