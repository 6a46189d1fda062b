"""The overlapped training loop (`--run.loop overlapped`, dreamer/overlapped.py) in
subprocesses: dmc cartpole balance, the debug preset, 500-step episodes (250 agent steps).

Three pipelines run side by side (module fixture, two at a time):
  - sync: the synchronous loop, 1500 steps;
  - zero_lag: the overlapped loop with `run.max_lag 0`, the same command;
  - stopped: the overlapped loop with its default lag (1000 steps) to 4000 steps through three
    processes: SIGINT once training has begun, SIGTERM once the resumed run has logged a step
    (its actor is then at most 1000 steps further, short of the end), then a run that finishes.
"""

from __future__ import annotations

import signal
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from dreamer import checkpoint
from dreamer.saved_config import load_saved_config
from dreamer.logger import read_metrics
from dreamer.registry import agent_class
from tests.support import TIMEOUT, at_step, episode_files, latest, logged_after, run, start, steps_by_key, wait_for

pytestmark = pytest.mark.e2e  # the overlapped loop's processes on MuJoCo

BASE = ["--env", "dmc_cartpole_balance", "--configs", "debug", "--run.video_every", "0",
        "--run.checkpoint_minutes", "0", "--env.time_limit", "500"]
OVERLAPPED = [*BASE, "--run.loop", "overlapped"]


def stopped_pipeline(logdir: Path) -> list[tuple[int, str]]:
    """SIGINT after the first update burst (step 1000), SIGTERM after the resumed run's first
    log line, then the run that finishes; returns each process's (exit code, stderr)."""
    results = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        ckpt = latest(logdir) if (logdir / checkpoint.CHECKPOINT_DIR).exists() else None
        after = ckpt.step if ckpt else 999  # a line at 1000, or one past the checkpoint
        process, log = start(logdir, *OVERLAPPED, "--steps", "4000")
        if wait_for(logged_after(logdir, after), process, "a log line"):
            process.send_signal(sig)
        results.append((process.wait(timeout=TIMEOUT), log.read_text()))
    results.append(run(logdir, *OVERLAPPED, "--steps", "4000"))
    return results


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("overlapped")
    paths = {name: base / name for name in ("sync", "zero_lag", "stopped")}
    pool = ThreadPoolExecutor(max_workers=2)
    futures = {"stopped": pool.submit(stopped_pipeline, paths["stopped"]),
               "sync": pool.submit(run, paths["sync"], *BASE, "--steps", "1500"),
               "zero_lag": pool.submit(run, paths["zero_lag"], *OVERLAPPED, "--run.max_lag", "0",
                                       "--steps", "1500")}
    yield paths, futures
    pool.shutdown(wait=True)


def applied_updates(logdir: Path) -> int:
    """The train state's count of applied updates in the newest checkpoint."""
    ckpt = latest(logdir)
    config = load_saved_config(logdir / "config.yaml")
    spec = ckpt.host["agent_spec"]
    agent = agent_class(config.agent)(config, int(spec["action_size"]), bool(spec["discrete"]))
    return int(checkpoint.restore_state(agent.state_template(), ckpt).applied_updates)


def test_zero_lag_collects_with_the_synchronous_loops_parameters(runs):
    """With `max_lag 0` the actor waits for every update owed so far, so the overlapped loop
    collects, updates and evaluates exactly as the synchronous one: the same train state at
    the end, bit for bit, the same counters and the same log."""
    paths, futures = runs
    for name in ("sync", "zero_lag"):
        code, stderr = futures[name].result()
        assert code == 0, stderr[-3000:]
    sync, overlapped = latest(paths["sync"]), latest(paths["zero_lag"])
    assert sync.step == overlapped.step == 1500
    assert sync.state_bytes == overlapped.state_bytes
    for key in ("step", "episodes", "scheduled_updates", "train_start", "rng", "actor_key", "replay"):
        assert sync.host[key] == overlapped.host[key], key
    sync_log, overlapped_log = read_metrics(paths["sync"]), read_metrics(paths["zero_lag"])
    for step in (500, 1000, 1500):
        assert at_step(sync_log, step) == at_step(overlapped_log, step), step  # perf/ timings aside
    assert "eval/return" in at_step(overlapped_log, 1500)


def test_interrupted_overlapped_run_saves_and_resumes_with_exact_counts(runs):
    """SIGINT and SIGTERM each end the run with a checkpoint at the step the learner reached
    (exit 128 + signal); the resumed runs reach 4000 steps with exactly the updates the
    schedule owes, each finished episode in the replay and the log once, no log line twice."""
    paths, futures = runs
    logdir = paths["stopped"]
    (code_int, err_int), (code_term, err_term), (code_end, err_end) = futures["stopped"].result()
    assert code_int == 128 + signal.SIGINT, err_int[-3000:]
    assert "interrupted by SIGINT" in err_int and "rerun the same command to resume" in err_int
    assert code_term == 128 + signal.SIGTERM, err_term[-3000:]
    assert "resuming from" in err_term and "interrupted by SIGTERM" in err_term
    assert code_end == 0, err_end[-3000:]

    final = latest(logdir)
    assert final.step == 4000
    # Training starts after the step that brings the replay to 1000 env steps (the episode
    # ending at 1000: train_start 998); 5 updates then, and 5 per 500 steps after:
    # 5 + (4000 - 998) * 5 // 500 = 35.
    assert final.host["scheduled_updates"] == 35
    assert applied_updates(logdir) == 35
    metrics = read_metrics(logdir)
    steps = steps_by_key(metrics)
    assert all(v == sorted(set(v)) for v in steps.values())  # no step logged twice
    assert steps["perf/env_steps_per_second"] == list(range(500, 4001, 500))
    assert steps["eval/return"] == [1500, 3000, 4000]
    # Every episode that finished is stored and logged once; those cut off by a stop are lost
    # (checkpoints hold no environment state), as in the synchronous loop.
    files = episode_files(logdir)
    assert len(files) == final.host["episodes"] == len(steps["train/return"])
    assert final.host["replay"]["episodes"] == len(files)
    assert all(length == 500 for length in (m["train/length"] for m in metrics if "train/length" in m))
