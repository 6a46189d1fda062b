"""DreamerV3's actor-critic techniques as switches of the one actor-critic, each with
hand-computed values: the percentile return normaliser, the slow critic and its regulariser,
the replay value loss, the bounded normal policy and its central action, the returns and their
weights, the REINFORCE gradient, the entropy bonus and the replay returns."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dreamer.core import ActorCritic, WorldModel
from dreamer.core.actor_critic import return_scale, update_return_range
from tests.support import A, placed, random_batch, tiny_config


@pytest.mark.parametrize("rate,expected_range,expected_scale", [(0.01, (0.05, 0.95), 1.0), (1.0, (5.0, 95.0), 90.0)])
def test_percentile_return_normaliser(rate, expected_range, expected_scale):
    """Returns 0..100: the 5th and 95th percentiles are 5 and 95. From (0, 0), one EMA step at
    rate 0.01 gives (0.05, 0.95): range 0.9, scale max(1, 0.9) = 1; at rate 1 the range is 90."""
    cfg = tiny_config(**{"behavior.return_norm": "percentile", "behavior.return_norm_rate": rate}).behavior
    new = update_return_range(cfg, jnp.zeros(2), jnp.arange(101.0).reshape(1, 101))
    np.testing.assert_allclose(new, expected_range, rtol=1e-6)
    assert float(return_scale(cfg, new)) == pytest.approx(expected_scale)
    off = tiny_config().behavior
    assert float(return_scale(off, jnp.array([0.0, 90.0]))) == 1.0  # no normalisation


def test_actor_loss_is_divided_by_the_return_scale():
    cfg = tiny_config(**{"behavior.return_norm": "percentile", "behavior.return_norm_rate": 1.0})
    wm = WorldModel(cfg.model, A)
    wm_params = wm.init(jax.random.PRNGKey(0))
    plain_cfg = tiny_config()
    acs = [ActorCritic(c.behavior, wm, A, discrete=False) for c in (cfg, plain_cfg)]
    state = acs[0].init(jax.random.PRNGKey(1))
    start = wm.rssm.initial(8)
    reward_fn = lambda seq: 50.0 * jnp.tanh(seq["feat"][:, 1:].sum(-1))  # noqa: E731 (large, varied)
    key = jax.random.PRNGKey(2)
    normed, aux = acs[0].actor_loss(state.actor, state.critic, wm_params, start, key, reward_fn, jnp.zeros(2))
    plain, _ = acs[1].actor_loss(state.actor, state.critic, wm_params, start, key, reward_fn, jnp.zeros(2))
    low, high = np.percentile(np.asarray(aux["returns"]), [5, 95])
    np.testing.assert_allclose(aux["return_range"], [low, high], rtol=1e-5)
    assert float(normed) == pytest.approx(float(plain) / max(1.0, high - low), rel=1e-5)


def test_slow_critic_ema_and_regulariser():
    cfg = tiny_config(**{"behavior.slow_critic_rate": 0.02, "behavior.slow_critic_reg": 1.0})
    wm = WorldModel(cfg.model, A)
    wm_params = wm.init(jax.random.PRNGKey(0))
    ac = ActorCritic(cfg.behavior, wm, A, discrete=False)
    state = ac.init(jax.random.PRNGKey(1))
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(state.critic), jax.tree.leaves(state.slow_critic)))
    # The regulariser: 0.5 (v - R)^2 + 0.5 (v - v_slow)^2 per state, weighted.
    slow = jax.tree.map(lambda x: x + 0.1, state.critic)
    feat = jax.random.normal(jax.random.PRNGKey(2), (3, 4, wm.feat_size))
    returns, weight = jnp.ones((3, 4)), jnp.full((3, 4), 0.5)
    v, v_slow = ac.value_of(state.critic, feat), ac.value_of(slow, feat)
    expected = (weight * (0.5 * (v - returns) ** 2 + 0.5 * (v - v_slow) ** 2)).mean()
    assert float(ac.critic_loss(state.critic, slow, feat, returns, weight)) == pytest.approx(float(expected), rel=1e-5)
    # One update: slow <- 0.98 slow + 0.02 value (the value after its own step).
    update = jax.jit(lambda s, w, start, k: ac.update(s, w, start, k, lambda seq: seq["feat"][:, 1:, 0]))
    new, _, _ = update(state, wm_params, wm.rssm.initial(4), jax.random.PRNGKey(3))
    for s0, v1, s1 in zip(*(jax.tree.leaves(x) for x in (state.slow_critic, new.critic, new.slow_critic))):
        np.testing.assert_allclose(s1, 0.98 * s0 + 0.02 * v1, rtol=1e-5, atol=1e-7)
    assert ac.init(jax.random.PRNGKey(1)).slow_critic != {} and ActorCritic(
        tiny_config().behavior, wm, A, discrete=False).init(jax.random.PRNGKey(1)).slow_critic == {}


@pytest.mark.parametrize("replay_value_grad", [True, False])
def test_the_replay_value_loss_trains_the_representation_when_asked(replay_value_grad):
    """`update_agent_state` hands the world model 0.3 x the replay value loss (the critic before
    its step) as a function of the posterior states, or 0 with `replay_value_grad` off. (The
    whole update, this included, is compared with the official code in
    tests/test_parity_dreamerv3_update.py.)"""
    from dreamer.agent import Dreamer
    from dreamer.config import build_config
    from tests.support import TINY
    config = build_config(["dreamerv3"], {**TINY, "behavior.replay_value_grad": replay_value_grad})
    agent = Dreamer(config, A, False, {"v": ((3,), np.dtype(np.float32))})  # vectors: a quick compile
    state = placed(agent).init(jax.random.PRNGKey(0))
    # A critic that reads its input (its output layer starts at zero).
    value = jax.tree.map(lambda x: x + 0.1 * jax.random.normal(jax.random.PRNGKey(2), x.shape), state.agent.critic)
    state = state._replace(agent=state.agent._replace(critic=value))
    batch = {k: v for k, v in random_batch().items() if k != "image"}
    batch = jax.tree.map(jnp.asarray, {**batch, "v": np.ones(batch["reward"].shape + (3,), np.float32)})
    key = jax.random.PRNGKey(1)
    _, (post, _) = jax.jit(agent.wm.loss)(state.wm, batch, key)

    def wm_loss(deter):
        _, metrics, loss = agent.update_agent_state(state.agent, state.wm, {**post, "deter": deter}, batch, key)
        return loss, metrics["behavior/replay_value_loss"]
    (loss, replay_value_loss), grad = jax.jit(jax.value_and_grad(wm_loss, has_aux=True))(post["deter"])
    if replay_value_grad:
        assert float(loss) == pytest.approx(0.3 * float(replay_value_loss), rel=1e-5) and float(loss) > 0
        assert float(jnp.abs(grad[:, :-1]).max()) > 0 and float(jnp.abs(grad[:, -1]).max()) == 0  # states 0..T-2
    else:
        assert float(loss) == 0 and float(jnp.abs(grad).max()) == 0


def test_bounded_normal_policy():
    """Mean tanh(x); std (max - min) sigmoid(x + 2) + min; entropy the Gaussian's."""
    from dreamer.core.actor_critic import action_dist
    cfg = tiny_config(**{"behavior.actor_dist": "bounded_normal", "behavior.min_std": 0.1}).behavior
    out = jnp.array([[0.5, -100.0, -2.0, 100.0]])  # means (0.5, -100), raw stds (-2, 100)
    dist = action_dist(cfg, out, discrete=False)
    np.testing.assert_allclose(dist.mean(), [[math.tanh(0.5), -1.0]], rtol=1e-6)
    np.testing.assert_allclose(dist.stddev(), [[0.1 + 0.9 * 0.5, 1.0]], rtol=1e-6)
    gauss_entropy = lambda std: 0.5 * math.log(2 * math.pi * math.e) + math.log(std)  # noqa: E731
    assert float(dist.entropy()[0]) == pytest.approx(gauss_entropy(0.55) + gauss_entropy(1.0), rel=1e-5)


