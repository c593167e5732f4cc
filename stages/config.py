"""The one typed parameter model of the pipeline, read from ``params.yaml``.

Every stage receives a validated :class:`Params`; unknown keys and wrong types fail
with a message that names the key (``ParamsError``).  YAML is read with ruamel.yaml,
which keeps ``1e-05`` (as written by ``dvc exp run -S``) a float.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from ruamel.yaml import YAML

from stages.atomic import write_json
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


class CocoVocParams(_Strict):
    """The paper's benchmark: COCO 2017 + VOC 2007 (datasets are read in place, never copied)."""

    coco_root: str | None = Field(
        None, description="folder with annotations/instances_{train,val}2017.json and {train,val}2017/ images"
    )
    voc_root: str | None = Field(
        None, description="the VOCdevkit/VOC2007 folder (Annotations/, ImageSets/Main/, JPEGImages/)"
    )
    coco_train: str = Field(
        "train2017", description="COCO set of the training split (annotations/instances_<set>.json, <set>/)"
    )
    coco_test: str = Field("val2017", description="COCO set of the test split")
    voc_train: tuple[str, ...] = Field(
        ("trainval",), description="VOC image sets of the training split (ImageSets/Main/<set>.txt)"
    )
    voc_test: tuple[str, ...] = Field(("test",), description="VOC image sets of the test split")
    val_images: int = Field(
        2000, ge=0, description="seeded validation subset drawn from (and removed from) the training images"
    )
    include_difficult: bool = Field(
        True, description="VOC 'difficult' objects are queries (paper count); false: label-only boxes"
    )
    crowd_queries: bool = Field(
        True, description="COCO crowd regions are queries (paper count); false: label-only boxes"
    )
    drop_unannotated_test: bool = Field(
        True, description="drop test images without any annotation (paper: 9,904 test images)"
    )


class LvisParams(_Strict):
    """LVIS v1 val (evaluation only): 1,203 classes on COCO images."""

    annotations: str | None = Field(None, description="path of lvis_v1_val.json")
    image_dirs: tuple[str, ...] = Field(
        (), description="COCO image folders searched by file name (e.g. coco/val2017, coco/train2017)"
    )
    coco_folders: tuple[str, ...] = Field(
        ("val2017",),
        description="keep images whose coco_url folder is listed (train2017 ones overlap COCO+VOC training); "
        "empty: all",
    )
    drop_unannotated: bool = Field(True, description="drop images without any LVIS box")


class VisualGenomeParams(_Strict):
    """Visual Genome (evaluation only): every object labels the gallery, a seeded sample are queries."""

    root: str | None = Field(None, description="folder with objects.json, image_data.json and the image folders")
    image_dirs: tuple[str, ...] = Field(
        ("VG_100K", "VG_100K_2"), description="image folders (relative to root or absolute)"
    )
    max_images: int | None = Field(None, ge=1, description="seeded subset of images (null: all 108k)")
    min_side: int = Field(32, ge=1, description="a query box has both sides >= this (pixels)")
    min_images: int = Field(2, ge=1, description="a query's class occurs in at least this many images")
    max_per_class: int | None = Field(None, ge=1, description="at most this many queries per class (null: no cap)")
    max_queries: int = Field(80_000, ge=1, description="seeded sample of this many queries (paper: 79,921)")


class BelgaLogosParams(_Strict):
    """BelgaLogos (evaluation only): 10k press photos, 55 query logos, boxed logo instances."""

    root: str | None = Field(
        None, description="folder with images/, qset3_internal_and_local.gt and qset1_internal.qry"
    )
    queries: str = Field("qset1_internal.qry", description="query list (name image x1 y1 x2 y2), relative to root")
    ground_truth: str = Field(
        "qset3_internal_and_local.gt",
        description="logo instances (id logo image type state x1 y1 x2 y2), relative to root",
    )
    include_junk: bool = Field(True, description="keep partly visible instances (state 0) as ground truth")


