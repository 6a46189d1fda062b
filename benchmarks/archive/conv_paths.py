"""Why the CNNs convolve through matmuls on the CPU: each stride-1 convolution of the Dreamer
V1 encoder and decoder, timed as `kernels.conv_valid`'s two matmul formulations and as XLA's own
convolution, forward, gradient to the input and gradient to the kernel separately.

    python -m benchmarks.archive.conv_paths [--batch 800] [--repeats 5]

The shapes are the paper-size model's at batch 16 x 50: the decoder's phase convolutions (see
`kernels.conv_transpose_2x`, 'phases') and the encoder's space-to-depth convolutions (`nets.Conv2s`).
The last column says which XLA CPU path ran `lax`: `ynn` (the YNNPACK library, XLA's default
for convolutions in jaxlib 0.10) or `eigen`; on other backends, the backend's name. Set
XLA_FLAGS to compare, e.g. `--xla_cpu_experimental_ynn_fusion_type=individual_dot,reduce` keeps
YNNPACK for matmuls and reductions but not convolutions. Prints milliseconds, median of
`--repeats`.
"""

from __future__ import annotations

import argparse
import functools

import jax
from jax import lax

from benchmarks.common import median_seconds
from dreamer.core import kernels

# name: (input height = width, Cin, kernel, Cout), the padded inputs the layers convolve.
SHAPES = {
    "decoder 13->30 (phases)": (17, 64, 3, 128),
    "decoder 30->64 (phases)": (34, 32, 3, 12),
    "encoder 64->31 (s2d)": (32, 12, 2, 32),
    "encoder 31->14 (s2d)": (15, 128, 2, 64),
    "encoder 14->6 (s2d)": (7, 256, 2, 128),
}


def lax_conv(x: jax.Array, kernel: jax.Array) -> jax.Array:
    return lax.conv_general_dilated(x, kernel, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))


METHODS = {"patches": functools.partial(kernels.conv_valid, method="patches"),
           "shift": functools.partial(kernels.conv_valid, method="shift"), "lax": lax_conv}


def median_ms(fn, args, repeats: int) -> float:
    """`fn(*args)` jitted: the median milliseconds of a call after a warm-up call."""
    compiled = jax.jit(fn)
    jax.block_until_ready(compiled(*args))
    return 1e3 * median_seconds(lambda: compiled(*args), repeats)


def time_parts(conv, x: jax.Array, kernel: jax.Array, dy: jax.Array, repeats: int) -> tuple[float, ...]:
    """Forward, input gradient and kernel gradient of `conv`, each in its own program."""
    grad_x = lambda x, k, dy: jax.vjp(lambda x: conv(x, k), x)[1](dy)[0]  # noqa: E731
    grad_k = lambda x, k, dy: jax.vjp(lambda k: conv(x, k), k)[1](dy)[0]  # noqa: E731
    return (median_ms(conv, (x, kernel), repeats), median_ms(grad_x, (x, kernel, dy), repeats),
            median_ms(grad_k, (x, kernel, dy), repeats))


def xla_path(x: jax.Array, kernel: jax.Array) -> str:
    """On CPU, the library XLA runs the convolution with; elsewhere the backend's name."""
    if jax.default_backend() != "cpu":
        return jax.default_backend()
    text = jax.jit(lax_conv).lower(x, kernel).compile().as_text()
    return "ynn" if "ynn_fusion" in text else "eigen"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=800)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    print(f"batch {args.batch}; ms forward / grad input / grad kernel; jax {jax.__version__}")
    print("| convolution | " + " | ".join(METHODS) + " | lax path |")
    print("| --- |" + " --- |" * (len(METHODS) + 1))
    for name, (size, cin, k, cout) in SHAPES.items():
        x = jax.random.normal(keys[0], (args.batch, size, size, cin))
        kernel = 0.05 * jax.random.normal(keys[1], (k, k, cin, cout))
        dy = jax.random.normal(keys[2], (args.batch, size - k + 1, size - k + 1, cout))
        cells = ["{:.0f} / {:.0f} / {:.0f}".format(*time_parts(conv, x, kernel, dy, args.repeats))
                 for conv in METHODS.values()]
        print(f"| {name} | " + " | ".join(cells) + f" | {xla_path(x, kernel)} |", flush=True)


if __name__ == "__main__":
    main()
