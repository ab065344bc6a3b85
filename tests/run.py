"""The whole test run, as CI runs it: `python tests/run.py` (extra arguments go to every pytest run).

What runs:
1. ruff and mypy;
2. the unit tests of the numpy core, with TensorFlow, Keras, torch and LiteRT blocked from import;
3. every test under Keras 3 (TensorFlow backend);
4. under tf-keras (Keras 2), all but the `slow` and `keras3_only` tests (see pyproject.toml's markers);
5. and 6. `tests/backends` under Keras 3 on JAX and on PyTorch.

How: the four passes are cut into jobs (a pytest process over one long file, or over several
short ones), and two jobs run at a time, the checks first, then the longest jobs first. A core
that finishes a job takes the next, whatever its pass, so neither core waits for the other at
the end of a pass. Each job's output is printed whole when it ends; the first failure stops
the run (the jobs still running are stopped). `tests/durations.json` holds each file's time
in each pass, measured on a clean clone, from which the jobs are cut and ordered; a file not
in it counts as `UNKNOWN_SECONDS`; `KERAS_REPVGG_RECORD_DURATIONS=1 python tests/run.py` writes
it anew from the run's own times (pytest's JUnit XML: setup, call and teardown of each test).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYTEST = [sys.executable, "-m", "pytest", "-q"]
DURATIONS = ROOT / "tests" / "durations.json"
SLOTS = int(os.environ.get("KERAS_REPVGG_TEST_JOBS", "2"))  # jobs at a time: CI has two cores
# A file expected to take this long runs in a job of its own; shorter ones share a job of up
# to this length, since each pytest process pays a few seconds to import the frameworks.
JOB_SECONDS = 400.0
UNKNOWN_SECONDS = 30.0
JOB_TIMEOUT = 1800  # seconds: each test has its own limit (pyproject.toml), this is the backstop
NO_TESTS_COLLECTED = 5  # pytest's exit status when a marker deselects every test of a job

# (name, environment, command): run first, in this order, each on its own.
CHECKS: list[tuple[str, dict[str, str], list[str]]] = [
    ("ruff", {}, [sys.executable, "-m", "ruff", "check", "."]),
    ("mypy", {}, [sys.executable, "-m", "mypy"]),
    ("unit (numpy only)", {"KERAS_REPVGG_NUMPY_ONLY": "1"}, [*PYTEST, "tests/unit"]),
]
# (name, environment, pytest arguments, files): the test files each pass runs. tests/backends
# needs a process on another backend (a file named on the command line escapes its conftest's
# collect_ignore, so the TensorFlow passes name the other folders' files only).
ON_TENSORFLOW = ("tests/test_*.py", "tests/unit/test_*.py")
ON_OTHER_BACKENDS = ("tests/backends/test_*.py",)
PASSES: list[tuple[str, dict[str, str], list[str], tuple[str, ...]]] = [
    ("Keras 3", {}, [], ON_TENSORFLOW),
    ("tf-keras", {"TF_USE_LEGACY_KERAS": "1"}, ["-m", "not slow and not keras3_only"], ON_TENSORFLOW),
    ("JAX", {"KERAS_BACKEND": "jax"}, [], ON_OTHER_BACKENDS),
    ("PyTorch", {"KERAS_BACKEND": "torch"}, [], ON_OTHER_BACKENDS),
]
# One thread per job: two jobs with two threads each on two cores ran the trained int8 and
# fine-tuning files in 193 s, one thread each in 130 s. Read when torch and TensorFlow start,
# and inherited by the subprocesses that tests start.
ONE_THREAD = {"OMP_NUM_THREADS": "1", "TF_NUM_INTRAOP_THREADS": "1"}


@dataclass
class Job:
    name: str
    env: dict[str, str]
    command: list[str]
    expected: float = 0.0
    filtered: bool = False  # a marker may leave it nothing to run
    process: subprocess.Popen | None = None
    log: Path | None = None
    began: float = 0.0
    seconds: float = 0.0
    files: list[str] = field(default_factory=list)
    number: int = -1  # the order it started in, which names its log and XML


def test_files(patterns: tuple[str, ...]) -> list[str]:
    return sorted(str(p.relative_to(ROOT)) for pattern in patterns for p in ROOT.glob(pattern))


def pass_jobs(name: str, env: dict[str, str], args: list[str], patterns: tuple[str, ...],
              durations: dict[str, float], extra: list[str]) -> list[Job]:
    """One pass cut into jobs: each long file alone, the short ones packed into jobs of up to
    JOB_SECONDS (first fit, longest first)."""
    files = sorted(test_files(patterns), key=lambda f: -durations.get(f, UNKNOWN_SECONDS))
    bins: list[list[str]] = []
    for f in files:
        seconds = durations.get(f, UNKNOWN_SECONDS)
        fits = [b for b in bins if sum(durations.get(g, UNKNOWN_SECONDS) for g in b) + seconds <= JOB_SECONDS]
        if seconds < JOB_SECONDS and fits:
            fits[0].append(f)
        else:
            bins.append([f])
    jobs = []
    for group in bins:
        label = Path(group[0]).name if len(group) == 1 else f"{len(group)} files"
        jobs.append(Job(f"{name}: {label}", {**env, **(ONE_THREAD if SLOTS > 1 else {})},
                        [*PYTEST, *args, *extra, *group], files=group, filtered=bool(args),
                        expected=sum(durations.get(f, UNKNOWN_SECONDS) for f in group)))
    return jobs


def plan(extra: list[str]) -> list[Job]:
    measured = json.loads(DURATIONS.read_text()) if DURATIONS.exists() else {}
    jobs = [Job(name, env, [*command, *(extra if "pytest" in command else [])]) for name, env, command in CHECKS]
    tests = [job for name, env, args, patterns in PASSES
             for job in pass_jobs(name, env, args, patterns, measured.get(name, {}), extra)]
    return jobs + sorted(tests, key=lambda job: -job.expected)  # longest first: short ones fill the end


def start(job: Job, temp: Path, number: int) -> None:
    job.number = number
    job.log = temp / f"job{number}.log"
    command = list(job.command)
    if "pytest" in command:  # a base folder of its own (pytest clears it when it starts), and its times
        command += ["--basetemp", str(temp / f"job{number}"), "--junitxml", str(temp / f"job{number}.xml")]
    job.began = time.monotonic()
    with job.log.open("wb") as log:
        job.process = subprocess.Popen(command, cwd=ROOT, env={**os.environ, **job.env}, stdout=log,
                                       stderr=subprocess.STDOUT, start_new_session=True)


def stop(job: Job) -> None:
    if job.process is not None and job.process.poll() is None:
        os.killpg(job.process.pid, signal.SIGTERM)
        try:
            job.process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(job.process.pid, signal.SIGKILL)
            job.process.wait()


def report(job: Job, code: int) -> bool:
    """Print the job's output and one line of result; True if it passed."""
    passed = code == 0 or (code == NO_TESTS_COLLECTED and job.filtered)
    assert job.log is not None
    sys.stdout.write(job.log.read_text(errors="replace"))
    files = f" ({' '.join(job.files)})" if len(job.files) > 1 else ""
    verdict = "passed" if passed else f"failed (exit status {code})"
    print(f"== {job.name}{files}: {verdict} in {job.seconds:.0f} s", flush=True)
    return passed


