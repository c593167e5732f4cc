"""dvc.yaml tells DVC the truth: each stage lists the code its command imports and the params it reads.

The code a stage runs is the static import closure of its CLI command (tests/pipeline/stage_code.py,
over stages.codebase); the params it reads are its ``PARAMS``, which the CLI enforces at run time
(stages.config.declared_view): a stage that reads an undeclared key fails.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from stages import codebase
from stages.config import UndeclaredParamError, declared_view, load_params
from tests.pipeline.stage_code import stage_files

ROOT = Path(__file__).resolve().parents[2]
STAGE_PACKAGE = {"data": "stages.data", "extract": "stages.extract", "splits": "stages.splits"}
STAGE_PACKAGE |= {"groups": "stages.groups", "train": "stages.train", "index": "stages.index"}
STAGE_PACKAGE |= {"evaluate": "stages.evaluate", "scan": "stages.scan", "summary": "stages.summary"}


def dvc_stages(text: str) -> dict[str, dict]:
    return YAML(typ="safe", pure=True).load(text)["stages"]


def command_of(stage: dict) -> str:
    match = re.match(r"python -m stages (\w+)", stage["cmd"])
    assert match, stage["cmd"]
    return match.group(1)


def _covered(path: Path, deps: list[str]) -> bool:
    return any(path.as_posix() == d or path.as_posix().startswith(d.rstrip("/") + "/") for d in deps)


def code_dep_problems(text: str) -> list[str]:
    """Every imported file a stage's deps miss, and every code dep that covers no imported file."""
    problems = []
    for name, stage in dvc_stages(text).items():
        deps = [d for d in stage.get("deps", []) if d.startswith("stages")]
        files = stage_files(command_of(stage))
        problems += [f"{name}: imports {f} but deps do not list it" for f in files if not _covered(f, deps)]
        problems += [
            f"{name}: dep {d} covers no imported file" for d in deps if not any(_covered(f, [d]) for f in files)
        ]
    return problems


def param_problems(text: str) -> list[str]:
    """Differences between a stage's dvc.yaml params and the keys its code declares (PARAMS)."""
    problems = []
    for name, stage in dvc_stages(text).items():
        listed = {re.sub(r"\$\{item\.(\w+)\}", r"{\1}", p) for p in stage.get("params", [])}
        declared = set(importlib.import_module(STAGE_PACKAGE[command_of(stage)]).PARAMS)
        if listed != declared:
            problems.append(f"{name}: dvc.yaml params {sorted(listed)} != PARAMS {sorted(declared)}")
    return problems


def test_no_import_cycles():
    """Imports flow one way, between packages and between modules (`python -m stages.codebase`)."""
    assert codebase.cycles() == []
    assert codebase.package_cycles() == []


def test_every_stage_lists_the_code_it_imports():
    assert code_dep_problems((ROOT / "dvc.yaml").read_text()) == []


def test_every_stage_lists_the_params_it_reads():
    assert param_problems((ROOT / "dvc.yaml").read_text()) == []


def test_the_checks_catch_a_missing_dep():
    text = (ROOT / "dvc.yaml").read_text().replace("      - stages/crops\n", "", 1)
    assert any("stages/crops/" in p for p in code_dep_problems(text))
    text = (ROOT / "dvc.yaml").read_text().replace("      - extract.crop_size\n", "", 1)
    assert param_problems(text)


def test_training_fingerprint_covers_the_train_stage_code():
    from stages.train import training_code

    hashed = set(codebase.files(training_code()))
    run = {f for f in stage_files("train") if f.parts[1] not in ("cli.py", "__main__.py")}
    run -= {Path("stages/train/launch.py")}  # relaunching under torchrun, not a training step
    assert run <= hashed


def test_a_stage_reading_an_undeclared_param_fails():
    params = load_params(ROOT / "params.yaml")
    view = declared_view(params, ("seed", "index.gpu", "backbone_options.efficientnet_lite0"))
    assert view.seed == params.seed and view.index.gpu == params.index.gpu
    assert view.backbone_options.get("efficientnet_lite0") == params.backbone_options.get("efficientnet_lite0")
    for read in (
        lambda: view.groups + 1,
        lambda: view.index.flat_max > 0,
        lambda: view.train.steps,
        lambda: view.backbone_options.get("resnet50"),
        lambda: list(view.backbone_options),
    ):
        with pytest.raises(UndeclaredParamError, match="PARAMS"):
            read()