def test_the_policys_central_action_whose_spread_over_states_is_logged():
    """`location`: the bounded normal's mean tanh(x), the tanh-normal's median, the discrete
    probabilities; `behavior/action_spread` is its standard deviation over the start states."""
    cfg = tiny_config(**{"behavior.actor_dist": "bounded_normal"})
    wm = WorldModel(cfg.model, 2)
    out = jnp.array([[0.5, -1.0, 3.0, 0.0], [-0.5, 2.0, 0.0, 1.0]])  # 2 states: means, raw stds
    location = ActorCritic(cfg.behavior, wm, 2, discrete=False).location(out)
    np.testing.assert_allclose(location, np.tanh([[0.5, -1.0], [-0.5, 2.0]]), rtol=1e-6)
    spread = float(location.std(0).mean())  # what the metric computes of these two states
    # two values' population std is half their distance: per dimension tanh 0.5, |tanh -1 - tanh 2| / 2
    assert spread == pytest.approx((math.tanh(0.5) + abs(math.tanh(-1.0) - math.tanh(2.0)) / 2) / 2, rel=1e-5)
    tanh_normal = tiny_config(**{"behavior.actor_dist": "tanh_normal", "behavior.mean_scale": 5.0})
    median = ActorCritic(tanh_normal.behavior, wm, 2, discrete=False).location(out)
    np.testing.assert_allclose(median, np.tanh(5 * np.tanh(np.array([[0.5, -1.0], [-0.5, 2.0]]) / 5)), rtol=1e-6)
    probs = ActorCritic(cfg.behavior, wm, 3, discrete=True).location(jnp.log(jnp.array([[1.0, 1.0, 2.0]])))
    np.testing.assert_allclose(probs, [[0.25, 0.25, 0.5]], rtol=1e-6)


