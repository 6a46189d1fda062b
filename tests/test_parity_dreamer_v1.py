"""One whole Dreamer (V1) update against the official TensorFlow 2 code, number for number.

`tests/data/parity/dreamer_v1_update.npz` (made by `tests/parity/generate_dreamer_v1.py` from
danijar/dreamer at the commit stored in it) holds the official agent's parameters before one
`Dreamer._train` step at a tiny float32 config, the batch, the loss terms, every parameter's
gradient, Adam's update and the parameters after the step. The adapter below maps the official
Keras weights into our train state; our `Dreamer.update` runs on the same batch with the same
deterministic stand-in for the normal samples. Each quantity must match to a relative error of
1e-5 (`relative_error`), but for two, measured and explained in
benchmarks/results/parity_dreamer_v1_update.md:

- the actor's gradients (1e-4): they flow back through three imagined steps of TensorFlow's
  ops against XLA's, and are small against the returns they come from (the element-wise
  differences are about 1e-8, float32 rounding of returns near 1; our own update jitted against
  the same run op by op differs by 5e-6 on these tensors);
- Adam's update is compared on the official gradients, not ours: on its first step Adam divides
  each gradient by about its own size, so gradient entries near Adam's epsilon would turn float32
  rounding into large differences that say nothing about the optimiser.
"""

from __future__ import annotations

import functools
from pathlib import Path
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dreamer.agent import Dreamer
from dreamer.base_agent import TrainState
from dreamer.config import build_config
from dreamer.core.actor_critic import ACState
from tests.parity.generate_dreamer_v1 import fixed_normal_jax
from tests.support import recording_optimizers, section, tree_get, tree_put
from tests.test_parity_dreamerv3 import RTOL, relative_error

DATA = Path(__file__).resolve().parent / "data" / "parity" / "dreamer_v1_update.npz"
ACTOR_GRAD_RTOL = 1e-4
# The generator's CONFIG in our keys (the V1 defaults otherwise).
OVERRIDES = {"model.deter": 16, "model.hidden": 16, "model.stoch": 4, "model.depth": 2, "model.head_units": 8,
             "behavior.actor_units": 8, "behavior.critic_units": 8, "behavior.horizon": 3}
STOCH = 4  # the official features are [stoch, deter], ours [deter, stoch]

# Official '<module>/<layer>' -> our layer's path in the TrainState.
LAYERS = {**{f"encode/h{i + 1}": f"wm/encoder/params/conv{i}" for i in range(4)},
          "decode/h1": "wm/decoder/params/linear",
          **{f"decode/h{i + 2}": f"wm/decoder/params/deconv{i}" for i in range(4)},
          "dynamics/img1": "wm/rssm/params/img_in", "dynamics/img2": "wm/rssm/params/img_hidden_0",
          "dynamics/img3": "wm/rssm/params/img_dist", "dynamics/obs1": "wm/rssm/params/obs_hidden",
          "dynamics/obs2": "wm/rssm/params/obs_dist",
          **{f"reward/h{i}": f"wm/reward/params/linear{i}" for i in range(2)}, "reward/hout": "wm/reward/params/out",
          **{f"value/h{i}": f"agent/critic/params/linear{i}" for i in range(3)}, "value/hout": "agent/critic/params/out",
          **{f"actor/h{i}": f"agent/actor/params/mlp/linear{i}" for i in range(4)},
          "actor/hout": "agent/actor/params/mlp/out"}
READS_FEATURES = {"decode/h1", "reward/h0", "value/h0", "actor/h0"}
GRU = "wm/rssm/params/gru"


