"""DreamerV3's image encoder and decoder (`model.cnn dreamerv3`) and the two exact
reformulations that make them cheaper on CPU: convolution plus max-pooling on 2 x 2 blocks
(`conv_maxpool`) and nearest upsampling plus convolution per output phase (`upsample_conv`).
Same layers and parameters as the official code's; the tests compare both with `lax`."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from dreamer.core.nets import BlockLinear, Dense, NormAct, conv_valid, kernel_init, space_to_depth


def upsample_conv(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """2x nearest-neighbour upsampling, then a stride-1 SAME convolution with an odd kernel:
    x [B, H, W, Cin], kernel [K, K, Cin, Cout] -> [B, 2H, 2W, Cout], computed without the
    upsampled image (the tests compare it with the two steps).

    Per axis, output pixel 2i + p reads upsampled pixels 2i + p + d for taps d in [-K//2, K//2],
    which are input pixels (2i + p + d) // 2 = i + (p + d) // 2: each output phase p is a
    convolution of the input itself whose taps are sums of the kernel's taps that land on the
    same input pixel. The four phases' kernels are stacked as output channels of one stride-1
    convolution over the input padded by R = (K//2 + 1) // 2, for 4 (2R + 1)^2 / (4 K^2) of the
    products of convolving the upsampled image (K = 5: 9 / 25).
    """
    k, _, cin, cout = kernel.shape
    half = k // 2
    reach = (half + 1) // 2  # input pixels either side that an output phase reads
    span = 2 * reach + 1
    # combine[p][t, d]: tap d of the kernel lands on input offset t - reach in phase p.
    combine = jnp.zeros((2, span, k), kernel.dtype)
    for phase in range(2):
        for d in range(k):
            combine = combine.at[phase, (phase + d - half) // 2 + reach, d].set(1.0)
    # [py, px, ty, tx, Cin, Cout] -> [ty, tx, Cin, (py, px, Cout)]
    phased = jnp.einsum("ayk,bxl,klio->abyxio", combine, combine, kernel)
    phased = jnp.transpose(phased, (2, 3, 4, 0, 1, 5)).reshape(span, span, cin, 4 * cout)
    xp = jnp.pad(x, ((0, 0), (reach, reach), (reach, reach), (0, 0)))
    b, h, w, _ = x.shape
    y = conv_valid(xp, phased.astype(x.dtype)).reshape(b, h, w, 2, 2, cout)
    return jnp.transpose(y, (0, 1, 3, 2, 4, 5)).reshape(b, 2 * h, 2 * w, cout)


class UpsampleConv(nn.Module):
    """`upsample_conv` with a standard [K, K, Cin, Cout] kernel and a bias: [B, H, W, Cin] ->
    [B, 2H, 2W, features], the same layer as nearest upsampling followed by a SAME convolution."""

    features: int
    kernel_size: int = 5
    dtype: jnp.dtype = jnp.float32
    initializer: str = "trunc_normal"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        k = self.kernel_size
        kernel = self.param("kernel", kernel_init(self.initializer), (k, k, x.shape[-1], self.features))
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        return upsample_conv(x.astype(self.dtype), kernel.astype(self.dtype)).astype(jnp.float32) + bias


def conv_maxpool(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """A stride-1 SAME convolution with a 5 x 5 kernel, then 2 x 2 max-pooling (even H, W), computed on
    2 x 2 blocks: x [B, H, W, Cin], kernel [5, 5, Cin, Cout] -> [B, H/2, W/2, Cout] (the tests
    compare it with the two steps).

    Each pooling window holds one output pixel of each phase (py, px); phase (py, px) of block
    i reads padded input rows 2i + py .. 2i + py + 4, which lie in blocks i .. i + 2. So one
    3 x 3 VALID convolution of the space-to-depth input (4 Cin channels) with the four phases'
    kernels stacked as 4 Cout outputs, then a max over the phases, is the layer. It multiplies
    36/25 of the products but gathers 9 x 4 Cin instead of 25 Cin input values per output
    pixel: faster where the gathering dominates (few channels, large images).
    """
    k, _, cin, cout = kernel.shape
    pad = k // 2
    # Phase p, block tap t, sub-row s reads kernel tap 2t + s - p (zero outside 0..k-1).
    select = jnp.zeros((2, 3, 2, k), kernel.dtype)  # [p, t, s, tap]
    for phase in range(2):
        for t in range(3):
            for sub in range(2):
                tap = 2 * t + sub - phase
                if 0 <= tap < k:
                    select = select.at[phase, t, sub, tap].set(1.0)
    # [py, ty, sy, dy] x [px, tx, sx, dx] x [dy, dx, Cin, Cout] -> [ty, tx, (sy, sx, Cin), (py, px, Cout)]
    phased = jnp.einsum("aysk,bxtl,klio->yxstiabo", select, select, kernel).reshape(3, 3, 4 * cin, 4 * cout)
    xp = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))  # H + 4: H/2 + 2 blocks
    y = conv_valid(space_to_depth(xp), phased.astype(x.dtype))  # [B, H/2, W/2, 4 Cout]
    return y.reshape(*y.shape[:3], 4, cout).max(-2)


class ConvMaxPool(nn.Module):
    """`conv_maxpool` with a standard [5, 5, Cin, Cout] kernel and a bias: [B, H, W, Cin] ->
    [B, H/2, W/2, features], the same layer as a SAME convolution followed by 2 x 2 max-pooling."""

    features: int
    dtype: jnp.dtype = jnp.float32
    initializer: str = "trunc_normal"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = self.param("kernel", kernel_init(self.initializer), (5, 5, x.shape[-1], self.features))
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        return conv_maxpool(x.astype(self.dtype), kernel.astype(self.dtype)).astype(jnp.float32) + bias


V3_MULTS = (2, 3, 4, 4)  # DreamerV3's CNN widths, in units of `depth`


class EncoderV3(nn.Module):
    """DreamerV3's image encoder: per stage a stride-1 kernel-5 convolution, 2 x 2 max-pooling
    (both in one `ConvMaxPool`), then normalisation and activation; widths depth x (2, 3, 4, 4),
    64 -> 4 pixels square.
    images [..., 64, 64, 3] in [-0.5, 0.5] -> [..., 16 x 4 depth]."""

    depth: int = 16
    norm: str = "rms"
    act: str = "silu"
    dtype: jnp.dtype = jnp.float32
    initializer: str = "trunc_normal"

    @nn.compact
    def __call__(self, image: jax.Array) -> jax.Array:
        lead = image.shape[:-3]
        x = image.reshape(-1, *image.shape[-3:]).astype(jnp.float32)
        for i, mult in enumerate(V3_MULTS):
            x = ConvMaxPool(self.depth * mult, self.dtype, self.initializer, name=f"conv{i}")(x)
            x = NormAct(self.norm, self.act, name=f"norm{i}")(x)
        return x.reshape(*lead, -1)


class DecoderV3(nn.Module):
    """DreamerV3's image decoder: latent features [..., F] (deter first, `deter` units) ->
    image means [..., size, size, 3] in [-0.5, 0.5] units.

    The 4 x 4 x 4 depth starting grid is a block-diagonal projection of deter (`blocks`
    blocks, each filling its own channels) plus a two-layer projection of stoch; then per
    stage 2x nearest upsampling and a stride-1 kernel-5 convolution, normalised and activated
    (widths depth x (4, 3, 2)), both in one `UpsampleConv`; the last stage outputs RGB through a
    sigmoid."""

    deter: int
    depth: int = 16
    units: int = 256
    blocks: int = 8
    size: int = 64
    out_channels: int = 3
    norm: str = "rms"
    act: str = "silu"
    dtype: jnp.dtype = jnp.float32
    initializer: str = "trunc_normal"

    @nn.compact
    def __call__(self, feat: jax.Array) -> jax.Array:
        lead = feat.shape[:-1]
        feat = feat.reshape(-1, feat.shape[-1])
        deter, stoch = feat[:, :self.deter], feat[:, self.deter:]
        res, g = self.size // 2 ** len(V3_MULTS), self.blocks
        channels = self.depth * V3_MULTS[-1]
        grid = BlockLinear(res * res * channels, g, self.dtype, self.initializer, name="deter_grid")(deter)
        grid = grid.reshape(-1, g, res, res, channels // g)  # each block owns channels // g
        grid = jnp.moveaxis(grid, 1, 3).reshape(-1, res, res, channels)
        x = Dense(2 * self.units, dtype=self.dtype, kernel_init=kernel_init(self.initializer), name="stoch_hidden")(stoch)
        x = NormAct(self.norm, self.act)(x)
        x = Dense(res * res * channels, dtype=self.dtype, kernel_init=kernel_init(self.initializer), name="stoch_grid")(x)
        x = NormAct(self.norm, self.act)(grid + x.astype(jnp.float32).reshape(-1, res, res, channels))
        widths = [self.depth * m for m in reversed(V3_MULTS[:-1])] + [self.out_channels]
        for i, width in enumerate(widths):
            x = UpsampleConv(width, 5, self.dtype, self.initializer, name=f"conv{i}")(x)
            if i < len(widths) - 1:
                x = NormAct(self.norm, self.act)(x)
        x = jax.nn.sigmoid(x) - 0.5
        return x.reshape(*lead, *x.shape[1:])