def _v3_actor_critic(**overrides):
    cfg = tiny_config(**{"behavior.returns": "dreamerv3", "behavior.actor_dist": "bounded_normal",
                         "behavior.min_std": 0.1, **overrides})
    wm = WorldModel(cfg.model, A)
    return cfg, wm, wm.init(jax.random.PRNGKey(0)), ActorCritic(cfg.behavior, wm, A, discrete=False)


def test_dreamerv3_returns_and_weights_by_hand():
    """H = 2, lambda 0.5, continuation c_t, rewards of arriving r_1, r_2, values v_0..v_2:
    R_1 = r_2 + c_2 v_2;  R_0 = r_1 + c_1 (0.5 v_1 + 0.5 R_1);  weights c_0, c_0 c_1 (folded)."""
    _, _, _, ac = _v3_actor_critic(**{"behavior.return_lambda": 0.5, "model.cont_head": True,
                                      "model.cont_discount": 0.9, "behavior.discount": 0.9})
    reward = jnp.array([[1.0, 2.0]])
    value = jnp.array([[10.0, 20.0, 30.0]])
    cont = jnp.array([[0.9, 0.8, 0.5]])
    returns, weight, states = ac.returns(reward, value, cont)
    r1 = 2.0 + 0.5 * 30.0
    r0 = 1.0 + 0.8 * (0.5 * 20.0 + 0.5 * r1)
    np.testing.assert_allclose(returns, [[r0, r1]], rtol=1e-6)
    np.testing.assert_allclose(weight, [[0.9, 0.9 * 0.8]], rtol=1e-6)
    assert states == slice(0, -1)


