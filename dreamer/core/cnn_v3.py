"""DreamerV3's image encoder and decoder (`model.cnn dreamerv3`) and the two exact
reformulations that make them cheaper on CPU: convolution plus max-pooling on 2 x 2 blocks
(`conv_maxpool`) and nearest upsampling plus convolution per output phase (`upsample_conv`).
Same layers and parameters as the official code's; the tests compare both with `lax`."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from dreamer.core.kernels import conv_maxpool, upsample_conv
from dreamer.core.nets import BlockLinear, Dense, NormAct, kernel_init


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
        x = NormAct(self.norm, self.act, name="stoch_hidden_norm")(x)
        x = Dense(res * res * channels, dtype=self.dtype, kernel_init=kernel_init(self.initializer), name="stoch_grid")(x)
        x = NormAct(self.norm, self.act, name="grid_norm")(grid + x.astype(jnp.float32).reshape(-1, res, res, channels))
        widths = [self.depth * m for m in reversed(V3_MULTS[:-1])] + [self.out_channels]
        for i, width in enumerate(widths):
            x = UpsampleConv(width, 5, self.dtype, self.initializer, name=f"conv{i}")(x)
            if i < len(widths) - 1:
                x = NormAct(self.norm, self.act, name=f"norm{i}")(x)
        x = jax.nn.sigmoid(x) - 0.5
        return x.reshape(*lead, *x.shape[1:])
