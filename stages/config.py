"""The one typed parameter model of the pipeline, read from ``params.yaml``.

Every stage receives a validated :class:`Params`; unknown keys and wrong types fail
with a message that names the key (``ParamsError``).  YAML is read with ruamel.yaml,
which keeps ``1e-05`` (as written by ``dvc exp run -S``) a float.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from ruamel.yaml import YAML

from stages.errors import UserError


class ParamsError(UserError, ValueError):
    """params.yaml is missing, unreadable or invalid; the message names the key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SyntheticParams(_Strict):
    """The embedded default dataset: deterministic synthetic scenes."""

    train_images: int = Field(240, ge=1, description="number of training images")
    test_images: int = Field(60, ge=1, description="number of test images")
    image_size: int = Field(256, ge=32, description="side of the square scenes in pixels")
    classes: int = Field(24, ge=4, le=96, description="number of object classes")
    objects_per_image: tuple[int, int] = Field((3, 8), description="min and max objects per image")
    min_object: int = Field(8, ge=2, description="smallest object side in pixels")
    max_object: int = Field(128, ge=4, description="largest object side in pixels")
    scale_alpha: float = Field(1.6, gt=0, description="power-law exponent of object side (long tail)")
    distractors: tuple[int, int] = Field((2, 6), description="min and max unlabelled clutter shapes")

    @model_validator(mode="after")
    def _ranges(self) -> "SyntheticParams":
        for name in ("objects_per_image", "distractors"):
            lo, hi = getattr(self, name)
            if not 0 <= lo <= hi:
                raise ValueError(f"{name} must be [min, max] with 0 <= min <= max, got {[lo, hi]}")
        if self.min_object > self.max_object:
            raise ValueError("min_object must be <= max_object")
        return self


class DataParams(_Strict):
    source: Literal["synthetic"] = Field("synthetic", description="dataset source")
    synthetic: SyntheticParams = SyntheticParams()


class GraphExtractorParams(_Strict):
    """Multi-scale Felzenszwalb graph segmentation (weight-free, CPU)."""

    scales: tuple[float, ...] = Field((50.0, 150.0, 400.0), description="Felzenszwalb scale per level")
    sigma: float = Field(0.8, ge=0, description="Gaussian pre-smoothing")
    min_size: int = Field(20, ge=1, description="minimum segment size in pixels")
    max_side: int = Field(512, ge=64, description="images are downscaled to this longest side first")
    nms_iou: float = Field(0.8, gt=0, le=1, description="boxes overlapping more than this are merged")
    min_box: int = Field(4, ge=1, description="drop boxes with a side shorter than this (pixels)")
    max_area_frac: float = Field(0.9, gt=0, le=1, description="drop boxes covering more of the image")
    max_objects: int = Field(80, ge=1, description="keep at most this many proposals per image")


class ExtractParams(_Strict):
    extractor: Literal["graph"] = Field("graph", description="object proposal extractor")
    crop_size: int = Field(64, ge=8, description="stored crops are resized to this longest side")
    crop_format: Literal["png", "jpeg"] = Field("png", description="encoding of stored crops")
    shard_rows: int = Field(50_000, ge=1, description="objects per Parquet shard")
    graph: GraphExtractorParams = GraphExtractorParams()


class TrainParams(_Strict):
    method: Literal["ms_ugcml", "stml", "ntxent", "none"] = Field(
        "ntxent", description="ms_ugcml (paper), stml (single head), ntxent (two-view contrastive), none (pretrained)"
    )
    backbone: str = Field("efficientnet_lite0", description="backbone name in the registry")
    input_size: int = Field(64, ge=16, description="square input side of the network")
    steps: int = Field(150, ge=0, description="optimisation steps")
    queries: int = Field(8, ge=1, description="queries per batch (each brings its neighbours)")
    neighbours: int = Field(5, ge=1, description="k of the k-NN batch sampler, query included")
    knn_refresh: int = Field(50, ge=1, description="rebuild the neighbour graph every N steps")
    lr: float = Field(3e-4, gt=0, description="peak learning rate (cosine decay; paper: 1e-4 GoogLeNet, 3e-5 ViT)")
    warmup_steps: int = Field(0, ge=0, description="linear warm-up steps")
    weight_decay: float = Field(0.01, ge=0, description="AdamP weight decay")
    ema: float = Field(0.999, ge=0, lt=1, description="teacher EMA momentum")
    sigma: float = Field(3.0, gt=0, description="sigma of w_ij = exp(-|t_i-t_j|^2/sigma) (eq. 4)")
    delta: float = Field(1.0, gt=0, description="margin delta of the relaxed contrastive loss (eq. 4)")
    context_k: int = Field(5, ge=1, description="k of STML's contextual similarity")
    clusters: int = Field(100, ge=2, description="k-means centroids of collaborative distillation (eq. 1-2)")
    ckd_tau: float = Field(0.1, gt=0, description="temperature of the centroid similarity softmax (CKD)")
    mix_share: float = Field(0.1, ge=0, le=1, description="share of each smaller group's crops mixed into a group's set")
    ntxent_tau: float = Field(0.1, gt=0, description="temperature of the NT-Xent baseline")
    embed_head: Literal["first", "mean"] = Field("first", description="retrieval embedding: l of the first head or mean of the l heads")
    embed_dim: int = Field(512, ge=8, description="dimension of the retrieval embedding l")
    teacher_dim: int = Field(1024, ge=8, description="dimension of h and of the teacher head")
    freeze_bn: bool = Field(True, description="keep backbone BatchNorm statistics fixed (k-NN batches are not i.i.d.)")
    aug_scale: tuple[float, float] = Field((0.5, 1.0), description="random-resized-crop area range")
    batch_embed: int = Field(128, ge=1, description="batch size when embedding all crops")
    checkpoint_every: int = Field(50, ge=1, description="save a resumable checkpoint every N steps")

    @model_validator(mode="after")
    def _ranges(self) -> "TrainParams":
        lo, hi = self.aug_scale
        if not 0 < lo <= hi <= 1:
            raise ValueError(f"aug_scale must satisfy 0 < min <= max <= 1, got {[lo, hi]}")
        return self


