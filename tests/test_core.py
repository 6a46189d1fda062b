"""RSSM, world model, actor-critic and the Dreamer update on tiny sizes."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dreamer.agent import Dreamer
from dreamer.core import RSSM, ActorCritic, CategoricalLatent, GaussianLatent, WorldModel, action_dist, lambda_return
from tests.support import A, B, E, T, placed, random_batch, tiny_config
from tests.tracing import count_traces

def make_rssm(latent):
    rssm = RSSM(tiny_config(**{"model.latent": latent}).model, A)
    return rssm, rssm.init(jax.random.PRNGKey(0), E)


def random_inputs(seed=0):
    rng = np.random.default_rng(seed)
    embed = jnp.asarray(rng.normal(size=(B, T, E)), jnp.float32)
    action = jnp.asarray(rng.uniform(-1, 1, size=(B, T, A)), jnp.float32)
    is_first = jnp.zeros((B, T), bool).at[:, 0].set(True)
    return embed, action, is_first


# ----------------------------------------------------------------------------- RSSM

@pytest.mark.parametrize("latent,stoch", [("gaussian", 4), ("categorical", 12)])
def test_rssm_shapes(latent, stoch):
    rssm, params = make_rssm(latent)
    embed, action, is_first = random_inputs()
    post, prior = rssm.observe(params, embed, action, is_first, jax.random.PRNGKey(1))
    for state in (post, prior):
        assert state["deter"].shape == (B, T, 8)
        assert state["stoch"].shape == (B, T, stoch)
        assert rssm.get_feat(state).shape == (B, T, rssm.feat_size) == (B, T, 8 + stoch)
    if latent == "categorical":
        assert post["logits"].shape == (B, T, 4, 3)
        # Straight-through samples are exact one-hots in the forward pass.
        np.testing.assert_allclose(post["stoch"].reshape(B, T, 4, 3).sum(-1), 1.0, atol=1e-6)
    start = jax.tree.map(lambda x: x[:, -1], post)
    states, acts = rssm.imagine(params, start, jax.random.PRNGKey(2), horizon=6,
                                policy=lambda feat, k: jnp.tanh(feat[:, :A]))
    assert states["deter"].shape == (B, 6, 8) and acts.shape == (B, 6, A)


@pytest.mark.parametrize("latent", ["gaussian", "categorical"])
def test_observe_equals_step_loop(latent):
    rssm, params = make_rssm(latent)
    embed, action, is_first = random_inputs()
    key = jax.random.PRNGKey(3)
    post, prior = rssm.observe(params, embed, action, is_first, key)
    state = rssm.initial(B)
    for t, k in enumerate(jax.random.split(key, T)):
        state, step_prior = rssm.obs_step(params, state, action[:, t], embed[:, t], is_first[:, t], k)
        for name in state:
            np.testing.assert_allclose(post[name][:, t], state[name], rtol=1e-5, atol=1e-5)
            np.testing.assert_allclose(prior[name][:, t], step_prior[name], rtol=1e-5, atol=1e-5)


def test_imagine_with_actions_equals_img_step_loop():
    rssm, params = make_rssm("gaussian")
    embed, action, is_first = random_inputs()
    post, _ = rssm.observe(params, embed, action, is_first, jax.random.PRNGKey(0))
    start = jax.tree.map(lambda x: x[:, 2], post)
    key = jax.random.PRNGKey(5)
    states, acts = rssm.imagine(params, start, key, actions=action)
    np.testing.assert_array_equal(acts, action)
    state = start
    for t, k in enumerate(jax.random.split(key, T)):
        _, k_step = jax.random.split(k)
        state = rssm.img_step(params, state, action[:, t], k_step)
        np.testing.assert_allclose(states["deter"][:, t], state["deter"], rtol=1e-5, atol=1e-5)


def test_state_resets_at_episode_start():
    rssm, params = make_rssm("gaussian")
    embed, action, is_first = random_inputs()
    is_first = is_first.at[:, 3].set(True)
    key = jax.random.PRNGKey(4)
    post, _ = rssm.observe(params, embed, action, is_first, key)
    # Changing everything before the episode start must not change the states from it on.
    embed2 = embed.at[:, :3].set(embed[:, :3] + 5.0)
    action2 = action.at[:, :3].set(-action[:, :3])
    post2, _ = rssm.observe(params, embed2, action2, is_first, key)
    assert not np.allclose(post["deter"][:, 2], post2["deter"][:, 2])
    np.testing.assert_allclose(post["deter"][:, 3:], post2["deter"][:, 3:], rtol=1e-6)
    np.testing.assert_allclose(post["stoch"][:, 3:], post2["stoch"][:, 3:], rtol=1e-6)
    # The action stored at an episode start is ignored too (reset to zero).
    action3 = action.at[:, 3].set(0.9)
    post3, _ = rssm.observe(params, embed, action3, is_first, key)
    np.testing.assert_allclose(post["deter"][:, 3:], post3["deter"][:, 3:], rtol=1e-6)


# ----------------------------------------------------------------------------- KL

def gaussian(mean, std, n=4):
    return {"mean": jnp.full((1, n), mean), "std": jnp.full((1, n), std)}


def test_gaussian_kl_entropy_and_params_hand_values():
    latent = GaussianLatent(4, min_std=0.1)
    # KL(N(1,1) || N(0,1)) = 0.5 per dimension.
    assert float(latent.kl(gaussian(1.0, 1.0), gaussian(0.0, 1.0))[0]) == pytest.approx(2.0)
    # KL(N(0,2) || N(0,1)) = 0.5 (4 - 1 - ln 4) per dimension.
    expected = 4 * 0.5 * (4.0 - 1.0 - math.log(4.0))
    assert float(latent.kl(gaussian(0.0, 2.0), gaussian(0.0, 1.0))[0]) == pytest.approx(expected, rel=1e-5)
    # Entropy of N(0, 2): 0.5 ln(2 pi e 4) per dimension.
    expected = 4 * 0.5 * math.log(2 * math.pi * math.e * 4.0)
    assert float(latent.entropy(gaussian(0.0, 2.0))[0]) == pytest.approx(expected, rel=1e-5)
    # Statistics -> parameters: std = softplus(raw) + min_std; softplus(0) = ln 2.
    params = latent.params(jnp.zeros((1, 8)))
    np.testing.assert_allclose(params["std"], math.log(2.0) + 0.1, rtol=1e-6)
    assert latent.sample(params, jax.random.PRNGKey(0)).shape == (1, 4) == (1, latent.stoch_size)


def test_categorical_kl_entropy_and_sample_hand_values():
    latent = CategoricalLatent(4, 3)
    p, q = np.array([0.5, 0.25, 0.25]), np.array([0.8, 0.1, 0.1])
    lhs = {"logits": jnp.log(jnp.tile(p, (1, 4, 1)))}
    rhs = {"logits": jnp.log(jnp.tile(q, (1, 4, 1))) + 3.0}  # logits are shift invariant
    expected = 4 * float(np.sum(p * np.log(p / q)))
    assert float(latent.kl(lhs, rhs)[0]) == pytest.approx(expected, rel=1e-5)
    expected = -4 * float(np.sum(p * np.log(p)))
    assert float(latent.entropy(lhs)[0]) == pytest.approx(expected, rel=1e-5)
    sample = latent.sample(latent.params(jnp.zeros((1, 12))), jax.random.PRNGKey(0))
    assert sample.shape == (1, 12) and float(sample.sum()) == pytest.approx(4.0)  # one class per variable


@pytest.mark.parametrize("free_nats,expected", [(3.0, 6.0), (1.0, 4.0), (0.0, 4.0)])
def test_kl_loss_free_nats(free_nats, expected):
    """The default 1 / 1 parts: the KL's value twice, each part clipped at the free nats."""
    rssm = RSSM(tiny_config(**{"model.free_nats": free_nats}).model, A)
    loss, value = rssm.kl_loss(gaussian(1.0, 1.0), gaussian(0.0, 1.0))
    assert float(value) == pytest.approx(2.0)
    assert float(loss) == pytest.approx(expected)
    # Under the free nats there is no gradient at all.
    grad = jax.grad(lambda m: rssm.kl_loss(gaussian(m, 1.0), gaussian(0.0, 1.0))[0])(1.0)
    assert float(grad) == pytest.approx(0.0 if free_nats > 2.0 else 4.0 * 1.0)