class ImagesParams(_Strict):
    """A folder of photos without annotations: the whole collection trains (unsupervised) and is the gallery."""

    paths: tuple[str, ...] = Field(
        (),
        description="folders (searched recursively) and/or glob patterns (** allowed) of photos, relative to the repo",
    )
    extensions: tuple[str, ...] = Field(
        (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"),
        description="file name endings taken as photos (case-insensitive); other files are ignored",
    )
    drop_duplicates: bool = Field(
        False, description="exact duplicate files (same bytes): keep only the first path (false: keep all, reported)"
    )

    @field_validator("extensions")
    @classmethod
    def _dotted(cls, exts: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(e.lower() if e.startswith(".") else f".{e.lower()}" for e in exts)


class CocoParams(_Strict):
    """Any COCO-format instances file + its image folder, split into train/test (seeded, or the user's files)."""

    annotations: str | None = Field(None, description="the COCO instances JSON (images, annotations, categories)")
    images: str | None = Field(None, description="image folder; the file's file_name entries are relative to it")
    test_share: float = Field(
        0.2, gt=0, lt=1, description="seeded share of the images in the test split (when no split file is given)"
    )
    train_split: str | None = Field(
        None, description="text file: one training image per line, as an image id or a file name (null: the rest)"
    )
    test_split: str | None = Field(
        None, description="text file: one test image per line, as an image id or a file name (null: the rest)"
    )
    crowd_queries: bool = Field(True, description="crowd regions (iscrowd 1) are queries; false: label-only boxes")
    drop_unannotated_test: bool = Field(False, description="drop test images without any annotation")


@dataclass(frozen=True)
class Source:
    """What the pipeline needs to know about a dataset source."""

    train_split: str | None  # the split whose objects train the models (None: evaluation only)
    photos: bool = False  # a photo folder: scanned by DVC (watch), EXIF-oriented, extracted incrementally


SOURCES: dict[str, Source] = {
    "synthetic": Source("train"),
    "coco_voc": Source("train"),
    "coco": Source("train"),
    "images": Source("test", photos=True),  # one table, extracted once: the gallery is the training set
    "lvis": Source(None),
    "visual_genome": Source(None),
    "belgalogos": Source(None),
}
TRAINABLE_SOURCES = tuple(name for name, s in SOURCES.items() if s.train_split)  # the others: test only


class DataParams(_Strict):
    """One section per dataset source; the ``datasets`` list says which ones the pipeline uses."""

    synthetic: SyntheticParams = SyntheticParams()
    coco_voc: CocoVocParams = CocoVocParams()
    coco: CocoParams = CocoParams()
    images: ImagesParams = ImagesParams()
    lvis: LvisParams = LvisParams()
    visual_genome: VisualGenomeParams = VisualGenomeParams()
    belgalogos: BelgaLogosParams = BelgaLogosParams()


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


class SamParams(_Strict):
    """segment-anything's automatic mask generator; defaults are the paper's (ViT-H, 32x32 points)."""

    model_type: Literal["vit_h", "vit_l", "vit_b"] = Field(
        "vit_h", description="SAM image encoder (the checkpoint must match)"
    )
    checkpoint: str | None = Field(
        None, description="path of the SAM checkpoint file (.pth); required with extractor: sam"
    )
    points_per_side: int = Field(32, ge=1, description="prompt points per image side (points_per_side^2 prompts)")
    points_per_batch: int = Field(64, ge=1, description="prompt points run through the mask decoder at once")
    pred_iou_thresh: float = Field(0.88, ge=0, le=1, description="drop masks whose predicted IoU is lower")
    stability_score_thresh: float = Field(0.95, ge=0, le=1, description="drop masks whose stability score is lower")
    box_nms_thresh: float = Field(0.7, gt=0, le=1, description="box IoU of the NMS between duplicate masks")
    crop_n_layers: int = Field(0, ge=0, description="extra layers of image crops (0: the whole image only)")
    min_mask_region_area: int = Field(
        0, ge=0, description="remove holes and islands smaller than this (pixels; 0: off)"
    )
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: CUDA when available, else CPU")
    precision: Literal["fp32", "bf16", "fp16"] = Field(
        "fp32", description="image encoder autocast dtype on CUDA (CPU runs fp32)"
    )
    keep_masks: bool = Field(False, description="store each mask as COCO RLE (column mask_rle)")


class ExtractParams(_Strict):
    extractor: Literal["graph", "sam"] = Field("graph", description="object proposal extractor")
    crop_size: int = Field(64, ge=8, description="stored crops are resized to this longest side")
    crop_format: Literal["png", "jpeg"] = Field("png", description="encoding of stored crops")
    shard_rows: int = Field(
        50_000, ge=1, description="objects per Parquet shard (whole images: a shard may hold a few more)"
    )
    graph: GraphExtractorParams = GraphExtractorParams()
    sam: SamParams = SamParams()
    engine: Literal["local", "ray"] = Field(
        "local", description="local: this process; ray: a Ray Data pipeline (decode tasks, extractor actors)"
    )
    ray_address: str | None = Field(None, description="Ray cluster to join (null: $RAY_ADDRESS, else a local cluster)")
    ray_workers: int | None = Field(
        None, ge=1, description="extractor actors (null: one per GPU of the cluster, else one per CPU)"
    )
    workers: int | None = Field(
        None,
        ge=1,
        description="local engine: processes running the graph extractor, each on whole images (null: one "
        "per CPU core; 1: this process); sam always runs in this process, which holds its model",
    )


class TrainParams(_Strict):
    method: Literal["ms_ugcml", "stml", "ntxent", "none"] = Field(
        "ms_ugcml",
        description="ms_ugcml (the paper's: one head per scale group), baselines: stml (one head), "
        "ntxent (two-view contrastive), none (pretrained)",
    )
    input_size: int = Field(64, ge=16, description="square input side of the network")
    steps: int = Field(150, ge=0, description="optimisation steps")
    queries: int = Field(8, ge=1, description="queries per batch (each brings its neighbours)")
    neighbours: int = Field(5, ge=1, description="k of the k-NN batch sampler, query included")
    knn_refresh: int = Field(
        50, ge=1, description="rebuild the neighbour graph and centroids every N steps (paper: 1000)"
    )
    refresh_share: float = Field(
        1.0,
        gt=0,
        le=1,
        description="share of each group embedded at a refresh; batches come from it until the next "
        "(authors' code: 0.5); 1 = every crop",
    )
    knn_scope: Literal["group", "all"] = Field(
        "group",
        description="where a query's k-NN neighbours come from: its own scale group (the authors' code) or every "
        "group (all: one graph; the queries are still drawn per group, and a cluster trains its query's head)",
    )
    knn_exact_max: int = Field(
        50_000,
        ge=1,
        description="a group of at most this many crops gets an exact k-NN graph (FAISS flat), "
        "a larger one IVF-PQ (built and searched chunk by chunk)",
    )
    knn_nprobe: int = Field(16, ge=1, description="inverted lists searched per crop in a group's IVF-PQ k-NN graph")
    knn_rerank: int = Field(
        2,
        ge=1,
        description="IVF-PQ k-NN graph: candidates per neighbour re-ranked on the full embeddings "
        "(rerank x (neighbours + 1) per crop; 3 finds more of the exact neighbours, at ~+50% k-NN time)",
    )
    lr: float | None = Field(
        None,
        gt=0,
        description="peak lr of every backbone without backbone_options.<name>.lr; null: each backbone's default "
        "(3e-4 efficientnet_lite0, paper: 1e-4 GoogLeNet, 3e-5 MiT-B2/ViT-B)",
    )
    warmup_steps: int = Field(0, ge=0, description="linear warm-up steps")
    weight_decay: float = Field(0.01, ge=0, description="AdamP weight decay")
    nesterov: bool = Field(True, description="AdamP with Nesterov momentum (STML and the authors)")
    ema: float = Field(0.999, ge=0, lt=1, description="teacher EMA momentum")
    ema_every: int = Field(
        1, ge=1, description="update the EMA teacher every N steps (STML: 1; the authors' code: 10, README)"
    )
    sigma: float = Field(3.0, gt=0, description="sigma of w_ij = exp(-|t_i-t_j|^2/sigma) (eq. 4)")
    delta: float = Field(1.0, gt=0, description="margin delta of the relaxed contrastive loss (eq. 4)")
    context_k: int | None = Field(
        None, ge=1, description="k of STML's contextual similarity; null: neighbours x 2 views (STML's topk)"
    )
    student_norm: bool = Field(False, description="L2-normalise the student embeddings before eq. 3-4 (STML: off)")
    group_reduction: Literal["mean", "sum"] = Field(
        "mean", description="group terms averaged over the heads (authors' code, STML for one) or summed (eq. 5)"
    )
    teacher_heads: Literal["per_group", "shared"] = Field(
        "per_group", description="one teacher head per group, the EMA of its student head (authors), or one shared"
    )
    head_init: Literal["auto", "orthogonal", "shared"] = Field(
        "auto",
        description="student heads: orthogonal weights, zero bias, drawn per head (STML, the authors), shared (one "
        "default init copied to every head: they start aligned), or auto: orthogonal with one head (stml, groups: "
        "1, STML's code), shared with more (ahead in every seed measured, README)",
    )
    quota: Literal["size", "size_area"] = Field(
        "size", description="k-NN queries per group: by group size, or size x mean area with a 10% floor (authors)"
    )
    ckd_weight: float = Field(1.0, ge=0, description="weight of L_CKD in the total (paper: 1; 0: no CKD, an ablation)")
    ckd_rows: Literal["all", "shared"] = Field(
        "shared",
        description="CKD only on the crops two mixed-scale sets share (the authors' code), or on every crop of the "
        "batch through every head (all: collapsed the embedding on the default data, README)",
    )
    clusters: int = Field(100, ge=2, description="k-means centroids of collaborative distillation (eq. 1-2)")
    ckd_tau: float = Field(
        1.0, gt=0, description="temperature of the centroid similarity softmax (CKD); the authors' T = 1, 0.1 collapsed"
    )
    mix_share: float = Field(
        0.1, ge=0, le=1, description="share of each mixed-in group's crops (train.mix_from) added to a group's set"
    )
    mix_from: Literal["smaller", "all"] = Field(
        "smaller",
        description="groups whose crops are mixed into a group's set: each smaller group (the authors' code) or "
        "every other group (all: every head also compares its crops with larger ones)",
    )
    ntxent_tau: float = Field(0.1, gt=0, description="temperature of the NT-Xent baseline")
    embed_head: Literal["first", "mean", "routed"] = Field(
        "first",
        description="retrieval embedding: the first head's l (the authors' code; ahead of the mean in 18 of 22 "
        "models measured, 4 of 8 with aligned heads: README), the mean of the l heads, or routed (each gallery "
        "object and query through the head of its own scale group, by box area); no retraining",
    )
    embed_dim: int = Field(512, ge=8, description="dimension of the retrieval embedding l")
    teacher_dim: int = Field(1024, ge=8, description="dimension of h and of the teacher head")
    freeze_bn: bool = Field(True, description="keep backbone BatchNorm statistics fixed (k-NN batches are not i.i.d.)")
    aug_scale: tuple[float, float] = Field((0.16, 1.0), description="random-resized-crop area range (STML)")
    aug_colour: bool = Field(False, description="also jitter brightness/contrast (STML: no colour change)")
    batch_embed: int = Field(128, ge=1, description="crops per backbone pass of a refresh (~1024 on a GPU)")
    workers: int = Field(
        2, ge=0, description="DataLoader worker processes reading and decoding streamed crops (0: the main process)"
    )
    prefetch: int = Field(2, ge=1, description="batches each worker reads ahead")
    cache_gb: float = Field(
        2.0,
        ge=0,
        description="decoded crops (N x 3 x input_size^2 bytes) are held in memory when they fit this many GiB, "
        "else packed once beside the checkpoint and streamed from there at every step (same batches, same model)",
    )
    refresh_memory_gb: float = Field(
        1.0,
        ge=0,
        description="a refresh keeps h and l float32 in memory up to this many GiB (N x (teacher_dim + embed_dim) "
        "x 4 bytes), else float16 files on disk next to the checkpoint",
    )
    checkpoint_every: int = Field(50, ge=1, description="save a resumable checkpoint every N steps")
    ntxent_variant: Literal["views", "anchor"] = Field(
        "views",
        description="ntxent: two-view NT-Xent, or anchor-based (views classified against the un-augmented crops)",
    )
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="training device (auto: cuda when available)")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="autocast dtype on CUDA (auto: bf16 on CUDA); the CPU always trains in fp32"
    )
    compile: Literal["auto"] | bool = Field(
        "auto", description="torch.compile the backbone: true, false or auto (on CUDA only)"
    )
    nproc: int = Field(
        1, ge=1, description="processes (GPUs) of torchrun DDP training; the global batch is split across them"
    )

    @model_validator(mode="after")
    def _ranges(self) -> "TrainParams":
        lo, hi = self.aug_scale
        if not 0 < lo <= hi <= 1:
            raise ValueError(f"aug_scale must satisfy 0 < min <= max <= 1, got {[lo, hi]}")
        return self

    def heads_init(self, n_heads: int) -> str:
        """``head_init`` of a student with ``n_heads`` heads, ``auto`` resolved."""
        if self.head_init != "auto":
            return self.head_init
        return "orthogonal" if n_heads == 1 else "shared"


