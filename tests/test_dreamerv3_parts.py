"""DreamerV3's techniques as switches of the one world model and actor-critic, each with
hand-computed values: symlog / symexp, two-hot regression and its gradient, zero-initialised
heads, unimix, the percentile return normaliser and the slow critic."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dreamer.core import ActorCritic, WorldModel
from dreamer.core.actor_critic import return_scale, update_return_range
from dreamer.core.latents import CategoricalLatent
from dreamer.core.twohot import symexp, symexp_bins, symlog, twohot, twohot_loss, twohot_mean
from tests.support import A, random_batch, tiny_config

E1 = math.e - 1  # symexp(1)
E2 = math.e ** 2 - 1  # symexp(2)


def test_symlog_symexp_hand_values_and_inverse():
    np.testing.assert_allclose(symlog(jnp.array([-E1, 0.0, E1, E2])), [-1.0, 0.0, 1.0, 2.0], rtol=1e-6)
    np.testing.assert_allclose(symexp(jnp.array([-2.0, 0.0, 1.0])), [-E2, 0.0, E1], rtol=1e-6)
    x = jnp.array([-1e6, -123.4, -1.0, -1e-3, 0.0, 1e-3, 0.5, 42.0, 1e6])
    np.testing.assert_allclose(symexp(symlog(x)), x, rtol=1e-5)
    np.testing.assert_allclose(symlog(symexp(x[2:-2])), x[2:-2], rtol=1e-5, atol=1e-6)


def test_symexp_bins():
    np.testing.assert_allclose(symexp_bins(5, limit=2.0), [-E2, -E1, 0.0, E1, E2], rtol=1e-6)
    bins = symexp_bins()
    assert bins.shape == (255,) and float(bins[127]) == 0.0
    np.testing.assert_array_equal(bins, -bins[::-1])  # exactly antisymmetric
    assert float(bins[-1]) == pytest.approx(math.expm1(20.0), rel=1e-5)
    with pytest.raises(ValueError, match="odd"):
        symexp_bins(4)


def test_twohot_encoding_hand_values_and_round_trip():
    bins = symexp_bins(5, limit=2.0)  # [-E2, -E1, 0, E1, E2]
    # 1.0 lies between 0 and E1: weight 1/E1 on E1, the rest on 0; the expectation is 1.0.
    np.testing.assert_allclose(twohot(jnp.array(1.0), bins), [0, 0, 1 - 1 / E1, 1 / E1, 0], rtol=1e-6)
    np.testing.assert_allclose(twohot(jnp.array(E1), bins), [0, 0, 0, 1, 0], atol=1e-7)  # on a bin
    np.testing.assert_allclose(twohot(jnp.array(100.0), bins), [0, 0, 0, 0, 1])  # clipped to the range
    np.testing.assert_allclose(twohot(jnp.array(-100.0), bins), [1, 0, 0, 0, 0])
    targets = jnp.array([-300.0, -5.0, -0.01, 0.0, 0.3, 2.0, 7.5, 1000.0])
    weights = twohot(targets, symexp_bins())
    np.testing.assert_allclose(weights.sum(-1), 1.0, rtol=1e-6)
    decoded = twohot_mean(jnp.log(jnp.maximum(weights, 1e-30)), symexp_bins())
    np.testing.assert_allclose(decoded, targets, rtol=1e-4, atol=1e-5)


def test_twohot_loss_and_its_gradient():
    """Cross-entropy against the two-hot target; its gradient in the logits is softmax - target."""
    bins = symexp_bins(5, limit=2.0)
    logits = jnp.zeros(5)
    target = jnp.array(1.0)
    expected_weights = np.array([0, 0, 1 - 1 / E1, 1 / E1, 0])
    loss = twohot_loss(logits, target, bins)
    assert float(loss) == pytest.approx(math.log(5.0), rel=1e-6)  # uniform: -log(1/5) whatever the target
    grad = jax.grad(twohot_loss)(logits, target, bins)
    np.testing.assert_allclose(grad, 0.2 - expected_weights, rtol=1e-5, atol=1e-7)
    assert float(jax.grad(twohot_loss, 1)(logits, target, bins)) == 0.0  # targets are constants


def test_zero_initialised_twohot_heads_predict_exactly_zero():
    cfg = tiny_config(**{"model.reward_head": "twohot", "behavior.critic": "twohot"})
    wm = WorldModel(cfg.model, A)
    params = wm.init(jax.random.PRNGKey(0))
    feat = jax.random.normal(jax.random.PRNGKey(1), (6, wm.feat_size)) * 10
    np.testing.assert_array_equal(wm.reward(params, feat), np.zeros(6))
    ac = ActorCritic(cfg.behavior, wm, A, discrete=False)
    state = ac.init(jax.random.PRNGKey(2))
    np.testing.assert_array_equal(ac.value_of(state.value, feat), np.zeros(6))
    # The two-hot reward loss trains: one update moves the prediction.
    batch = jax.tree.map(jnp.asarray, random_batch())
    loss, (_, metrics) = wm.loss(params, batch, jax.random.PRNGKey(3))
    assert float(metrics["reward_loss"]) == pytest.approx(math.log(255), rel=1e-5)
    new, _, _, _ = wm.update(params, wm.optimizer.init(params), batch, jax.random.PRNGKey(3))
    assert float(jnp.abs(wm.reward(new, feat)).max()) > 0


def test_unimix_hand_values():
    latent = CategoricalLatent(1, 4, unimix=0.01)
    stats = jnp.log(jnp.array([0.7, 0.1, 0.1, 0.1]))
    probs = jax.nn.softmax(latent.params(stats)["logits"])[0]
    np.testing.assert_allclose(probs, [0.99 * 0.7 + 0.0025, *(3 * [0.99 * 0.1 + 0.0025])], rtol=1e-5)
    certain = jax.nn.softmax(latent.params(jnp.array([100.0, 0.0, 0.0, 0.0]))["logits"])[0]
    assert float(certain.min()) == pytest.approx(0.0025, rel=1e-4)  # no class below u / C
    plain = CategoricalLatent(1, 4).params(stats)["logits"]
    np.testing.assert_array_equal(plain, stats[None])  # unimix 0 leaves the logits alone


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
    normed, aux = acs[0].actor_loss(state.actor, state.value, wm_params, start, key, reward_fn, jnp.zeros(2))
    plain, _ = acs[1].actor_loss(state.actor, state.value, wm_params, start, key, reward_fn, jnp.zeros(2))
    low, high = np.percentile(np.asarray(aux["returns"]), [5, 95])
    np.testing.assert_allclose(aux["return_range"], [low, high], rtol=1e-5)
    assert float(normed) == pytest.approx(float(plain) / max(1.0, high - low), rel=1e-5)


def test_slow_critic_ema_and_regulariser():
    cfg = tiny_config(**{"behavior.slow_critic_rate": 0.02, "behavior.slow_critic_reg": 1.0})
    wm = WorldModel(cfg.model, A)
    wm_params = wm.init(jax.random.PRNGKey(0))
    ac = ActorCritic(cfg.behavior, wm, A, discrete=False)
    state = ac.init(jax.random.PRNGKey(1))
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(state.value), jax.tree.leaves(state.slow_value)))
    # The regulariser: 0.5 (v - R)^2 + 0.5 (v - v_slow)^2 per state, weighted.
    slow = jax.tree.map(lambda x: x + 0.1, state.value)
    feat = jax.random.normal(jax.random.PRNGKey(2), (3, 4, wm.feat_size))
    returns, weight = jnp.ones((3, 4)), jnp.full((3, 4), 0.5)
    v, v_slow = ac.value_of(state.value, feat), ac.value_of(slow, feat)
    expected = (weight * (0.5 * (v - returns) ** 2 + 0.5 * (v - v_slow) ** 2)).mean()
    assert float(ac.value_loss(state.value, slow, feat, returns, weight)) == pytest.approx(float(expected), rel=1e-5)
    # One update: slow <- 0.98 slow + 0.02 value (the value after its own step).
    new, _ = ac.update(state, wm_params, wm.rssm.initial(4), jax.random.PRNGKey(3), lambda seq: seq["feat"][:, 1:, 0])
    for s0, v1, s1 in zip(*(jax.tree.leaves(x) for x in (state.slow_value, new.value, new.slow_value))):
        np.testing.assert_allclose(s1, 0.98 * s0 + 0.02 * v1, rtol=1e-5, atol=1e-7)
    assert ac.init(jax.random.PRNGKey(1)).slow_value != {} and ActorCritic(
        tiny_config().behavior, wm, A, discrete=False).init(jax.random.PRNGKey(1)).slow_value == {}


@pytest.mark.parametrize("norm,expected", [
    ("layer", np.array([-1.0, 0.0, 1.0]) / math.sqrt(2 / 3 + 1e-3)),  # (x - mean) / sqrt(var + eps)
    ("rms", np.array([1.0, 2.0, 3.0]) / math.sqrt(14 / 3 + 1e-4)),  # x / sqrt(mean(x^2) + eps)
    ("none", np.array([1.0, 2.0, 3.0]))])
def test_normalisation_before_the_activation(norm, expected):
    from dreamer.core.nets import NormAct
    layer = NormAct(norm, "linear")
    x = jnp.array([[1.0, 2.0, 3.0]])
    params = layer.init(jax.random.PRNGKey(0), x)
    np.testing.assert_allclose(layer.apply(params, x)[0], expected, rtol=1e-5)
    relu = NormAct(norm, "relu")
    np.testing.assert_allclose(relu.apply(params, x)[0], np.maximum(expected, 0), rtol=1e-5)


def test_norm_reaches_every_layer_of_model_and_actor_critic():
    from dreamer.agent import Dreamer
    agent = Dreamer(tiny_config(**{"model.norm": "rms", "model.gru": "dreamerv2"}), A, False)
    state = agent.init(jax.random.PRNGKey(0))
    names = {"/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)  # e.g. 1/params/MLP_0/...
             for path, _ in jax.tree_util.tree_leaves_with_path((state.wm, state.agent.actor, state.agent.value))}
    norms = {name for name in names if "RMSNorm" in name}
    for part in ("reward", "img_in_act", "img_hidden_act", "obs_hidden_act", "gru"):
        assert any(part in name for name in norms), part
    for index in ("1/", "2/"):  # the actor's and the critic's hidden layers
        assert any(name.startswith(index) for name in norms), index
    plain = Dreamer(tiny_config(), A, False).init(jax.random.PRNGKey(0))
    assert not any("Norm" in "/".join(map(str, p)) for p, _ in jax.tree_util.tree_leaves_with_path(plain.wm))


def test_every_switch_together_trains():
    """Dreamer's update with all of this file's switches on: finite metrics, every part moves."""
    from dreamer.agent import Dreamer
    overrides = {"model.latent": "categorical", "model.unimix": 0.01, "model.reward_head": "twohot",
                 "model.kl_dyn_scale": 0.5, "model.kl_rep_scale": 0.1, "model.free_nats": 1.0,
                 "model.free_nats_per_step": True, "model.cont_head": True, "behavior.critic": "twohot",
                 "model.norm": "rms", "model.act": "silu", "model.gru": "dreamerv2",
                 "model.optimizer": "laprop", "behavior.optimizer": "laprop", "model.warmup": 0,
                 "behavior.warmup": 0,
                 "behavior.slow_critic_rate": 0.02, "behavior.return_norm": "percentile"}
    agent = Dreamer(tiny_config(**overrides), A, False)
    state = agent.init(jax.random.PRNGKey(0))
    new, metrics = agent.train(jax.tree.map(jnp.copy, state), random_batch())
    assert all(np.isfinite(float(v)) for v in metrics.values())
    assert float(metrics["behavior/return_scale"]) >= 1.0
    for old_part, new_part in ((state.wm, new.wm), (state.agent.value, new.agent.value),
                               (state.agent.slow_value, new.agent.slow_value)):
        assert not all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(old_part), jax.tree.leaves(new_part)))


def test_adaptive_gradient_clipping_per_tensor():
    """Parameter [3, 4] (norm 5): a gradient [30, 40] (norm 50) is scaled to 0.3 x 5 = 1.5;
    a small one passes; a zero parameter counts as norm 1e-3."""
    from dreamer.core.nets import clip_by_agc
    agc = clip_by_agc(0.3)
    params = {"w": jnp.array([3.0, 4.0]), "b": jnp.zeros(2)}
    grads = {"w": jnp.array([30.0, 40.0]), "b": jnp.array([1.0, 0.0])}
    clipped, _ = agc.update(grads, agc.init(params), params)
    np.testing.assert_allclose(clipped["w"], [0.9, 1.2], rtol=1e-6)
    np.testing.assert_allclose(clipped["b"], [3e-4, 0.0], rtol=1e-6)
    small = {"w": jnp.array([0.3, 0.4]), "b": jnp.zeros(2)}
    np.testing.assert_allclose(agc.update(small, agc.init(params), params)[0]["w"], small["w"])


def test_laprop_two_steps_by_hand():
    """RMS-normalise (debiased, beta2 0.999), then debiased momentum (beta1 0.9) of that."""
    from dreamer.core.nets import laprop
    opt = laprop(lr=0.1, eps=0.0, agc=1e9, warmup=0)
    params = jnp.array([5.0, 5.0])
    state = opt.init(params)
    g1, g2 = np.array([1.0, -2.0]), np.array([3.0, 1.0])
    u1, state = opt.update(jnp.asarray(g1), state, params)
    np.testing.assert_allclose(u1, -0.1 * np.sign(g1), rtol=2e-5)  # step 1: the sign (float32 debiasing)
    u2, state = opt.update(jnp.asarray(g2), state, params)
    nu_hat = (0.999 * 0.001 * g1 ** 2 + 0.001 * g2 ** 2) / (1 - 0.999 ** 2)
    mu_hat = (0.9 * 0.1 * np.sign(g1) + 0.1 * g2 / np.sqrt(nu_hat)) / (1 - 0.9 ** 2)
    np.testing.assert_allclose(u2, -0.1 * mu_hat, rtol=2e-5)
    warm = laprop(lr=0.1, eps=0.0, agc=1e9, warmup=10)  # the rate ramps from 0
    assert float(jnp.abs(warm.update(jnp.asarray(g1), warm.init(params), params)[0]).max()) == 0.0
