"""Forward speed of every registered backbone, and the cost of our :class:`Backbone` wrapper.

For each backbone, at its native input size (224), batch ``--batch`` of ``[0, 1]`` RGB images,
inference (``torch.inference_mode``), fp32, on this CPU:

- ``<name>_img_s``: images/s of ``build_backbone(name)`` (normalisation + pooled feature);
- ``<name>_wrapper_ratio``: its images/s divided by the images/s of the bare library model with
  the same weights on the same input (normalised beforehand), the physical reference: timm's model with
  ``num_classes=0`` (efficientnet_lite0
  = ``tf_efficientnet_lite0``, resnet50, vit_b16 = ``vit_base_patch16_224``, vit_b16_clip =
  ``vit_base_patch16_clip_quickgelu_224`` with its 512-d projection), torchvision's ``googlenet``
  (with its own pooling and fc), and for mit_b2 segmentation-models-pytorch's port of the
  NVlabs MiT (its four stage maps, no pooling).  Target >= 0.95.
- ``wrapper_ratio_min``: the smallest ratio.

The machine is shared with other jobs, so: one torch thread by default (two threads contend with
the other processes and run 3-5x slower), timed in CPU seconds of this process
(``time.process_time``: time spent waiting for a core is not counted; wall time with
``--threads`` > 1); wrapper and bare model are timed in interleaved repetitions (ABBA order,
after a warm-up of each); the ratio is the median of the per-repetition ratios and images/s
the median over repetitions.  Images/s are therefore single-core throughput.

Writes benchmarks/results/backbones.json. Run: ``python benchmarks/backbones.py``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import timm
import torch
from torch import nn

from stages.backbones import build_backbone

RESULTS = Path(__file__).resolve().parent / "results" / "backbones.json"


def bare_models() -> dict[str, tuple[dict, Callable[[], nn.Module]]]:
    """name -> (build_backbone kwargs, factory of the bare library model)."""
    from segmentation_models_pytorch.encoders.mix_transformer import LayerNorm, MixVisionTransformer
    from torchvision.models import googlenet

    from stages.backbones.mix_transformer import MIT_B2

    def smp_mit_b2() -> nn.Module:
        cfg = {k: list(v) for k, v in MIT_B2.items()}
        return MixVisionTransformer(qkv_bias=True, norm_layer=partial(LayerNorm, eps=1e-6), mlp_ratios=[4] * 4, **cfg)

    return {
        "efficientnet_lite0": ({}, lambda: timm.create_model("tf_efficientnet_lite0", num_classes=0)),
        "resnet50": ({}, lambda: timm.create_model("resnet50", num_classes=0)),
        "googlenet": ({}, lambda: googlenet(weights=None, aux_logits=False, init_weights=False, transform_input=False)),
        "mit_b2": ({}, smp_mit_b2),
        "vit_b16": ({"init": "mocov3"}, lambda: timm.create_model("vit_base_patch16_224", num_classes=0)),
        "vit_b16_clip": (
            {"init": "clip"},
            lambda: timm.create_model("vit_base_patch16_clip_quickgelu_224", num_classes=512),
        ),
    }


def timed(fn, x: torch.Tensor) -> float:
    """CPU seconds of this process for ``fn(x)`` (wall time when threads > 1)."""
    clock = time.process_time if torch.get_num_threads() == 1 else time.perf_counter
    t0 = clock()
    fn(x)
    return clock() - t0


@torch.inference_mode()
def compare(
    wrapper: nn.Module, bare: nn.Module, x: torch.Tensor, xb: torch.Tensor, repeats: int, min_seconds: float
) -> tuple[float, float, float, int]:
    """(wrapper images/s on ``x``, bare images/s on ``xb``, median per-repetition ratio), ABBA;
    at least ``repeats`` repetitions and at least ``min_seconds`` of measurement."""
    pair = timed(wrapper, x) + timed(bare, xb)  # warm-up
    repeats = max(repeats, math.ceil(min_seconds / pair))
    tw, tb, ratios = [], [], []
    for r in range(repeats):
        if r % 2 == 0:
            a, b = timed(wrapper, x), timed(bare, xb)
        else:
            b, a = timed(bare, xb), timed(wrapper, x)
        tw.append(a)
        tb.append(b)
        ratios.append(b / a)  # (n/a) / (n/b)
    n = len(x)
    return n / float(np.median(tw)), n / float(np.median(tb)), float(np.median(ratios)), repeats


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=8, help="at least this many interleaved repetitions")
    ap.add_argument("--min-seconds", type=float, default=30.0, help="and at least this long per backbone")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--only", nargs="*", help="backbones to measure (default: all)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    out: dict[str, float | int] = {}
    ratios = {}
    for name, (kwargs, make_bare) in bare_models().items():
        if args.only and name not in args.only:
            continue
        registry_name = name.removesuffix("_clip")
        wrapper = build_backbone(registry_name, pretrained=False, **kwargs).eval()
        bare = make_bare().eval()
        # same weights (same keys: the wrapper's model is the library's minus its classifier) and
        # the same, already normalised, input: only the wrapper differs
        missing = bare.load_state_dict(wrapper.model.state_dict(), strict=False).missing_keys
        assert all(k.startswith(("fc.", "head.")) for k in missing), missing
        size = wrapper.spec.input_size
        x = torch.rand(args.batch, 3, size, size)
        with torch.inference_mode():
            xb = wrapper.normalise(x)
        w_ips, b_ips, ratio, reps = compare(wrapper, bare, x, xb, args.repeats, args.min_seconds)
        out[f"{name}_img_s"] = round(w_ips, 2)
        out[f"{name}_bare_img_s"] = round(b_ips, 2)
        out[f"{name}_wrapper_ratio"] = round(ratio, 3)
        ratios[name] = ratio
        out[f"{name}_repeats"] = reps
        print(
            f"{name:20s} {size}px  wrapper {w_ips:7.2f} img/s  bare {b_ips:7.2f} img/s  "
            f"ratio {ratio:.3f}  ({reps} reps)",
            flush=True,
        )
        del wrapper, bare
    out["wrapper_ratio_min"] = round(min(ratios.values()), 3)
    out |= {"batch": args.batch, "threads": args.threads, "cpus": os.cpu_count()}
    print(f"wrapper_ratio_min {out['wrapper_ratio_min']:.3f} ({min(ratios, key=ratios.get)})")
    if not args.only:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        tmp = RESULTS.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(out, indent=2) + "\n")
        os.replace(tmp, RESULTS)
        print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