@pytest.mark.parametrize("per_step", [False, True])
def test_kl_dynamics_and_representation_scales_split_the_gradient(per_step):
    """DreamerV3's 0.5 / 0.1 (DreamerV2's balancing with another total): the value is 0.6 KL;
    the prior gets 0.5 of the KL's gradient, the posterior 0.1; each part has its own free
    nats: with 3 free nats and a KL of 2, neither part has a gradient."""
    overrides = {"model.free_nats": 0.0, "model.kl_dyn_scale": 0.5, "model.kl_rep_scale": 0.1,
                 "model.free_nats_per_step": per_step}
    rssm = RSSM(tiny_config(**overrides).model, A)

    def loss(post_mean, prior_mean):
        return rssm.kl_loss(gaussian(post_mean, 1.0), gaussian(prior_mean, 1.0))[0]

    value = loss(1.0, 0.0)
    g_post, g_prior = jax.grad(loss, (0, 1))(1.0, 0.0)
    assert float(value) == pytest.approx(0.6 * 2.0)  # KL 2 (mean difference 1 over 4 dims)
    # d KL / d post_mean = 4 (mean difference 1 over 4 dims); prior gets 0.5 of it, post 0.1.
    assert float(g_post) == pytest.approx(0.1 * 4.0)
    assert float(g_prior) == pytest.approx(-0.5 * 4.0)
    free = RSSM(tiny_config(**{**overrides, "model.free_nats": 3.0}).model, A)
    g_free = jax.grad(lambda m: free.kl_loss(gaussian(m, 1.0), gaussian(0.0, 1.0))[0])(1.0)
    assert float(g_free) == 0.0


