"""The real dvc CLI on the real DAG, in a temporary git repository, on a tiny configuration."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from ruamel.yaml import YAML

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.e2e
METRICS = "metrics/efficientnet_lite0/synthetic.json"
DATASET = "data/synthetic/dataset"
MODEL = "models/efficientnet_lite0"


def sh(cwd: Path, *args: str) -> str:
    env = dict(os.environ, DVC_NO_ANALYTICS="1", PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    res = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    assert res.returncode == 0, (
        f"{' '.join(args)} failed ({res.returncode}):\n{res.stdout[-3000:]}\n{res.stderr[-5000:]}"
    )
    return res.stdout + res.stderr


def merge(base: dict, override: dict) -> dict:
    out = dict(base)
    for key, value in override.items():
        out[key] = merge(base.get(key, {}), value) if isinstance(value, dict) else value
    return out


def write_tiny_params(path: Path) -> None:
    """The repository's params.yaml with the tiny overrides (DVC needs every declared section)."""
    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = False
    params = merge(yaml.load(ROOT / "params.yaml"), yaml.load(Path(__file__).with_name("tiny_params.yaml")))
    with open(path, "w") as f:
        yaml.dump(params, f)


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    repo = tmp_path_factory.mktemp("pipeline")
    shutil.copytree(ROOT / "stages", repo / "stages", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "dvc.yaml", repo / "dvc.yaml")
    shutil.copy(ROOT / ".gitignore", repo / ".gitignore")
    shutil.copytree(ROOT / "data" / "sources", repo / "data" / "sources")  # the data stage's committed stubs
    write_tiny_params(repo / "params.yaml")
    sh(repo, "git", "init", "-q")
    sh(repo, "git", "config", "user.email", "ci@example.invalid")
    sh(repo, "git", "config", "user.name", "CI")
    sh(repo, "dvc", "init", "-q")
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "commit", "-qm", "tiny pipeline")
    return repo


def test_repro_runs_the_dag_then_is_a_no_op(repo):
    first = sh(repo, "dvc", "repro")
    assert "packed in" in first  # tiny_params: cache_gb 0, the crops are packed and streamed
    metrics = json.loads((repo / METRICS).read_text())
    assert metrics["groups"] == 4 and metrics["task"] == 2
    assert metrics["backbone"] == "efficientnet_lite0" and metrics["dataset"] == "synthetic"
    for name in ("model", "pretrained"):
        for subset in ("all", "known", "unknown", "size_0-20", "size_100+"):
            assert set(metrics[name][subset]) >= {"queries", "O-R@1", "O-mAP", "I-R@1", "I-mAP"}
        assert (
            metrics[name]["all"]["queries"] == metrics[name]["known"]["queries"] + metrics[name]["unknown"]["queries"]
        )
        assert 0 <= metrics[name]["all"]["O-R@1"] <= 100
    assert (repo / "data/groups/area_hist.png").stat().st_size > 1000
    assert not (repo / MODEL / "checkpoint.crops").exists()  # the pack is removed at the end
    again = sh(repo, "dvc", "repro")
    assert "didn't change" in again or "up to date" in again
    summary = json.loads((repo / "metrics/summary/efficientnet_lite0.json").read_text())
    assert summary["datasets"] == ["synthetic"]
    assert summary["model"]["mean"]["O-R@1"] == metrics["model"]["all"]["O-R@1"]
    assert (repo / "metrics/efficientnet_lite0/synthetic/pr/size_0-20.csv").exists()
    for stage in ("data@", "extract@", "splits", "groups", "train@", "index@", "evaluate@", "summary@"):
        assert f"Running stage '{stage}" not in again
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "commit", "-qm", "baseline run")


def test_push_then_pull_in_a_fresh_clone_is_up_to_date(repo, tmp_path):
    remote = tmp_path / "remote"
    sh(repo, "dvc", "remote", "add", "-d", "shared", str(remote))
    sh(repo, "dvc", "push")
    assert any(remote.rglob("*")), "dvc push wrote nothing to the remote"
    sh(repo, "git", "commit", "-qam", "remote")
    clone = tmp_path / "clone"
    sh(tmp_path, "git", "clone", "-q", str(repo), str(clone))
    pulled = sh(clone, "dvc", "pull")
    assert (clone / METRICS).exists() and (clone / MODEL / "model.pt").exists()
    assert "fetched" in pulled.lower() or "added" in pulled.lower()
    again = sh(clone, "dvc", "repro")
    assert "Running stage" not in again, again
    status = sh(clone, "dvc", "status")
    assert "up to date" in status, status


