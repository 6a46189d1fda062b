"""Soak (slow, `pytest -m slow`): a debug run killed with SIGKILL at 20 random moments in a row,
resumed each time, then run to its budget. At the end: the budget reached, metric steps
strictly increasing, every finished episode present and loadable, no temporary file left,
disk and memory bounded, and `dreamer.evaluate` works on the result."""

from __future__ import annotations

import os
import random
import resource
import signal
import subprocess
import sys
import time

import pytest

from dreamer.logger import read_metrics
from dreamer.replay import read_episode
from tests.support import ROOT

ARGS = ["--env", "dmc_cartpole_balance", "--configs", "debug", "--steps", "6000", "--env.time_limit", "500",
        "--run.video_every", "1000", "--run.eval_every", "1000", "--run.checkpoint_every", "500",
        "--run.checkpoint_minutes", "0"]
KILLS = 20


def start(logdir) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("DREAMER_CRASH_AT", None)
    return subprocess.Popen([sys.executable, "-m", "dreamer.train", *ARGS, "--logdir", str(logdir)],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def disk_bytes(path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_twenty_kills_in_a_row_then_the_budget(tmp_path):
    logdir, rng = tmp_path / "run", random.Random(0)
    episodes_seen: set[str] = set()
    for _ in range(KILLS):
        process = start(logdir)
        time.sleep(rng.uniform(2.0, 14.0))  # start-up, compile, prefill, updates or a write
        process.send_signal(signal.SIGKILL)
        process.wait()
        if (logdir / "replay").is_dir():
            episodes_seen |= {p.name for p in (logdir / "replay").glob("*.npz")}
    process = start(logdir)
    _, err = process.communicate(timeout=1800)
    assert process.returncode == 0, err[-3000:]

    metrics = read_metrics(logdir / "metrics.jsonl")
    steps = [m["step"] for m in metrics]
    assert max(steps) == 6000
    assert all(a <= b for a, b in zip(steps, steps[1:])), "metric steps went back"
    # One log line every run.log_every (500) steps: none missing, none twice, however the
    # kills fell between checkpoints.
    assert [m["step"] for m in metrics if "replay/steps" in m] == list(range(500, 6001, 500))
    episodes = sorted((logdir / "replay").glob("*.npz"))
    assert episodes_seen <= {p.name for p in episodes}  # no finished episode was lost
    assert all(read_episode(p) is not None for p in episodes)
    strays = [p for p in logdir.rglob("*") if p.name.startswith((".tmp-", "tmp-")) or p.name.endswith(".part")]
    assert not strays, strays
    assert len(list((logdir / "checkpoints").glob("ckpt-*"))) <= 3  # run.checkpoint_keep
    assert disk_bytes(logdir) < 200 * 2**20
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # the largest child
    assert peak_kib < 6 * 2**20, f"{peak_kib / 2**20:.1f} GiB"
    result = subprocess.run([sys.executable, "-m", "dreamer.evaluate", "--logdir", str(logdir), "--episodes", "1"],
                            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0 and "return" in result.stdout.splitlines()[-1], result.stderr[-3000:]