# ----------------------------------------------------------------------------- returns, actor

def test_lambda_return_matches_python_loop():
    rng = np.random.default_rng(0)
    n, h, lam = 3, 6, 0.9
    reward, value = rng.normal(size=(n, h)), rng.normal(size=(n, h))
    discount, bootstrap = rng.uniform(0.5, 1.0, size=(n, h)), rng.normal(size=n)
    expected = np.zeros((n, h))
    for i in range(n):
        nxt = bootstrap[i]
        for t in reversed(range(h)):
            next_value = value[i, t + 1] if t + 1 < h else bootstrap[i]
            nxt = reward[i, t] + discount[i, t] * ((1 - lam) * next_value + lam * nxt)
            expected[i, t] = nxt
    out = lambda_return(jnp.asarray(reward), jnp.asarray(value), jnp.asarray(discount),
                        jnp.asarray(bootstrap), lam)
    np.testing.assert_allclose(out, expected, rtol=1e-5)
    # lambda = 0 is the one-step TD target, lambda = 1 the Monte-Carlo return with bootstrap.
    td = lambda_return(jnp.asarray(reward), jnp.asarray(value), jnp.asarray(discount), jnp.asarray(bootstrap), 0.0)
    next_value = np.concatenate([value[:, 1:], bootstrap[:, None]], 1)
    np.testing.assert_allclose(td, reward + discount * next_value, rtol=1e-5)


def test_tanh_normal_log_prob():
    cfg = tiny_config().behavior
    out = jnp.array([[0.3, -0.7, 0.2, 0.1]])  # mean raw [0.3, -0.7], std raw [0.2, 0.1]
    dist = action_dist(cfg, out, discrete=False)
    action = jnp.array([[0.4, -0.2]])
    mean = cfg.mean_scale * np.tanh(np.array([0.3, -0.7]) / cfg.mean_scale)
    std = np.log1p(np.exp(np.array([0.2, 0.1]) + np.log(np.exp(cfg.init_std) - 1))) + cfg.min_std
    u = np.arctanh(np.array([0.4, -0.2]))
    normal = -0.5 * ((u - mean) / std) ** 2 - np.log(std) - 0.5 * np.log(2 * np.pi)
    expected = np.sum(normal - np.log(1 - np.array([0.4, -0.2]) ** 2))
    assert float(dist.log_prob(action)[0]) == pytest.approx(expected, rel=1e-4)


def test_onehot_actor_straight_through():
    cfg = tiny_config()
    wm = WorldModel(cfg.model, A)
    ac = ActorCritic(cfg.behavior, wm, A, discrete=True)
    state = ac.init(jax.random.PRNGKey(0))
    feat = jnp.ones((5, wm.feat_size))
    sample = ac.sample(state.actor, feat, jax.random.PRNGKey(1))
    np.testing.assert_allclose(sample.sum(-1), 1.0, atol=1e-6)
    assert set(np.unique(np.round(sample, 5))) <= {0.0, 1.0}
    grad = jax.grad(lambda p: ac.sample(p, feat, jax.random.PRNGKey(1))[:, 0].sum())(state.actor)
    assert any(float(jnp.abs(g).sum()) > 0 for g in jax.tree.leaves(grad))


# ----------------------------------------------------------------------------- the Dreamer update

@pytest.fixture(scope="module")
def agent_and_state():
    agent = Dreamer(tiny_config(), A, False)
    return agent, placed(agent).init(jax.random.PRNGKey(0))


