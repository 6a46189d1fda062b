"""PlaNet: the CEM planner alone, the batched objective, and the agent's policy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from planet.agent import PlaNet
from tests.support import placed, tiny_config
from tests.tracing import count_traces
from planet.planner import cem, initial_plan, shift_plan



def test_cem_finds_quadratic_optimum():
    target = jnp.array([[0.5, -0.3], [-0.8, 0.1], [0.2, 0.9]])  # [H, A]

    def objective(actions, key):  # [N, H, A] -> [N], maximised at `target`
        return -jnp.sum(jnp.square(actions - target), (-2, -1))

    plan = jax.jit(lambda key: cem(objective, key, initial_plan(3, 2), iterations=10,
                                   candidates=1000, top_k=100))(jax.random.PRNGKey(0))
    np.testing.assert_allclose(plan.mean, target, atol=0.05)
    assert float(plan.std.max()) < 0.1  # the distribution has collapsed onto the optimum


def test_cem_respects_action_bounds():
    # The optimum lies outside [-1, 1]: the best feasible plan is the bound itself.
    objective = lambda actions, key: -jnp.sum(jnp.square(actions - 3.0), (-2, -1))  # noqa: E731
    plan = cem(objective, jax.random.PRNGKey(1), initial_plan(2, 1), iterations=8, candidates=200, top_k=20)
    np.testing.assert_allclose(plan.mean, 1.0, atol=0.05)


def test_shift_plan():
    plan = initial_plan(3, 1)._replace(mean=jnp.array([[1.0], [2.0], [3.0]]), std=jnp.full((3, 1), 0.1))
    shifted = shift_plan(plan)
    np.testing.assert_array_equal(shifted.mean[:, 0], [2.0, 3.0, 0.0])
    np.testing.assert_array_equal(shifted.std, 1.0)


@pytest.fixture(scope="module")
def traced_agent():
    with count_traces(PlaNet, "act") as traces:
        agent = PlaNet(tiny_config("planet"), 2, False)
        placed(agent)  # its jits wrap the counting methods
    return agent, traces


@pytest.fixture(scope="module")
def agent_and_state(traced_agent):
    agent, _ = traced_agent
    return agent, placed(agent).init(jax.random.PRNGKey(0))


def test_batched_planner_objective_equals_per_candidate_loop(agent_and_state):
    agent, state = agent_and_state
    latent = jax.tree.map(lambda x: x[0], agent.wm.rssm.initial(1))
    latent["deter"] = jnp.linspace(-1, 1, 8)
    candidates = jax.random.uniform(jax.random.PRNGKey(2), (5, 3, 2), minval=-1, maxval=1)
    keys = jax.random.split(jax.random.PRNGKey(3), 5)
    batched = jax.jit(jax.vmap(agent.rollout_return, (None, None, 0, 0)))(state.wm, latent, candidates, keys)
    looped = []
    for i in range(5):  # one candidate at a time, by hand: img_step and reward head per step
        s, total = jax.tree.map(lambda x: x[None], latent), 0.0
        for t, k in enumerate(jax.random.split(keys[i], 3)):
            _, k_step = jax.random.split(k)
            s = agent.wm.rssm.img_step(state.wm["rssm"], s, candidates[i, t][None], k_step)
            total += float(agent.wm.reward(state.wm, agent.wm.rssm.get_feat(s))[0])
        looped.append(total)
    np.testing.assert_allclose(batched, looped, rtol=1e-4, atol=1e-5)


def test_policy_traced_once_and_acts_in_bounds(agent_and_state, traced_agent):
    agent, state = agent_and_state
    pstate = agent.initial_policy_state(2)
    obs = {"image": jnp.zeros((2, 64, 64, 3), jnp.uint8), "is_first": jnp.ones(2, bool)}
    for i in range(3):
        action, pstate = placed(agent).policy(state, obs, pstate, jax.random.PRNGKey(i), "train")
        obs = {**obs, "is_first": jnp.zeros(2, bool)}
    assert traced_agent[1]["act"] == 1
    assert action.shape == (2, 2) and np.all(np.abs(action) <= 1.0)
    assert pstate["plan"].mean.shape == (2, 3, 2)
    # Evaluation executes the first step of the final CEM mean, with no noise.
    action, new = placed(agent).policy(state, obs, pstate, jax.random.PRNGKey(7), "eval")
    np.testing.assert_allclose(action, new["plan"].mean[:, 0], atol=1e-6)


def test_discrete_env_rejected():
    from dreamer.errors import ConfigError

    with pytest.raises(ConfigError, match="continuous"):
        PlaNet(tiny_config("planet"), 3, True)
