"""Golden data from the official Dreamer (V1) code, for tests/test_parity_dreamer_v1.py.

    python tests/parity/generate_dreamer_v1.py --official PATH [--out tests/data/parity/dreamer_v1_update.npz]

PATH is a git checkout of danijar/dreamer at the pinned commit (`OFFICIAL_COMMIT`), and this
script runs in an environment where that code runs: Python 3.8 with tensorflow-cpu 2.2.3,
tensorflow-probability 0.10.1, numpy 1.18.5, gym 0.17.3 and protobuf 3.20.3 (newer TensorFlow
has no `tensorflow.keras.mixed_precision.experimental`, which the code imports). It imports
nothing of this library but the sampler stand-in's definition.

It builds the official agent (`dreamer.Dreamer`'s modules and optimisers, through its own
`_build_model`) at a tiny float32 config, gives every bias a random value, resets the
optimisers, and runs one `Dreamer._train` step on a batch of 2 x 4 steps. It writes every
parameter before the step (`param_<module>/<layer>/<weight>`), the batch (`batch_`), the loss
terms (`loss_`: the image and reward negative log-likelihoods, the clipped KL, the model,
actor and value losses, each optimiser's gradient norm), every parameter's gradient before
clipping (`grad_`), the update Adam made of the clipped gradient (`update_`, Adam on
zero-valued copies) and the parameters after the step (`after_`). The
samples come from a deterministic stand-in for the standard normal (`fixed_normal`), which
replaces `tf.random.normal` here and `jax.random.normal` in the test (`fixed_normal_jax`).

Nothing is written unless every part ran: a missing checkout, another commit or a missing
dependency is one `error:` line and exit status 2.
"""

from __future__ import annotations

import collections
import sys
from pathlib import Path

import numpy as np

try:
    from tests.parity.common import GeneratorError, pinned_commit, run
except ImportError:  # run as a script: its folder is on the path
    from common import GeneratorError, pinned_commit, run

OFFICIAL_COMMIT = "56d4d444dfd0582b0e79dab80aebbea74c0ce40d"
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "data" / "parity" / "dreamer_v1_update.npz"
SEED = 0
CONFIG = dict(deter_size=16, stoch_size=4, num_units=8, cnn_depth=2, horizon=3, batch_size=2, batch_length=4,
              log_scalars=True, log_images=False)  # the official defaults otherwise
MODULES = ("encode", "dynamics", "decode", "reward", "value", "actor")


def check_checkout(path: Path) -> str:
    """The checkout's commit, which must be the pinned one."""
    if not (path / "dreamer.py").is_file() or not (path / "models.py").is_file():
        raise GeneratorError(f"'{path}' is not a checkout of danijar/dreamer (no dreamer.py, models.py)")
    return pinned_commit(path, "danijar/dreamer", OFFICIAL_COMMIT)


def import_official(path: Path) -> dict:
    sys.path.insert(0, str(path))
    try:
        import tensorflow as tf
        import tools

        import dreamer
    except ImportError as err:
        raise GeneratorError(f"the official code's dependencies are missing ({err}): run this with Python 3.8 "
                             "and tensorflow-cpu 2.2.3, tensorflow-probability 0.10.1, numpy 1.18.5, "
                             "gym 0.17.3, protobuf 3.20.3") from None
    return dict(tf=tf, dreamer=dreamer, tools=tools)


def fixed_normal(tf):
    """`tf.random.normal`'s stand-in: 1.2 sin(0.7 j + 0.4) at index j of the last axis, the same
    for every row (TensorFlow Probability draws a multivariate normal's noise for one event and
    broadcasts it, so only a pattern along the event can be the same in both codebases)."""
    def normal(shape, mean=0.0, stddev=1.0, dtype=tf.float32, seed=None, name=None):
        values = 1.2 * tf.sin(0.7 * tf.cast(tf.range(shape[-1]), tf.float32) + 0.4)
        return tf.cast(mean + stddev * tf.broadcast_to(values, shape), dtype)
    return normal


def fixed_normal_jax(key, shape=(), dtype=np.float32):
    """`fixed_normal` for `jax.random.normal`, in the test."""
    import jax.numpy as jnp

    values = 1.2 * jnp.sin(0.7 * jnp.arange(shape[-1], dtype=jnp.float32) + 0.4)
    return jnp.broadcast_to(values, shape).astype(dtype)


def batch(rng) -> dict:
    """A replayed chunk from inside an episode (action t led to step t)."""
    b, t = CONFIG["batch_size"], CONFIG["batch_length"]
    return {"image": rng.integers(0, 256, (b, t, 64, 64, 3), dtype=np.uint8),
            "action": rng.uniform(-1, 1, (b, t, 2)).astype(np.float32),
            "reward": rng.normal(size=(b, t)).astype(np.float32)}


