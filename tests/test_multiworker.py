"""Fine-tuning on two workers (MultiWorkerMirroredStrategy on 127.0.0.1), one killed mid-epoch,
the job restarted and resumed from its backup, then fused and exported.

The worker is the script in docs/multiworker.md, run as it is printed there.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from benchmarks.digits import digits

from helpers import make_timm_model, save_checkpoint

DOC = Path(__file__).resolve().parents[1] / "docs" / "multiworker.md"
EPOCHS = 3
TRAIN_IMAGES = 512  # 8 steps of 64 (32 on each worker) an epoch
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

    def __init__(self, root: Path, run: int, args: list[str]):
        ports = free_ports(2)
        cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
        self.progress = root / f"progress-{run}.jsonl"
        self.logs = [root / f"worker-{run}-{i}.log" for i in range(2)]
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


@pytest.mark.slow
def test_two_workers_one_killed_resume_from_backup(tmp_path):
    x_train, x_test, y_train, _ = digits(size=32)
    np.savez(tmp_path / "digits.npz", x=x_train[:TRAIN_IMAGES], y=y_train[:TRAIN_IMAGES])
    weights = save_checkpoint(make_timm_model("repvgg_a0", seed=11, num_classes=10), tmp_path / "a0.safetensors")
    (tmp_path / "finetune_worker.py").write_text(worker_script())
    (tmp_path / "out").mkdir()
    args = ["--weights", str(weights), "--data", str(tmp_path / "digits.npz"), "--backup-dir",
            str(tmp_path / "backup"), "--output", str(tmp_path / "out"), "--epochs", str(EPOCHS)]

    jobs: list[Job] = []
    try:
        # Run 1: kill worker 1 once it has finished a batch of epoch 1 (epoch 0 is backed up).
        first = Job(tmp_path, 1, args)
        jobs.append(first)
        in_epoch_1 = lambda: any(r["event"] == "batch_end" and r.get("epoch") == 1 for r in first.records(1))
        first.wait_for(in_epoch_1, START_TIMEOUT, "batch of epoch 1 on worker 1")
        backup = sorted(p.name for p in (tmp_path / "backup").rglob("*") if p.is_file())
        os.killpg(first.procs[1].pid, signal.SIGKILL)
        killed_at = time.monotonic()
        survivor = first.wait(EXIT_TIMEOUT)[0]
        survivor_s = time.monotonic() - killed_at
        first.kill()  # a survivor still blocked on its dead peer goes too, as a job restart would do
        done_1 = [r["epoch"] for r in first.records() if r["event"] == "epoch_end"]
        print(f"run 1: epochs ended {done_1}; survivor's status {survivor} after {survivor_s:.1f} s")
        print("backup at the kill:", backup)
        assert backup and not (tmp_path / "out" / "train.keras").exists()

        # Run 2: the same command, new ports; it must go on from the backup.
        second = Job(tmp_path, 2, args)
        jobs.append(second)
        codes = second.wait(RUN_TIMEOUT)
        assert codes == [0, 0], f"restarted job: {codes}\n{second.tail()}"
    finally:
        for job in jobs:
            job.kill()

    for worker in (0, 1):
        trained_1 = [r["epoch"] for r in first.records(worker) if r["event"] == "epoch_begin"]
        trained_2 = [r["epoch"] for r in second.records(worker) if r["event"] == "epoch_begin"]
        ended_1 = [r["epoch"] for r in first.records(worker) if r["event"] == "epoch_end"]
        print(f"worker {worker}: run 1 began epochs {trained_1}, ended {ended_1}; run 2 began {trained_2}")
        assert trained_1[:2] == [0, 1] and ended_1 == [0]  # killed inside epoch 1
        assert trained_2 == list(range(1, EPOCHS))  # resumed after the backed-up epoch 0, not from 0
    losses = [r["loss"] for r in first.records(0) + second.records(0) if r["event"] == "epoch_end"]
    print("loss by epoch:", losses)
    assert np.all(np.isfinite(losses))

    # The files are tf-keras models: load and export them in a tf-keras process, as users would.
    np.save(tmp_path / "batch.npy", x_test[:64])
    check = subprocess.run(
        [sys.executable, "-c", CHECK_SCRIPT, str(tmp_path / "out"), str(tmp_path / "batch.npy")],
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "TF_USE_LEGACY_KERAS": "1"},
        capture_output=True, text=True, timeout=300,
    )
    assert check.returncode == 0, check.stderr[-3000:]
    report = json.loads(check.stdout.strip().splitlines()[-1])
    print(report)
    assert report["forms"] == ["train", "deploy"]
    assert report["deploy"] <= 1e-5 * report["scale"]  # the fused model computes the trained one
    assert report["tflite"] <= 1e-5 * report["scale"]