def golden() -> dict[str, np.ndarray]:
    with np.load(DATA, allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


def to_ours(official: dict[str, np.ndarray]) -> dict:
    """Official weights (or their gradients, updates) by name -> our nested tree of them.
    Keras' GRU keeps both biases in one [2, 3D] weight (input first, `reset_after`); its
    transposed convolutions store their kernels [K, K, Cout, Cin], ours [K, K, Cin, Cout]."""
    tree: dict = {}

    put = functools.partial(tree_put, tree)
    for name, value in official.items():
        layer, weight = name.rsplit("/", 1)
        if layer == "dynamics/gru":
            if weight == "bias":
                put(f"{GRU}/input/bias", value[0])
                put(f"{GRU}/recurrent/bias", value[1])
            else:
                put(f"{GRU}/{'recurrent' if weight == 'recurrent_kernel' else 'input'}/kernel", value)
            continue
        if weight == "kernel" and layer in READS_FEATURES:
            value = np.concatenate([value[STOCH:], value[:STOCH]], 0)
        if weight == "kernel" and layer.startswith("decode/") and layer != "decode/h1":
            value = value.transpose(0, 1, 3, 2)
        put(f"{LAYERS[layer]}/{weight}", value)
    return tree


def from_ours(tree: dict, names) -> dict[str, np.ndarray]:
    """The inverse of `to_ours` for the named official weights."""
    get = functools.partial(tree_get, tree)
    out = {}
    for name in names:
        layer, weight = name.rsplit("/", 1)
        if layer == "dynamics/gru":
            out[name] = (np.stack([get(f"{GRU}/input/bias"), get(f"{GRU}/recurrent/bias")]) if weight == "bias"
                         else get(f"{GRU}/{'recurrent' if weight == 'recurrent_kernel' else 'input'}/kernel"))
            continue
        value = get(f"{LAYERS[layer]}/{weight}")
        if weight == "kernel" and layer in READS_FEATURES:
            value = np.concatenate([value[-STOCH:], value[:-STOCH]], 0)
        if weight == "kernel" and layer.startswith("decode/") and layer != "decode/h1":
            value = value.transpose(0, 1, 3, 2)
        out[name] = value
    return out


def our_update(g: dict):
    with recording_optimizers():
        agent = Dreamer(build_config([], OVERRIDES), 2, False)
    params = to_ours(section(g, "param_"))
    wm, ac = params["wm"], params["agent"]
    state = TrainState(wm, agent.wm.optimizer.init(wm),
                       ACState(ac["actor"], ac["critic"], agent.ac.actor_opt.init(ac["actor"]),
                               agent.ac.critic_opt.init(ac["critic"]), {}, jnp.zeros(2)),
                       jax.random.PRNGKey(0), jnp.zeros((), jnp.int32))
    batch = {k: jnp.asarray(v) for k, v in section(g, "batch_").items()}
    shape = batch["reward"].shape
    # A chunk from inside an episode: no step starts or ends one.
    batch.update({k: jnp.zeros(shape, bool) for k in ("is_first", "is_last", "is_terminal")})
    with mock.patch.object(jax.random, "normal", fixed_normal_jax):
        new, metrics, _ = jax.jit(agent.update)(state, batch)
    grads = {"wm": new.wm_opt[1], "agent": {"actor": new.agent.actor_opt[1], "critic": new.agent.critic_opt[1]}}
    return agent, params, metrics, new, from_ours(grads, list(section(g, "grad_")))


def adam_updates(agent, params: dict, g: dict) -> dict[str, np.ndarray]:
    """Our optimisers' first step (global-norm clipping, Adam) on the official gradients."""
    grads = to_ours(section(g, "grad_"))
    opts = {"wm": agent.wm.optimizer, "actor": agent.ac.actor_opt, "critic": agent.ac.critic_opt}
    trees = {"wm": (params["wm"], grads["wm"])}
    trees.update({k: (params["agent"][k], grads["agent"][k]) for k in ("actor", "critic")})
    updates = {k: opts[k].update(grad, opts[k].init(param), param)[0] for k, (param, grad) in trees.items()}
    return from_ours({"wm": updates["wm"], "agent": {k: updates[k] for k in ("actor", "critic")}},
                     list(section(g, "update_")))


def update_pairs(g: dict) -> dict:
    agent, params, metrics, new, grads = our_update(g)
    loss = section(g, "loss_")
    log_2pi = 0.5 * np.log(2 * np.pi)  # per dimension: the official losses are full log-likelihoods
    cfg = agent.config.behavior
    weights = np.cumprod(np.concatenate([[1.0], np.full(cfg.horizon - 2, cfg.discount)]))
    pairs = {
        "loss image": (metrics["model/image_loss"] + 64 * 64 * 3 * log_2pi, loss["image_loss"]),
        "loss reward": (metrics["model/reward_loss"] + log_2pi, loss["reward_loss"]),
        "loss KL (clipped at the free nats)": (jnp.maximum(metrics["model/kl"], 3.0), loss["div"]),
        "loss actor": (metrics["behavior/actor_loss"], loss["actor_loss"]),
        "loss value": (metrics["behavior/critic_loss"] + log_2pi * weights.mean(), loss["value_loss"]),
        "loss model gradient norm": (metrics["model/grad_norm"], loss["model_grad_norm"]),
        "loss actor gradient norm": (metrics["behavior/actor_grad_norm"], loss["actor_grad_norm"]),
    }
    pairs.update({f"grad {k}": (v, g[f"grad_{k}"]) for k, v in grads.items()})
    pairs.update({f"update {k}": (v, g[f"update_{k}"]) for k, v in adam_updates(agent, params, g).items()})
    after = from_ours({"wm": new.wm, "agent": new.agent._asdict()}, section(g, "after_"))
    pairs.update({f"after {k}": (v, g[f"after_{k}"]) for k, v in after.items()})
    return pairs


@pytest.fixture(scope="module")
def pairs():
    return update_pairs(golden())


def test_the_golden_data_names_the_official_commit():
    from tests.parity.generate_dreamer_v1 import OFFICIAL_COMMIT

    assert str(golden()["official_commit"]) == OFFICIAL_COMMIT


def test_the_adapter_maps_every_official_weight():
    official = section(golden(), "param_")
    ours = to_ours(official)
    assert sum(x.size for x in jax.tree.leaves(ours)) == sum(x.size for x in official.values())
    back = from_ours(ours, official)
    assert all(np.array_equal(back[k], official[k]) for k in official)


@pytest.mark.parametrize("kind", ["loss", "grad", "update", "after"])
def test_one_update_matches_the_official_code(pairs, kind):
    compared = {name: pair for name, pair in pairs.items() if name.startswith(kind)}
    assert compared
    for name, pair in compared.items():
        error, bar = relative_error(*pair), ACTOR_GRAD_RTOL if name.startswith("grad actor/") else RTOL
        assert error <= bar, f"{name}: relative error {error:.2e}"