class IvfPqParams(_Strict):
    """IVF-PQ: inverted lists over a coarse k-means, product-quantised residuals (compressed)."""

    nlist: int = Field(
        0, ge=0, description="inverted lists; 0 = auto: 4*sqrt(N) rounded to a power of two, in [16, 65536]"
    )
    m: int = Field(
        64, ge=1, description="PQ sub-quantizers (bytes per vector at nbits 8); lowered to a divisor of the dimension"
    )
    nbits: int = Field(8, ge=4, le=12, description="bits per PQ code")
    nprobe: int = Field(32, ge=1, description="inverted lists visited per query at search time")
    train_size: int = Field(
        0, ge=0, description="training sample (rows drawn across the shards); 0 = auto: min(N, max(64*nlist, 65536))"
    )


class HnswParams(_Strict):
    """HNSW graph over the full vectors (no compression, fast approximate search)."""

    M: int = Field(32, ge=4, description="graph neighbours per node")
    ef_construction: int = Field(80, ge=8, description="candidate list size while building")
    ef_search: int = Field(128, ge=1, description="candidate list size at search time")


class IndexParams(_Strict):
    type: Literal["auto", "flat", "ivfpq", "hnsw"] = Field(
        "auto",
        description="FAISS index: flat (exact), ivfpq (compressed), hnsw (graph); "
        "auto = flat up to flat_max objects, ivfpq above",
    )
    flat_max: int = Field(
        1_000_000, ge=1, description="largest gallery that auto indexes exactly (Flat: 4*d bytes per object)"
    )
    batch_size: int = Field(64, ge=1, description="crops per embedding pass (64 suits a CPU's caches; ~1024 on a GPU)")
    chunk_rows: int = Field(
        50_000, ge=1, description="gallery crops decoded and embedded per chunk = rows per embedding shard"
    )
    gpu: bool = Field(True, description="use FAISS GPU (all GPUs, sharded) when the GPU build sees a GPU")
    ivfpq: IvfPqParams = IvfPqParams()
    hnsw: HnswParams = HnswParams()


