"""DreamerV3's world-model techniques as switches of the one world model, each with
hand-computed values: symlog / symexp, two-hot regression and its gradient, zero-initialised
heads, unimix, normalisation, the optimizer (adaptive gradient clipping, LaProp), the networks
(block GRU, CNN, initialisers), the losses and the official parameter counts. The actor-critic's
are in test_dreamerv3_behavior.py."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dreamer.core import ActorCritic, WorldModel
from dreamer.core.latents import CategoricalLatent
from dreamer.core.twohot import symexp, symexp_bins, symlog, twohot, twohot_loss, twohot_mean
from tests.support import A, placed, random_batch, tiny_config

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
    np.testing.assert_array_equal(ac.value_of(state.critic, feat), np.zeros(6))
    # The two-hot reward loss (of the parameters before the step) is log 255 at uniform
    # probabilities, and trains: one update moves the prediction.
    batch = jax.tree.map(jnp.asarray, random_batch())
    new, _, _, metrics = jax.jit(wm.update)(params, wm.optimizer.init(params), batch, jax.random.PRNGKey(3))
    assert float(metrics["reward_loss"]) == pytest.approx(math.log(255), rel=1e-5)
    assert float(jnp.abs(wm.reward(new, feat)).max()) > 0


def test_twohot_mean_is_exact_at_uniform_probabilities_under_jit():
    """Bins reach 4.9e8: summing separately computed probabilities times bins gave thousands
    instead of 0 for a zero-initialised head under jit. The pairwise form gives exactly 0,
    the float64 expectation elsewhere, and the softmax-expectation gradient b_k / K at 0."""
    bins = symexp_bins(255)
    mean = jax.jit(twohot_mean)
    np.testing.assert_array_equal(mean(jnp.zeros((4, 255)), bins), np.zeros(4))
    logits = 3 * jax.random.normal(jax.random.PRNGKey(0), (64, 255))
    exact = (np.asarray(jax.nn.softmax(logits), np.float64) * np.asarray(bins, np.float64)).sum(-1)
    np.testing.assert_allclose(mean(logits, bins), exact, rtol=0, atol=1e-6 * float(bins[-1]))
    peaked = jnp.zeros((1, 255)).at[0, 200].set(300.0)  # gaps beyond sinh's float32 range
    np.testing.assert_allclose(mean(peaked, bins), bins[200:201], rtol=1e-6)
    grad = jax.jit(jax.grad(lambda x: twohot_mean(x, bins).sum()))(jnp.zeros((1, 255)))[0]
    np.testing.assert_allclose(grad, bins / 255, rtol=1e-5, atol=1.0)


def test_unimix_hand_values():
    latent = CategoricalLatent(1, 4, unimix=0.01)
    stats = jnp.log(jnp.array([0.7, 0.1, 0.1, 0.1]))
    probs = jax.nn.softmax(latent.params(stats)["logits"])[0]
    np.testing.assert_allclose(probs, [0.99 * 0.7 + 0.0025, *(3 * [0.99 * 0.1 + 0.0025])], rtol=1e-5)
    certain = jax.nn.softmax(latent.params(jnp.array([100.0, 0.0, 0.0, 0.0]))["logits"])[0]
    assert float(certain.min()) == pytest.approx(0.0025, rel=1e-4)  # no class below u / C
    plain = CategoricalLatent(1, 4).params(stats)["logits"]
    np.testing.assert_array_equal(plain, stats[None])  # unimix 0 leaves the logits alone


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
    state = placed(agent).init(jax.random.PRNGKey(0))
    names = {"/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)  # e.g. 1/params/mlp/...
             for path, _ in jax.tree_util.tree_leaves_with_path((state.wm, state.agent.actor, state.agent.critic))}
    norms = {name for name in names if name.endswith("/norm/scale")}  # RMSNorm: a scale, no bias
    for part in ("reward", "img_in_act", "img_hidden_act", "obs_hidden_act", "gru"):
        assert any(part in name for name in norms), part
    for index in ("1/", "2/"):  # the actor's and the critic's hidden layers
        assert any(name.startswith(index) for name in norms), index
    plain = placed(Dreamer(tiny_config(), A, False)).init(jax.random.PRNGKey(0))
    assert not any("/norm/" in "/".join(str(getattr(k, "key", k)) for k in path)
                   for path, _ in jax.tree_util.tree_leaves_with_path(plain.wm))


# ---------------------------------------------------------------- the optimizer

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


# ---------------------------------------------------------------- DreamerV3's networks and losses

def test_block_linear_is_a_block_diagonal_dense_layer():
    from dreamer.core.nets import BlockLinear
    layer = BlockLinear(features=4, blocks=2)
    x = jnp.arange(6.0).reshape(1, 6)  # two blocks of 3 inputs
    params = layer.init(jax.random.PRNGKey(0), x)
    kernel = params["params"]["kernel"]  # [2, 3, 2]
    assert kernel.shape == (2, 3, 2)
    dense = jnp.zeros((6, 4)).at[:3, :2].set(kernel[0]).at[3:, 2:].set(kernel[1])
    np.testing.assert_allclose(layer.apply(params, x), x @ dense, rtol=1e-6)


def test_block_gru_with_zero_weights_keeps_sigmoid_of_one_of_the_state():
    """Zero kernels: reset 0.5, candidate tanh(0) = 0, update sigmoid(0 - 1), so the new state is
    (1 - sigmoid(-1)) = 0.7311 times the old one; actions enter divided by max(1, |a|)."""
    from dreamer.core.nets import BlockGRU
    gru = BlockGRU(features=8, hidden=4, blocks=2)
    deter, stoch, action = jnp.linspace(-1, 1, 8)[None], jnp.ones((1, 3)), jnp.array([[3.0, -0.5]])
    params = gru.init(jax.random.PRNGKey(0), deter, stoch, action)
    zeros = jax.tree.map(lambda p: jnp.zeros_like(p) if p.ndim > 1 else p, params)
    np.testing.assert_allclose(gru.apply(zeros, deter, stoch, action), 0.7310586 * deter, rtol=1e-6)
    np.testing.assert_allclose(gru.apply(params, deter, stoch, action),
                               gru.apply(params, deter, stoch, jnp.array([[1.0, -0.5]])), rtol=1e-6)
    # Each block's gates read only its own slice of deter (besides the shared input layers and
    # the normalisation over all blocks): with the shared layers' kernels zero and no
    # normalisation, changing block 0's slice leaves block 1's output.
    gru = BlockGRU(features=8, hidden=4, blocks=2, norm="none")
    params = gru.init(jax.random.PRNGKey(0), deter, stoch, action)
    shared_off = jax.tree.map(jnp.copy, params)
    for name in ("deter_in", "stoch_in", "action_in"):
        shared_off["params"][name]["kernel"] = jnp.zeros_like(params["params"][name]["kernel"])
    moved = deter.at[0, :4].add(1.0)
    a, b = (gru.apply(shared_off, d, stoch, action) for d in (deter, moved))
    np.testing.assert_allclose(a[0, 4:], b[0, 4:], rtol=1e-6)
    assert not np.allclose(a[0, :4], b[0, :4])


def test_conv_maxpool_equals_lax_and_v3_cnn_shapes():
    """The encoder's block form of convolution plus max-pooling against `lax`, with gradients;
    the V3 CNNs' shapes and parameter counts by hand."""
    from dreamer.core.cnn_v3 import DecoderV3, EncoderV3
    from dreamer.core.kernels import conv_maxpool
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 6, 3))
    kernel = jax.random.normal(jax.random.PRNGKey(1), (5, 5, 3, 4))

    def reference(x, kernel):
        y = jax.lax.conv_general_dilated(x, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return y.reshape(2, 4, 2, 3, 2, 4).max((2, 4))

    np.testing.assert_allclose(conv_maxpool(x, kernel), reference(x, kernel), rtol=1e-5, atol=1e-4)
    weights = jax.random.normal(jax.random.PRNGKey(2), (2, 4, 3, 4))
    grads = [jax.grad(lambda a, b: (f(a, b) * weights).sum(), (0, 1))(x, kernel) for f in (conv_maxpool, reference)]
    for ours, theirs in zip(*grads):
        np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-3)
    encoder = EncoderV3(depth=2)
    image = jnp.zeros((3, 64, 64, 3))
    embed, enc_params = jax.jit(encoder.init_with_output)(jax.random.PRNGKey(0), image)
    assert embed.shape == (3, 4 * 4 * 8)  # 4 x 4 pixels of 4 depth channels
    # Hand count: kernel-5 convs 3 -> 4 -> 6 -> 8 -> 8 with biases, one RMS scale per channel.
    convs = [(3, 4), (4, 6), (6, 8), (8, 8)]
    assert sum(x.size for x in jax.tree.leaves(enc_params)) == sum(25 * i * o + 2 * o for i, o in convs)
    decoder = DecoderV3(deter=16, depth=2, units=4, blocks=8)
    image, _ = jax.jit(decoder.init_with_output)(jax.random.PRNGKey(0), jnp.ones((3, 16 + 6)))
    assert image.shape == (3, 64, 64, 3)
    assert float(image.min()) >= -0.5 and float(image.max()) <= 0.5  # a sigmoid, shifted


