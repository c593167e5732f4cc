"""The CLI: user mistakes give a message and exit code 2, never a traceback; help is complete."""

from typer.testing import CliRunner

from stages.cli import app

runner = CliRunner()
STAGE_COMMANDS = ("scan", "data", "extract", "splits", "groups", "train", "index", "evaluate", "summary")


def test_help_lists_every_stage():
    res = runner.invoke(app, ["--help"])
    assert res.exit_code == 0
    for cmd in STAGE_COMMANDS + ("params",):
        assert cmd in res.output
    for cmd in STAGE_COMMANDS:
        sub = runner.invoke(app, [cmd, "--help"])
        assert sub.exit_code == 0 and "Params:" in sub.output and "--params" in sub.output


def test_typo_in_params_is_a_message_not_a_traceback(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text("grups: 4\n")
    res = runner.invoke(app, ["groups"])
    assert res.exit_code == 2
    assert "grups: unknown key" in res.output
    assert "Traceback" not in res.output


def test_missing_upstream_output_is_a_message(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text("seed: 0\n")
    res = runner.invoke(app, ["extract"])
    assert res.exit_code == 2
    assert "no dataset tables" in res.output and "data stage" in res.output


def test_params_command_documents_every_key(tmp_path):
    res = runner.invoke(app, ["params"])
    assert res.exit_code == 0
    for key in ("seed", "groups", "task", "train.lr", "extract.graph.scales", "evaluate.exclude_same_image"):
        assert key in res.output
    bad = tmp_path / "p.yaml"
    bad.write_text("train:\n  lr: fast\n")
    res = runner.invoke(app, ["params", "--params", str(bad)])
    assert res.exit_code == 2 and "train.lr" in res.output


def test_internal_error_keeps_its_traceback(tmp_path, monkeypatch):
    """Only the UserError family becomes a one-line message; a bug (here a ValueError raised by
    the stage's code) propagates with its traceback instead of being disguised as a user mistake."""
    import stages.groups

    def broken(params):
        raise ValueError("an internal invariant failed")

    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text("seed: 0\n")
    monkeypatch.setattr(stages.groups, "run", broken)
    res = runner.invoke(app, ["groups"])
    assert res.exit_code == 1 and isinstance(res.exception, ValueError)
    assert "an internal invariant failed" in str(res.exception)
    assert "error in 'groups'" not in res.output


def test_stage_reading_an_undeclared_param_is_a_bug(tmp_path, monkeypatch):
    import stages.groups
    from stages.config import UndeclaredParamError

    def reads_too_much(params):
        return params.train.steps  # the groups stage declares only `groups`

    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text("seed: 0\n")
    monkeypatch.setattr(stages.groups, "run", reads_too_much)
    res = runner.invoke(app, ["groups"])
    assert isinstance(res.exception, UndeclaredParamError) and "'train'" in str(res.exception)


def test_unknown_backbone_name_is_a_message(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text("seed: 0\n")
    res = runner.invoke(app, ["train", "--backbone", "resnet"])
    assert res.exit_code == 2 and "is not in params backbones" in res.output


def test_serve_help_is_complete():
    res = runner.invoke(app, ["serve", "--help"])
    assert res.exit_code == 0
    for option in ("--host", "--port", "--backbone", "--dataset", "--params", "--max-upload-mb", "--k"):
        assert option in res.output
    assert "127.0.0.1" in res.output and "Params:" in res.output


def test_serve_without_an_index_is_a_message(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text("seed: 0\n")
    res = runner.invoke(app, ["serve", "--port", "1"])
    assert res.exit_code == 2 and "no built index" in res.output and "dvc repro" in res.output
    assert "Traceback" not in res.output
