"""The training driver in-process, on a fake vector environment with its parts injected: the
overlapped loop equals the synchronous one, and a signal stops a run at once and the rerun
continues exactly. SIGINT is sent from inside the run at a chosen moment (during a burst of
updates, during collection, during an evaluation). A run interrupted at step S and resumed
writes, once it has handled step S, the checkpoint and the log lines of a run that was never
interrupted, bit for bit. (From its first own episode on a resumed run cannot match:
checkpoints hold no environment state, see tests/test_resume.py.)"""

from __future__ import annotations

import dataclasses
import shutil
import os
import signal
import time
from pathlib import Path

import pytest

from dreamer import checkpoint
from dreamer.config import build_config
from dreamer.logger import read_metrics
from dreamer.overlapped import make_trainer
from dreamer.stopping import Interrupted, StopRequests
from dreamer.parts import default_parts
from tests.support import TINY, comparable, latest

try:  # tests/ is on sys.path under pytest's default (prepend) import mode
    import fake_envs
except ImportError:  # tests/ is a package
    from tests import fake_envs

# Episodes of 25 steps; a prefill of 100 steps, then bursts of 6 updates at steps 100, 200,
# 300 and 400; a checkpoint every 100 steps; an evaluation of 3 episodes at 200 and 400. The overlapped loop collects with every update owed so far
# (`max_lag` 0), so that it reproduces the synchronous loop bit for bit.
SETTINGS = {**TINY, "run.max_lag": 0, "env.name": f"gym:{fake_envs.__name__}:FakeDict-v0", "env.obs": "vector",
            "env.time_limit": 25, "env.action_repeat": 1, "steps": 400, "run.prefill": 100, "run.train_every": 100,
            "run.train_steps": 6, "run.train_ratio": 0, "run.seq_len": 4, "run.eval_every": 200,
            "run.eval_episodes": 3, "run.log_every": 100, "run.video_every": 0,
            "run.checkpoint_minutes": 0, "run.checkpoint_every": 100}


class Signaller:
    """Sends this process SIGINT once `count` calls of the wrapped function have returned,
    and counts the calls made after it."""

    def __init__(self, count: int | None):
        self.count, self.calls, self.sent_at = count, 0, None

    def wrap(self, function):
        def wrapped(*args, **kwargs):
            out = function(*args, **kwargs)
            self.calls += 1
            if self.calls == self.count:
                self.sent_at = time.time()
                os.kill(os.getpid(), signal.SIGINT)
            return out
        return wrapped


def run(logdir: Path, loop: str = "sync", updates: int | None = None, collects: int | None = None,
        episodes: int | None = None, steps: int = 400) -> tuple[Interrupted | None, dict[str, Signaller], float]:
    """A run in `logdir`; SIGINT after the `updates`-th update, the `collects`-th collection
    step or the `episodes`-th evaluation step. Returns (what stopped it, the signallers, the
    seconds from the signal to the end)."""
    config = build_config(overrides={**SETTINGS, "run.loop": loop, "logdir": str(logdir), "steps": steps})
    signallers = {"update": Signaller(updates), "collect": Signaller(collects), "eval": Signaller(episodes)}
    base = default_parts(config)

    def make_agent(envs):
        device = base.make_agent(envs)
        device.update = signallers["update"].wrap(device.update)
        return device

    def make_eval_envs(seed):
        envs = base.make_eval_envs(seed)
        envs.step = signallers["eval"].wrap(envs.step)
        return envs

    parts = dataclasses.replace(base, make_agent=make_agent, make_eval_envs=make_eval_envs)
    hook = lambda envs, episodes: signallers["collect"].wrap(lambda: None)()  # noqa: E731
    stopped = None
    with StopRequests() as stop:
        trainer = make_trainer(config, logdir, stop, on_collect=hook, parts=parts)
        try:
            trainer.run()
        except Interrupted as error:
            stopped = error
    sent = [s.sent_at for s in signallers.values() if s.sent_at is not None]
    return stopped, signallers, time.time() - sent[0] if sent else 0.0


def final_state(logdir: Path) -> bytes:
    return latest(logdir).state_bytes


def log(logdir: Path, last: int) -> list[dict]:
    return [comparable(r) for r in read_metrics(logdir / "metrics.jsonl") if r["step"] <= last]


def owed_and_not_run(logdir: Path, signaller: Signaller) -> tuple[int, int]:
    """(updates the newest checkpoint holds as still owed, updates scheduled so far less those run)."""
    host = latest(logdir).host
    return sum(work["updates"] for work in host["pending_work"]), host["scheduled_updates"] - signaller.calls


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    logdir = tmp_path_factory.mktemp("stop") / "reference"
    stopped, signallers, _ = run(logdir)
    assert stopped is None and latest(logdir).host["pending_work"] == []
    assert signallers["update"].calls == latest(logdir).host["scheduled_updates"] == 24
    return logdir


