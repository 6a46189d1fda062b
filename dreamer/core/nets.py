"""Neural network building blocks shared by every agent: MLPs, the conv encoder/decoder, a GRU.

The decoder upsamples with `ConvTranspose2x`, a stride-2 transposed convolution computed as one
stride-1 convolution followed by a pixel interleave. It is mathematically the same layer as
`lax.conv_transpose` with a 4x4 kernel (tests compare them), but XLA on CPU computes the weight
gradient of a strided transposed convolution an order of magnitude slower than that of a
stride-1 convolution, and the decoder dominates the world-model update.
"""

from __future__ import annotations

import functools
from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

ACTIVATIONS: dict[str, Callable] = {"elu": nn.elu, "relu": nn.relu, "silu": nn.silu, "tanh": jnp.tanh}


@jax.custom_vjp
def _bf16_matmul(x: jax.Array, w: jax.Array) -> jax.Array:
    return jnp.matmul(x, w, preferred_element_type=jnp.float32)


def _bf16_matmul_fwd(x, w):
    return _bf16_matmul(x, w), (x, w)


def _bf16_matmul_bwd(residuals, grad):
    x, w = residuals
    grad = grad.astype(jnp.bfloat16)
    dx = jnp.matmul(grad, w.T, preferred_element_type=jnp.float32)
    dw = jnp.matmul(x.reshape(-1, x.shape[-1]).T, grad.reshape(-1, grad.shape[-1]),
                    preferred_element_type=jnp.float32)
    return dx.astype(x.dtype), dw.astype(w.dtype)


_bf16_matmul.defvjp(_bf16_matmul_fwd, _bf16_matmul_bwd)


def matmul(x: jax.Array, w: jax.Array) -> jax.Array:
    """x [..., K] @ w [K, N] -> [..., N]. Float32 operands: the plain matmul. Bfloat16 operands:
    products of bfloat16 accumulated and returned in float32, and the gradients' matmuls the
    same way. XLA's CPU backend runs bf16 x bf16 -> f32 about twice as fast as float32, but
    bf16 -> bf16 slower than float32 (benchmarks/results/throughput.md), and the default
    gradient of a bf16 -> f32 matmul multiplies in float32."""
    if x.dtype != jnp.bfloat16:
        return x @ w
    return _bf16_matmul(x, w.astype(jnp.bfloat16))


def dense_dot_general(lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None):
    """`nn.Dense(dot_general=...)`: its contraction (last axis of the input with the kernel's
    first) through `matmul`."""
    (lhs_contract, rhs_contract), (lhs_batch, rhs_batch) = dimension_numbers
    if tuple(lhs_contract) != (lhs.ndim - 1,) or tuple(rhs_contract) != (0,) or lhs_batch or rhs_batch:
        return jax.lax.dot_general(lhs, rhs, dimension_numbers, precision, preferred_element_type)
    return matmul(lhs, rhs)


# The Dense layer of every network here: `nn.Dense` (same parameters and names) with its
# matmul through `matmul`.
Dense = functools.partial(nn.Dense, dot_general=dense_dot_general)


def clipped_adam(lr: float, eps: float, grad_clip: float) -> optax.GradientTransformation:
    """Adam on gradients whose global norm is clipped to `grad_clip`: the optimiser of every
    network here (world model, actor, value, ensemble), each with its own settings."""
    return optax.chain(optax.clip_by_global_norm(grad_clip), optax.adam(lr, eps=eps))


class MLP(nn.Module):
    """`layers` hidden Dense layers of `units`, then a linear output of `out` (if given)."""

    layers: int
    units: int
    out: int | None = None
    act: str = "elu"
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for _ in range(self.layers):
            x = ACTIVATIONS[self.act](Dense(self.units, dtype=self.dtype)(x))
        if self.out is not None:
            x = Dense(self.out, dtype=self.dtype)(x)
        return x.astype(jnp.float32)


class GRU(nn.Module):
    """Gated recurrent unit with its three gates in one matmul (fewer, larger kernels).

    carry [B, D], inputs [B, I] -> new carry [B, D]. The update gate starts biased towards
    keeping the state (DreamerV2's variant), which stabilises long rollouts.
    """

    features: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, carry: jax.Array, inputs: jax.Array) -> jax.Array:
        x = jnp.concatenate([inputs, carry], -1)
        parts = Dense(3 * self.features, dtype=self.dtype)(x).astype(jnp.float32)
        reset, cand, update = jnp.split(parts, 3, -1)
        reset = jax.nn.sigmoid(reset)
        cand = jnp.tanh(reset * cand)
        update = jax.nn.sigmoid(update - 1.0)
        return update * cand + (1.0 - update) * carry