def test_reinforce_actor_gradient_is_advantage_times_score():
    """With rewards equal to the critic's own prediction of them nothing is learned: a zero
    critic and zero rewards give zero advantages, so only the entropy bonus moves the actor."""
    cfg, wm, wm_params, ac = _v3_actor_critic(**{"behavior.actor_grad": "reinforce", "behavior.critic": "twohot"})
    state = ac.init(jax.random.PRNGKey(1))  # the two-hot critic starts at exactly 0
    start = wm.rssm.initial(4)
    zero_reward = lambda seq: jnp.zeros(seq["action"].shape[:2])  # noqa: E731
    grads = jax.jit(jax.grad(lambda p: ac.actor_loss(p, state.critic, wm_params, start, jax.random.PRNGKey(2),
                                             zero_reward, jnp.zeros(2))[0]))(state.actor)
    assert all(not np.any(g) for g in jax.tree.leaves(grads))
    reward = lambda seq: seq["action"][..., 0]  # noqa: E731 (reward the first action dimension)
    loss_fn = lambda p: ac.actor_loss(p, state.critic, wm_params, start, jax.random.PRNGKey(2),  # noqa: E731
                                      reward, jnp.zeros(2))[0]
    assert any(np.any(g) for g in jax.tree.leaves(jax.jit(jax.grad(loss_fn))(state.actor)))
    # No gradient passes through the imagined dynamics (it does with 'dynamics').
    feat_reward = lambda seq: seq["feat"][:, 1:].sum(-1)  # noqa: E731
    for grad_kind, flows in (("reinforce", False), ("dynamics", True)):
        _, _, _, other = _v3_actor_critic(**{"behavior.actor_grad": grad_kind, "behavior.critic": "twohot"})
        wm_grads = jax.jit(jax.grad(lambda w: other.actor_loss(state.actor, state.critic, w, start, jax.random.PRNGKey(2),
                                                       feat_reward, jnp.zeros(2))[0]))(wm_params)
        assert any(np.any(g) for g in jax.tree.leaves(wm_grads["rssm"])) == flows, grad_kind


def test_entropy_bonus_enters_the_actor_loss():
    cfg, wm, wm_params, ac = _v3_actor_critic(**{"behavior.actor_grad": "reinforce", "behavior.critic": "twohot",
                                                 "behavior.actor_entropy": 0.5})
    state = ac.init(jax.random.PRNGKey(1))
    start = wm.rssm.initial(4)
    zero_reward = lambda seq: jnp.zeros(seq["action"].shape[:2])  # noqa: E731
    loss, aux = ac.actor_loss(state.actor, state.critic, wm_params, start, jax.random.PRNGKey(2), zero_reward,
                              jnp.zeros(2))
    entropy = ac.dist(state.actor, aux["feat"]).entropy()
    assert float(loss) == pytest.approx(float(-(aux["weight"] * 0.5 * entropy).mean()), rel=1e-5)


def test_replay_returns_by_hand():
    """T = 3, discount 0.5, lambda 0.5, bootstraps b_t (the imagined returns of each replayed
    state); step 1 ends the episode (is_last): R_0 = r_1 + 0.5 b_1 (no lambda past the end),
    R_1 = r_2 + 0.5 b_2 (the last index bootstraps)."""
    _, _, _, ac = _v3_actor_critic(**{"behavior.return_lambda": 0.5, "behavior.discount": 0.5})
    replay = {"reward": jnp.array([[0.0, 1.0, 2.0]]), "is_terminal": jnp.zeros((1, 3), bool),
              "is_last": jnp.array([[False, True, False]])}
    boot = jnp.array([[10.0, 20.0, 30.0]])
    np.testing.assert_allclose(ac.replay_returns(replay, boot), [[1.0 + 0.5 * 20.0, 2.0 + 0.5 * 30.0]], rtol=1e-6)
    replay["is_last"] = jnp.zeros((1, 3), bool)
    r1 = 2.0 + 0.5 * 30.0
    np.testing.assert_allclose(ac.replay_returns(replay, boot)[0, 0], 1.0 + 0.5 * (0.5 * 20.0 + 0.5 * r1), rtol=1e-6)
