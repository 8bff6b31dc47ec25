"""DDP through torchrun on CPU (gloo): 2 processes train exactly what 1 process trains with the
same global batch, and a job that loses a process stops, then resumes to the same result.

The loader makes every batch a pure function of (step, micro-batch, rank) (llama2c/train/loop.py),
so 2 processes with gradient accumulation 1 each read exactly the micro-batches 1 process reads
with accumulation 2. DDP averages the two gradients where accumulation sums two halves: the same
numbers up to float32 summation order. Runtime: ~1 minute (four small torchrun jobs).
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import process_tree
from train_fixtures import VOCAB, train_env

STEPS = 40  # the kill test needs the job still running well after the first checkpoint (8)
SMALL = ["--dim", "32", "--n_layers", "1", "--n_heads", "2", "--n_kv_heads", "1", "--multiple_of", "8",
         "--max_seq_len", "32", "--batch_size", "8", "--learning_rate", "3e-3", "--warmup_iters", "2",
         "--max_iters", str(STEPS), "--lr_decay_iters", str(STEPS), "--eval_interval", "8",
         "--eval_iters", "2", "--log_interval", "1", "--gradient_accumulation_steps", "2",
         "--vocab_size", str(VOCAB), "--compile", "false", "--quiet"]  # DDP, not torch.compile


def command(processes: int, data: Path, out: Path) -> list[str]:
    train = ["-m", "llama2c", "train", *SMALL, "--data", str(data), "--out", str(out)]
    if processes == 1:
        return [sys.executable, *train]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc_per_node={processes}", *train]


def losses(out: Path) -> dict[int, tuple[float, float | None]]:
    """iteration -> (training loss, validation loss or None), from history.csv."""
    rows = csv.DictReader(open(out / "history.csv"))
    return {int(r["iter"]): (float(r["train_loss"]), float(r["val_loss"]) if r["val_loss"] else None)
            for r in rows}


def run(processes: int, data: Path, out: Path) -> dict:
    proc = subprocess.run(command(processes, data, out), env=train_env(), capture_output=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    return losses(out)


@pytest.fixture(scope="module")
def two_processes(story_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp") / "out"
    return run(2, story_data[0], out)


@pytest.fixture(scope="module")
def one_process(story_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("single") / "out"
    return run(1, story_data[0], out)


def test_two_processes_equal_one_with_accumulation(one_process, two_processes):
    one = one_process
    assert sorted(one) == sorted(two_processes) == list(range(1, STEPS + 1))
    for it in one:
        for a, b in zip(one[it], two_processes[it]):
            assert (a is None) == (b is None)
            if a is not None:
                assert abs(a - b) <= 1e-4 * abs(a), (it, a, b)
    assert one[STEPS][0] < 0.8 * one[1][0]  # and it learned something on the way


def worker_pid(torchrun: int, rank: int) -> int | None:
    for pid in process_tree(torchrun):
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"RANK={rank}".encode() in env and b"LLAMA2C_TEST_WORKER=1" in env:
            return pid
    return None


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_killed_process_stops_the_job_and_resume_matches(story_data, two_processes, tmp_path):
    out = tmp_path / "out"
    job = subprocess.Popen(command(2, story_data[0], out), env=train_env(LLAMA2C_TEST_WORKER="1"),
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 300
        while not (out / "ckpt.pt").exists():  # the first checkpoint, at iteration 8
            assert job.poll() is None, job.stderr.read().decode()[-3000:]
            assert time.monotonic() < deadline
            time.sleep(0.02)
        victim, survivor = worker_pid(job.pid, rank=1), worker_pid(job.pid, rank=0)
        assert victim is not None and survivor is not None
        os.kill(victim, signal.SIGKILL)
        job.wait(timeout=120)  # torchrun notices, stops rank 0 and exits
    finally:
        if job.poll() is None:
            job.kill()
    assert job.returncode != 0
    assert not alive(survivor), "rank 0 outlived the job"
    saved = torch.load(out / "ckpt.pt", weights_only=False)  # whole, not half-written
    assert 8 <= saved["iter_num"] < STEPS, "the kill came after the job ended: not mid-run"

    resumed = run(2, story_data[0], out)
    assert sorted(resumed) == list(range(1, STEPS + 1))  # history up to the checkpoint, then more
    for it in range(1, saved["iter_num"] + 1):
        assert resumed[it][0] == pytest.approx(two_processes[it][0], rel=1e-4)
    final, reference = resumed[STEPS], two_processes[STEPS]
    assert abs(final[0] - reference[0]) <= 1e-4 * reference[0]
    assert abs(final[1] - reference[1]) <= 1e-4 * reference[1]


def test_ctrl_c_saves_and_resume_matches(story_data, one_process, tmp_path):
    """Ctrl-C (SIGINT) in a one-process run: a checkpoint of the last finished step, exit 130;
    running the same command again ends where the uninterrupted run ends."""
    out = tmp_path / "out"
    job = subprocess.Popen(command(1, story_data[0], out), env=train_env(), stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 300
        while not (out / "ckpt.pt").exists():
            assert job.poll() is None, job.stderr.read().decode()[-3000:]
            assert time.monotonic() < deadline
            time.sleep(0.02)
        job.send_signal(signal.SIGINT)
        stdout, stderr = job.communicate(timeout=120)
    finally:
        if job.poll() is None:
            job.kill()
    assert job.returncode == 130, stderr.decode()[-2000:]
    saved = torch.load(out / "ckpt.pt", weights_only=False)
    assert 8 <= saved["iter_num"] < STEPS, "the interrupt came after the run ended"
    assert f"saved {out / 'ckpt.pt'} at iteration {saved['iter_num']}".encode() in stdout
    resumed = run(1, story_data[0], out)
    assert sorted(resumed) == list(range(1, STEPS + 1))
    assert resumed[STEPS][0] == pytest.approx(one_process[STEPS][0], rel=1e-4)
    assert resumed[STEPS][1] == pytest.approx(one_process[STEPS][1], rel=1e-4)
