"""Options are checked against their annotations before a config is built (paradecode.config)."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Literal, Optional, Tuple, Union

import numpy as np
import pytest

from paradecode.config import build_config, check_value
from paradecode.registry import build_config as registry_build_config

OWNER = "strategy 'toy'"


@dataclass
class Toy:
    steps: int = 8
    threshold: float = 0.9
    greedy: bool = False
    remasking: Literal["low_confidence", "random"] = "low_confidence"
    name: str = "x"
    factor: Optional[float] = None
    top_k: Union[int, tuple] = 0
    sizes: Tuple[int, ...] = (1, 2)
    pair: tuple[int, str] = (1, "a")
    extra: dict[str, Any] = field(default_factory=dict)
    anything: Any = None

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}.")


@dataclass
class Picky:
    """A config whose validate() refuses a combination and warns about another."""

    do_sample: bool = False
    temperature: float = 1.0

    def validate(self) -> None:
        if not self.do_sample and self.temperature != 1.0:
            warnings.warn("temperature has no effect with do_sample=False", UserWarning)
        if self.do_sample and self.temperature == 0.0:
            raise ValueError("do_sample=True needs temperature > 0")


def test_registry_keeps_build_config():
    assert registry_build_config is build_config


def test_valid_options_are_converted():
    c = build_config(Toy, OWNER, dict(
        steps=np.int64(4), threshold=1, greedy=np.bool_(True), sizes=[3, 4], pair=[2, "b"],
        factor=np.float32(0.5), top_k=[1, 2], extra={"a": 1}, anything=object,
    ))
    assert c.steps == 4 and type(c.steps) is int
    assert c.threshold == 1.0 and type(c.threshold) is float
    assert c.greedy is True
    assert c.sizes == (3, 4) and c.pair == (2, "b")
    assert type(c.factor) is float and c.top_k == (1, 2)
    assert build_config(Toy, OWNER, dict(factor=None)).factor is None


@pytest.mark.parametrize(
    "name, value, match",
    [
        ("threshold", "0.9", r"strategy 'toy': option threshold must be a float, got str '0.9'"),
        ("threshold", True, "threshold must be a float, got bool"),
        ("steps", 2.0, "steps must be an int, got float 2.0"),
        ("steps", True, "steps must be an int"),
        ("steps", "3", "steps must be an int"),
        ("greedy", 1, r"greedy must be a bool \(True or False\), got int 1"),
        ("greedy", "yes", "greedy must be a bool"),
        ("name", 3, "name must be a string"),
        ("factor", "x", "factor must be a float or None"),
        ("top_k", 2.5, "top_k must be an int or a tuple"),
        ("sizes", "12", "sizes must be a tuple"),
        ("sizes", [1, "2"], "sizes item 1 must be an int"),
        ("extra", [1], "extra must be a dict"),
        ("extra", {1: 2}, "extra key 1 must be a string"),
    ],
)
def test_wrong_types_raise_type_error(name, value, match):
    with pytest.raises(TypeError, match=match):
        build_config(Toy, OWNER, {name: value})


@pytest.mark.parametrize(
    "name, value, match",
    [
        ("threshold", math.nan, "threshold must be a finite float, got nan"),
        ("threshold", math.inf, "threshold must be a finite float, got inf"),
        ("threshold", -math.inf, "threshold must be a finite float"),
        ("threshold", np.float64("nan"), "threshold must be a finite float"),
        ("threshold", 10**400, "too large"),
        ("factor", math.nan, "factor must be a finite float"),  # Optional keeps the value message
        ("steps", 2**63, "steps must fit in a signed 64-bit integer"),
        ("remasking", "lowest", r"remasking must be one of \['low_confidence', 'random'\], got 'lowest'"),
        ("pair", (1, "a", 3), "pair must be a tuple .* of 2 items, got 3"),
        ("steps", 0, "steps must be >= 1"),  # __post_init__ still runs
    ],
)
def test_wrong_values_raise_value_error(name, value, match):
    with pytest.raises(ValueError, match=match):
        build_config(Toy, OWNER, {name: value})


def test_literal_does_not_take_a_different_kind():
    with pytest.raises(ValueError, match="one of"):
        check_value("mode", True, Literal[1, 2], "f")
    assert check_value("mode", np.int32(2), Literal[1, 2], "f") == 2
    with pytest.raises(ValueError):
        check_value("mode", 1.0, Literal[1, 2], "f")


def test_unknown_option_lists_valid_ones():
    with pytest.raises(ValueError, match=r"strategy 'toy' got unknown option\(s\) \['stepz'\]; valid options: .*steps"):
        build_config(Toy, OWNER, {"stepz": 3})


def test_validate_hook_runs_after_construction():
    with pytest.raises(ValueError, match="do_sample=True needs temperature > 0"):
        build_config(Picky, "speculative", dict(do_sample=True, temperature=0.0))
    with pytest.warns(UserWarning, match="no effect"):
        build_config(Picky, "speculative", dict(temperature=0.3))


def test_check_value_for_function_arguments():
    assert check_value("seed", np.uint8(7), Optional[int], "generate", kind="argument") == 7
    with pytest.raises(TypeError, match="generate: argument seed must be an int or None, got str '7'"):
        check_value("seed", "7", Optional[int], "generate", kind="argument")


def test_unresolvable_annotations_are_accepted():
    @dataclass
    class Forward:
        thing: "NotDefinedAnywhere" = None  # noqa: F821

    assert build_config(Forward, "x", {"thing": 5}).thing == 5


# ---- validate() along a composed config, sample()'s shared generation defaults --------------------------


@dataclass
class Part:
    greedy: bool = True
    temperature: float = 1.0

    def validate(self) -> None:
        if self.greedy and self.temperature != 1.0:
            raise ValueError("temperature has no effect with greedy=True")


@dataclass
class Whole(Part):
    eot: bool = True
    eot_truncate: bool = False

    def validate(self) -> None:  # does not call up: build_config runs Part.validate itself
        if self.eot_truncate and not self.eot:
            raise ValueError("eot_truncate has no effect with eot=False")


def test_every_class_of_a_composed_config_validates():
    with pytest.raises(ValueError, match="temperature has no effect"):
        build_config(Whole, OWNER, dict(temperature=0.5))
    with pytest.raises(ValueError, match="eot_truncate has no effect"):
        build_config(Whole, OWNER, dict(eot=False, eot_truncate=True))
    assert build_config(Whole, OWNER, dict(greedy=False, temperature=0.5)).temperature == 0.5


@pytest.mark.parametrize(
    "name, options, match",
    [
        ("threshold", dict(threshold=0.5, factor=1.0), "threshold=0.5 has no effect with factor=1.0"),
        ("learn2pd", dict(eot=False, eot_truncate=True), "eot_truncate=True has no effect with eot=False"),
    ],
)
def test_strategy_options_without_effect_are_refused(name, options, match):
    from paradecode.registry import get_strategy_class

    cls = get_strategy_class(name)
    with pytest.raises(ValueError, match=match):
        build_config(cls.Config, OWNER, dict(gen_length=8, block_length=8, **options))
    alone = {k: v for k, v in options.items() if k in ("factor", "eot")}
    build_config(cls.Config, OWNER, dict(gen_length=8, block_length=8, **alone))  # each alone is fine


def test_check_arguments_reads_the_signature():
    from paradecode.config import check_arguments

    def f(flag: bool = False, n: Optional[int] = None) -> None: ...

    assert check_arguments(f, "f()", flag=np.bool_(True), n=np.int64(3)) == {"flag": True, "n": 3}
    with pytest.raises(TypeError, match=r"f\(\): argument flag must be a bool \(True or False\), got str 'no'"):
        check_arguments(f, "f()", flag="no")


def test_generation_defaults_fill_lengths_and_lower_steps():
    from paradecode.config import generation_defaults
    from paradecode.registry import get_strategy_class

    lowconf, threshold = get_strategy_class("lowconf").Config, get_strategy_class("threshold").Config
    model = {"gen_length": 32, "block_length": 32}
    assert generation_defaults(lowconf, model, {}) == {"gen_length": 32, "block_length": 32, "steps": 32}
    assert generation_defaults(lowconf, model, {"steps": 8}) == {"gen_length": 32, "block_length": 32, "steps": 8}
    assert generation_defaults(lowconf, {}, {"gen_length": np.int64(16)})["steps"] == 16
    assert generation_defaults(lowconf, {}, {"gen_length": 256}) == {"gen_length": 256}  # 128 steps fit
    assert generation_defaults(threshold, model, {}) == model  # no steps field
