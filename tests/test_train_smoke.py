"""End-to-end: the training command with the debug preset writes the documented logdir."""

import math
from pathlib import Path

import pytest
import yaml

from dreamer.logger import read_metrics

from tests.support import run_train

pytestmark = pytest.mark.e2e  # the training command on MuJoCo


def check_logdir(logdir: Path, steps: int, episode_length: int) -> list[dict]:
    config = yaml.safe_load((logdir / "config.yaml").read_text())
    assert config["steps"] == steps
    metrics = read_metrics(logdir / "metrics.jsonl")
    assert all("step" in m for m in metrics)
    names = set().union(*metrics)
    for name in ("train/return", "eval/return", "model/loss", "model/kl", "model/image_loss"):
        assert name in names, f"{name} missing from metrics.jsonl"
    assert max(m["step"] for m in metrics) == steps
    episodes = sorted((logdir / "replay").glob("*.npz"))
    assert len(episodes) >= steps // (episode_length * 2)
    assert list(logdir.glob("events.out.tfevents.*"))
    videos = {p.name.rsplit("_", 1)[0] for p in (logdir / "videos").glob("*.gif")}
    assert {"eval_policy", "train_openloop"} <= videos
    values = [value for m in metrics for key, value in m.items() if key != "step"]
    assert values and all(math.isfinite(value) for value in values)  # every loss, return and rate
    return metrics


def test_dreamer_debug_run(tmp_path):
    logdir = tmp_path / "run"
    result = run_train("--env", "dmc_walker_walk", "--configs", "debug", "--steps", "3000",
                       "--logdir", str(logdir))
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = check_logdir(logdir, 3000, 1000)
    assert config_agent(logdir) == "dreamer"
    assert any("behavior/actor_loss" in m for m in metrics)


def config_agent(logdir: Path) -> str:
    return yaml.safe_load((logdir / "config.yaml").read_text())["agent"]


def test_planet_debug_run(tmp_path):
    logdir = tmp_path / "run"
    result = run_train("--env", "dmc_cartpole_balance", "--agent", "planet", "--configs", "debug",
                       "--steps", "3000", "--logdir", str(logdir))
    assert result.returncode == 0, result.stderr[-3000:]
    check_logdir(logdir, 3000, 1000)
    config = yaml.safe_load((logdir / "config.yaml").read_text())
    assert config["agent"] == "planet"
    assert config["env"]["action_repeat"] == 8  # PlaNet's per-task setting for cartpole


@pytest.mark.parametrize("agent", ["dreamer", "planet", "plan2explore"])
def test_every_agent_runs_on_the_dreamerv3_world_model(tmp_path, agent):
    """`--configs dreamerv3 debug`: DreamerV3's world model (and for Dreamer and Plan2Explore its
    actor-critic) at debug size, end to end; the run prints its parameter count."""
    logdir = tmp_path / "run"
    result = run_train("--env", "dmc_cartpole_swingup", "--agent", agent, "--configs", "dreamerv3", "debug",
                       "--steps", "1500", "--env.action_repeat", "2", "--run.video_every", "0",
                       "--logdir", str(logdir))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "parameters: " in result.stderr and "world_model" in result.stderr
    config = yaml.safe_load((logdir / "config.yaml").read_text())
    assert (config["agent"], config["model"]["gru"], config["model"]["cnn"]) == (agent, "block", "dreamerv3")
    metrics = read_metrics(logdir / "metrics.jsonl")
    values = [value for m in metrics for key, value in m.items() if key != "step"]
    assert values and all(math.isfinite(value) for value in values)
    assert any("model/cont_loss" in m for m in metrics)
    if agent != "planet":
        assert any("behavior/actor_entropy" in m for m in metrics)