class EvaluateParams(_Strict):
    object_iou: float = Field(0.3, gt=0, le=1, description="object-level relevance IoU threshold")
    topk: int = Field(100, ge=1, description="list length of the truncated mAP, key mAP@<topk> (mAP over the top 100)")
    map_list: int | None = Field(
        36000,
        ge=1,
        description="list length of the headline mAP, min(map_list, gallery): the authors' COCO-VOC list is "
        "36,000 (2000 per 48,000-object gallery chunk); null: the whole gallery",
    )
    labelling: Literal["max_iou", "multi_label"] = Field(
        "max_iou",
        description="gallery labels: max_iou = the one class of the GT box a gallery object overlaps most "
        "(the authors'; ties: the GT box listed first); multi_label = every class with a passing box",
    )
    bootstrap: int = Field(
        1000, ge=0, description="resamples of the 95% bootstrap intervals over queries (seeded by seed); 0: none"
    )
    exclude_same_image: bool = Field(True, description="drop gallery objects of the query's own image (paper: false)")
    query_chunk: int = Field(4096, ge=1, description="queries searched and scored per chunk (bounds memory)")
    examples: int = Field(
        6, ge=0, le=20, description="queries on the retrieval-examples sheet (seeded, spread over size buckets)"
    )


class BackboneOptions(_Strict):
    """Per-backbone overrides (``backbone_options.<name>`` in params.yaml)."""

    weights: str | None = Field(None, description="checkpoint file of the init (path; nothing is downloaded)")
    init: Literal["mocov3", "clip", "imagenet", "none", None] = Field(
        None,
        description="initialisation (vit_b16: mocov3|clip|imagenet|none; others: imagenet|none); "
        "null: the backbone's default",
    )
    lr: float | None = Field(
        None,
        gt=0,
        description="peak learning rate; null: the backbone's default (paper: 1e-4 GoogLeNet, 3e-5 MiT-B2/ViT-B)",
    )