def test_the_overlapped_loop_without_lag_equals_the_synchronous_one(tmp_path, reference):
    """With `max_lag 0` the actor waits for every update owed so far, so the overlapped loop
    collects, updates, evaluates and checkpoints exactly as the synchronous one."""
    logdir = tmp_path / "run"
    stopped, signallers, _ = run(logdir, "overlapped")
    assert stopped is None and signallers["update"].calls == 24
    assert final_state(logdir) == final_state(reference)
    for key in ("step", "episodes", "scheduled_updates", "train_start", "rng", "actor_key", "replay"):
        assert latest(logdir).host[key] == latest(reference).host[key], key
    assert log(logdir, 400) == log(reference, 400)


def assert_resumes_exactly(logdir: Path, reference: Path, step: int, loop: str = "sync") -> None:
    """Rerun to `step`, where the signal stopped the run: the checkpoint written once the
    step's items are handled equals the reference run's, and so do the logs up to it."""
    stopped, _, _ = run(logdir, loop, steps=step)
    assert stopped is None
    resumed = checkpoint.read(logdir / "checkpoints" / f"ckpt-{step}.1")
    uninterrupted = checkpoint.read(reference / "checkpoints" / f"ckpt-{step}")
    assert resumed.state_bytes == uninterrupted.state_bytes
    for key in ("episodes", "scheduled_updates", "train_start", "rng", "actor_key", "replay", "pending_work"):
        assert resumed.host[key] == uninterrupted.host[key], key
    assert log(logdir, step) == log(reference, step)


@pytest.mark.parametrize("loop", ["sync", "overlapped"])
def test_a_signal_during_a_burst_ends_the_run_after_the_current_update(tmp_path, reference, loop):
    logdir = tmp_path / "run"
    stopped, signallers, latency = run(logdir, loop, updates=9)  # the 3rd update of the burst at 200
    assert stopped is not None and stopped.exit_code == 130 and "rerun the same command" in str(stopped)
    assert signallers["update"].calls == 9  # none after the signal
    assert latest(logdir).step == 200
    assert owed_and_not_run(logdir, signallers["update"]) == (3, 3)  # owed once, neither lost nor run twice
    print(f"{loop}: the run ended {latency:.2f} s after the signal (its checkpoint included)")
    assert_resumes_exactly(logdir, reference, 200, loop)


def test_a_signal_during_collection_keeps_the_collected_step(tmp_path, reference):
    logdir = tmp_path / "run"
    # Collection steps of 25 env steps and a reset per episode: the 207th is step 200.
    stopped, signallers, _ = run(logdir, collects=207)
    assert stopped is not None and signallers["update"].calls == 6  # the burst at 100 only
    assert latest(logdir).step == 200
    assert owed_and_not_run(logdir, signallers["update"]) == (6, 6)
    assert_resumes_exactly(logdir, reference, 200)


def test_a_signal_during_an_evaluation_reruns_it_on_resume(tmp_path, reference):
    logdir = tmp_path / "run"
    stopped, signallers, _ = run(logdir, episodes=40)  # in the 2nd episode of the evaluation at 200
    assert stopped is not None
    assert signallers["eval"].calls == 52  # 2 episodes of a reset and 25 steps, then no 3rd
    host = latest(logdir).host
    assert host["step"] == 200 and [work["evaluate"] for work in host["pending_work"]] == [True]
    assert not any("eval/return" in record for record in log(logdir, 200))
    assert_resumes_exactly(logdir, reference, 200)


def test_the_measured_update_time_says_what_the_run_would_take():
    from dreamer.schedule import Schedule
    from dreamer.schedule import UpdateRate

    paper = build_config(overrides={"env.name": "dmc_walker_walk"})  # 1M steps, 100 updates per 1000
    schedule = Schedule(paper.run, paper.env.action_repeat)
    schedule.train_start, schedule.scheduled_updates = 5000, 100
    rate = UpdateRate(paper, schedule)
    rate.times = [7.5]
    line = rate.estimate(left_in_burst=40)
    # 100 + 995,000 * 100 // 1000 = 99,600 updates, 100 of them run, 40 still owed: 99,540 x 7.5 s
    assert line.startswith("warning: 7.5 s per update") and "99,540 updates" in line
    assert "8.6 days" in line and "--configs cpu" in line
    short = build_config(overrides={"env.name": "dmc_walker_walk", "steps": 6000})
    rate = UpdateRate(short, schedule)
    rate.times = [0.5]
    assert rate.estimate(0) == ("0.5 s per update (measured after compilation): the 100 updates left to "
                                "env step 6,000 take about 1 min of updates alone")


def test_a_start_without_a_checkpoint_counts_the_replay_it_kept(tmp_path, capsys):
    """The data of a start whose checkpoints were lost stays, and its steps count: a curve
    never shows a fresh start's step 0 with data already in the replay."""
    run(tmp_path, steps=200)  # 8 episodes of 25 steps in the replay
    shutil.rmtree(tmp_path / checkpoint.CHECKPOINT_DIR)
    capsys.readouterr()
    run(tmp_path, steps=300)
    err = capsys.readouterr().err
    assert ("the replay's 8 episodes from an earlier start are kept and counted, so training starts "
            "at env step 200 with fresh parameters") in err
    steps = [record["step"] for record in read_metrics(tmp_path / "metrics.jsonl")]
    assert min(steps) > 200 and max(steps) == 300
    assert latest(tmp_path).step == 300
