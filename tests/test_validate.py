import math

import pytest

from robustlab._validate import check_float, check_int, parse_epsilons, parse_float
from robustlab.errors import InputTypeError, RobustlabError, ValidationError


def test_parse_float_accepts_fractions_and_numbers():
    assert parse_float("epsilon", "8/255") == pytest.approx(8 / 255)
    assert parse_float("epsilon", " 0.3 ") == 0.3
    assert parse_float("epsilon", 2) == 2.0
    assert parse_float("epsilon", "-1e-3") == -0.001


@pytest.mark.parametrize("bad", ["__import__('os')", "abc", "1/0", "[1]", ""])
def test_parse_float_refuses_code_and_garbage(bad):
    with pytest.raises(ValidationError, match="epsilon"):
        parse_float("epsilon", bad)


def test_parse_float_types():
    with pytest.raises(InputTypeError, match="epsilon.*bool"):
        parse_float("epsilon", True)
    with pytest.raises(TypeError, match="epsilon"):
        parse_float("epsilon", None)


def test_check_float_ranges():
    with pytest.raises(ValidationError, match=r"expected epsilon >= 0, got -0.1"):
        check_float("epsilon", -0.1, low=0.0)
    with pytest.raises(ValidationError, match="finite"):
        check_float("epsilon", math.nan, low=0.0)
    with pytest.raises(ValidationError, match="step_size > 0"):
        check_float("step_size", 0, low=0.0, low_open=True)


def test_check_int():
    assert check_int("steps", "7", low=1) == 7
    with pytest.raises(ValidationError, match="expected steps >= 1, got 0"):
        check_int("steps", 0, low=1)
    with pytest.raises(InputTypeError, match="steps"):
        check_int("steps", 1.5)


def test_parse_epsilons():
    assert parse_epsilons("0.3, 0, 8/255") == (0.0, 8 / 255, 0.3)
    assert parse_epsilons([0.1, 0.1]) == (0.1,)
    assert parse_epsilons(0.2) == (0.2,)
    with pytest.raises(ValidationError, match=r"epsilons\[1\]"):
        parse_epsilons("0.1, -0.2")
    with pytest.raises(ValidationError, match="at least one"):
        parse_epsilons("")


def test_errors_share_a_base_and_builtins():
    assert issubclass(ValidationError, RobustlabError)
    assert issubclass(ValidationError, ValueError)
    assert issubclass(InputTypeError, TypeError)