class Params(_Strict):
    seed: int = Field(0, description="global seed: same seed, same params, same metrics")
    datasets: tuple[str, ...] = Field(
        ("synthetic",), min_length=1, description="datasets to extract, index and evaluate (a data.<name> section each)"
    )
    train_on: str = Field("synthetic", description="the dataset (one of datasets) whose train split trains the models")
    watch: tuple[str, ...] = Field(
        (),
        description="the photo-folder datasets (images) of datasets: DVC lists their files on every repro (stage scan)",
    )
    backbones: tuple[str, ...] = Field(
        ("efficientnet_lite0",), min_length=1, description="backbones: one train/index/evaluate chain each"
    )
    groups: int = Field(4, ge=1, le=8, description="number of scale groups")
    task: int = Field(4, ge=1, le=4, description="open-world task: classes of T1..Ttask are known")
    data: DataParams = DataParams()
    extract: ExtractParams = ExtractParams()
    train: TrainParams = TrainParams()
    index: IndexParams = IndexParams()
    evaluate: EvaluateParams = EvaluateParams()
    backbone_options: dict[str, BackboneOptions] = Field(
        {}, description="per-backbone overrides keyed by backbone name (weights, init, lr)"
    )

    @model_validator(mode="after")
    def _axes(self) -> "Params":
        sources = sorted(DataParams.model_fields)
        for name in ("datasets", "backbones"):
            values = getattr(self, name)
            if len(set(values)) != len(values):
                raise ValueError(f"{name} lists a name twice: {list(values)}")
        unknown = [d for d in self.datasets if d not in sources]
        if unknown:
            raise ValueError(f"datasets: unknown source(s) {unknown}; valid: {sources}")
        if self.train_on not in self.datasets:
            raise ValueError(f"train_on: {self.train_on!r} is not one of datasets {list(self.datasets)}")
        if self.train_on not in TRAINABLE_SOURCES:
            raise ValueError(
                f"train_on: {self.train_on!r} is evaluation-only (no train split); use one of {list(TRAINABLE_SOURCES)}"
            )
        folders = [d for d in self.datasets if SOURCES[d].photos]
        if sorted(self.watch) != sorted(folders):
            raise ValueError(
                f"watch must list exactly the photo-folder datasets of datasets, {folders} (got {list(self.watch)}): "
                "dvc.yaml's scan stage lists their files on every repro"
            )
        return self

    def train_split(self, dataset: str | None = None) -> str:
        """The split of ``dataset`` (default: ``train_on``) whose objects train the models:
        ``train``, or ``test`` for a photo folder (one table: the gallery is the training set)."""
        split = SOURCES[dataset or self.train_on].train_split
        if split is None:
            raise ParamsError(f"dataset {dataset!r} is evaluation-only (no train split)")
        return split

    def dataset(self, name: str | None) -> str:
        """``name`` checked against ``datasets`` (default: ``train_on``)."""
        if name is None:
            return self.train_on
        if name not in self.datasets:
            raise ParamsError(f"dataset {name!r} is not in params datasets {list(self.datasets)}")
        return name

    def backbone(self, name: str | None) -> str:
        """``name`` checked against ``backbones`` (default: the first one)."""
        if name is None:
            return self.backbones[0]
        if name not in self.backbones:
            raise ParamsError(f"backbone {name!r} is not in params backbones {list(self.backbones)}")
        return name


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
        value = get_args(ann)[-1] if get_origin(ann) is dict else None
        if isinstance(value, type) and issubclass(value, BaseModel):  # a map of name -> options
            lines.append(
                f"{key + '.<name>':34s} {'mapping':24s} default {field.default!r:18s} {field.description or ''}"
            )
            lines.extend(describe_params(value, key + ".<name>."))
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


