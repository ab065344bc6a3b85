"""When the int8 search converts its candidates in worker processes, and how many at once:
as many as the cores, the candidates and the memory allow, once a first conversion shows
that a worker's start pays; or what the caller asks for."""

from __future__ import annotations

import pytest

from keras_repvgg.core.errors import ExportError
from keras_repvgg.tflite import conversion_worker
from keras_repvgg.tflite.conversion_worker import (
    WORKER_BASE_BYTES,
    WORKER_BYTES_PER_PARAMETER,
    WORKER_START_SECONDS,
    ServingOptions,
    Workers,
    worker_count,
    workers_pay,
)

B1G4 = 36_125_416  # parameters


@pytest.mark.parametrize("cores", [1, 2, 16])
def test_one_worker_per_core_and_candidate_as_memory_allows(monkeypatch, cores):
    monkeypatch.setattr("keras_repvgg.core.machine.usable_cores", lambda: cores)
    monkeypatch.setattr("keras_repvgg.core.machine.available_memory", lambda: 64 * 2**30)
    assert worker_count(B1G4, 6) == min(cores, 6)
    assert worker_count(B1G4, 3) == min(cores, 3)
    one = WORKER_BASE_BYTES + WORKER_BYTES_PER_PARAMETER * B1G4
    monkeypatch.setattr("keras_repvgg.core.machine.available_memory", lambda: 2 * one + one // 2)
    assert worker_count(B1G4, 6) == min(cores, 2)  # two fit
    monkeypatch.setattr("keras_repvgg.core.machine.available_memory", lambda: one // 2)
    assert worker_count(B1G4, 6) == 1  # none fits: this process converts


def test_a_requested_count_is_kept_up_to_the_candidates():
    assert worker_count(1, 6, requested=4) == 4
    assert worker_count(10**9, 3, requested=8) == 3
    with pytest.raises(ExportError, match="at least 1, got 0"):
        worker_count(10**9, 6, requested=0)


def test_workers_pay_once_a_conversion_outlasts_their_start_shared_among_them():
    start = WORKER_START_SECONDS
    assert not workers_pay(10 * start, 1)
    assert not workers_pay(0.9 * start, 2) and workers_pay(1.1 * start, 2)
    assert not workers_pay(0.9 * start / 5, 6) and workers_pay(1.1 * start / 5, 6)


def test_quick_conversions_stay_in_this_process(monkeypatch):
    def no_worker(folder):
        raise AssertionError("a worker was started")

    monkeypatch.setattr(conversion_worker, "_run", no_worker)
    converted = []
    options = ServingOptions(1, False, False, False, "int8", "float32")
    with Workers(4, lambda model: converted.append(model) or b"file", options, calibration=None) as workers:
        futures = [workers.submit(name) for name in ("a", "b", "c")]
        assert not workers.in_workers
    assert [f.result() for f in futures] == [b"file"] * 3 and converted == ["a", "b", "c"]
