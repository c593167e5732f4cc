"""The command line: one command per DVC stage (as called by dvc.yaml), plus ``search`` and ``serve``.

Every stage command reads the validated parameters from ``--params`` (default params.yaml)
and writes to the paths of :mod:`stages.layout`, relative to the current directory.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Callable

import typer

from stages.errors import UserError

app = typer.Typer(
    help=(
        "General object retrieval with MS-UGCML: a DVC pipeline from images to retrieval metrics.\n\n"
        "Stages, in DAG order: [scan ->] data -> extract -> splits -> groups -> train -> index -> evaluate -> summary. "
        "Run them all with `dvc repro`; each command here runs one stage with the parameters of "
        "params.yaml. Set STAGES_DEBUG=1 to see full tracebacks."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

ParamsOption = typer.Option(Path("params.yaml"), "--params", "-p", help="Parameter file (YAML) to read.")
DatasetOption = typer.Option(
    None,
    "--dataset",
    "-d",
    help="Dataset name, one of params `datasets` (default: `train_on`). dvc.yaml passes it per matrix entry.",
)
BackboneOption = typer.Option(
    None,
    "--backbone",
    "-B",
    help="Backbone name, one of params `backbones` (default: the first). dvc.yaml passes it per matrix entry.",
)


# Libraries whose INFO messages look like errors in a stage's log (faiss's loader reports the
# AVX512 build it did not find with a ModuleNotFoundError text); kept at WARNING.
QUIET_LOGGERS = ("faiss", "faiss.loader", "ray", "ray.data", "matplotlib", "PIL", "urllib3", "filelock", "fsspec")


def _configure_logging(name: str) -> None:
    logging.basicConfig(level=logging.INFO, format=f"[{name}] %(message)s", stream=sys.stderr, force=True)
    for noisy in QUIET_LOGGERS:
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _fail(name: str, exc: UserError) -> None:
    if os.environ.get("STAGES_DEBUG"):
        raise exc
    typer.secho(f"error in '{name}': {exc}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=2) from None


def _run(name: str, params_path: Path, fn: Callable) -> None:
    """Run ``fn(params)`` on the validated parameters. A :class:`UserError` (a mistake the user
    can fix) is printed as one line with exit code 2; any other exception is a bug and keeps its
    traceback."""
    from stages.config import load_params

    _configure_logging(name)
    try:
        fn(load_params(params_path))
    except UserError as exc:
        _fail(name, exc)


def _run_stage(name: str, params_path: Path, declared: tuple[str, ...], fn: Callable, **names: str | None) -> None:
    """Run one DVC stage: its matrix names (``dataset``, ``backbone``) are checked against the
    params and resolved, and the stage gets a view of the params that lets it read only the keys
    it declares (its ``PARAMS``, which dvc.yaml lists), so DVC reruns it on every change it reads."""
    from stages.config import declared_view, stage_keys

    def _stage(params) -> None:
        resolved = {
            axis: (params.dataset(value) if axis == "dataset" else params.backbone(value))
            for axis, value in names.items()
        }
        fn(declared_view(params, stage_keys(declared, **resolved)), **resolved)

    _run(name, params_path, _stage)


@app.command()
def scan(dataset: str = DatasetOption, params: Path = ParamsOption) -> None:
    """List a photo folder's files (path, size, mtime) into data/sources/<dataset>.json.

    Params: data.<dataset> (an `images` dataset, one of `watch`). Only stat is called, no file is
    read: dvc.yaml runs this on every `dvc repro` (always_changed) and the data stage depends on
    its output, so DVC never hashes the photos and a no-op check stays fast at 100,000 files.
    """
    from stages.scan import PARAMS, run

    _run_stage("scan", params, PARAMS, run, dataset=dataset)


@app.command()
def data(dataset: str = DatasetOption, params: Path = ParamsOption) -> None:
    """Materialise a dataset as COCO-format tables: data/<dataset>/dataset/{split}.json.

    Params: seed, data.<dataset> . The default source 'synthetic' renders deterministic scenes
    (shapes x textures x colours on real photo backgrounds, long-tailed object sizes)
    into data/synthetic/dataset/images/. 'coco' reads any COCO instances file (seeded or given
    train/test split); 'images' lists a folder of photos (one table, no labels; report.json
    counts unreadable files and exact duplicates).
    """
    from stages.data import PARAMS, run

    _run_stage("data", params, PARAMS, run, dataset=dataset)


@app.command()
def extract(dataset: str = DatasetOption, params: Path = ParamsOption) -> None:
    """Extract class-agnostic object proposals into Parquet shards: data/<dataset>/objects/.

    Params: extract.* . One row per object: object_id, image_id, split, box x1 y1 x2 y2,
    area, score, stability (SAM), the crop (PNG/JPEG bytes, longest side extract.crop_size),
    mask_rle (SAM with extract.sam.keep_masks) and the extractor name. Unreadable images are
    skipped and counted in data/objects/summary.json. Resumable: a rerun after a crash keeps
    the completed shards (data/objects/manifest.json) and extracts only the other images.
    """
    from stages.extract import PARAMS, run

    _run_stage("extract", params, PARAMS, run, dataset=dataset)


@app.command()
def splits(params: Path = ParamsOption) -> None:
    """Open-world Task1-4 splits: known classes of `task` and its training objects.

    Params: task, train_on. Writes data/splits/tasks.json and data/splits/train_objects.parquet
    (training objects = extracted train objects of the train_on dataset overlapping a GT box of
    a known class).
    """
    from stages.splits import PARAMS, run

    _run_stage("splits", params, PARAMS, run)


@app.command()
def groups(params: Path = ParamsOption) -> None:
    """Assign each training object to one of `groups` scale groups by area quantiles.

    Params: groups. Writes data/groups/assignment.parquet, boundaries.json and
    area_hist.png (the long-tailed size histogram with the group boundaries).
    """
    from stages.groups import PARAMS, run

    _run_stage("groups", params, PARAMS, run)


@app.command()
def train(backbone: str = BackboneOption, params: Path = ParamsOption) -> None:
    """Train the embedding model of a backbone into models/<backbone>/model.pt.

    train.method: ms_ugcml, stml, ntxent or none.

    Params: seed, groups, train.* . ms_ugcml trains one head per scale group (groups);
    stml one head; ntxent the two-view contrastive baseline; none keeps the pretrained
    backbone. Resumable: rerunning after a crash continues from models/<backbone>/checkpoint.pt
    when the parameters, crops and training code are unchanged. The loss terms and learning
    rate go to models/<backbone>/train_log.tsv (dvc plots show). With train.nproc N > 1 the
    command relaunches itself as `torchrun --standalone --nproc_per_node N` (DDP, one rank per GPU).
    """
    from stages.train import PARAMS, run
    from stages.train.launch import run_under_torchrun, under_torchrun

    def _train(p, backbone: str) -> None:
        if p.train.nproc > 1 and not under_torchrun():
            run_under_torchrun(p.train.nproc, ["train", "--backbone", backbone, "--params", str(params)])
        else:
            run(p, backbone)

    _run_stage("train", params, PARAMS, _train, backbone=backbone)


@app.command()
def index(backbone: str = BackboneOption, dataset: str = DatasetOption, params: Path = ParamsOption) -> None:
    """Embed a dataset's gallery objects (test split) and query boxes (test GT), build FAISS indexes.

    Params: seed, extract.crop_size, index.* . Streamed: crops are decoded and embedded
    index.chunk_rows at a time. Writes index/{model,pretrained}/ (gallery-NNNNN.npy embedding
    shards, gallery.faiss, queries.npy) and index/{gallery,queries}.parquet. index.type:
    auto (flat up to index.flat_max objects, ivfpq above), flat, ivfpq or hnsw.
    """
    from stages.index import PARAMS, run

    _run_stage("index", params, PARAMS, run, backbone=backbone, dataset=dataset)


@app.command()
def evaluate(backbone: str = BackboneOption, dataset: str = DatasetOption, params: Path = ParamsOption) -> None:
    """Object- and image-level Recall@k and mAP into metrics/<backbone>/<dataset>.json.

    Params: seed, groups, task, evaluate.*, index search knobs. Object level: IoU >=
    evaluate.object_iou with a GT box of the query's class; image level: any overlap. For all /
    known / unknown classes and query-size buckets, for the trained model ('model') and the
    untrained backbone ('pretrained'). Queries are searched evaluate.query_chunk at a time.
    Pictures in metrics/<backbone>/<dataset>/: buckets.csv + buckets.png, examples.png.
    """
    from stages.evaluate import PARAMS, run

    _run_stage("evaluate", params, PARAMS, run, backbone=backbone, dataset=dataset)


@app.command()
def summary(backbone: str = BackboneOption, params: Path = ParamsOption) -> None:
    """The mean over the evaluated datasets of R@1 and mMP@5: metrics/summary/<backbone>.json (+ .png).

    Params: datasets. Reads metrics/<backbone>/<dataset>.json of every dataset in `datasets`
    (the universal-embedding benchmark's summary: an unweighted mean of per-dataset values).
    """
    from stages.summary import PARAMS, run

    _run_stage("summary", params, PARAMS, run, backbone=backbone)


@app.command("search")
def search_cmd(
    image: Path = typer.Argument(..., help="Image file to take the query from."),
    box: tuple[float, float, float, float] = typer.Option(
        (-1.0, -1.0, -1.0, -1.0),
        "--box",
        "-b",
        help="Query box x1 y1 x2 y2 in pixels (default: the whole image, e.g. a crop file).",
    ),
    k: int = typer.Option(5, "--k", "-k", min=1, help="Number of objects to return."),
    embedding: str = typer.Option(
        "model", "--embedding", "-e", help="'model' (trained) or 'pretrained' (untrained backbone)."
    ),
    out: Path = typer.Option(
        None, "--out", "-o", help="Also write a PNG sheet: the query, then each hit's image with its box."
    ),
    backbone: str = BackboneOption,
    dataset: str = DatasetOption,
    params: Path = ParamsOption,
) -> None:
    """Find the objects of the gallery index most similar to a query box (or crop file).

    Needs a built index (`dvc repro`). Prints rank, object id, image, box and distance.
    Example: python -m stages search photo.jpg --box 10 20 120 200 -k 5 -o hits.png
    """
    from stages.index.search import draw_hits, query_crop, search

    if embedding not in ("model", "pretrained"):
        typer.secho("error: --embedding must be 'model' or 'pretrained'", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=2)
    query_box = None if box == (-1.0, -1.0, -1.0, -1.0) else box

    def _search(p) -> None:
        from stages.crops import image_reader

        reader = image_reader(p.dataset(dataset))  # boxes are in the dataset's pixel grid (EXIF-oriented photos)
        crop, area = query_crop(image, query_box, p.extract.crop_size, reader)
        hits = search((crop, area), k, p, p.backbone(backbone), p.dataset(dataset), embedding)
        typer.echo(f"{'rank':>4}  {'object':>8}  {'image':>6}  {'box (x1 y1 x2 y2)':28s} {'distance':>8}  path")
        for h in hits:
            b = " ".join(f"{v:6.1f}" for v in h.box)
            typer.echo(f"{h.rank:4d}  {h.object_id:8d}  {h.image_id:6d}  {b:28s} {h.distance:8.4f}  {h.image_path}")
        if out is not None:
            draw_hits(crop, hits, out, reader=reader)
            typer.echo(f"wrote {out}")

    _run("search", params, _search)


@app.command("serve")
def serve_cmd(
    host: str = typer.Option(
        "127.0.0.1",
        "--host",
        help="Address to listen on. The default answers this machine only; 0.0.0.0 exposes the page to the network.",
    ),
    port: int = typer.Option(8000, "--port", min=1, max=65535, help="TCP port to listen on."),
    backbone: str = typer.Option(
        None, "--backbone", "-B", help="Backbone the page opens with, one of params `backbones` (default: the first)."
    ),
    dataset: str = typer.Option(
        None, "--dataset", "-d", help="Dataset the page opens with, one of params `datasets` (default: `train_on`)."
    ),
    k: int = typer.Option(10, "--k", "-k", min=1, max=100, help="Results per search ('more results' adds as many)."),
    max_upload_mb: float = typer.Option(
        20.0, "--max-upload-mb", min=0.01, help="Largest photo upload accepted, in MiB (larger: HTTP 413)."
    ),
    threads: int = typer.Option(
        1, "--threads", min=1, help="torch and FAISS threads per query (1: best on a small or shared CPU)."
    ),
    params: Path = ParamsOption,
) -> None:
    """Serve a local search page over the built indexes (after `dvc repro`): http://127.0.0.1:8000/.

    The page shows a grid of the dataset's gallery images; open one to see its extracted objects
    outlined. Click an object, draw a box on any image, or upload a photo and draw a box: the
    top-k most similar objects of the collection are listed with their crop, their image with
    the box drawn and their distance ('more results' on demand). Switch backbone, dataset and the
    trained / pretrained embedding among the params `backbones` x `datasets` with a built index;
    the Metrics page shows metrics/<backbone>/<dataset>.json and the evaluate stage's pictures.

    Safety: listens on 127.0.0.1 unless --host says otherwise; serves images by id from the
    dataset's own table only; uploads are limited to --max-upload-mb; the index is only read.
    Each model and FAISS index is loaded once, on first use (the opening selection at start-up).
    Params: index.* (search knobs), extract.crop_size. Ctrl+C stops the server.
    """
    from stages.serve import run

    def _serve(p) -> None:
        run(
            p,
            host=host,
            port=port,
            backbone=backbone,
            dataset=dataset,
            k=k,
            max_upload_mb=max_upload_mb,
            threads=threads,
        )

    _run("serve", params, _serve)


@app.command("params")
def params_help(params: Path = typer.Option(None, "--params", "-p", help="Also validate this parameter file.")) -> None:
    """List every parameter: key, type, default and meaning (the reference of params.yaml).

    With --params, also validate that file and report the first problems by key, including every
    backbone_options entry (a backbone name and one of its inits; the stages check only their own).
    """
    from stages.config import Params, describe_params, load_params

    for line in describe_params(Params):
        typer.echo(line)
    if params is not None:
        try:
            checked = load_params(params)
            from stages.backbones import check_options

            check_options(checked.backbone_options)
        except UserError as exc:
            typer.secho(str(exc), fg=typer.colors.RED, err=True)
            raise typer.Exit(code=2) from None
        typer.secho(f"{params}: valid", fg=typer.colors.GREEN)


def main() -> None:  # console-script entry point
    app()


if __name__ == "__main__":
    main()
