"""ReportConfig parses and checks the report notebook's parameters when it is built, so a typo
fails before any data is loaded or model trained, with an error that names the parameter."""

import dataclasses

import pytest

from robustlab.errors import InputTypeError, ModelNotFoundError, ValidationError
from robustlab.workflow import ReportConfig

DEFAULTS = {f.name: f.default for f in dataclasses.fields(ReportConfig)}


@pytest.fixture()
def nothing_runs(monkeypatch):
    """Loading data or a model, training or evaluating fails the test."""
    import robustlab.workflow as workflow

    def refuse(*args, **kwargs):
        raise AssertionError("a ReportConfig did work before its parameters were checked")

    for name in ("load", "load_or_train", "evaluate", "train", "train_adversarial"):
        monkeypatch.setattr(workflow, name, refuse)


@pytest.mark.parametrize(("params", "match"), [
    ({"attacks": "fgsm, pgdd"}, r"parameter attacks='fgsm, pgdd': .*got 'pgdd'"),
    ({"attacks": ""}, r"attacks.*at least one attack"),
    ({"attacks": "pgd, pgd"}, r"attacks.*each attack once"),
    ({"epsilons": "0, 0.1, abc"}, r"expected epsilons\[2\] to be a number .*got 'abc'"),
    ({"epsilons": "0, -0.1"}, r"expected epsilons\[1\] >= 0"),
    ({"norm": "l3"}, r"expected norm to be one of"),
    ({"backend": "torch"}, r"expected backend to be one of"),
    ({"pgd_steps": 0}, r"expected pgd_steps >= 1"),
    ({"pgd_restarts": "three"}, r"expected pgd_restarts to be an integer"),
    ({"n_test": 0}, r"expected n_test >= 1"),
    ({"n_train": "many"}, r"expected n_train to be an integer"),
    ({"split": -5}, r"expected split >= 1"),
    ({"epochs": 0}, r"expected epochs >= 1"),
    ({"n_check": 0}, r"expected n_check >= 1"),
    ({"seed": -1}, r"expected seed >= 0"),
    ({"dataset": "mnsit"}, r"expected dataset to be one of .*got 'mnsit'"),
    ({"dataset": "npz:"}, r"expected dataset to be one of"),
    ({"checks": "nope"}, r"expected checks to be True or False"),
    ({"cascade": 1}, r"expected cascade to be True or False"),
    ({"model_sha256": "abc"}, r"expected model_sha256 to be 64 hex digits"),
    ({"output_dir": ""}, r"expected output_dir to name a folder"),
    ({"output_dir": 3}, r"expected output_dir to be a string"),
])
def test_bad_parameter_fails_when_the_config_is_built(nothing_runs, params, match):
    with pytest.raises((ValidationError, InputTypeError), match=match):
        ReportConfig(**params)
    with pytest.raises((ValidationError, InputTypeError), match=match):
        ReportConfig.from_namespace({**DEFAULTS, **params, "unrelated": object()})


def test_missing_model_file_fails_when_the_config_is_built(nothing_runs, tmp_path):
    with pytest.raises(ModelNotFoundError, match=r"model_path.*nope\.keras"):
        ReportConfig(model_path=str(tmp_path / "nope.keras"))


def test_good_parameters_are_parsed(nothing_runs):
    config = ReportConfig(epochs="3", n_test="None", norm="inf", checks="false",
                          backend="ART", attacks=["fgsm", "pgd"], epsilons="0.1, 0, 8/255")
    assert config.epochs == 3 and config.n_test is None and config.norm == "linf"
    assert config.checks is False and config.backend == "art"
    assert config.epsilon_values() == pytest.approx((0.0, 8 / 255, 0.1))
    assert [spec.name for spec in config.specs()] == ["fgsm", "pgd"]
    assert config.parameters()["epsilons"] == "0.1, 0, 8/255"  # recorded as given
    assert ReportConfig() == ReportConfig(**DEFAULTS)  # the defaults are valid as they stand
