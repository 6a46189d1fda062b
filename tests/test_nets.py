"""The speed-motivated layers compute exactly what the plain reference layers compute."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from dreamer.core.kernels import conv_transpose_2x, conv_valid, space_to_depth
from dreamer.core.nets import Conv2s, ConvTranspose2x, Decoder, Encoder


def reference_conv_transpose(x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """The definition, as loops: y[2j + k] += x[j] * kernel[k] per axis (VALID padding)."""
    b, h, w, _ = x.shape
    k, cout = kernel.shape[0], kernel.shape[-1]
    y = np.zeros((b, 2 * h + k - 2, 2 * w + k - 2, cout))
    for j in range(h):
        for i in range(w):
            for ky in range(k):
                for kx in range(k):
                    y[:, 2 * j + ky, 2 * i + kx] += x[:, j, i] @ kernel[ky, kx]
    return y


def lax_conv_transpose(x: jax.Array, kernel: jax.Array) -> jax.Array:
    # With transpose_kernel=True, lax.conv_transpose is the gradient of a strided convolution:
    # the same definition as TensorFlow's Conv2DTranspose with padding 'valid'.
    k = kernel.shape[0]
    return jax.lax.conv_transpose(x, kernel, (2, 2), ((k - 1, k - 1), (k - 1, k - 1)), transpose_kernel=True,
                                  dimension_numbers=("NHWC", "HWOI", "NHWC"))


@pytest.mark.parametrize("kernel_size", [4, 5, 6])
def test_conv_transpose_2x_matches_definition(kernel_size):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 3, 4, 5)).astype(np.float32)
    layer = ConvTranspose2x(6, kernel_size)
    params = layer.init(jax.random.PRNGKey(0), x)
    params = jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), jnp.float32), params)
    out = layer.apply(params, x)
    expected = reference_conv_transpose(x, np.asarray(params["params"]["kernel"])) + params["params"]["bias"]
    assert out.shape == (2, 4 + kernel_size, 6 + kernel_size, 6)
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("method", ["phases", "taps"])
@pytest.mark.parametrize("size,kernel_size", [(1, 5), (5, 5), (13, 6), (4, 4), (3, 3)])
def test_conv_transpose_2x_matches_lax_including_gradient(method, size, kernel_size):
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.normal(size=(2, size, size, 3)), jnp.float32)
    kernel = jnp.asarray(rng.normal(size=(kernel_size, kernel_size, 3, 2)), jnp.float32)
    ours = lambda x, k: conv_transpose_2x(x, k, method)  # noqa: E731
    expected = lax_conv_transpose(x, kernel)
    assert expected.shape == (2, 2 * size + kernel_size - 2, 2 * size + kernel_size - 2, 2)
    np.testing.assert_allclose(ours(x, kernel), expected, rtol=1e-5, atol=1e-4)
    g1 = jax.grad(lambda x, k: jnp.sum(jnp.sin(ours(x, k))), (0, 1))(x, kernel)
    g2 = jax.grad(lambda x, k: jnp.sum(jnp.sin(lax_conv_transpose(x, k))), (0, 1))(x, kernel)
    for a, b in zip(g1, g2):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_conv_transpose_method_rule():
    """The paper decoder's first two layers (1 x 1 and 5 x 5 inputs, kernel 5) would compute 13x
    and 2.8x the definition's products as phases and take 'taps'; its kernel-6 layers on 13 x 13
    and 30 x 30 inputs (1.3x, 1.1x) take 'phases'."""
    from dreamer.core import kernels
    chosen = []
    original = kernels.conv_valid
    kernels.conv_valid = lambda *a, **k: chosen.append("phases") or original(*a, **k)
    try:
        for size, kernel_size in [(1, 5), (5, 5), (13, 6), (30, 6)]:
            jax.eval_shape(kernels.conv_transpose_2x, jnp.zeros((1, size, size, 2)),
                           jnp.zeros((kernel_size, kernel_size, 2, 2)))
            chosen.append(size)
    finally:
        kernels.conv_valid = original
    assert chosen == [1, 5, "phases", 13, "phases", 30]


def test_strided_conv_matches_lax():
    rng = np.random.default_rng(2)
    for size in (64, 31, 14, 6):
        x = jnp.asarray(rng.normal(size=(2, size, size, 3)), jnp.float32)
        layer = Conv2s(5)
        params = layer.init(jax.random.PRNGKey(size), x)
        p = params["params"]
        expected = jax.lax.conv_general_dilated(x, p["kernel"], (2, 2), "VALID",
                                                dimension_numbers=("NHWC", "HWIO", "NHWC")) + p["bias"]
        out = layer.apply(params, x)
        assert out.shape == expected.shape == (2, (size - 4) // 2 + 1, (size - 4) // 2 + 1, 5)
        np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("method", ["patches", "shift"])
@pytest.mark.parametrize("cin,cout", [(3, 4), (6, 2)])
def test_conv_valid_matches_lax_including_gradient(method, cin, cout):
    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.normal(size=(2, 5, 6, cin)), jnp.float32)
    k = jnp.asarray(rng.normal(size=(2, 3, cin, cout)), jnp.float32)
    conv = lambda x, k: conv_valid(x, k, method)  # noqa: E731
    lax_conv = lambda x, k: jax.lax.conv_general_dilated(  # noqa: E731
        x, k, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    np.testing.assert_allclose(conv(x, k), lax_conv(x, k), rtol=1e-5, atol=1e-5)
    g1 = jax.grad(lambda x, k: jnp.sum(jnp.sin(conv(x, k))), (0, 1))(x, k)
    g2 = jax.grad(lambda x, k: jnp.sum(jnp.sin(lax_conv(x, k))), (0, 1))(x, k)
    for a, b in zip(g1, g2):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_conv_method_rule_picks_shift_only_for_large_narrowing_layers():
    from dreamer.core.kernels import conv_method
    assert conv_method(800 * 14 * 14, 4 * 32, 64) == "shift"  # the encoder's second layer (space-to-depth input)
    assert conv_method(800 * 31 * 31, 4 * 3, 32) == "patches"  # its first, widening layer
    assert conv_method(100, 64, 8) == "patches"  # tiny layers keep one im2col matmul


def test_space_to_depth_layout():
    x = jnp.arange(16.0).reshape(1, 4, 4, 1)
    y = space_to_depth(x)
    assert y.shape == (1, 2, 2, 4)
    np.testing.assert_array_equal(y[0, 0, 0], [0, 1, 4, 5])  # block (dy, dx) -> channel 2dy+dx
    np.testing.assert_array_equal(y[0, 1, 1], [10, 11, 14, 15])


def test_encoder_decoder_shapes():
    depth = 4
    image = jax.ShapeDtypeStruct((2, 3, 64, 64, 3), jnp.float32)
    enc = Encoder(depth)
    params = jax.eval_shape(enc.init, jax.random.PRNGKey(0), image)
    embed = jax.eval_shape(enc.apply, params, image)
    assert embed.shape == (2, 3, 2 * 2 * 8 * depth)  # 64 -> 31 -> 14 -> 6 -> 2
    dec = Decoder(depth)
    feat = jax.ShapeDtypeStruct((2, 3, 10), jnp.float32)
    out = jax.eval_shape(dec.apply, jax.eval_shape(dec.init, jax.random.PRNGKey(1), feat), feat)
    assert out.shape == (2, 3, 64, 64, 3)


def test_matmul_is_the_plain_matmul_in_float32_and_accumulates_bfloat16_in_float32():
    from dreamer.core.kernels import matmul
    rng = np.random.default_rng(4)
    x = jnp.asarray(rng.normal(size=(3, 5, 64)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(64, 7)), jnp.float32)
    np.testing.assert_array_equal(matmul(x, w), x @ w)
    xb, wb = x.astype(jnp.bfloat16), w.astype(jnp.bfloat16)
    exact = xb.astype(jnp.float32) @ wb.astype(jnp.float32)  # the bf16 inputs, multiplied exactly
    out = matmul(xb, wb)
    assert out.dtype == jnp.float32
    np.testing.assert_allclose(out, exact, rtol=1e-5, atol=1e-4)
    cotangent = jnp.asarray(rng.normal(size=(3, 5, 7)), jnp.float32)
    dx, dw = jax.grad(lambda a, b: jnp.sum(matmul(a, b) * cotangent), (0, 1))(xb, wb)
    ref_dx, ref_dw = jax.grad(lambda a, b: jnp.sum((a @ b) * cotangent), (0, 1))(
        xb.astype(jnp.float32), wb.astype(jnp.float32))
    assert dx.dtype == dw.dtype == jnp.bfloat16
    # Only the cotangent's rounding to bf16 and the result's to bf16 differ: about 2**-8 relative.
    np.testing.assert_allclose(dx.astype(jnp.float32), ref_dx, rtol=2e-2, atol=5e-2)
    np.testing.assert_allclose(dw.astype(jnp.float32), ref_dw, rtol=2e-2, atol=5e-2)


def test_dense_through_matmul_equals_flax_dense():
    import flax.linen as nn
    from dreamer.core.kernels import dense_dot_general
    x = jnp.asarray(np.random.default_rng(5).normal(size=(2, 3, 6)), jnp.float32)
    plain, ours = nn.Dense(4), nn.Dense(4, dot_general=dense_dot_general)
    params = plain.init(jax.random.PRNGKey(0), x)
    np.testing.assert_array_equal(ours.apply(params, x), plain.apply(params, x))


def test_adam_adds_epsilon_as_tensorflow_does():
    """Step t: m_hat / (sqrt(v_hat) + eps / sqrt(1 - 0.999^t)). At step 1 m_hat = g and
    sqrt(v_hat) = |g|, so a gradient of 1e-5 moves by 1e-5 / (1e-5 + 1e-7 / sqrt(0.001))
    (optax's Adam: 1e-5 / (1e-5 + 1e-7)); a large one by about 1."""
    from dreamer.core.nets import scale_by_tf_adam
    adam = scale_by_tf_adam(eps=1e-7)
    grads = {"w": jnp.array([1e-5, -2.0])}
    updates, state = adam.update(grads, adam.init(grads))
    eps_1 = 1e-7 / np.sqrt(1 - np.float32(0.999))
    np.testing.assert_allclose(updates["w"], [1e-5 / (1e-5 + eps_1), -2.0 / (2.0 + eps_1)], rtol=1e-5)
    updates, _ = adam.update(grads, state)  # same gradient again: the same direction
    eps_2 = 1e-7 / np.sqrt(1 - np.float32(0.999) ** 2)
    np.testing.assert_allclose(updates["w"], [1e-5 / (1e-5 + eps_2), -2.0 / (2.0 + eps_2)], rtol=1e-5)
