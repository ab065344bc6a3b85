"""Fine-tuning on two workers (MultiWorkerMirroredStrategy on 127.0.0.1), killed mid-epoch
twice (worker 1, then after a restart the chief), each time restarted and resumed from its
backup, to the weights and optimizer state of an uninterrupted job; that job's output fused
and exported.

The worker is the script in docs/multiworker.md, run as it is printed there. Training is
deterministic (two uninterrupted jobs save the same arrays, bit for bit), so the resumed job is
held to the uninterrupted one's bits.
"""

from __future__ import annotations

import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pytest

from benchmarks.digits import digits

from helpers import make_timm_model, save_checkpoint

DOC = Path(__file__).resolve().parents[1] / "docs" / "multiworker.md"
EPOCHS = 3
KILLS = ((1, 1), (0, 2))  # (worker, epoch): worker 1 in epoch 1, then the chief in epoch 2, the last
TRAIN_IMAGES = 256  # 4 steps of 64 (32 on each worker) an epoch
START_TIMEOUT = 300  # seconds for both workers to start and reach the kill point
EXIT_TIMEOUT = 60  # seconds for the survivor to notice that its peer is gone
RUN_TIMEOUT = 400  # seconds for the restarted job to finish


CHECK_SCRIPT = r"""
import json, sys
from pathlib import Path
import numpy as np
import keras_repvgg
from keras_repvgg.tflite import export_tflite
from keras_repvgg.tflite.runtime import TFLiteRunner

out, batch = Path(sys.argv[1]), np.load(sys.argv[2])
train = keras_repvgg.load_model(out / "train.keras")
deploy = keras_repvgg.load_model(out / "deploy.keras")
reference = train.predict(batch, verbose=0)
lite = TFLiteRunner(export_tflite(deploy, "float32", input="normalized", output="logits"))(batch)
print(json.dumps({
    "forms": [keras_repvgg.describe(m).form for m in (train, deploy)],
    "scale": float(np.abs(reference).max()),
    "deploy": float(np.abs(deploy.predict(batch, verbose=0) - reference).max()),
    "tflite": float(np.abs(lite - reference).max()),
}))
"""


def worker_script() -> str:
    """The ```python block of docs/multiworker.md that follows the line naming finetune_worker.py."""
    match = re.search(r"`finetune_worker\.py`.*?```python\n(.*?)```", DOC.read_text(), re.S)
    assert match, f"{DOC}: no finetune_worker.py block"
    return match.group(1)


def free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def read_progress(path: Path) -> list[dict]:
    if not path.exists():
        return []
    lines = path.read_text().splitlines()
    return [json.loads(line) for line in lines if line.endswith("}")]  # a line being written is skipped


