"""medlsdm.training.stage_params: the settings check and Trainer construction both stage trainers share."""
from __future__ import annotations

import pytest

from medlsdm.errors import ConfigError
from medlsdm.training.diffusion import DIFFUSION_DEFAULTS, train_diffusion
from medlsdm.training.stage_params import LOOP_SETTINGS, with_defaults
from medlsdm.training.vqgan import VQGAN_DEFAULTS, train_vqgan


@pytest.mark.parametrize("train, name", [(train_vqgan, "train_vqgan"), (train_diffusion, "train_diffusion")])
def test_an_unknown_key_is_refused_by_name_before_any_work(train, name, tmp_path):
    # an empty folder: the check comes before anything is read, so the error names the key, not the data
    with pytest.raises(ConfigError, match=rf"{name}: unknown parameter\(s\) \['stepz'\]; known: \[.*'steps'"):
        train(tmp_path, steps=2, stepz=3)
    assert not any(tmp_path.iterdir())


def test_with_defaults_keeps_the_defaults_order_and_overrides():
    p = with_defaults("f", {"a": 1, "b": 2}, {"b": 3})
    assert p == {"a": 1, "b": 3} and list(p) == ["a", "b"]
    with pytest.raises(ConfigError, match=r"f: unknown parameter\(s\) \['c', 'd'\]"):
        with_defaults("f", {"a": 1}, {"d": 0, "c": 0, "a": 2})


@pytest.mark.parametrize("defaults", [VQGAN_DEFAULTS, DIFFUSION_DEFAULTS], ids=["vqgan", "diffusion"])
def test_both_stages_name_every_loop_setting(defaults):
    assert {"steps", *LOOP_SETTINGS} <= set(defaults)
