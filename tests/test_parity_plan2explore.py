"""Plan2Explore's disagreement reward against the official code (ramanans1/plan2explore),
number for number.

The golden data (`tests/data/parity/plan2explore_disagreement.npz`, made by
`tests/parity/generate_plan2explore.py` from the official TensorFlow 1 code) holds an ensemble
of 5 one-step models as the official `define_model` builds them (each reads the recurrent state,
with the action joined to every layer's input; 4 targets, as many units), with random weights,
random imagined states and actions, every member's prediction and the official
`compute_intrinsic_reward` (the variance across members averaged over the targets, times
10,000). Ours: the official weights stacked into our ensemble, and our agent's
`intrinsic_reward` on an imagined sequence that reaches those states by those actions.
"""

from __future__ import annotations

from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from dreamer.config import build_config
from dreamer.registry import agent_class
from tests.support import TINY
from tests.test_parity_dreamerv3 import RTOL, relative_error

DATA = Path(__file__).resolve().parent / "data" / "parity" / "plan2explore_disagreement.npz"
LAYERS = {"dense": "linear0", "dense_1": "linear1", "dense_2": "out"}  # official -> ours


@pytest.fixture(scope="module")
def golden() -> dict:
    with np.load(DATA, allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


def ours(g: dict) -> tuple[np.ndarray, np.ndarray]:
    """(each member's prediction [K, N, H, D], the intrinsic reward [N, H]) of our agent."""
    members, batch, horizon, targets = g["prediction"].shape
    state_size, action_size = g["state"].shape[-1], g["action"].shape[-1]
    config = build_config(overrides={**TINY, "agent": "plan2explore", "env.obs": "vector",
                                     "model.deter": state_size, "model.stoch": targets,
                                     "explore.target": "stoch", "explore.ensemble": members,
                                     "explore.units": targets, "explore.layers": 2,
                                     "explore.normalise": "scale", "explore.scale": 10_000.0})
    agent = agent_class("plan2explore")(config, action_size, False, {"obs": ((3,), np.dtype(np.float32))})
    params = {"params": {ours_: {w: jnp.stack([g[f"param_{k}/{layer}/{w}"] for k in range(members)])
                                 for w in ("kernel", "bias")} for layer, ours_ in LAYERS.items()}}
    # Our imagined sequence starts one step earlier: feat[:, t + 1] is reached by action[:, t].
    deter = np.concatenate([np.zeros_like(g["state"][:, :1]), g["state"]], 1)
    feat = np.concatenate([deter, np.zeros((batch, horizon + 1, targets), np.float32)], -1)
    reward = agent.intrinsic_reward(params, jnp.asarray(1.0 / 10_000.0), {"feat": feat, "action": g["action"]})
    return np.asarray(agent.ensemble.predict(params, g["state"], g["action"])), np.asarray(reward)


def test_the_ensemble_and_its_disagreement_reward_match_the_official_code(golden):
    prediction, reward = ours(golden)
    assert relative_error(prediction, golden["prediction"]) <= RTOL
    assert relative_error(reward, golden["reward"]) <= RTOL
