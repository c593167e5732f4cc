"""`python -m stages serve` for real: it listens on 127.0.0.1 by default and answers; a busy port is a message."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil
from ruamel.yaml import YAML
from typer.testing import CliRunner

from stages.cli import app
from tests.serve.conftest import TINY, free_port


def _params_file(path):
    yaml = YAML(typ="safe", pure=True)
    with open(path, "w") as f:
        yaml.dump(TINY, f)
    return path


def test_busy_port_is_a_message(tiny_project, tmp_path, monkeypatch):
    params = _params_file(tmp_path / "params.yaml")
    monkeypatch.chdir(tiny_project)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        res = CliRunner().invoke(app, ["serve", "--port", str(port), "--params", str(params)])
    assert res.exit_code == 2 and "cannot listen on 127.0.0.1" in res.output and "Traceback" not in res.output
    res = CliRunner().invoke(app, ["serve", "--dataset", "lvis", "--params", str(params)])
    assert res.exit_code == 2 and "not in params datasets" in res.output


def test_serve_command_answers_on_loopback(tiny_project, tmp_path):
    params = _params_file(tmp_path / "params.yaml")
    port = free_port()
    root = str(Path(__file__).resolve().parents[2])  # this checkout's `stages`, whatever is installed
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]))
    cmd = [sys.executable, "-m", "stages", "serve", "--port", str(port), "--params", str(params), "-k", "3"]
    proc = subprocess.Popen(cmd, cwd=tiny_project, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline, config = time.monotonic() + 120, None
        while config is None and time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/config", timeout=5) as r:
                    config = json.load(r)
            except OSError:
                time.sleep(0.5)
        assert config is not None, proc.stdout.read() if proc.poll() is not None else "no answer"
        assert config["k"] == 3 and config["catalog"][0]["backbone"] == "efficientnet_lite0"
        # bound to loopback only (psutil: a dependency of dvc)
        listening = {
            (c.laddr.ip, c.laddr.port)
            for c in psutil.Process(proc.pid).net_connections(kind="inet")
            if c.status == psutil.CONN_LISTEN
        }
        assert listening == {("127.0.0.1", port)}
    finally:
        proc.terminate()
        proc.wait(timeout=30)
