"""The rule that picks the int8 graph: the fastest within the tolerance of the best error."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keras_repvgg.tflite.int8_graphs import (
    FOLD_BUDGET,
    GRAPHS_BY_NAME,
    INT8_GRAPHS,
    candidates,
    choose,
    competing,
    identity_blocks_to_keep,
    tolerated_error,
)

NAMES = list(GRAPHS_BY_NAME)
errors_st = st.dictionaries(st.sampled_from(NAMES), st.floats(0, 2, allow_nan=False), min_size=1)


@given(errors_st)
def test_the_choice_is_the_fastest_within_the_tolerance(errors):
    chosen = choose(errors)
    limit = tolerated_error(min(errors.values()))
    rank = GRAPHS_BY_NAME[chosen].speed_rank
    assert errors[chosen] <= limit
    # No faster graph is within the tolerance, and none as fast has a smaller error.
    for name, error in errors.items():
        if error <= limit:
            assert GRAPHS_BY_NAME[name].speed_rank >= rank
            if GRAPHS_BY_NAME[name].speed_rank == rank:
                assert error >= errors[chosen]


def test_measured_cases():
    # docs/int8.md, digits A0 (median of 5 seeds): folding the identity costs accuracy.
    assert choose({"plain": 0.146, "plain-equalized": 0.066, "identity-apart": 0.018,
                   "identity-apart-equalized": 0.023}) == "identity-apart"
    # Issue 15's EPYC run: the plain graph was as close as the best, and it is faster.
    assert choose({"plain": 0.078, "identity-apart": 0.074, "identity-apart-equalized": 0.110}) == "plain"
    # Tiny differences do not refuse the faster graph.
    assert choose({"plain-equalized": 0.008, "identity-apart-equalized": 0.004}) == "plain-equalized"


def test_a_failed_candidate_is_never_chosen_over_a_working_one():
    assert choose({"plain": math.nan, "identity-apart": 0.5}) == "identity-apart"
    assert choose({"plain": math.inf, "plain-equalized": 0.9}) == "plain-equalized"
    with pytest.raises(ValueError, match="unknown int8 graphs"):
        choose({"fastest": 0.1})


def test_candidates_per_form():
    assert [g.name for g in candidates("train")] == [g.name for g in INT8_GRAPHS]
    assert [g.name for g in candidates("deploy")] == ["plain", "plain-equalized", "plain-compensated"]
    assert [g.name for g in candidates("deploy-identity")] == ["identity-apart", "identity-apart-equalized"]
    assert [g.name for g in candidates("train", equalize=False)] == ["plain", "plain-compensated",
                                                                      "identity-where-it-pays", "identity-apart"]
    # Graphs of one speed rank have the same ops: equalization and compensated rounding
    # change weights only. The
    # per-block graph has fewer identity ops than identity-apart, and a rank of its own.
    assert {g.speed_rank for g in INT8_GRAPHS if not g.keep_identity} == {0}
    assert {g.speed_rank for g in INT8_GRAPHS if g.where_it_pays} == {1}
    assert {g.speed_rank for g in INT8_GRAPHS if g.keep_identity and not g.where_it_pays} == {2}


def test_a_graph_that_changes_the_predictions_is_not_chosen_for_its_small_error():
    # Measured (docs/training.md): a 4-class model fine-tuned on digits, 32 held-out inputs.
    errors = {"plain": 0.9962, "plain-equalized": 0.9362, "identity-apart": 0.4209, "identity-apart-equalized": 2.0104}
    agreements = {"plain": 0.28125, "plain-equalized": 0.96875, "identity-apart": 0.3125,
                  "identity-apart-equalized": 0.375}
    assert choose(errors) == "identity-apart"  # the error alone
    assert choose(errors, agreements, 32) == "plain-equalized"
    assert competing(agreements, 32) == ["plain-equalized"]


@given(errors_st, st.data())
def test_the_choice_agrees_within_one_input_of_the_best(errors, data):
    samples = data.draw(st.integers(1, 64))
    agreements = {name: data.draw(st.integers(0, samples)) / samples for name in errors}
    chosen = choose(errors, agreements, samples)
    assert agreements[chosen] * samples >= max(agreements.values()) * samples - 1 - 1e-6
    # Among those, the error rule as before.
    agreeing = {name: errors[name] for name in competing(agreements, samples)}
    assert chosen == choose(agreeing)


def _row(block: str, added: float, cost: int = 1000, apart: float = 0.001) -> dict:
    return {"block": block, "folded": apart + added, "apart": apart, "cost": cost}


def test_the_identity_is_folded_where_it_adds_least_per_element_within_the_budget():
    # Measured on a trained digits A0 (docs/int8.md): blocks add 0.003-0.06 each when folded.
    rows = [_row("stages.0.1", 0.004, cost=150_000), _row("stages.1.1", 0.006, cost=75_000),
            _row("stages.2.1", 0.060, cost=37_000), _row("stages.2.2", 0.007, cost=37_000)]
    # Cheapest per element first: stages.0.1 (2.7e-8), stages.1.1 (8e-8), then stages.2.2
    # (1.9e-7) no longer fits: 0.004**2 + 0.006**2 + 0.007**2 > FOLD_BUDGET**2.
    assert identity_blocks_to_keep(rows) == ["stages.2.1", "stages.2.2"]
    # Only one of two fits: the one whose identity reads more elements folds, though it adds more.
    assert identity_blocks_to_keep([_row("stages.0.1", 0.008, cost=150_000), _row("stages.2.9", 0.007, cost=10_000)]) \
        == ["stages.2.9"]
    # Nothing to gain: everything folded. A block whose error is NaN never is.
    assert identity_blocks_to_keep([_row("a", 0.0), _row("b", -0.001)]) == []
    assert identity_blocks_to_keep([_row("a", math.nan), _row("b", 0.001)]) == ["a"]
    # One block past the budget alone stays apart, however cheap the others.
    assert identity_blocks_to_keep([_row("a", FOLD_BUDGET * 1.01), _row("b", FOLD_BUDGET * 0.5)]) == ["a"]


@given(st.lists(st.tuples(st.floats(-0.01, 0.2), st.integers(1, 10**6)), max_size=30))
def test_the_folded_blocks_stay_within_the_budget(measured):
    rows = [_row(f"stages.2.{i}", added, cost) for i, (added, cost) in enumerate(measured)]
    kept = set(identity_blocks_to_keep(rows))
    spent = sum(max(r["folded"] - r["apart"], 0.0) ** 2 for r in rows if r["block"] not in kept)
    assert spent <= FOLD_BUDGET ** 2 * (1 + 1e-9)
    # Greedy, not lazy: no block kept apart would still fit in what is left.
    for r in rows:
        if r["block"] in kept:
            assert spent + max(r["folded"] - r["apart"], 0.0) ** 2 > FOLD_BUDGET ** 2 * (1 - 1e-9)
