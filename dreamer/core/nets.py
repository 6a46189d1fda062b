"""Neural network building blocks shared by every agent: MLPs, the conv encoder/decoder, GRUs.

The layers are those of Dreamer's reference code (TensorFlow / Keras): glorot-uniform kernels
and zero biases (`INIT`), the GRU with an orthogonal recurrent kernel, the convolutional
encoder and decoder of the Dreamer and PlaNet papers. The decoder upsamples with
`ConvTranspose2x`, a stride-2 transposed convolution, the same layer as `lax.conv_transpose`;
it and the encoder's convolutions compute through the CPU kernels of `dreamer.core.kernels`.
"""

from __future__ import annotations

import functools
from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from dreamer.core.kernels import conv_transpose_2x, conv_valid, dense_dot_general, space_to_depth

ACTIVATIONS: dict[str, Callable] = {"elu": nn.elu, "relu": nn.relu, "silu": nn.silu, "tanh": jnp.tanh,
                                    "linear": lambda x: x}


class NormAct(nn.Module):
    """Normalisation (if any) then the activation, in float32: LayerNorm (DreamerV2, eps
    1e-3) or RMSNorm (DreamerV3, eps 1e-4), each with a learned scale."""

    norm: str = "none"
    act: str = "elu"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = x.astype(jnp.float32)
        if self.norm == "layer":
            x = nn.LayerNorm(epsilon=1e-3, name="norm")(x)
        elif self.norm == "rms":
            x = nn.RMSNorm(epsilon=1e-4, name="norm")(x)
        return ACTIVATIONS[self.act](x)


# Keras' default kernel initialiser, which every reference implementation relied on; for
# convolutions the fans include the receptive field, as in Keras.
INIT = nn.initializers.glorot_uniform()


def kernel_init(name: str = "glorot", scale: float = 1.0) -> Callable:
    """A kernel initialiser by name, its values multiplied by `scale` (0: zeros).

    'glorot': Keras' glorot-uniform (Dreamer V1, PlaNet, Plan2Explore, DreamerV2). 'trunc_normal':
    DreamerV3's, a normal truncated at two standard deviations with variance 1 / fan-in. Fans
    include a convolution's receptive field; a block-diagonal kernel [G, I, O] has fan-in I.
    """
    if scale == 0:
        return nn.initializers.zeros
    if name == "glorot":
        return nn.initializers.variance_scaling(scale**2, "fan_avg", "uniform")
    if name == "trunc_normal":
        return nn.initializers.variance_scaling(scale**2, "fan_in", "truncated_normal")
    raise ValueError(f"unknown initialiser {name!r}")


# The Dense layer of every network here: `nn.Dense` (same parameters and names) with Keras'
# initialiser and its matmul through `kernels.matmul`.
Dense = functools.partial(nn.Dense, dot_general=dense_dot_general, kernel_init=INIT)


def clipped_adam(lr: float, eps: float, grad_clip: float) -> optax.GradientTransformation:
    """Adam on gradients whose global norm is clipped to `grad_clip`: the optimiser of the
    Dreamer, PlaNet and Plan2Explore papers' networks, each with its own settings."""
    # Nested as optax.adam's chain is, so that its state keeps the layout checkpoints hold.
    adam = optax.chain(scale_by_tf_adam(eps), optax.scale_by_learning_rate(lr))
    return optax.chain(optax.clip_by_global_norm(grad_clip), adam)


def scale_by_tf_adam(eps: float, b1: float = 0.9, b2: float = 0.999) -> optax.GradientTransformation:
    """Adam's direction as TensorFlow computes it, which the Dreamer, PlaNet and Plan2Explore
    reference code used: `eps` is added to the square root of the second moment before its
    bias correction, m_hat / (sqrt(v_hat) + eps / sqrt(1 - b2^t)), where `optax.scale_by_adam`
    adds it after (eps alone). The two differ where gradients are small, most in early steps.
    The state is optax's `ScaleByAdamState` (count, biased first and second moments)."""

    def init(params):
        return optax.ScaleByAdamState(jnp.zeros([], jnp.int32), jax.tree.map(jnp.zeros_like, params),
                                      jax.tree.map(jnp.zeros_like, params))

    beta1, beta2 = jnp.float32(b1), jnp.float32(b2)  # (1 - beta) in float32 in both places, as there

    def update(grads, state, params=None):
        mu = jax.tree.map(lambda m, g: beta1 * m + (1 - beta1) * g, state.mu, grads)
        nu = jax.tree.map(lambda v, g: beta2 * v + (1 - beta2) * jnp.square(g), state.nu, grads)
        count = state.count + 1
        t = count.astype(jnp.float32)
        first, second = 1 - beta1 ** t, 1 - beta2 ** t
        eps_t = eps / jnp.sqrt(second)
        updates = jax.tree.map(lambda m, v: (m / first) / (jnp.sqrt(v / second) + eps_t), mu, nu)
        return updates, optax.ScaleByAdamState(count, mu, nu)

    return optax.GradientTransformation(init, update)