def stage_keys(declared: tuple[str, ...], **names: str) -> tuple[str, ...]:
    """A stage's ``PARAMS`` with its matrix names filled in: ``data.{dataset}`` -> ``data.synthetic``."""
    return tuple(key.format(**names) for key in declared)


class UndeclaredParamError(AttributeError):
    """A stage read a parameter that its ``PARAMS`` (and so dvc.yaml) do not list: a bug, not a user error."""


class _Undeclared:
    """Stands in for a parameter a stage did not declare; any use of it raises :class:`UndeclaredParamError`."""

    __slots__ = ("_key",)

    def __init__(self, key: str):
        object.__setattr__(self, "_key", key)

    def _fail(self, *_args, **_kwargs):
        raise UndeclaredParamError(
            f"this stage reads params '{self._key}', which its PARAMS do not list: add it there and to "
            "the stage's params in dvc.yaml, or DVC will not rerun the stage when it changes"
        )

    __getattr__ = __getitem__ = __iter__ = __len__ = __bool__ = __eq__ = __lt__ = __gt__ = _fail
    __float__ = __int__ = __index__ = __str__ = __format__ = __contains__ = __call__ = _fail
    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = __truediv__ = __rtruediv__ = _fail
    __floordiv__ = __rfloordiv__ = __mod__ = __pow__ = __neg__ = __le__ = __ge__ = __ne__ = _fail
    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"<undeclared params {self._key}>"