class Job:
    """Two worker processes of one TF_CONFIG cluster on the loopback."""

    def __init__(self, root: Path, run: str, args: list[str], logs: Path | None = None):
        """Runs root/finetune_worker.py with args; its progress file and logs go to logs (root if None)."""
        ports = free_ports(2)
        cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
        logs = logs or root
        self.progress = logs / f"progress-{run}.jsonl"
        self.logs = [logs / f"worker-{run}-{i}.log" for i in range(2)]
        self.procs: list[subprocess.Popen] = []
        try:
            for i in range(2):
                env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "TF_USE_LEGACY_KERAS": "1",
                       "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})}
                with open(self.logs[i], "w") as log:
                    self.procs.append(subprocess.Popen(
                        [sys.executable, str(root / "finetune_worker.py"), *args, "--progress", str(self.progress)],
                        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
        except BaseException:
            self.kill()  # the one already started
            raise

    def records(self, worker: int | None = None) -> list[dict]:
        return [r for r in read_progress(self.progress) if worker is None or r["worker"] == worker]

    def tail(self) -> str:
        return "\n".join(f"--- {log.name}\n{log.read_text()[-3000:]}" for log in self.logs)

    def wait_for(self, condition, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            dead = [p.returncode for p in self.procs if p.poll() is not None]
            assert not any(dead), f"a worker ended ({dead}) while waiting for {what}\n{self.tail()}"
            assert time.monotonic() < deadline, f"no {what} in {timeout} s\n{self.tail()}"
            time.sleep(0.05)

    def wait(self, timeout: float) -> list[int | None]:
        deadline = time.monotonic() + timeout
        for p in self.procs:
            try:
                p.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        return [p.poll() for p in self.procs]

    def kill(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()


def saved_arrays(path: Path) -> dict[str, np.ndarray]:
    """Every array a tf-keras .keras file holds (weights, BatchNorm statistics, optimizer), by its path in the file."""
    arrays: dict[str, np.ndarray] = {}
    with zipfile.ZipFile(path) as archive, h5py.File(io.BytesIO(archive.read("model.weights.h5")), "r") as f:
        f.visititems(lambda name, obj: arrays.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
    return arrays


MOVING_STATISTICS = re.compile(r"batch_normalization(_\d+)?/vars/[23]$")  # tf-keras: gamma, beta, mean, variance
ROUNDING = 1e-5  # of an array's largest magnitude; resumed and uninterrupted differ by 2e-7 (float32 rounding)


def relative_difference(a: np.ndarray, b: np.ndarray) -> float:
    """max |a - b| over b's largest magnitude."""
    return float(np.abs(a.astype(np.float64) - b).max(initial=0) / max(np.abs(b).max(initial=0), 1e-30))


@dataclass
class Setup:
    root: Path
    weights: Path
    reference: Path  # the output folder of the uninterrupted job

    def args(self, backup: Path, output: Path) -> list[str]:
        return ["--weights", str(self.weights), "--data", str(self.root / "digits.npz"), "--backup-dir", str(backup),
                "--output", str(output), "--epochs", str(EPOCHS)]


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> Setup:
    """The data, the checkpoint, the worker script, and one uninterrupted job of it: what each resumed job must match."""
    root = tmp_path_factory.mktemp("multiworker")
    x_train, x_test, y_train, _ = digits(size=32)
    np.savez(root / "digits.npz", x=x_train[:TRAIN_IMAGES], y=y_train[:TRAIN_IMAGES])
    weights = save_checkpoint(make_timm_model("repvgg_a0", seed=11, num_classes=10), root / "a0.safetensors")
    (root / "finetune_worker.py").write_text(worker_script())
    done = Setup(root, weights, root / "reference")
    done.reference.mkdir()
    job = Job(root, "reference", done.args(root / "reference-backup", done.reference))
    try:
        codes = job.wait(RUN_TIMEOUT)
        assert codes == [0, 0], f"uninterrupted job: {codes}\n{job.tail()}"
    finally:
        job.kill()
    assert [r["epoch"] for r in job.records(0) if r["event"] == "epoch_begin"] == list(range(EPOCHS))

    # The files are tf-keras models: load and export them in a tf-keras process, as users would.
    # Once, here: each resumed job's files hold these arrays (the test checks that).
    np.save(root / "batch.npy", x_test[:64])
    check = subprocess.run(
        [sys.executable, "-c", CHECK_SCRIPT, str(done.reference), str(root / "batch.npy")],
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "TF_USE_LEGACY_KERAS": "1"},
        capture_output=True, text=True, timeout=300,
    )
    assert check.returncode == 0, check.stderr[-3000:]
    report = json.loads(check.stdout.strip().splitlines()[-1])
    print(report)
    assert report["forms"] == ["train", "deploy"]
    assert report["deploy"] <= 1e-5 * report["scale"]  # the fused model computes the trained one
    assert report["tflite"] <= 1e-5 * report["scale"]
    return done


def kill_when_in_epoch(job: Job, worker: int, epoch: int, backup: Path) -> list[str]:
    """SIGKILL `worker` once it has finished a batch of `epoch` (epoch - 1 backed up); the
    other worker goes too, by itself or killed, as a job restart would do. The backup's files."""
    in_epoch = lambda: any(r["event"] == "batch_end" and r.get("epoch") == epoch for r in job.records(worker))
    job.wait_for(in_epoch, START_TIMEOUT, f"batch of epoch {epoch} on worker {worker}")
    files = sorted(p.name for p in backup.rglob("*") if p.is_file())
    os.killpg(job.procs[worker].pid, signal.SIGKILL)
    killed_at = time.monotonic()
    survivor = job.wait(EXIT_TIMEOUT)[1 - worker]
    print(f"worker {worker} killed in epoch {epoch}; the other's status {survivor} after "
          f"{time.monotonic() - killed_at:.1f} s; backup: {files}")
    job.kill()
    return files


@pytest.mark.slow
@pytest.mark.timeout(1200)  # the uninterrupted reference job, then three runs of the job killed twice
def test_two_workers_killed_in_turn_resume_from_backup(setup, tmp_path):
    """One job, killed twice: worker 1 in epoch 1, then, restarted, the chief in epoch 2;
    restarted again, it finishes as if never killed."""
    (tmp_path / "out").mkdir()
    backup = tmp_path / "backup"
    args = setup.args(backup, tmp_path / "out")
    runs: list[Job] = []
    try:
        for run, (killed, epoch) in enumerate(KILLS, start=1):
            runs.append(Job(setup.root, str(run), args, tmp_path))
            assert kill_when_in_epoch(runs[-1], killed, epoch, backup) and not (tmp_path / "out" / "train.keras").exists()
        # The same command once more, new ports: it must go on from the last backup, and finish.
        runs.append(Job(setup.root, "last", args, tmp_path))
        codes = runs[-1].wait(RUN_TIMEOUT)
        assert codes == [0, 0], f"restarted job: {codes}\n{runs[-1].tail()}"
    finally:
        for job in runs:
            job.kill()

    # Each run began at the epoch after the last one backed up, on both workers, and ended
    # none after it: a restart from epoch 0, or one that skipped an epoch, fails here.
    first_epochs = [0] + [epoch for _, epoch in KILLS]
    for worker in (0, 1):
        for run, job in enumerate(runs):
            began = [r["epoch"] for r in job.records(worker) if r["event"] == "epoch_begin"]
            ended = [r["epoch"] for r in job.records(worker) if r["event"] == "epoch_end"]
            print(f"worker {worker}, run {run + 1}: began epochs {began}, ended {ended}")
            if run < len(KILLS):  # killed inside its last epoch
                assert began == list(range(first_epochs[run], KILLS[run][1] + 1)), (worker, run, began)
                assert ended == began[:-1], (worker, run, ended)
            else:
                assert began == ended == list(range(first_epochs[run], EPOCHS)), (worker, run, began, ended)
    losses = [r["loss"] for job in runs for r in job.records(0) if r["event"] == "epoch_end"]
    print("loss by epoch:", losses)
    assert len(losses) == EPOCHS and np.all(np.isfinite(losses))

    # Resumed from the weights, BatchNorm statistics and optimizer state of epoch 0's end, on the
    # same batches, the job ends where the uninterrupted one did: the weights and the optimizer's
    # state (step count, momentum) bit for bit. The BatchNorm moving statistics are per worker
    # and averaged across the workers when read: the restarted job restarts them from epoch 0's
    # average, which rounds differently (2e-7 of their scale here); so does the fused model.
    resumed, reference = saved_arrays(tmp_path / "out" / "train.keras"), saved_arrays(setup.reference / "train.keras")
    assert resumed.keys() == reference.keys() and any(k.startswith("optimizer/") for k in reference)
    moving = {k for k in reference if MOVING_STATISTICS.search(k)}
    assert moving, sorted(reference)[:8]
    differ = [k for k in reference if k not in moving and not np.array_equal(resumed[k], reference[k])]
    rounding = {k: relative_difference(resumed[k], reference[k]) for k in moving}
    deploy_a, deploy_b = saved_arrays(tmp_path / "out" / "deploy.keras"), saved_arrays(setup.reference / "deploy.keras")
    fused = {k: relative_difference(deploy_a[k], deploy_b[k]) for k in deploy_b}
    print(f"train.keras: {len(differ)} of {len(reference) - len(moving)} weight, optimizer and metric arrays differ "
          f"{differ[:5]}; moving statistics within {max(rounding.values()):.2g}, fused within {max(fused.values()):.2g}")
    assert not differ, "the resumed job's weights or optimizer state differ from the uninterrupted job's"
    assert max(rounding.values()) <= ROUNDING and max(fused.values()) <= ROUNDING
