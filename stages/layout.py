"""Where each stage reads and writes, relative to the project root (dvc.yaml uses the same paths).

Datasets and backbones are the two axes of the DAG (``datasets`` and ``backbones`` in params.yaml,
DVC ``matrix`` stages in dvc.yaml)::

    data/<dataset>/dataset/      {split}.json (COCO format) + images/ of generated sources
    data/<dataset>/objects/      Parquet object shards {split}-NNNNN.parquet + summary.json
    data/sources/<dataset>.json  what the data stage depends on besides params: the scan stage's file
                                 listing for a photo folder (path, size, mtime), a committed stub otherwise
    data/splits/  data/groups/   Task1-4 splits and scale groups of the training dataset (train_on)
    models/<backbone>/           model.pt, checkpoint.pt, train_log.tsv, params.json
    index/<backbone>/<dataset>/  FAISS gallery indexes and query embeddings
    metrics/<backbone>/<dataset>.json   retrieval metrics (committed, cache: false)
    metrics/<backbone>/<dataset>/       their pictures (per-size bars, PR curves, retrieval examples)
                                        and per_query.parquet (DVC-cached, not in git)
    metrics/summary/<backbone>.json     the mean over the evaluated datasets (committed) + .png
"""

from pathlib import Path

DATA = Path("data")
SPLITS = DATA / "splits"  # tasks.json + train_objects.parquet
GROUPS = DATA / "groups"  # assignment.parquet + boundaries.json + area_hist.png
MODELS = Path("models")
INDEX = Path("index")
METRICS = Path("metrics")
SOURCES = DATA / "sources"  # <dataset>.json: a photo folder's listing (scan stage), else a committed stub
EMBEDDING_CACHE = Path(".cache") / "embeddings"  # outside DVC: the last index run's vectors, reused by the next
SPLIT_ORDER = ("train", "val", "test")  # canonical order of a dataset's splits (object ids follow it)
# the embeddings indexed side by side in index/<backbone>/<dataset>/<embedding>/: the trained model and
# the same backbone without training (every run reports its untrained baseline)
EMBEDDINGS = ("model", "pretrained")
DATASET_REPORT = "report.json"  # the data stage's report of a photo folder (not a split)


def dataset_splits(dataset: str) -> list[str]:
    """The splits a dataset's data stage wrote (``{split}.json``), in :data:`SPLIT_ORDER`."""
    found = {p.stem for p in dataset_dir(dataset).glob("*.json") if p.name != DATASET_REPORT}
    rank = {s: i for i, s in enumerate(SPLIT_ORDER)}
    return sorted(found, key=lambda s: (rank.get(s, len(rank)), s))


def dataset_dir(dataset: str) -> Path:
    """COCO-format tables ``{split}.json`` of one dataset (and the images of generated sources)."""
    return DATA / dataset / "dataset"


def objects_dir(dataset: str) -> Path:
    """Parquet object shards of one dataset."""
    return DATA / dataset / "objects"


def model_dir(backbone: str) -> Path:
    """The trained model of one backbone: model.pt, checkpoint.pt, train_log.tsv, params.json."""
    return MODELS / backbone


def index_dir(backbone: str, dataset: str) -> Path:
    """Gallery indexes and query embeddings of one backbone's model on one dataset."""
    return INDEX / backbone / dataset


def metrics_file(backbone: str, dataset: str) -> Path:
    """Retrieval metrics of one backbone's model on one dataset."""
    return METRICS / backbone / f"{dataset}.json"


def plots_dir(backbone: str, dataset: str) -> Path:
    """Pictures of one evaluation: buckets.csv / buckets.png (per query size), examples.png."""
    return METRICS / backbone / dataset


def source_file(dataset: str) -> Path:
    """The data stage's dependency on what a dataset is read from (see :data:`SOURCES`)."""
    return SOURCES / f"{dataset}.json"


def embedding_cache(backbone: str, dataset: str) -> Path:
    """Embeddings of the last index run of one backbone on one dataset (reused when unchanged)."""
    return EMBEDDING_CACHE / backbone / dataset


def per_query_file(backbone: str, dataset: str) -> Path:
    """Per-query metric values of one evaluation (for paired comparisons of runs)."""
    return plots_dir(backbone, dataset) / "per_query.parquet"


def summary_file(backbone: str) -> Path:
    """The mean over the evaluated datasets of one backbone's metrics (universal-embedding summary)."""
    return METRICS / "summary" / f"{backbone}.json"
