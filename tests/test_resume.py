"""Resuming debug runs from checkpoints (subprocesses, dmc cartpole balance, the debug preset).

Three pipelines run side by side (module fixtures, two at a time):
  - crashes: one logdir run to 2000 env steps through five processes: SIGKILL inside a
    checkpoint write, SIGKILL inside an episode write, SIGTERM, SIGKILL at a random moment,
    then a run that finishes. The end state must be consistent: counters, no duplicated or
    missing log lines, every finished episode still on disk;
  - uninterrupted: 1500 steps in one process, a checkpoint at 1000;
  - stopped: the same command with --steps 1000, then rerun with --steps 1500.
The last two compare a resumed run with an uninterrupted one (see `test_resumed_run_matches_
uninterrupted_where_it_can`); a copy of the stopped run at 1000 serves the evaluation tests.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from dreamer import checkpoint
from dreamer.config import build_config
from dreamer.saved_config import save_config
from dreamer.evaluate import main as evaluate_main
from dreamer.logger import read_metrics
from dreamer.replay import read_episode
from tests.support import TIMEOUT, at_step, episode_files, latest, logged_after, run, start, steps_by_key, wait_for

pytestmark = pytest.mark.e2e  # crash and resume chains of training processes

ROOT = Path(__file__).resolve().parent.parent
# Checkpoints by step count only, so that none depends on how busy the machine is.
BASE = ["--env", "dmc_cartpole_balance", "--configs", "debug", "--run.video_every", "0",
        "--run.checkpoint_minutes", "0"]
# Crash pipeline: 500-step episodes (250 agent steps), a checkpoint every 500 steps.
CRASH = [*BASE, "--steps", "2000", "--env.time_limit", "500", "--run.checkpoint_every", "500",
         "--run.eval_every", "1000"]
# Determinism pipelines: 1000-step episodes, so that step 1000 is an episode boundary.
SAME = [*BASE, "--run.checkpoint_every", "1000"]


def crash_pipeline(logdir: Path) -> dict:
    """Five processes on one logdir; returns their exit codes, stderr, and what each left."""
    out: dict = {"codes": [], "stderr": [], "episodes": [], "steps": []}

    def record(code: int, stderr: str) -> None:
        out["codes"].append(code)
        out["stderr"].append(stderr)
        out["episodes"].append(episode_files(logdir))
        ckpt = latest(logdir)
        out["steps"].append(ckpt.step if ckpt else None)

    # 1. SIGKILL inside the third checkpoint write (step 1500): state.msgpack written, no
    #    host.json, not renamed. The newest complete checkpoint is at 1000.
    record(*run(logdir, *CRASH, crash_at="checkpoint:3"))
    out["leftover_tmp"] = [p.name for p in (logdir / "checkpoints").glob("tmp-*")]
    # 2. SIGKILL inside the first episode write after resuming (the episode ending at 1500).
    record(*run(logdir, *CRASH, crash_at="replay:1"))
    out["leftover_part"] = [p.name for p in (logdir / "replay").glob(".tmp-*")]
    # 3. SIGTERM once the resumed run has logged a step past its checkpoint.
    resumed_at = latest(logdir).step
    process, log = start(logdir, *CRASH)
    if wait_for(logged_after(logdir, resumed_at), process, "a log line after resuming"):
        process.send_signal(signal.SIGTERM)
    record(process.wait(timeout=TIMEOUT), log.read_text())
    # 4. SIGKILL at a random moment after the resumed run started its loop.
    process, log = start(logdir, *CRASH)
    wait_for(lambda: "resuming from" in log.read_text(), process, "the resume message")
    time.sleep(random.uniform(0.0, 6.0))
    process.send_signal(signal.SIGKILL)
    record(process.wait(timeout=TIMEOUT), log.read_text())
    # 5. The run that finishes.
    record(*run(logdir, *CRASH))
    return out


def stopped_pipeline(logdir: Path, copy: Path) -> dict:
    first = run(logdir, *SAME, "--steps", "1000")
    shutil.copytree(logdir, copy)  # the run at 1000, for the evaluation tests
    before = read_metrics(logdir)
    return {"first": first, "metrics_at_1000": before, "ckpt_1000": latest(logdir),
            "second": run(logdir, *SAME, "--steps", "1500")}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("resume")
    paths = {name: base / name for name in ("crash", "full", "stopped", "at1000")}
    pool = ThreadPoolExecutor(max_workers=2)
    futures = {"crash": pool.submit(crash_pipeline, paths["crash"]),
               "full": pool.submit(run, paths["full"], *SAME, "--steps", "1500"),
               "stopped": pool.submit(stopped_pipeline, paths["stopped"], paths["at1000"])}
    yield paths, futures
    pool.shutdown(wait=True)


# ----------------------------------------------------------------------------- crashes

@pytest.mark.timeout(3600)
def test_crashes_at_every_point_still_reach_the_budget(runs):
    paths, futures = runs
    logdir, out = paths["crash"], futures["crash"].result()
    codes, stderr = out["codes"], out["stderr"]
    assert codes[0] == -signal.SIGKILL, stderr[0][-2000:]
    assert out["steps"][0] == 1000 and out["leftover_tmp"], out  # killed inside the save at 1500
    assert codes[1] == -signal.SIGKILL, stderr[1][-2000:]
    assert "resuming from" in stderr[1] and out["leftover_part"], out  # killed inside an episode write
    assert codes[2] == 128 + signal.SIGTERM, stderr[2][-2000:]
    line = stderr[2].strip().splitlines()[-1]
    match = re.fullmatch(r"interrupted by SIGTERM at env step (\d+); latest checkpoint '(.+)'; "
                         r"rerun the same command to resume", line)
    assert match, line
    assert out["steps"][2] == int(match[1]) > 1000  # it saved where it stopped
    assert Path(match[2]).name.startswith(f"ckpt-{match[1]}")
    assert codes[3] in (-signal.SIGKILL, 0), stderr[3][-2000:]  # 0: it finished before the kill
    assert codes[4] == 0, stderr[4][-3000:]
    assert "Traceback" not in "".join(stderr)

    # Counters: the final checkpoint agrees with the log and the update schedule.
    metrics = read_metrics(logdir)
    final = latest(logdir)
    assert final.step == 2000 and max(m["step"] for m in metrics) == 2000
    host = final.host
    assert host["episodes"] == len([m for m in metrics if "train/return" in m])
    cfg = build_config(["debug"], {"run.video_every": "0"}).run
    assert host["scheduled_updates"] == cfg.train_steps + cfg.updates_after(2000 - host["train_start"])

    # metrics.jsonl: every key at strictly increasing steps; periodic lines neither doubled nor lost.
    steps = steps_by_key(metrics)
    for key, values in steps.items():
        assert values == sorted(set(values)), f"{key} logged twice at a step: {values}"
    assert steps["perf/env_steps_per_second"] == [500, 1000, 1500, 2000]
    assert steps["eval/return"] == [1000, 2000]

    # Replay: every finished episode any process wrote is still there and readable.
    final_files = episode_files(logdir)
    for index, files in enumerate(out["episodes"]):
        assert files <= final_files, f"episodes lost after process {index + 1}"
    assert all(read_episode(logdir / "replay" / name) is not None for name in final_files)
    assert len(final_files) >= host["episodes"]  # killed runs' episodes count too (more data)

    # Checkpoints: complete ones only, at most run.checkpoint_keep.
    names = [p.name for p in (logdir / "checkpoints").iterdir()]
    assert not [n for n in names if not n.startswith("ckpt-")], names
    assert len(names) <= 3


# ----------------------------------------------------------------------------- determinism

@pytest.mark.timeout(3600)
def test_resumed_run_matches_uninterrupted_where_it_can(runs):
    """A run stopped at 1000 steps and resumed equals the uninterrupted run up to the first
    episode the resumed run collects itself, bit for bit: the checkpointed train state, the
    losses of the updates at 1500 (batches from the same replay with the restored sampling
    RNG) and the evaluation at 1500 (a fresh evaluation environment in both runs).

    The runs stop there because they cannot match from that episode on (it ends at 2000):
    checkpoints hold no environment state. The resumed process builds its environments anew,
    so its first episode starts from the environment seed's first initial state, not from the
    one the uninterrupted run's environment would draw next, and the collection policy's
    recurrent state starts afresh. The replay then differs, and so does everything trained on
    it. Episodes in progress at a checkpoint are lost for the same reason (the stop here is at
    an episode boundary, so none is)."""
    paths, futures = runs
    code, stderr = futures["full"].result()
    assert code == 0, stderr[-3000:]
    stopped = futures["stopped"].result()
    for code, stderr in (stopped["first"], stopped["second"]):
        assert code == 0, stderr[-3000:]
    full = read_metrics(paths["full"])
    resumed = read_metrics(paths["stopped"])

    # The checkpoint at 1000 holds the same train state in both runs.
    full_ckpt = checkpoint.read(paths["full"] / "checkpoints" / "ckpt-1000")
    assert full_ckpt.host["digest"] == stopped["ckpt_1000"].host["digest"]
    assert full_ckpt.state_bytes == stopped["ckpt_1000"].state_bytes
    for key in ("step", "episodes", "scheduled_updates", "train_start", "rng", "actor_key", "replay"):
        assert full_ckpt.host[key] == stopped["ckpt_1000"].host[key], key

    # Up to 1000 the logs agree (the stopped run adds its final evaluation at 1000); so do
    # the updates and the evaluation at 1500, after resuming.
    for step in (500, 1000, 1500):
        a, b = at_step(full, step), at_step(resumed, step)
        if step == 1000:
            b = {k: v for k, v in b.items() if not k.startswith("eval/")}
        assert a == b, (step, sorted(set(a.items()) ^ set(b.items()))[:6])
    assert any(k.startswith("model/") for k in at_step(full, 1500)) and "eval/return" in at_step(full, 1500)
    # The resumed run's log is whole: each key once per step, the periodic lines all there.
    steps = steps_by_key(resumed)
    assert all(v == sorted(set(v)) for v in steps.values())
    assert steps["perf/env_steps_per_second"] == [500, 1000, 1500]


# ----------------------------------------------------------------------------- evaluation

@pytest.mark.timeout(3600)
def test_evaluate_command_reproduces_the_runs_evaluation(runs):
    paths, futures = runs
    stopped = futures["stopped"].result()
    assert stopped["first"][0] == 0, stopped["first"][1][-3000:]
    logdir = paths["at1000"]
    expected = at_step(stopped["metrics_at_1000"], 1000)["eval/return"]
    before = {p for p in logdir.rglob("*") if "eval_videos" not in p.parts}
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-m", "dreamer.evaluate", "--logdir", str(logdir),
                             "--episodes", "1", "--video"], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=TIMEOUT)
    assert result.returncode == 0, result.stderr[-3000:]
    last = result.stdout.strip().splitlines()[-1]
    match = re.fullmatch(r"return (-?[\d.]+) ± ([\d.]+) over 1 episodes", last)
    assert match, last
    # The first episode repeats the training loop's final evaluation at this checkpoint: same
    # state, environment seed and policy key.
    assert float(match[1]) == pytest.approx(expected, abs=0.051)
    assert float(match[2]) == 0.0
    assert [p.name for p in (logdir / "eval_videos").iterdir()] == ["step000001000_episode001.gif"]
    assert {p for p in logdir.rglob("*") if "eval_videos" not in p.parts} == before


@pytest.mark.timeout(3600)
def test_load_api_acts_in_a_plain_loop(runs):
    import dreamer

    paths, futures = runs
    stopped = futures["stopped"].result()
    expected = at_step(stopped["metrics_at_1000"], 1000)["eval/return"]
    policy = dreamer.load(paths["at1000"])
    assert policy.step == 1000
    env = policy.make_env()
    try:
        obs, state, total = env.reset(), None, 0.0
        while not obs["is_last"]:
            action, state = policy(obs, state)
            obs = env.step(action)
            total += float(obs["reward"])
    finally:
        env.close()
    assert total == pytest.approx(expected, rel=1e-5)
    # One observation at a time: the env's dict or a bare image; nothing batched.
    image = obs["image"]
    action, state = policy(image)  # no state: a new episode
    assert action.shape == (1,) and action.dtype == np.float32 and np.all(np.abs(action) <= 1)
    again, _ = policy({"image": image, "is_first": False}, state)
    assert again.shape == (1,)
    with pytest.raises(ValueError, match="one observation image"):
        policy(image[None], state)


def test_evaluate_without_checkpoint_is_one_line_error(tmp_path, capsys):
    save_config(build_config(["debug"]), tmp_path / "config.yaml")
    assert evaluate_main(["--logdir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no checkpoint in") and err.count("\n") == 1
    assert evaluate_main(["--logdir", str(tmp_path / "missing")]) == 2
    assert "not the logdir of a training run" in capsys.readouterr().err
    assert evaluate_main(["--logdir", str(tmp_path), "--episodes", "0"]) == 2
    assert "positive integer" in capsys.readouterr().err
    assert evaluate_main(["--logdir", str(tmp_path), "--seed", "-1"]) == 2  # numpy's seeds are >= 0
    assert "expected a seed in [0, 2147483647], got '-1'" in capsys.readouterr().err


def test_evaluate_video_that_cannot_be_written_is_refused_before_any_episode(runs, tmp_path, capsys):
    paths, futures = runs
    assert futures["stopped"].result()["first"][0] == 0
    logdir = tmp_path / "run"
    shutil.copytree(paths["at1000"], logdir, ignore=shutil.ignore_patterns("eval_videos"))
    (logdir / "eval_videos").write_text("a file where the videos would go\n")
    before = {p: p.read_bytes() for p in logdir.rglob("*") if p.is_file()}
    assert evaluate_main(["--logdir", str(logdir), "--episodes", "1", "--video"]) == 2
    out, err = capsys.readouterr()
    assert err.startswith("error: cannot write videos into") and err.count("\n") == 1, err
    assert "episode 1/1" not in out  # refused before running an episode
    assert {p: p.read_bytes() for p in logdir.rglob("*") if p.is_file()} == before
