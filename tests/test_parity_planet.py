"""PlaNet's planner against the official `cross_entropy_method` (google-research/planet),
number for number.

The golden data (`tests/data/parity/planet_cem.npz`, made by `tests/parity/generate_planet.py`
from the official TensorFlow 1 code) holds a small known model, the proposals' standard-normal
noise and the mean the official planner returns after 1 and after 3 iterations (64 candidates,
the 8 best refitted, horizon 5). The model stands in for PlaNet's learned one: a recurrent cell
s' = tanh(s W + a U + b) and the objective sum_t s_t . w, the form of PlaNet's (the predicted
rewards summed along each rollout); our planner takes it as its injected objective. Both draw
the same noise at every iteration. What is compared is the search itself: proposals around the
mean, clipping to [-1, 1], the best by objective, the refit (mean, population variance plus
1e-6 under the square root).
"""

from __future__ import annotations

from pathlib import Path
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from planet.planner import cem, initial_plan
from tests.test_parity_dreamerv3 import RTOL, relative_error

DATA = Path(__file__).resolve().parent / "data" / "parity" / "planet_cem.npz"


@pytest.fixture(scope="module")
def golden() -> dict:
    with np.load(DATA, allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


def plan_mean(g: dict, iterations: int, top_k: int = 8) -> np.ndarray:
    noise = jnp.asarray(g["noise"])  # [candidates, horizon, actions]
    w, u, b = (jnp.asarray(g[f"cell_{k}"]) for k in ("W", "U", "b"))

    def objective(actions, key):  # [N, H, A] -> [N]
        def step(state, action):
            state = jnp.tanh(state @ w + action @ u + b)
            return state, state

        start = jnp.broadcast_to(jnp.asarray(g["cell_s0"]), (actions.shape[0], w.shape[0]))
        _, states = jax.lax.scan(step, start, actions.swapaxes(0, 1))  # [H, N, S]
        return (states @ jnp.asarray(g["cell_w"])).sum(0)

    def fixed_normal(key, shape, dtype=jnp.float32):
        assert tuple(shape) == noise.shape, shape
        return noise

    candidates, horizon, actions = noise.shape
    with mock.patch.object(jax.random, "normal", fixed_normal):
        plan = cem(objective, jax.random.PRNGKey(0), initial_plan(horizon, actions), iterations=iterations,
                   candidates=candidates, top_k=top_k)
    return np.asarray(plan.mean)


@pytest.mark.parametrize("iterations", [1, 3])
def test_the_planner_matches_the_official_cross_entropy_method(golden, iterations):
    official = golden[f"mean_{iterations}"]
    assert relative_error(plan_mean(golden, iterations), official) <= RTOL


def test_the_comparison_can_tell(golden):
    """Another refit (the 9 best instead of 8) moves the planned mean well past the bar."""
    assert relative_error(plan_mean(golden, 3, top_k=9), golden["mean_3"]) > 100 * RTOL