def clip_by_agc(clip: float, min_norm: float = 1e-3) -> optax.GradientTransformation:
    """DreamerV3's adaptive gradient clipping, per parameter tensor: a gradient whose norm
    exceeds `clip` times the tensor's norm (at least `min_norm`) is scaled down to it."""

    def update(updates, state, params):
        def clip_one(update, param):
            limit = clip * jnp.maximum(min_norm, jnp.linalg.norm(param.ravel()))
            return update / jnp.maximum(1.0, jnp.linalg.norm(update.ravel()) / limit)
        return jax.tree.map(clip_one, updates, params), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def laprop(lr: float, eps: float, agc: float, warmup: int, beta1: float = 0.9, beta2: float = 0.999
           ) -> optax.GradientTransformation:
    """DreamerV3's optimiser: adaptive gradient clipping, then LaProp (the gradient divided by
    the debiased RMS of past gradients, then debiased momentum of that), at a learning rate
    ramped linearly from 0 over `warmup` updates. No global-norm clipping."""
    schedule = optax.linear_schedule(0.0, lr, warmup) if warmup else lr
    return optax.chain(clip_by_agc(agc), optax.scale_by_rms(beta2, eps, eps_in_sqrt=False, bias_correction=True),
                       optax.ema(beta1, debias=True), optax.scale_by_learning_rate(schedule))


def make_optimizer(kind: str, lr: float, eps: float, grad_clip: float, agc: float, warmup: int
                   ) -> optax.GradientTransformation:
    """`clipped_adam` ('adam', which ignores agc and warmup) or `laprop` (which ignores grad_clip)."""
    if kind == "laprop":
        return laprop(lr, eps, agc, warmup)
    return clipped_adam(lr, eps, grad_clip)


class MLP(nn.Module):
    """`layers` hidden Dense layers of `units`, then a linear output of `out` (if given), whose
    initial kernel is scaled by `out_scale` (DreamerV3: 0 for the reward and critic heads, whose
    first predictions are then exactly 0; 0.01 for the actor)."""

    layers: int
    units: int
    out: int | None = None
    act: str = "elu"
    dtype: jnp.dtype = jnp.float32
    out_scale: float = 1.0
    norm: str = "none"  # after each hidden layer, before the activation
    initializer: str = "glorot"  # see kernel_init

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for i in range(self.layers):
            x = Dense(self.units, dtype=self.dtype, kernel_init=kernel_init(self.initializer), name=f"linear{i}")(x)
            x = NormAct(self.norm, self.act, name=f"norm{i}")(x)
        if self.out is not None:
            x = Dense(self.out, dtype=self.dtype, kernel_init=kernel_init(self.initializer, self.out_scale),
                      name="out")(x)
        return x.astype(jnp.float32)


class GRU(nn.Module):
    """The standard gated recurrent unit as Keras' `GRUCell` computes it (reset gate applied
    after the recurrent matmul; glorot input kernel, orthogonal recurrent kernel, two zero
    biases), which Dreamer V1 used: carry [B, D], inputs [B, I] -> new carry [B, D]."""

    features: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, carry: jax.Array, inputs: jax.Array) -> jax.Array:
        x_parts = Dense(3 * self.features, dtype=self.dtype, name="input")(inputs).astype(jnp.float32)
        h_parts = Dense(3 * self.features, dtype=self.dtype, kernel_init=nn.initializers.orthogonal(),
                        name="recurrent")(carry).astype(jnp.float32)
        x_update, x_reset, x_cand = jnp.split(x_parts, 3, -1)
        h_update, h_reset, h_cand = jnp.split(h_parts, 3, -1)
        update = jax.nn.sigmoid(x_update + h_update)
        reset = jax.nn.sigmoid(x_reset + h_reset)
        cand = jnp.tanh(x_cand + reset * h_cand)
        return update * carry + (1.0 - update) * cand


