"""medlsdm.settings: the stages' typed settings, the one source of the trainers' and evaluate_run's defaults."""

from __future__ import annotations

import dataclasses

import pytest

from medlsdm.errors import ConfigError
from medlsdm.settings import STAGES, defaults, with_defaults
from medlsdm.training.diffusion import DIFFUSION_DEFAULTS, train_diffusion
from medlsdm.training.stage_params import LOOP_SETTINGS
from medlsdm.training.vqgan import VQGAN_DEFAULTS, train_vqgan


@dataclasses.dataclass(frozen=True)
class _Probe:
    a: int = 1
    b: int = 2


def test_with_defaults_keeps_the_field_order_and_overrides():
    p = with_defaults("f", _Probe, {"b": 3})
    assert p == {"a": 1, "b": 3} and list(p) == ["a", "b"]
    with pytest.raises(ConfigError, match=r"f: unknown parameter\(s\) \['c', 'd'\]; known: \['a', 'b'\]"):
        with_defaults("f", _Probe, {"d": 0, "c": 0, "a": 2})


@pytest.mark.parametrize("train, name", [(train_vqgan, "train_vqgan"), (train_diffusion, "train_diffusion")])
def test_an_unknown_key_is_refused_by_name_before_any_work(train, name, tmp_path):
    # an empty folder: the check comes before anything is read, so the error names the key, not the data
    with pytest.raises(ConfigError, match=rf"{name}: unknown parameter\(s\) \['stepz'\]; known: \[.*'steps'"):
        train(tmp_path, steps=2, stepz=3)
    assert not any(tmp_path.iterdir())


def test_the_trainers_defaults_are_the_settings_classes():
    assert VQGAN_DEFAULTS == defaults(STAGES["02"]) and DIFFUSION_DEFAULTS == defaults(STAGES["03"])


@pytest.mark.parametrize("stage", ["02", "03"])
def test_both_training_stages_name_every_loop_setting(stage):
    assert {"steps", *LOOP_SETTINGS} <= set(defaults(STAGES[stage]))


@pytest.mark.parametrize("stage", list(STAGES))
def test_settings_are_frozen(stage):
    with pytest.raises(dataclasses.FrozenInstanceError):
        STAGES[stage]().steps = 1


def test_a_mutable_default_is_a_fresh_copy_each_time():
    first = defaults(STAGES["05"])["judge_options"]
    first["max_steps"] = 1
    assert defaults(STAGES["05"])["judge_options"] == {} and STAGES["05"]().judge_options == {}
