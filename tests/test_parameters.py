"""Deploy-form parameter counts against the paper's table."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest

from keras_repvgg import VARIANTS, create_model, get_variant
from keras_repvgg.core.parameters import deploy_multiply_adds, deploy_parameter_count

PAPER_TABLE = Path(__file__).resolve().parents[2] / "shared" / "reference" / "repvgg_paper.csv"


def _paper_rows():
    if not PAPER_TABLE.is_file():  # the reference lies beside the checkout, as in CI
        pytest.fail(f"the paper's table is missing: {PAPER_TABLE}")
    lines = [line for line in PAPER_TABLE.read_text().splitlines() if not line.startswith("#")]
    return list(csv.DictReader(lines))


def test_paper_table_lists_eleven_variants():
    assert len(_paper_rows()) == 11


def test_parameter_counts_equal_the_papers():
    # The paper prints millions cut (not rounded) to two decimals: A0 has
    # 8,309,384 parameters and is listed as 8.30.
    for row in _paper_rows():
        variant = get_variant(row["variant"])
        count = deploy_parameter_count(variant)
        assert math.floor(count / 1e4) / 100 == pytest.approx(float(row["params_m"]), abs=1e-9), (
            row["variant"], count
        )


def test_multiply_adds_equal_the_papers_gflops():
    # The benchmarks' GFLOP/s come from these counts; the paper rounds to 0.1 billion.
    for row in _paper_rows():
        macs = deploy_multiply_adds(get_variant(row["variant"]), 224)
        assert round(macs / 1e9, 1) == pytest.approx(float(row["gflops"]), abs=1e-9), (row["variant"], macs)


def test_d2se_has_the_official_count():
    assert deploy_parameter_count(VARIANTS["repvgg_d2se"]) == 120_387_572


@pytest.mark.parametrize("name", ["repvgg_a0", "repvgg_b1g2", "repvgg_d2se"])
def test_built_model_has_the_computed_count(name):
    model = create_model(name, input_shape=(32, 32, 3))
    assert model.count_params() == deploy_parameter_count(get_variant(name))