def test_kernel_initialisers():
    from dreamer.core.nets import kernel_init
    key = jax.random.PRNGKey(0)
    trunc = kernel_init("trunc_normal")(key, (400, 300))
    assert float(trunc.std()) == pytest.approx(1 / math.sqrt(400), rel=0.03)  # variance 1 / fan-in
    assert float(jnp.abs(trunc).max()) <= 2 / math.sqrt(400) * 1.14  # truncated at 2 std
    glorot = kernel_init("glorot")(key, (400, 300))
    assert float(glorot.std()) == pytest.approx(math.sqrt(2 / 700), rel=0.03)
    assert float(kernel_init("trunc_normal", 0.01)(key, (400, 300)).std()) == pytest.approx(
        0.01 / math.sqrt(400), rel=0.03)
    assert not np.any(kernel_init("glorot", 0.0)(key, (3, 3)))


def test_continuation_target_and_squared_error_image_loss():
    """cont_discount folds the discount into the continuation target; 'mse' is twice the
    Gaussian's 0.5 x squared error."""
    batch = random_batch()
    losses = {}
    for image_loss, disc in (("gaussian", 1.0), ("mse", 0.9)):
        cfg = tiny_config(**{"model.cont_head": True, "model.cont_discount": disc, "behavior.discount": disc,
                             "model.image_loss": image_loss})
        wm = WorldModel(cfg.model, A)
        params = wm.init(jax.random.PRNGKey(0))
        losses[image_loss] = wm.loss(params, batch, jax.random.PRNGKey(1))[1][1]
        logits = wm.cont_head.apply(params["cont"], wm.rssm.get_feat(wm.loss(params, batch, jax.random.PRNGKey(1))[1][0]))
        p = jax.nn.sigmoid(logits[..., 0])
        expected = -(disc * jnp.log(p) + (1 - disc) * jnp.log(1 - p)).mean()
        assert float(losses[image_loss]["cont_loss"]) == pytest.approx(float(expected), rel=1e-4)
    assert float(losses["mse"]["image_loss"]) == pytest.approx(2 * float(losses["gaussian"]["image_loss"]), rel=1e-5)