def conv_valid(x: jax.Array, kernel: jax.Array, method: str | None = None) -> jax.Array:
    """Stride-1 VALID convolution as matmuls: x [B, H, W, Cin], kernel [kh, kw, Cin, Cout]
    -> [B, H-kh+1, W-kw+1, Cout]. Equal to `lax.conv_general_dilated` (the tests compare them),
    but XLA's CPU backend runs matmuls and their gradients several times faster than its
    convolution kernels for these shapes.

    method 'patches' gathers the kh*kw shifted windows into one [pixels, kh*kw*Cin] matrix
    (im2col) and multiplies once; 'shift' multiplies the unshifted input by all taps at once,
    [pixels, Cin] @ [Cin, kh*kw*Cout], then adds the taps' shifted slices (col2im). The FLOPs are
    the same; the memory traffic is not: 'shift' moves kh*kw*Cout floats per pixel instead of
    kh*kw*Cin, which pays off on large, narrowing layers (the decoder's RGB output, the
    encoder's second layer): there it roughly halves the time of forward plus backward on this
    CPU. None picks by that rule (see `_prefer_shift`).
    """
    kh, kw, cin, cout = kernel.shape
    b, h, w, _ = x.shape
    ho, wo = h - kh + 1, w - kw + 1
    method = method or ("shift" if _prefer_shift(b * ho * wo, cin, cout) else "patches")
    if method == "patches":
        patches = jnp.concatenate([x[:, i:i + ho, j:j + wo] for i in range(kh) for j in range(kw)], -1)
        out = matmul(patches.reshape(-1, kh * kw * cin), kernel.reshape(kh * kw * cin, cout))
        return out.reshape(b, ho, wo, cout)
    if method != "shift":
        raise ValueError(f"unknown conv method {method!r}")
    taps = jnp.moveaxis(kernel, 2, 0).reshape(cin, kh * kw * cout)  # [Cin, (tap, Cout)]
    z = matmul(x.reshape(-1, cin), taps).reshape(b, h, w, kh * kw, cout)
    return sum(z[:, i:i + ho, j:j + wo, i * kw + j] for i in range(kh) for j in range(kw))


def _prefer_shift(pixels: int, cin: int, cout: int) -> bool:
    """Col2im for layers that narrow (Cout < Cin) over many output pixels, where moving data
    dominates; im2col elsewhere, where its single larger matmul runs closer to the ceiling.
    The threshold was measured on a 2-core AVX-512 CPU (benchmarks/results/throughput.md)."""
    return cout < cin and pixels >= 2**16


def space_to_depth(x: jax.Array) -> jax.Array:
    """[..., H, W, C] -> [..., H/2, W/2, 4C] (2x2 blocks into channels)."""
    *lead, h, w, c = x.shape
    x = x.reshape(*lead, h // 2, 2, w // 2, 2, c)
    x = jnp.moveaxis(x, -4, -3)  # [..., H/2, W/2, 2, 2, C]
    return x.reshape(*lead, h // 2, w // 2, 4 * c)


class ConvTranspose2x(nn.Module):
    """Stride-2 transposed convolution, kernel 4, output size 2H x 2W (PyTorch padding=1).

    Reference definition, per spatial axis: y[2j + k - 1] += x[j] * kernel[k], k in 0..3.
    Output row 2i takes taps k=3 (from x[i-1]) and k=1 (from x[i]); row 2i+1 takes k=2 (x[i])
    and k=0 (x[i+1]). So one 2x2 stride-1 convolution over x padded by one, with the four
    phases' kernels stacked as output channels, computes every output pixel once; the phases
    are then interleaved. Same FLOPs as the transposed convolution, no strided gradient.
    """

    features: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:  # [B, H, W, Cin] -> [B, 2H, 2W, Cout]
        cin, cout = x.shape[-1], self.features
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (4, 4, cin, cout))
        bias = self.param("bias", nn.initializers.zeros, (cout,))
        # Phase p uses the kernel taps (first tap, second tap) over the padded input window.
        taps = jnp.array([[3, 1], [2, 0]])  # [phase, tap]
        k = kernel[taps[:, None, :, None], taps[None, :, None, :]]  # [py, px, ty, tx, Cin, Cout]
        k = jnp.transpose(k, (2, 3, 4, 0, 1, 5)).reshape(2, 2, cin, 4 * cout)
        xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
        z = conv_valid(xp.astype(self.dtype), k.astype(self.dtype))  # [B, H+1, W+1, 4*Cout]
        b, h, w = x.shape[0], x.shape[1], x.shape[2]
        z = z.reshape(b, h + 1, w + 1, 2, 2, cout)
        # Phase (py, px) of output pixel (2i+py, 2j+px) sits at z[i+py, j+px].
        rows = [jnp.stack([z[:, py:py + h, px:px + w, py, px] for px in (0, 1)], 3) for py in (0, 1)]
        y = jnp.stack(rows, 2)  # [B, H, 2, W, 2, Cout]
        return y.reshape(b, 2 * h, 2 * w, cout).astype(jnp.float32) + bias


class Encoder(nn.Module):
    """Four stride-2 4x4 convolutions (depth 32, 64, 128, 256): [B, 64, 64, 3] -> [B, 32*depth].

    A stride-2 kernel-4 VALID convolution equals a stride-1 kernel-2 convolution over the
    space-to-depth input, which XLA differentiates faster on CPU. Images arrive as uint8.
    """

    depth: int = 32
    act: str = "elu"
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, image: jax.Array) -> jax.Array:
        lead = image.shape[:-3]
        x = image.reshape(-1, *image.shape[-3:]).astype(jnp.float32) / 255.0 - 0.5
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
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (4, 4, cin, self.features))
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

    Dense to 4x4x(8 depth), then four `ConvTranspose2x` (8 depth -> 4, 2, 1 depth -> 3).
    """

    depth: int = 32
    act: str = "elu"
    out_channels: int = 3
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, feat: jax.Array) -> jax.Array:
        lead = feat.shape[:-1]
        x = Dense(4 * 4 * 8 * self.depth, dtype=self.dtype)(feat.reshape(-1, feat.shape[-1]))
        x = x.astype(jnp.float32).reshape(-1, 4, 4, 8 * self.depth)
        widths: Sequence[int] = (4 * self.depth, 2 * self.depth, self.depth, self.out_channels)
        for i, width in enumerate(widths):
            x = ConvTranspose2x(width, dtype=self.dtype, name=f"deconv{i}")(x)
            if i < len(widths) - 1:
                x = ACTIVATIONS[self.act](x)
        return x.reshape(*lead, *x.shape[1:])
