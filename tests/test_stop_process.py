"""Stopping `python -m dreamer.train` with signals, measured against its update time: a
process whose updates each take seconds gets SIGINT during a burst of updates. One signal:
it exits 130 within one update, with a checkpoint to resume from. Two signals: it exits 130
within `StopRequests.FLUSH_SECONDS` plus a little of the second, while XLA is still inside an
update, and the newest complete checkpoint stays readable."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dreamer import checkpoint
from dreamer.stopping import StopRequests
from tests.support import ROOT

pytestmark = pytest.mark.e2e  # signals to a training process

# A wide RSSM on a large batch: updates of about a second or more on 2 cores, in bursts of
# 20; a checkpoint after prefill (at 150 steps), before the first burst.
COMMAND = ["--env", "gym:tests.fake_envs:FakeDict-v0", "--env.obs", "vector", "--configs", "debug",
           "--model.deter", "1024", "--model.hidden", "1024", "--run.batch_size", "128",
           "--run.seq_len", "20", "--run.prefill", "200", "--run.train_every", "1000",
           "--run.train_steps", "20", "--run.checkpoint_every", "150", "--steps", "2000"]


def start_and_wait_for_a_burst(logdir: Path) -> tuple[subprocess.Popen, float]:
    """Start the run; return once it has printed its measured seconds per update (in its
    first burst, after four updates)."""
    process = subprocess.Popen([sys.executable, "-m", "dreamer.train", *COMMAND, "--logdir", str(logdir)],
                               cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    for line in process.stderr:
        match = re.search(r"([0-9.e+-]+) s per update", line)
        if match:
            return process, float(match[1])
    raise AssertionError(f"the run ended (exit {process.wait()}) before its first burst")


@pytest.mark.timeout(900)
@pytest.mark.parametrize("signals", [1, 2])
def test_signals_stop_the_process_in_time(tmp_path, signals):
    logdir = tmp_path / "run"
    process, update_seconds = start_and_wait_for_a_burst(logdir)
    for _ in range(signals):
        sent = time.time()
        process.send_signal(signal.SIGINT)
        time.sleep(0.2)
    try:
        code = process.wait(timeout=600)
    finally:
        process.kill()
    latency = time.time() - sent
    stderr = process.stderr.read()
    print(f"{signals} signal(s): exit {code} {latency:.2f} s after the last, updates of {update_seconds:.2f} s")
    assert code == 130, stderr[-2000:]
    latest = checkpoint.find_latest(logdir / checkpoint.CHECKPOINT_DIR, checkpoint.RUN_SCHEMA)
    assert latest.checkpoint is not None and not latest.skipped
    if signals == 1:  # the update in progress, then a checkpoint of the burst's state
        assert latency < update_seconds + 10  # the update in progress, a checkpoint, the exit
        assert latest.checkpoint.host["pending_work"][0]["updates"] > 0
        assert "rerun the same command to resume" in stderr
    else:  # at once, whatever the update: the checkpoint before the burst stays
        assert latency < StopRequests.FLUSH_SECONDS + 3
        assert latest.checkpoint.step == 150