class IvfPqParams(_Strict):
    """IVF-PQ: inverted lists over a coarse k-means, product-quantised residuals (compressed)."""

    nlist: int = Field(0, ge=0, description="inverted lists; 0 = auto: 4*sqrt(N) rounded to a power of two, in [16, 65536]")
    m: int = Field(64, ge=1, description="PQ sub-quantizers (bytes per vector at nbits 8); lowered to a divisor of the dimension")
    nbits: int = Field(8, ge=4, le=12, description="bits per PQ code")
    nprobe: int = Field(32, ge=1, description="inverted lists visited per query at search time")
    train_size: int = Field(0, ge=0, description="training sample (rows drawn across the shards); 0 = auto: min(N, max(64*nlist, 65536))")


class HnswParams(_Strict):
    """HNSW graph over the full vectors (no compression, fast approximate search)."""

    M: int = Field(32, ge=4, description="graph neighbours per node")
    ef_construction: int = Field(80, ge=8, description="candidate list size while building")
    ef_search: int = Field(128, ge=1, description="candidate list size at search time")


class IndexParams(_Strict):
    type: Literal["auto", "flat", "ivfpq", "hnsw"] = Field(
        "auto", description="FAISS index: flat (exact), ivfpq (compressed), hnsw (graph); auto = flat up to flat_max objects, ivfpq above"
    )
    flat_max: int = Field(1_000_000, ge=1, description="largest gallery that auto indexes exactly (Flat: 4*d bytes per object)")
    batch_size: int = Field(256, ge=1, description="crops per embedding batch")
    chunk_rows: int = Field(50_000, ge=1, description="gallery crops decoded and embedded per chunk = rows per embedding shard")
    gpu: bool = Field(True, description="use FAISS GPU (all GPUs, sharded) when the GPU build sees a GPU")
    ivfpq: IvfPqParams = IvfPqParams()
    hnsw: HnswParams = HnswParams()


class EvaluateParams(_Strict):
    object_iou: float = Field(0.3, gt=0, le=1, description="object-level relevance IoU threshold")
    topk: int = Field(100, ge=1, description="length of the returned list per query")
    exclude_same_image: bool = Field(True, description="drop gallery objects of the query's own image (paper: false)")
    query_chunk: int = Field(4096, ge=1, description="queries searched and scored per chunk (bounds memory)")
    examples: int = Field(6, ge=0, le=20, description="queries on the retrieval-examples sheet (seeded, spread over size buckets)")


class Params(_Strict):
    seed: int = Field(0, description="global seed: same seed, same params, same metrics")
    groups: int = Field(4, ge=1, le=8, description="number of scale groups")
    task: int = Field(4, ge=1, le=4, description="open-world task: classes of T1..Ttask are known")
    data: DataParams = DataParams()
    extract: ExtractParams = ExtractParams()
    train: TrainParams = TrainParams()
    index: IndexParams = IndexParams()
    evaluate: EvaluateParams = EvaluateParams()


def _describe(err: ValidationError, path: Path) -> str:
    lines = [f"invalid parameters in {path}:"]
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(top level)"
        if e["type"] == "extra_forbidden":
            lines.append(f"  {key}: unknown key (check the spelling; see params.yaml)")
        else:
            got = e.get("input")
            shown = "" if isinstance(got, dict) else f" (got {got!r})"
            lines.append(f"  {key}: {e['msg']}{shown}")
    return "\n".join(lines)


def describe_params(model: type[BaseModel], prefix: str = "") -> list[str]:
    """One line per parameter: dotted key, type, default, description."""
    lines = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            lines.extend(describe_params(ann, key + "."))
            continue
        if get_origin(ann) is Literal:
            kind = "|".join(str(a) for a in get_args(ann))
        else:
            kind = str(ann).replace("typing.", "") if get_args(ann) else getattr(ann, "__name__", str(ann))
        default = field.default.model_dump() if isinstance(field.default, BaseModel) else field.default
        lines.append(f"{key:34s} {kind:24s} default {default!r:18s} {field.description or ''}")
    return lines


def read_yaml(path: Path) -> dict:
    yaml = YAML(typ="safe", pure=True)
    try:
        with open(path) as f:
            raw = yaml.load(f)
    except FileNotFoundError:
        raise ParamsError(f"parameter file not found: {path}") from None
    except Exception as exc:  # ruamel raises several parser error types
        raise ParamsError(f"cannot parse {path}: {exc}") from None
    return raw or {}


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate ``params.yaml``; raise ParamsError naming each bad key."""
    path = Path(path)
    raw = read_yaml(path)
    if not isinstance(raw, dict):
        raise ParamsError(f"{path} must hold a mapping of keys, got {type(raw).__name__}")
    try:
        return Params.model_validate(raw)
    except ValidationError as err:
        raise ParamsError(_describe(err, path)) from None


def dump_params(params: Params, path: str | Path) -> None:
    """Write the resolved parameters next to a stage's outputs."""
    Path(path).write_text(json.dumps(params.model_dump(mode="json"), indent=2) + "\n")