def test_search_command(repo):
    test = json.loads((repo / DATASET / "test.json").read_text())
    ann = test["annotations"][0]
    image = next(im for im in test["images"] if im["id"] == ann["image_id"])
    x, y, w, h = ann["bbox"]
    path = str(repo / DATASET / image["file_name"])
    out = sh(
        repo,
        "python",
        "-m",
        "stages",
        "search",
        path,
        "--box",
        str(x),
        str(y),
        str(x + w),
        str(y + h),
        "-k",
        "3",
        "-o",
        "hits.png",
    )
    rows = [line for line in out.splitlines() if line.strip()[:1].isdigit()]
    assert len(rows) == 3 and (repo / "hits.png").stat().st_size > 1000
    bad = subprocess.run(
        [sys.executable, "-m", "stages", "search", path, "--box", "900", "900", "990", "990"],
        cwd=repo,
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "outside the image" in bad.stderr and "Traceback" not in bad.stderr
    missing = subprocess.run(
        [sys.executable, "-m", "stages", "search", "nope.png"], cwd=repo, capture_output=True, text=True
    )
    assert missing.returncode == 2 and "cannot read image" in missing.stderr


def test_exp_run_groups_reruns_from_groups_only(repo):
    """The default method is the paper's (ms_ugcml, one head per scale group): 5 groups is another model."""
    model_before = (repo / MODEL / "model.pt").read_bytes()
    metrics_before = json.loads((repo / METRICS).read_text())
    out = sh(repo, "dvc", "exp", "run", "-S", "groups=5")
    assert "Running stage 'groups'" in out and "Running stage 'evaluate@efficientnet_lite0-synthetic'" in out
    for stage in ("data@", "extract@", "splits"):
        assert f"Running stage '{stage}" not in out
    assert json.loads((repo / METRICS).read_text())["groups"] == 5
    assert json.loads((repo / "data/groups/boundaries.json").read_text())["groups"] == 5
    assert "Running stage 'train@efficientnet_lite0'" in out
    assert (repo / MODEL / "model.pt").read_bytes() != model_before
    assert json.loads((repo / METRICS).read_text())["model"] != metrics_before["model"]
    diff = sh(repo, "dvc", "metrics", "diff", "--md")
    assert "groups" in diff and METRICS in diff
    sh(repo, "git", "checkout", "--", "params.yaml")


def test_default_trains_ms_ugcml_and_stml_under_torchrun_is_a_baseline_switch(repo):
    """One exp run switches the method to the stml baseline and trains it in 2 processes (torchrun)."""
    sh(repo, "dvc", "repro")  # the default params again (restored from DVC's run cache)
    log = [line.split("\t") for line in (repo / MODEL / "train_log.tsv").read_text().splitlines()]
    ckd = [float(row[log[0].index("ckd")]) for row in log[1:]]
    assert len(ckd) == 4 and any(c > 0 for c in ckd)
    params = json.loads((repo / MODEL / "params.json").read_text())
    assert params["train"]["method"] == "ms_ugcml" and params["groups"] == 4
    out = sh(repo, "dvc", "exp", "run", "-S", "train.method=stml", "-S", "train.nproc=2")
    assert "Running stage 'train@efficientnet_lite0'" in out
    for stage in ("data@", "extract@", "splits", "groups"):
        assert f"Running stage '{stage}" not in out
    assert "launching: torchrun" in out and "--nproc_per_node=2" in out
    assert json.loads((repo / MODEL / "params.json").read_text())["train"]["method"] == "stml"
    log = (repo / MODEL / "train_log.tsv").read_text().splitlines()
    assert len(log) == 1 + 4  # header + tiny_params' 4 steps, written once (rank 0)
    assert json.loads((repo / METRICS).read_text())["model"]["all"]["queries"] > 0
    shown = sh(repo, "dvc", "exp", "show", "--md")
    assert "stml" in shown
    sh(repo, "git", "checkout", "--", "params.yaml")


def test_second_backbone_adds_only_its_own_stages(repo):
    """A timm backbone (``timm-<model>``, a name DVC accepts in stage names) through the matrix; its own
    option (lr) is set in the same run, and the first backbone's chain does not rerun."""
    other = "timm-resnet18"  # init: none in tiny_params.yaml (no weights file needed)
    out = sh(
        repo,
        "dvc",
        "exp",
        "run",
        "-S",
        f"backbones=[efficientnet_lite0,{other}]",
        "-S",
        f"backbone_options.{other}.lr=0.001",
    )
    for stage in (f"train@{other}", f"index@{other}-synthetic", f"evaluate@{other}-synthetic", f"summary@{other}"):
        assert f"Running stage '{stage}'" in out
    mine = ("train@efficientnet_lite0", "evaluate@efficientnet_lite0", "summary@efficientnet_lite0")
    for stage in ("data@", "extract@", "splits", "groups", *mine):
        assert f"Running stage '{stage}" not in out
    assert json.loads((repo / f"models/{other}/params.json").read_text())["backbone_options"][other]["lr"] == 0.001
    metrics = json.loads((repo / f"metrics/{other}/synthetic.json").read_text())
    assert metrics["backbone"] == other and 0 <= metrics["model"]["all"]["O-R@1"] <= 100
    diff = sh(repo, "dvc", "metrics", "diff", "--all", "--md")
    assert f"metrics/{other}/synthetic.json" in diff and METRICS in diff
    sh(repo, "git", "checkout", "--", "params.yaml")