@pytest.mark.parametrize("kernel_size", [3, 5])
def test_upsample_conv_equals_nearest_upsampling_then_conv(kernel_size):
    """Values and gradients of the phase form against repeat-then-`lax` convolution."""
    from dreamer.core.kernels import upsample_conv
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 4, 5, 3))
    kernel = jax.random.normal(jax.random.PRNGKey(1), (kernel_size, kernel_size, 3, 4))

    def reference(x, kernel):
        up = jnp.repeat(jnp.repeat(x, 2, 1), 2, 2)
        return jax.lax.conv_general_dilated(up, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))

    np.testing.assert_allclose(upsample_conv(x, kernel), reference(x, kernel), rtol=1e-5, atol=1e-4)
    weights = jax.random.normal(jax.random.PRNGKey(2), (2, 8, 10, 4))
    grads = [jax.grad(lambda a, b: (f(a, b) * weights).sum(), (0, 1))(x, kernel) for f in (upsample_conv, reference)]
    for ours, theirs in zip(*grads):
        np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-3)


# The official code's parameter counts (danijar/dreamerv3 e3f0224, dmc_vision, a 6-dimensional
# action, every module but the slow critic), counted by running it: docs/dreamerv3.md.
OFFICIAL_PARAMETERS = {
    "size1m": {"rssm": 376704, "encoder": 14304, "decoder": 80595, "reward": 57663, "cont": 41153,
               "actor": 50316, "critic": 66111},
    "size12m": {"rssm": 5979648, "encoder": 220416, "decoder": 1272003, "reward": 721407, "cont": 656129,
                "actor": 791052, "critic": 853503},
}


@pytest.mark.parametrize("size", list(OFFICIAL_PARAMETERS))
def test_size_presets_have_the_official_parameter_counts(size):
    from dreamer.agent import Dreamer
    from dreamer.config import build_config
    counts = Dreamer(build_config(["dreamerv3", size]), 6, False).parameter_counts()
    ours = {name.removeprefix("world_model/"): n for name, n in counts.items()}
    assert ours == OFFICIAL_PARAMETERS[size]


def test_the_vector_model_has_the_official_parameter_counts():
    """`--configs dreamerv3 dreamerv3_proprio` on reacher easy's observations (position,
    to_target, velocity: 2 each) and 2-d action, against the official code's count of every
    module, printed by danijar/dreamerv3 e3f0224 itself (`--configs dmc_proprio size1m`,
    637,769 in all: dyn, enc, dec, rew, con, pol, val)."""
    import numpy as np

    from dreamer.agent import Dreamer
    from dreamer.config import build_config
    space = {key: ((2,), np.dtype(np.float32)) for key in ("position", "to_target", "velocity")}
    config = build_config(["dreamerv3", "dreamerv3_proprio"], {"env.name": "dmc_reacher_easy"})
    counts = Dreamer(config, 2, False, space).parameter_counts()
    assert {name.removeprefix("world_model/"): n for name, n in counts.items()} == {
        "rssm": 364160, "vector_encoder": 8960, "vector_decoder": 49926, "reward": 57663, "cont": 41153,
        "actor": 49796, "critic": 66111}
