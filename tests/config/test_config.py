from pathlib import Path

import pytest

from stages.config import ParamsError, load_params

ROOT = Path(__file__).resolve().parents[2]


def write(tmp_path, text):
    p = tmp_path / "params.yaml"
    p.write_text(text)
    return p


def test_repository_params_are_valid():
    params = load_params(ROOT / "params.yaml")
    assert params.groups == 4 and params.task == 4
    assert params.train.method == "ms_ugcml"  # the paper's method is what dvc repro trains


def test_dvc_style_float_stays_float(tmp_path):
    # `dvc exp run -S train.lr=1e-5` writes 1e-05, which PyYAML's safe_load reads as a string
    params = load_params(write(tmp_path, "train:\n  lr: 1e-05\n"))
    assert params.train.lr == pytest.approx(1e-5)
    assert isinstance(params.train.lr, float)


def test_unknown_key_is_named(tmp_path):
    with pytest.raises(ParamsError, match=r"train\.lrr: unknown key"):
        load_params(write(tmp_path, "train:\n  lrr: 0.1\n"))


def test_wrong_type_is_named(tmp_path):
    with pytest.raises(ParamsError, match=r"groups: .*got 'four'"):
        load_params(write(tmp_path, "groups: four\n"))


def test_out_of_range_is_named(tmp_path):
    with pytest.raises(ParamsError, match=r"groups"):
        load_params(write(tmp_path, "groups: 9\n"))
    with pytest.raises(ParamsError, match=r"objects_per_image"):
        load_params(write(tmp_path, "data:\n  synthetic:\n    objects_per_image: [5, 2]\n"))


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ParamsError, match="not found"):
        load_params(tmp_path / "nope.yaml")
    with pytest.raises(ParamsError, match="cannot parse"):
        load_params(write(tmp_path, "groups: [1,\n"))
    with pytest.raises(ParamsError, match="mapping"):
        load_params(write(tmp_path, "- 1\n- 2\n"))


def test_params_yaml_lists_every_key_of_the_model():
    """`dvc exp run -S key=value` only overrides keys present in params.yaml: every parameter of
    the model must be written there (with its default or a deliberate value)."""
    from pathlib import Path

    from stages.config import Params, read_yaml

    def keys(d: dict, prefix: str = "") -> set[str]:
        out = set()
        for k, v in d.items():
            out.add(prefix + k)
            if isinstance(v, dict) and k != "backbone_options":
                out |= keys(v, prefix + k + ".")
        return out

    written = read_yaml(Path(__file__).resolve().parents[2] / "params.yaml")
    assert keys(Params().model_dump(mode="json")) - keys(written) == set()
    Params.model_validate(written)


def test_head_init_auto_is_stml_for_one_head_and_aligned_for_more():
    from stages.config import TrainParams

    auto = TrainParams()
    assert auto.head_init == "auto"
    assert [auto.heads_init(n) for n in (1, 2, 4)] == ["orthogonal", "shared", "shared"]
    for fixed in ("orthogonal", "shared"):
        assert {TrainParams(head_init=fixed).heads_init(n) for n in (1, 4)} == {fixed}