class _DeclaredMapping(dict):
    """A ``name -> options`` map that answers only for the names a stage declared."""

    def __init__(self, values: dict, allowed: set[str], key: str):
        super().__init__({k: v for k, v in values.items() if k in allowed})
        self._allowed, self._key = allowed, key

    def _check(self, name: str) -> None:
        if name not in self._allowed:
            _Undeclared(f"{self._key}.{name}")._fail()

    def get(self, name, default=None):
        self._check(name)
        return super().get(name, default)

    def __getitem__(self, name):
        self._check(name)
        return super().__getitem__(name)

    def __contains__(self, name) -> bool:
        self._check(name)
        return super().__contains__(name)

    def __iter__(self):
        return _Undeclared(self._key)._fail()

    keys = values = items = __iter__


def declared_view(model: BaseModel, keys: tuple[str, ...], prefix: str = "") -> BaseModel:
    """A copy of ``model`` where only the dotted ``keys`` (and what is under them) can be read.

    The CLI hands each stage such a view of its ``PARAMS``, so a stage that reads a key dvc.yaml
    does not list fails at once (:class:`UndeclaredParamError`) instead of going stale silently.
    """
    values = {}
    for name in type(model).model_fields:
        key = prefix + name
        value = getattr(model, name)
        inner = tuple(k[len(name) + 1 :] for k in keys if k.startswith(name + "."))
        if name in keys:
            values[name] = value
        elif inner and isinstance(value, BaseModel):
            values[name] = declared_view(value, inner, key + ".")
        elif inner and isinstance(value, dict):
            values[name] = _DeclaredMapping(value, set(inner), key)
        else:
            values[name] = _Undeclared(key)
    return type(model).model_construct(**values)


def declared_values(params: BaseModel, keys: tuple[str, ...]) -> dict:
    """The values of ``keys`` as a nested JSON-ready dict (what a stage records next to its outputs)."""
    out: dict = {}
    for key in sorted(keys):
        node, parts = params, key.split(".")
        for part in parts:
            node = node.get(part) if isinstance(node, dict) else getattr(node, part)
        target = out
        for part in parts[:-1]:
            target = target.setdefault(part, {})
        target[parts[-1]] = node.model_dump(mode="json") if isinstance(node, BaseModel) else _json_ready(node)
    return out


def _json_ready(value):
    if isinstance(value, tuple):
        return [_json_ready(v) for v in value]
    if isinstance(value, dict):
        return {k: _json_ready(v.model_dump(mode="json") if isinstance(v, BaseModel) else v) for k, v in value.items()}
    return value


def dump_params(params: BaseModel, keys: tuple[str, ...], path: str | Path) -> None:
    """Write the parameters a stage read (``keys``) next to its outputs."""
    write_json(path, declared_values(params, keys))