def variables(agent) -> dict:
    """Every trained variable by '<module>/<layer>/<weight>'."""
    out = {}
    for module in MODULES:
        for layer, keras in getattr(agent, f"_{module}")._modules.items():
            for var in keras.weights:
                out[f"{module}/{layer}/{var.name.split('/')[-1].split(':')[0]}"] = var
        if module == "dynamics":
            for var in agent._dynamics._cell.weights:
                out[f"dynamics/gru/{var.name.split('/')[-1].split(':')[0]}"] = var
    return out


def generate(o: dict) -> dict:
    tf, dreamer = o["tf"], o["dreamer"]
    from unittest import mock

    rng = np.random.default_rng(SEED)
    tf.random.set_seed(SEED)
    config = dreamer.define_config()
    config.update(CONFIG)
    data = batch(rng)
    inputs = dreamer.preprocess({k: tf.constant(v) for k, v in data.items()}, config)
    agent = object.__new__(dreamer.Dreamer)  # its modules and optimisers, without the run around them
    agent._c, agent._actdim, agent._float = config, 2, tf.float32
    agent._strategy = tf.distribute.get_strategy()
    agent._dataset = iter([inputs])
    agent._image_summaries = lambda *args: None  # videos need longer sequences; no part of the update
    raw, applied = [], {}  # each optimiser's gradient before and after clipping

    def recording_clip(grads, *args, **kwargs):
        if tf.executing_eagerly():  # the step below, not the one that creates the variables
            raw.append([g.numpy() for g in grads])
        return clip(grads, *args, **kwargs)

    def recording_apply(opt_name, apply):
        def apply_gradients(grads_and_vars, *args, **kwargs):
            grads_and_vars = list(grads_and_vars)
            applied[opt_name] = [(g.numpy(), v, r) for (g, v), r in zip(grads_and_vars, raw[-1])]
            return apply(grads_and_vars, *args, **kwargs)
        return apply_gradients

    clip = tf.clip_by_global_norm
    with mock.patch.object(tf.random, "normal", fixed_normal(tf)), \
            mock.patch.object(tf.compat.v2.random, "normal", fixed_normal(tf)), \
            mock.patch.object(tf, "clip_by_global_norm", recording_clip):
        agent._metrics = collections.defaultdict(tf.metrics.Mean)
        agent._build_model()  # creates every variable with one train step
        params = variables(agent)
        for name, var in params.items():  # random biases, sharper latent layers (KL above the free nats)
            if name.endswith("bias"):
                var.assign(0.1 * rng.normal(size=var.shape).astype(np.float32))
            elif name in ("dynamics/obs2/kernel", "dynamics/img3/kernel"):
                var.assign(4.0 * var.numpy())
            elif name in ("reward/hout/kernel", "value/hout/kernel"):
                var.assign(10.0 * var.numpy())
        for opt in (agent._model_opt, agent._value_opt, agent._actor_opt):  # fresh Adam state
            for var in opt._opt._optimizer.variables():
                var.assign(tf.zeros_like(var))
        before = {k: v.numpy() for k, v in params.items()}
        agent._metrics = collections.defaultdict(tf.metrics.Mean)
        for name in ("model", "value", "actor"):
            opt = getattr(agent, f"_{name}_opt")._opt
            opt.apply_gradients = recording_apply(name, opt.apply_gradients)
        agent._train(inputs, False)  # eagerly: one step of every optimiser
    out = {f"batch_{k}": v for k, v in data.items()}
    out.update({f"param_{k}": v for k, v in before.items()})
    out.update({f"after_{k}": v.numpy() for k, v in params.items()})
    names = {id(var): name for name, var in params.items()}
    for opt_name, pairs in applied.items():
        lr = getattr(config, f"{opt_name}_lr")
        zeros = [tf.Variable(tf.zeros_like(v)) for _, v, _ in pairs]
        tf.optimizers.Adam(lr).apply_gradients(zip([tf.constant(g) for g, _, _ in pairs], zeros))
        for (_, var, grad), update in zip(pairs, zeros):
            out[f"grad_{names[id(var)]}"] = grad
            out[f"update_{names[id(var)]}"] = update.numpy()
    metrics = {k: float(v.result()) for k, v in agent._metrics.items()}
    for key in ("image_loss", "reward_loss", "div", "model_loss", "actor_loss", "value_loss",
                "model_grad_norm", "value_grad_norm", "actor_grad_norm"):
        out[f"loss_{key}"] = np.float32(metrics[key])
    if metrics["div"] <= config.free_nats:
        raise GeneratorError("the KL is under the free nats: the data would not show its gradient")
    return out


def main(argv: list[str] | None = None) -> int:
    return run(argv, "generate_dreamer_v1.py", "danijar/dreamer", DEFAULT_OUT, check_checkout, import_official,
               generate)


if __name__ == "__main__":
    sys.exit(main())
