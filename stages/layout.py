"""Where each stage reads and writes, relative to the project root (dvc.yaml uses the same)."""

from pathlib import Path

DATASET = Path("data/dataset")  # {split}.json (COCO format) + images/
OBJECTS = Path("data/objects")  # Parquet object shards {split}-NNNNN.parquet + summary.json
SPLITS = Path("data/splits")  # tasks.json + train_objects.parquet
GROUPS = Path("data/groups")  # assignment.parquet + boundaries.json + area_hist.png
MODELS = Path("models")  # model.pt, checkpoint.pt, train_log.tsv, params.json
INDEX = Path("index")  # FAISS indexes and embeddings
METRICS = Path("metrics")  # metric JSONs (committed, cache: false)
SPLIT_NAMES = ("train", "test")