def record(jobs: list[Job], temp: Path) -> None:
    """tests/durations.json from the JUnit XML of every job: seconds per pass and file."""
    measured: dict[str, dict[str, float]] = {name: {} for name, *_ in PASSES}
    for job in jobs:
        xml = temp / f"job{job.number}.xml"
        pass_name = job.name.split(":")[0]
        if pass_name not in measured or not xml.exists():
            continue
        for case in ET.parse(xml).iter("testcase"):
            path = case.get("classname", "").split(".")
            module = next(i for i, part in enumerate(path) if part.startswith("test_"))
            file = "/".join(path[:module + 1]) + ".py"
            measured[pass_name][file] = measured[pass_name].get(file, 0.0) + float(case.get("time", 0))
    ordered = {name: dict(sorted(((f, round(s, 1)) for f, s in files.items()), key=lambda kv: -kv[1]))
               for name, files in measured.items()}
    DURATIONS.write_text(json.dumps(ordered, indent=1) + "\n")
    print(f"== wrote {DURATIONS.relative_to(ROOT)}")


def main(extra: list[str]) -> int:
    began = time.monotonic()
    queue, running, done = plan(extra), [], []
    temp = Path(tempfile.mkdtemp(prefix="keras-repvgg-tests-"))
    failed, started = False, 0
    try:
        while (queue or running) and not failed:
            while queue and len(running) < SLOTS:  # the checks first: a lint error stops the run early
                job = queue.pop(0)
                start(job, temp, started)
                started += 1
                running.append(job)
            time.sleep(0.2)
            for job in list(running):
                assert job.process is not None
                code = job.process.poll()
                if code is None and time.monotonic() - job.began > JOB_TIMEOUT:
                    stop(job)
                    code = job.process.returncode
                if code is not None:
                    job.seconds = time.monotonic() - job.began
                    running.remove(job)
                    done.append(job)
                    failed = not report(job, code)
    finally:
        for job in running:
            stop(job)
            print(f"== {job.name}: stopped", flush=True)
    free = shutil.disk_usage(ROOT).free / 2**30  # a full disk fails tests far from its cause
    for name, *_ in PASSES:
        ran = [job for job in done if job.name.startswith(f"{name}:")]
        print(f"== {name}: {len(ran)} jobs, {sum(job.seconds for job in ran):.0f} s of job time")
    wall = time.monotonic() - began
    if failed:
        print(f"== failed after {wall:.0f} s; {free:.1f} GiB of disk free")
        return 1
    if os.environ.get("KERAS_REPVGG_RECORD_DURATIONS") == "1":
        record(done, temp)
    shutil.rmtree(temp, ignore_errors=True)
    print(f"== all passed in {wall:.0f} s; {free:.1f} GiB of disk free")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