class BlockLinear(nn.Module):
    """A block-diagonal Dense layer: the input's `blocks` equal slices each map to their slice
    of the output. x [..., I] -> [..., features]; kernel [G, I/G, features/G], fan-in I/G."""

    features: int
    blocks: int
    dtype: jnp.dtype = jnp.float32
    initializer: str = "trunc_normal"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        g = self.blocks
        shape = (g, x.shape[-1] // g, self.features // g)
        kernel = self.param("kernel", kernel_init(self.initializer), shape)
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        x = x.reshape(*x.shape[:-1], g, shape[1]).astype(self.dtype)
        y = jnp.einsum("...gi,gio->...go", x, kernel.astype(self.dtype), preferred_element_type=jnp.float32)
        return y.reshape(*y.shape[:-2], self.features) + bias


class BlockGRU(nn.Module):
    """DreamerV3's recurrent core: the next deterministic state from (deter [B, D], stoch [B, S],
    action [B, A]) -> [B, D].

    Deter, stoch and action each pass a normalised Dense layer of `hidden` units; their
    concatenation joins each of the `blocks` slices of deter, and a block-diagonal hidden layer
    and a block-diagonal gate layer follow, so each block's gates see only its own slice of the
    state (8 blocks: an eighth of a dense GRU's recurrent weights for the same state size). The
    gates are DreamerV2's (reset on the candidate, update biased by -1). Actions are first
    divided by max(1, |a|) (unbounded samples)."""

    features: int
    hidden: int
    blocks: int = 8
    norm: str = "rms"
    act: str = "silu"
    dtype: jnp.dtype = jnp.float32
    initializer: str = "trunc_normal"

    @nn.compact
    def __call__(self, deter: jax.Array, stoch: jax.Array, action: jax.Array) -> jax.Array:
        g = self.blocks
        action = action / jax.lax.stop_gradient(jnp.maximum(1.0, jnp.abs(action)))
        inputs = [NormAct(self.norm, self.act, name=f"{name}_norm")(
                      Dense(self.hidden, dtype=self.dtype, kernel_init=kernel_init(self.initializer), name=f"{name}_in")(x))
                  for name, x in (("deter", deter), ("stoch", stoch), ("action", action))]
        shared = jnp.concatenate(inputs, -1)[..., None, :]  # [B, 1, 3 hidden], joins every block
        own = deter.reshape(*deter.shape[:-1], g, self.features // g)
        x = jnp.concatenate([own, jnp.broadcast_to(shared, (*own.shape[:-1], shared.shape[-1]))], -1)
        x = x.reshape(*x.shape[:-2], -1)
        x = BlockLinear(self.features, g, self.dtype, self.initializer, name="hidden")(x)
        x = NormAct(self.norm, self.act, name="hidden_norm")(x)
        gates = BlockLinear(3 * self.features, g, self.dtype, self.initializer, name="gates")(x)
        gates = gates.reshape(*gates.shape[:-1], g, 3, self.features // g)  # per block: reset, cand, update
        reset, cand, update = (gates[..., i, :].reshape(*deter.shape) for i in range(3))
        reset = jax.nn.sigmoid(reset)
        cand = jnp.tanh(reset * cand)
        update = jax.nn.sigmoid(update - 1.0)
        return update * cand + (1.0 - update) * deter


class DreamerV2GRU(nn.Module):
    """DreamerV2's GRU: its three gates in one matmul over [inputs, carry], normalised with
    `norm` (DreamerV2: LayerNorm), the reset gate applied to the candidate's pre-activation,
    and the update gate biased by -1 towards keeping the state, which stabilises long rollouts.
    carry [B, D], inputs [B, I] -> [B, D]."""

    features: int
    dtype: jnp.dtype = jnp.float32
    norm: str = "none"
    initializer: str = "glorot"

    @nn.compact
    def __call__(self, carry: jax.Array, inputs: jax.Array) -> jax.Array:
        x = jnp.concatenate([inputs, carry], -1)
        x = Dense(3 * self.features, dtype=self.dtype, kernel_init=kernel_init(self.initializer), name="gates")(x)
        parts = NormAct(self.norm, "linear", name="gates_norm")(x)
        reset, cand, update = jnp.split(parts, 3, -1)
        reset = jax.nn.sigmoid(reset)
        cand = jnp.tanh(reset * cand)
        update = jax.nn.sigmoid(update - 1.0)
        return update * cand + (1.0 - update) * carry


class ConvTranspose2x(nn.Module):
    """Stride-2 VALID transposed convolution with a standard [K, K, Cin, Cout] kernel:
    [B, H, W, Cin] -> [B, 2H + K - 2, 2W + K - 2, Cout] (see `conv_transpose_2x`)."""

    features: int
    kernel_size: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        shape = (self.kernel_size, self.kernel_size, x.shape[-1], self.features)
        kernel = self.param("kernel", INIT, shape)
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        y = conv_transpose_2x(x.astype(self.dtype), kernel.astype(self.dtype))
        return y.astype(jnp.float32) + bias


class Encoder(nn.Module):
    """Four stride-2 4x4 VALID convolutions (depth 32, 64, 128, 256):
    images [..., 64, 64, 3] in [-0.5, 0.5] (see `WorldModel.preprocess`) -> [..., 32 * depth].

    A stride-2 kernel-4 VALID convolution equals a stride-1 kernel-2 convolution over the
    space-to-depth input, which XLA differentiates faster on CPU.
    """

    depth: int = 32
    act: str = "relu"
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, image: jax.Array) -> jax.Array:
        lead = image.shape[:-3]
        x = image.reshape(-1, *image.shape[-3:]).astype(jnp.float32)
        for i, mult in enumerate((1, 2, 4, 8)):
            x = Conv2s(self.depth * mult, dtype=self.dtype, name=f"conv{i}")(x)
            x = ACTIVATIONS[self.act](x)
        return x.reshape(*lead, -1)


class Conv2s(nn.Module):
    """Stride-2, kernel-4, VALID convolution with a standard [4, 4, Cin, Cout] kernel."""

    features: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:  # [B, H, W, Cin] -> [B, (H-2)//2, ., Cout]
        cin = x.shape[-1]
        kernel = self.param("kernel", INIT, (4, 4, cin, self.features))
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        h, w = x.shape[1] // 2 * 2, x.shape[2] // 2 * 2
        x = space_to_depth(x[:, :h, :w])  # [B, H/2, W/2, 4 Cin], block (dy, dx) -> channel
        # Kernel tap (2a+dy, 2b+dx) becomes tap (a, b) of the block channel (dy, dx).
        k = kernel.reshape(2, 2, 2, 2, cin, self.features)  # [a, dy, b, dx, Cin, Cout]
        k = jnp.transpose(k, (0, 2, 1, 3, 4, 5)).reshape(2, 2, 4 * cin, self.features)
        y = conv_valid(x.astype(self.dtype), k.astype(self.dtype))
        return y.astype(jnp.float32) + bias


class Decoder(nn.Module):
    """Latent features [..., F] -> image means [..., 64, 64, 3] (in [-0.5, 0.5] pixel units).

    The Dreamer and PlaNet papers' decoder: Dense to 32 depth as a 1 x 1 image, then stride-2
    VALID transposed convolutions of kernels 5, 5, 6, 6 (4, 2, 1 depth, then RGB): sizes
    1 -> 5 -> 13 -> 30 -> 64.
    """

    depth: int = 32
    act: str = "relu"
    out_channels: int = 3
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, feat: jax.Array) -> jax.Array:
        lead = feat.shape[:-1]
        x = Dense(32 * self.depth, dtype=self.dtype, name="linear")(feat.reshape(-1, feat.shape[-1]))
        x = x.astype(jnp.float32).reshape(-1, 1, 1, 32 * self.depth)
        layers: Sequence[tuple[int, int]] = ((4 * self.depth, 5), (2 * self.depth, 5), (self.depth, 6),
                                             (self.out_channels, 6))
        for i, (width, kernel) in enumerate(layers):
            x = ConvTranspose2x(width, kernel, dtype=self.dtype, name=f"deconv{i}")(x)
            if i < len(layers) - 1:
                x = ACTIVATIONS[self.act](x)
        return x.reshape(*lead, *x.shape[1:])
