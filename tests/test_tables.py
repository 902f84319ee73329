"""Tests of medlsdm.tables: the one number formatter and Markdown tables."""

import numpy as np
import torch

from medlsdm.tables import format_number, markdown_table


def test_format_number():
    assert format_number(0.123456789) == "0.1235"
    assert format_number(0.123456789, 6) == "0.123457"
    assert format_number(12345.6) == "1.235e+04"
    assert format_number(7) == "7" and format_number(True) == "True"  # ints and bools as they are
    assert format_number(None) == "–" and format_number(None, missing="skipped") == "skipped"
    assert format_number(float("nan")) == "n/a"
    assert format_number(torch.tensor(0.5)) == "0.5" and format_number(np.float32(0.25)) == "0.25"
    assert format_number("ddim") == "ddim"


def test_markdown_table():
    assert markdown_table(["a", "b"], [[1, "x"]]) == "| a | b |\n|---|---|\n| 1 | x |"
