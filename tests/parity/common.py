"""What the parity generators share: their command line (`run`), the checkout check
(`pinned_commit`), their one error type, and the deterministic stand-ins for the random
samplers that both codebases use in a parity test (`fixed_normal`, `fixed_categorical`).

The generators run as scripts in the reference code's own environments, so this module imports
nothing beyond the standard library and NumPy at the top.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np


class GeneratorError(Exception):
    """A problem with the checkout or the environment: one line, nothing written."""


def pinned_commit(path: Path, repository: str, pinned: str) -> str:
    """The commit of the git checkout `path` of `repository`, which must be `pinned`."""
    try:
        commit = subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True,
                                text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        raise GeneratorError(f"'{path}' is not a git checkout: its commit cannot be checked "
                             f"(clone {repository} and check out {pinned[:7]})") from None
    if commit != pinned:
        raise GeneratorError(f"'{path}' is at commit {commit[:7]}, the data is pinned to "
                             f"{pinned[:7]}: git -C {path} checkout {pinned[:7]}")
    return commit


def run(argv, script: str, repository: str, default_out: Path, check_checkout, import_official, generate) -> int:
    """A generator's command line (shared by this library's parity generators): check the
    checkout, run `generate` on the imported official code, write the arrays and the commit to
    `--out` at once or nothing at all (one `error:` line, status 2)."""
    parser = argparse.ArgumentParser(prog=f"python tests/parity/{script}",
                                     description=f"Golden data from {repository}'s official code.")
    parser.add_argument("--official", type=Path, required=True, help=f"a git checkout of {repository}")
    parser.add_argument("--out", type=Path, default=default_out)
    args = parser.parse_args(argv)
    try:
        commit = check_checkout(args.official.resolve())
        data = generate(import_official(args.official.resolve()))
    except GeneratorError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    data["official_commit"] = np.array(commit)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(args.out.name + ".part")
    with open(tmp, "wb") as f:
        np.savez_compressed(f, **data)
    tmp.replace(args.out)
    print(f"wrote {len(data)} arrays to {args.out} (official {commit[:7]})")
    return 0


def load_module(name: str, path: Path):
    """The Python file `path` as the module `name` (registered in `sys.modules`), without
    importing the package around it: the TensorFlow 1 packages' `__init__` import their whole
    training stack."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def fixed_normal(key, shape=(), dtype=np.float32):
    """Stands in for `jax.random.normal`: the same values for the same shape, any key."""
    import jax.numpy as jnp

    count = int(np.prod(shape))
    return (1.2 * jnp.sin(0.7 * jnp.arange(count, dtype=jnp.float32) + 0.4)).reshape(shape).astype(dtype)


def fixed_categorical(key, logits, axis=-1, shape=None, replace=True):
    """Stands in for `jax.random.categorical`: the class whose log-probability plus a smooth
    function of it and of the class index is largest, whatever the key or the logits' offset."""
    import jax
    import jax.numpy as jnp

    assert axis == -1, axis
    logp = jax.nn.log_softmax(logits, -1)
    index = jnp.argmax(logp + 1.5 * jnp.sin(5.0 * logp + 2.1 * jnp.arange(logits.shape[-1])), -1)
    return index if shape is None else jnp.broadcast_to(index, shape)
