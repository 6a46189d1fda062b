"""Adding an agent is one package: a toy fourth agent, written into a temporary folder with
its code, config section, preset and entry point, trains through `python -m dreamer.train
--agent toy` without any file of the library changing."""

from __future__ import annotations

import pytest

import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import yaml

from dreamer.logger import read_metrics

pytestmark = pytest.mark.e2e  # a plug-in agent installed and trained in a process

ROOT = Path(__file__).resolve().parent.parent

PACKAGE = {
    "toyagent/__init__.py": '''
        from importlib import resources

        from dreamer.registry import AgentSpec
        from toyagent.config import ToyConfig

        AGENT = AgentSpec(name="toy", agent="toyagent.agent:Toy", section="toy", config=ToyConfig,
                          preset=resources.files(__name__) / "toy.yaml",
                          description="a toy: acts on the first latent features")
    ''',
    "toyagent/config.py": '''
        import dataclasses

        from dreamer.core.config import option


        @dataclasses.dataclass(frozen=True)
        class ToyConfig:
            gain: float = option(1.0, positive=True)
    ''',
    "toyagent/agent.py": '''
        import jax.numpy as jnp

        from dreamer.base_agent import WorldModelAgent


        class Toy(WorldModelAgent):
            """The world model trained as every agent's; actions from the latent features."""

            def choose_action(self, state, pstate, is_first, key, mode):
                feat = self.wm.rssm.get_feat(pstate["latent"])[:, :self.action_size]
                action = jnp.tanh(self.config.toy.gain * feat)
                return (action if mode == "eval" else self.explore_noise(action, key)), pstate
    ''',
    "toyagent/toy.yaml": '''
        # The toy agent's own preset.
        toy:
          gain: 0.5
        model:
          kl_rep_scale: 0.25
    ''',
    # What installing the package writes: its metadata, with the entry point.
    "toyagent-0.1.dist-info/METADATA": "Metadata-Version: 2.1\nName: toyagent\nVersion: 0.1\n",
    "toyagent-0.1.dist-info/entry_points.txt": "[dreamer.agents]\ntoy = toyagent:AGENT\n",
}


def test_a_fourth_agent_from_its_own_package(tmp_path):
    site = tmp_path / "site"
    for name, text in PACKAGE.items():
        (site / name).parent.mkdir(parents=True, exist_ok=True)
        (site / name).write_text(textwrap.dedent(text).lstrip())
    logdir = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)])}
    result = subprocess.run(
        [sys.executable, "-m", "dreamer.train", "--agent", "toy", "--env", "dmc_cartpole_balance",
         "--configs", "debug", "--steps", "1500", "--run.video_every", "0", "--toy.gain", "0.25",
         "--logdir", str(logdir)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    config = yaml.safe_load((logdir / "config.yaml").read_text())
    assert config["agent"] == "toy"
    assert config["toy"] == {"gain": 0.25}  # its own section, set from the command line
    assert config["model"]["kl_rep_scale"] == 0.25  # its own preset, applied when it is chosen
    metrics = read_metrics(logdir / "metrics.jsonl")
    losses = [m["model/loss"] for m in metrics if "model/loss" in m]
    assert losses and all(math.isfinite(value) for value in losses)
    assert any("eval/return" in m for m in metrics)