def test_behaviour_update_leaves_world_model_untouched(agent_and_state):
    agent, state = agent_and_state
    batch = jax.tree.map(jnp.asarray, random_batch())
    key, k_wm, _ = jax.random.split(state.key, 3)
    wm_only, _, _, _ = jax.jit(agent.wm.update)(state.wm, state.wm_opt, batch, k_wm)
    copy = jax.tree.map(jnp.copy, state)  # `update` donates its input
    new_state, metrics, _ = placed(agent).update(copy, batch)
    for a, b in zip(jax.tree.leaves(wm_only), jax.tree.leaves(new_state.wm)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)  # two compilations: fusion may differ
    # ... while the actor and value did change.
    changed = [not np.allclose(a, b) for a, b in zip(jax.tree.leaves(state.agent.actor),
                                                     jax.tree.leaves(new_state.agent.actor))]
    assert any(changed)
    assert all(np.isfinite(float(v)) for v in metrics.values())


def test_behaviour_losses_see_the_world_model_before_its_step(agent_and_state):
    """As the reference code, which computes every loss before applying any optimiser: the
    actor-critic imagines with the world model's parameters from before the update."""
    agent, state = agent_and_state
    batch = jax.tree.map(jnp.asarray, random_batch())
    _, k_wm, k_agent = jax.random.split(state.key, 3)
    stepped_wm, _, post, _ = jax.jit(agent.wm.update)(state.wm, state.wm_opt, batch, k_wm)
    behaviour = jax.jit(agent.update_agent_state)
    _, before, _ = behaviour(state.agent, state.wm, post, batch, k_agent)
    _, after, _ = behaviour(state.agent, stepped_wm, post, batch, k_agent)
    _, metrics, _ = placed(agent).update(jax.tree.map(jnp.copy, state), batch)
    name = "behavior/imagined_return"
    assert abs(float(before[name]) - float(after[name])) > 1e-4 * abs(float(before[name]))  # the test can tell
    assert float(metrics[name]) == pytest.approx(float(before[name]), rel=1e-5)


def test_update_traced_once_and_loss_decreases():
    with count_traces(Dreamer, "update") as traces:
        agent = Dreamer(tiny_config(), A, False)
        placed(agent)  # its jits wrap the counting methods
    state = placed(agent).init(jax.random.PRNGKey(0))
    losses = []
    for i in range(8):  # fresh arrays each call, same contents: white frames the decoder can fit
        batch = random_batch(seed=1)  # (random frames are noise whose loss no model lowers)
        batch["image"][:] = 255
        state, metrics, _ = placed(agent).update(state, batch)
        losses.append(float(metrics["model/loss"]))
    assert traces["update"] == 1  # new batches of the same shapes never retrace
    assert all(b < a for a, b in zip(losses, losses[1:])), losses


def test_bfloat16_update_tracks_float32(agent_and_state):
    """`run.precision bfloat16`: the same first update as float32, up to bf16 rounding."""
    agent, state = agent_and_state
    agent_bf16 = Dreamer(tiny_config(**{"run.precision": "bfloat16"}), A, False)
    state_bf16 = placed(agent_bf16).init(jax.random.PRNGKey(0))
    batch = random_batch(seed=2)
    _, m32, _ = placed(agent).update(jax.tree.map(jnp.copy, state), batch)
    _, m16, _ = placed(agent_bf16).update(state_bf16, batch)
    assert all(np.isfinite(float(v)) for v in m16.values())
    for key in ("model/loss", "model/image_loss", "model/kl"):
        assert float(m16[key]) == pytest.approx(float(m32[key]), rel=0.02), key


def test_policy_modes(agent_and_state):
    agent, state = agent_and_state
    pstate = agent.initial_policy_state(3)
    obs = {"image": jnp.zeros((3, 64, 64, 3), jnp.uint8), "is_first": jnp.ones(3, bool)}
    a1, new_pstate = placed(agent).policy(state, obs, pstate, jax.random.PRNGKey(0), "eval")
    latent = new_pstate["latent"]
    # Evaluation acts with the actor's mode on the (sampled) posterior, as in Dreamer.
    _, k_act = jax.random.split(jax.random.PRNGKey(0))  # act's split: filter, then action
    mode = agent.ac.mode(state.agent.actor, agent.wm.rssm.get_feat(latent), k_act)
    np.testing.assert_allclose(a1, mode, rtol=1e-5, atol=1e-6)
    t1, new_pstate = placed(agent).policy(state, obs, pstate, jax.random.PRNGKey(0), "train")
    prev = new_pstate["action"]
    t2, _ = placed(agent).policy(state, obs, pstate, jax.random.PRNGKey(1), "train")
    assert t1.shape == (3, A) and np.all(np.abs(t1) <= 1.0)
    assert not np.allclose(t1, t2)  # sampling plus exploration noise
    np.testing.assert_array_equal(prev, t1)
