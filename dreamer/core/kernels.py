"""The computational kernels under the layers, written for XLA's CPU backend: the same
operations as `jnp.matmul` and `lax` convolutions (the tests compare them), computed in the
shapes this backend runs fastest. Pure functions of arrays; the layers in `nets` and `cnn_v3`
hold the parameters and call them.

- `matmul`: bfloat16 operands multiplied with float32 accumulation and output, gradients
  included. XLA's CPU backend runs bf16 x bf16 -> f32 about twice as fast as float32, but
  bf16 -> bf16 slower than float32 (benchmarks/results/throughput.md), and the default
  gradient of a bf16 -> f32 matmul multiplies in float32.
- Convolutions as matmuls (`conv_valid`), stride-2 layers as stride-1 work on phases or 2 x 2
  blocks (`space_to_depth`, `conv_transpose_2x`, `upsample_conv`, `conv_maxpool`): XLA on CPU
  computes the weight gradient of a strided (transposed) convolution an order of magnitude
  slower than that of a stride-1 one, and its own convolution kernels slower than matmuls.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


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


def conv_valid(x: jax.Array, kernel: jax.Array, method: str | None = None) -> jax.Array:
    """Stride-1 VALID convolution as matmuls: x [B, H, W, Cin], kernel [kh, kw, Cin, Cout]
    -> [B, H-kh+1, W-kw+1, Cout]. Equal to `lax.conv_general_dilated` (the tests compare them),
    but XLA's CPU backend runs matmuls and their gradients several times faster than its
    convolution kernels for these shapes.

    method 'patches' gathers the kh*kw shifted windows into one [pixels, kh*kw*Cin] matrix
    (im2col) and multiplies once; 'shift' multiplies the unshifted input by all taps at once,
    [pixels, Cin] @ [Cin, kh*kw*Cout], then adds the taps' shifted slices (col2im). The FLOPs are
    the same; the memory traffic is not: 'shift' moves kh*kw*Cout floats per pixel instead of
    kh*kw*Cin, which pays off on large, narrowing layers (the encoder's second layer, the
    decoder's RGB output): there it roughly halves the time of forward plus backward on this
    CPU. None picks by that rule (`conv_method`).
    """
    kh, kw, cin, cout = kernel.shape
    b, h, w, _ = x.shape
    ho, wo = h - kh + 1, w - kw + 1
    method = method or conv_method(b * ho * wo, cin, cout)
    if method == "patches":
        patches = jnp.concatenate([x[:, i:i + ho, j:j + wo] for i in range(kh) for j in range(kw)], -1)
        out = matmul(patches.reshape(-1, kh * kw * cin), kernel.reshape(kh * kw * cin, cout))
        return out.reshape(b, ho, wo, cout)
    if method != "shift":
        raise ValueError(f"unknown conv method {method!r}")
    taps = jnp.moveaxis(kernel, 2, 0).reshape(cin, kh * kw * cout)  # [Cin, (tap, Cout)]
    z = matmul(x.reshape(-1, cin), taps).reshape(b, h, w, kh * kw, cout)
    return sum(z[:, i:i + ho, j:j + wo, i * kw + j] for i in range(kh) for j in range(kw))


def conv_method(pixels: int, cin: int, cout: int) -> str:
    """`conv_valid`'s method for a layer of `pixels` output pixels: 'shift' (col2im) for layers
    that narrow (Cout < Cin) over many pixels, where moving data dominates; 'patches' (im2col)
    elsewhere, where its single larger matmul runs closer to the ceiling. The threshold was
    measured on a 2-core AVX-512 CPU (benchmarks/results/throughput.md)."""
    return "shift" if cout < cin and pixels >= 2**16 else "patches"


def space_to_depth(x: jax.Array) -> jax.Array:
    """[..., H, W, C] -> [..., H/2, W/2, 4C] (2x2 blocks into channels)."""
    *lead, h, w, c = x.shape
    x = x.reshape(*lead, h // 2, 2, w // 2, 2, c)
    x = jnp.moveaxis(x, -4, -3)  # [..., H/2, W/2, 2, 2, C]
    return x.reshape(*lead, h // 2, w // 2, 4 * c)


def conv_transpose_2x(x: jax.Array, kernel: jax.Array, method: str | None = None) -> jax.Array:
    """Stride-2 VALID transposed convolution: x [B, H, W, Cin], kernel [K, K, Cin, Cout]
    -> [B, 2H + K - 2, 2W + K - 2, Cout] (TensorFlow's Conv2DTranspose, padding 'valid').

    Definition, per spatial axis: y[2j + k] += x[j] * kernel[k]. Output pixels of one parity
    (phase) p take the taps k = p + 2t of x[i - t], t < T = ceil(K / 2) (odd K gets a zero
    tap), so no strided gradient is ever needed. Two ways to compute the phases:

    'phases': one T x T VALID convolution (`conv_valid`) over x padded by T - 1, the four
    phases' kernels stacked as output channels. It computes 4 (H + T - 1)^2 T^2 tap products
    for the definition's H^2 K^2: near 1x on large inputs, 13x on a 1 x 1 input with K = 5.
    'taps': every input pixel times all taps in one matmul, [pixels, Cin] @ [Cin, 4 T^2 Cout],
    then each tap's product added into its phase at its shift (overlap-add): no padding
    products, but 4 T^2 Cout floats moved per input pixel.
    None picks 'taps' where 'phases' would compute at least twice the definition's products.
    Measured on this CPU, forward and backward, batch 800, the paper decoder's layers (1, 5,
    13, 30 pixels square): taps 139 / 360 / 1352 / 686 ms, phases 1289 / 504 / 702 / 676 ms.
    """
    k, _, cin, cout = kernel.shape
    b, h, w, _ = x.shape
    t = (k + 1) // 2
    if method is None:
        waste = 4 * (h + t - 1) * (w + t - 1) * t * t / (h * w * k * k)
        method = "taps" if waste >= 2 else "phases"
    # Zero taps up to 2T, then tap 2t + p -> [t, p] per axis: [ty, py, tx, px, Cin, Cout].
    padded = jnp.pad(kernel, ((0, 2 * t - k), (0, 2 * t - k), (0, 0), (0, 0))).reshape(t, 2, t, 2, cin, cout)
    if method == "phases":
        # Phase output i reads x[i - t] for tap t: a correlation with the taps reversed.
        k_phase = jnp.transpose(padded[::-1, :, ::-1], (0, 2, 4, 1, 3, 5)).reshape(t, t, cin, 4 * cout)
        xp = jnp.pad(x, ((0, 0), (t - 1, t - 1), (t - 1, t - 1), (0, 0)))
        phases = conv_valid(xp, k_phase.astype(x.dtype)).reshape(b, h + t - 1, w + t - 1, 2, 2, cout)
    elif method == "taps":
        taps = jnp.transpose(padded, (4, 0, 2, 1, 3, 5)).reshape(cin, t * t * 4 * cout)
        z = matmul(x.reshape(-1, cin), taps.astype(x.dtype)).reshape(b, h, w, t, t, 2, 2, cout)
        # Tap (ty, tx) of input pixel (j, i) lands on phase pixel (j + ty, i + tx).
        phases = sum(jnp.pad(z[:, :, :, ty, tx], ((0, 0), (ty, t - 1 - ty), (tx, t - 1 - tx)) + ((0, 0),) * 3)
                     for ty in range(t) for tx in range(t))
    else:
        raise ValueError(f"unknown transposed convolution method {method!r}")
    # phases [B, H+T-1, W+T-1, py, px, Cout]: output pixel (2i + py, 2j + px) at [i, j, py, px].
    y = jnp.transpose(phases, (0, 1, 3, 2, 4, 5)).reshape(b, 2 * (h + t - 1), 2 * (w + t - 1), cout)
    return y[:, :2 * h + k - 2, :2 * w + k - 2]  # odd K: the last row and column are zero taps


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
