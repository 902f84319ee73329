"""The per-dataset paper profiles equal the settings table in data_cards/paper_settings.md, row for row."""

import ast
from pathlib import Path

import pytest

from medlsdm.profiles import PAPER_TRAINING, PROFILES, paper_training_parameters

TABLE = Path(__file__).resolve().parents[1] / "data_cards" / "paper_settings.md"
PAPER_3D = ("paper-autopet", "paper-synthrad2023", "paper-duke")
PAPER = PAPER_3D + ("paper-mnms",)


def table_rows():
    rows = []
    for line in TABLE.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 7 and cells[0] in ("all",) + PAPER:
            rows.append(cells)
    return rows


def expected_values():
    """``{(profile, notebook, key): value}`` from the table's **ours** column."""
    values = {}
    for profile, nb, key, ours, *_ in table_rows():
        for name in PAPER_3D if profile == "all" else (profile,):
            assert (name, nb, key) not in values, f"two rows for {name} {nb} {key}"
            values[(name, nb, key)] = ast.literal_eval(ours)
    return values


def test_table_is_parsed():
    rows = table_rows()
    assert len(rows) > 50 and all(r[1] in ("01", "02", "03", "04", "05", "06") for r in rows)


@pytest.mark.parametrize("profile", PAPER)
def test_profile_equals_the_table(profile):
    expected = {k: v for k, v in expected_values().items() if k[0] == profile}
    notebooks = set(PROFILES[profile]) | (set(PAPER_TRAINING) if profile in PAPER_3D else set())
    actual = {
        (profile, nb, key): value
        for nb in sorted(notebooks)
        for key, value in (
            paper_training_parameters(profile, nb) if profile in PAPER_3D else PROFILES[profile][nb]
        ).items()
    }
    assert sorted(set(actual) - set(expected)) == [], "profile settings without a row in the table"
    assert sorted(set(expected) - set(actual)) == [], "table rows without the setting in the profile"
    differ = {k: (actual[k], expected[k]) for k in expected if actual[k] != expected[k]}
    assert differ == {}


def test_a_changed_profile_value_is_caught(monkeypatch):
    monkeypatch.setitem(PROFILES["paper-duke"]["02"], "num_embeddings", 2048)
    with pytest.raises(AssertionError):
        test_profile_equals_the_table("paper-duke")


def test_paper_vqgan_without_vgg_weights_stops(tmp_path):
    from medlsdm.errors import ConfigError
    from medlsdm.training.vqgan import train_vqgan

    params = {k: v for k, v in paper_training_parameters("paper-duke", "02").items() if k != "compare_decoder"}
    with pytest.raises(ConfigError, match="perceptual_weights is None"):
        train_vqgan(tmp_path, **params)
