"""One whole DreamerV3 update against the official `Agent.train`, number for number.

The golden data (`update_*` in `tests/data/parity/dreamerv3_parts.npz`, made by
`tests/parity/generate_dreamerv3.py`) holds the official agent's parameters before one training
step at a tiny float32 config with vector and image inputs, the batch, every loss term, every
parameter's gradient, the optimiser's update, the parameters after the step (the slow critic's
too) and the return normaliser's state; `discrete_update_*` the same with vector inputs alone
and one of 3 discrete actions; `context_update_*` with vector inputs and `replay_context` 1:
the sequences start from stored latent states, and the step's posterior states (which the
replay stores) are compared too. The adapter below maps the official parameters into our train
state; our `Dreamer.update` runs on the same batch, and the samples of both codebases come from
the same deterministic stand-ins for `jax.random.normal` and `jax.random.categorical`. Each
quantity must match to a relative error of 1e-5 (`relative_error`).
"""

from __future__ import annotations

import functools
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dreamer.agent import Dreamer
from dreamer.base_agent import TrainState
from dreamer.config import build_config
from dreamer.core.actor_critic import ACState
from tests.parity.common import fixed_categorical, fixed_normal
from tests.support import recording_optimizers, section, tree_get, tree_put
from tests.test_parity_dreamerv3 import (
    ENCODER_NAMES,
    IMGDEC_NAMES,
    RSSM_NAMES,
    RTOL,
    STOCH,
    VECDEC_NAMES,
    golden,
    relative_error,
)

# The generator's UPDATE_CONFIG in our keys.
OVERRIDES = {"model.deter": 16, "model.hidden": 8, "model.stoch": 4, "model.classes": 3, "model.gru_blocks": 2,
             "model.depth": 2, "model.mlp_layers": 2, "model.mlp_units": 8, "model.head_layers": 1,
             "model.head_units": 8, "behavior.actor_layers": 2, "behavior.actor_units": 8,
             "behavior.critic_layers": 2, "behavior.critic_units": 8, "behavior.horizon": 3,
             "model.warmup": 0, "behavior.warmup": 0}
VECTORS = {"position": ((2,), np.dtype(np.float32)), "velocity": ((3,), np.dtype(np.float32))}
# prefix in the golden data -> (observations, action size, discrete, replay context)
VARIANTS = {"update_": ({**VECTORS, "image": ((64, 64, 3), np.dtype(np.uint8))}, 2, False, 0),
            "discrete_update_": (VECTORS, 3, True, 0),
            "context_update_": (VECTORS, 2, False, 1)}


def head_names(official: str, ours: str, layers: int, output: str) -> dict[str, str]:
    """An official `MLPHead` (`layers` hidden layers, then `output`) -> our MLP's layers."""
    names = {f"{official}/mlp/linear{i}/{p}": f"{ours}/linear{i}/{p}" for i in range(layers) for p in ("kernel", "bias")}
    names.update({f"{official}/mlp/norm{i}/scale": f"{ours}/norm{i}/norm/scale" for i in range(layers)})
    names.update({f"{official}/head/{output}/{p}": f"{ours}/out/{p}" for p in ("kernel", "bias")})
    return names


def prefixed(names: dict[str, str], official: str, ours: str) -> dict[str, str]:
    return {f"{official}/{k.split('/', 1)[1]}": f"{ours}/{v}" for k, v in names.items()}


# Every official parameter -> its path in our TrainState. For continuous actions, the policy's
# two output layers (mean, stddev) are fused into our one output layer of 2A units (mean first):
# `POLICY_OUT`; its discrete head (logits) is that layer.
POLICY_OUT = "agent/actor/params/mlp/out"
NAMES = {
    **{k: f"wm/{v.split('/', 1)[0]}/params/{v.split('/', 1)[1]}" for k, v in ENCODER_NAMES.items()},
    **{k: f"wm/rssm/params/{v}" for k, v in RSSM_NAMES.items()},
    **{k: f"wm/decoder/params/{v}" for k, v in IMGDEC_NAMES.items()},
    **prefixed(VECDEC_NAMES, "dec", "wm/vector_decoder/params"),
    **head_names("rew", "wm/reward/params", 1, "logits"),
    **head_names("con", "wm/cont/params", 1, "logit"),
    **head_names("pol", "agent/actor/params/mlp", 2, "action/logits"),
    **head_names("val", "agent/critic/params", 2, "logits"),
    **head_names("slowval", "agent/slow_critic/params", 2, "logits"),
}
FUSED = {f"pol/head/action/{part}/{p}" for part in ("mean", "stddev") for p in ("kernel", "bias")}
VECDEC_FIRST = "wm/vector_decoder/params/mlp/linear0/kernel"  # rows [stoch, deter] there, [deter, stoch] here


def to_ours(official: dict[str, np.ndarray]) -> dict:
    """Official parameters (or gradients, updates) by name -> our nested tree of them."""
    tree: dict = {}
    put = functools.partial(tree_put, tree)
    for name, value in official.items():
        if name in FUSED:
            continue
        if NAMES[name] == VECDEC_FIRST:
            value = np.concatenate([value[STOCH:], value[:STOCH]], 0)
        put(NAMES[name], value)
    if FUSED <= set(official):
        for p in ("kernel", "bias"):
            put(f"{POLICY_OUT}/{p}", np.concatenate([official[f"pol/head/action/{part}/{p}"]
                                                     for part in ("mean", "stddev")], -1))
    return tree


def from_ours(tree: dict, official_names) -> dict[str, np.ndarray]:
    """The inverse of `to_ours` for the named official tensors."""
    get = functools.partial(tree_get, tree)
    out = {}
    for name in official_names:
        if name in FUSED:
            part, p = name.split("/")[3:]
            out[name] = np.split(get(f"{POLICY_OUT}/{p}"), 2, -1)[("mean", "stddev").index(part)]
            continue
        value = get(NAMES[name])
        if NAMES[name] == VECDEC_FIRST:
            value = np.concatenate([value[-STOCH:], value[:-STOCH]], 0)
        out[name] = value
    return out


def our_update(g: dict, prefix: str):
    """Our agent's one update on the official parameters and batch of the variant `prefix`:
    (metrics, new state, the recorded gradients and updates as official-named dicts)."""
    obs_space, action_size, discrete, context = VARIANTS[prefix]
    with recording_optimizers():
        agent = Dreamer(build_config(["dreamerv3"], {**OVERRIDES, "run.replay_context": context}),
                        action_size, discrete, obs_space)
    params = to_ours(section(g, f"{prefix}param_"))
    wm, ac = params["wm"], params["agent"]
    state = TrainState(wm, agent.wm.optimizer.init(wm),
                       ACState(ac["actor"], ac["critic"], agent.ac.actor_opt.init(ac["actor"]),
                               agent.ac.critic_opt.init(ac["critic"]), ac["slow_critic"], jnp.zeros(2)),
                       jax.random.PRNGKey(0), jnp.zeros((), jnp.int32))
    batch = our_batch(g, prefix, action_size, discrete, context)
    with mock.patch.object(jax.random, "normal", fixed_normal), \
            mock.patch.object(jax.random, "categorical", fixed_categorical):
        new, metrics, entries = jax.jit(agent.update)(state, batch)
    recorded = {name: {"wm": new.wm_opt[i], "agent": {"actor": new.agent.actor_opt[i], "critic": new.agent.critic_opt[i]}}
                for i, name in ((1, "grad"), (2, "update"))}
    names = list(section(g, f"{prefix}grad_"))
    return metrics, new, entries, {kind: from_ours(tree, names) for kind, tree in recorded.items()}


def our_batch(g: dict, prefix: str, action_size: int, discrete: bool, context: int) -> dict:
    """The official batch in our layout. Ours stores with step t the action that led to it; the
    official, the action taken at t. With replay context the official batch has one step more,
    the context step, whose stored state (`dyn/*`) the trained steps start from: ours stores
    that state with the first trained step instead (`context_*`)."""
    batch = {k: jnp.asarray(v) for k, v in section(g, f"{prefix}batch_").items()}
    if discrete:
        batch["action"] = jax.nn.one_hot(batch["action"], action_size)
    if not context:
        batch["action"] = jnp.pad(batch["action"][:, :-1], ((0, 0), (1, 0), (0, 0)))
        return batch
    stored = {"context_deter": batch.pop("dyn/deter"), "context_stoch": batch.pop("dyn/stoch")}
    ours = {k: v[:, 1:] for k, v in batch.items()}
    ours["action"] = batch["action"][:, :-1]  # the context step's action led to the first trained step
    ours.update({k: v[:, :-1].reshape(*ours["reward"].shape, -1) for k, v in stored.items()})
    return ours


def update_pairs(g: dict, prefix: str) -> dict:
    metrics, new, entries, recorded = our_update(g, prefix)
    loss = section(g, f"{prefix}loss_")
    pairs = {f"loss {key}": (metrics[f"model/{key}_loss"], loss[key]) for key in VARIANTS[prefix][0]}
    pairs.update({
        "loss rew": (metrics["model/reward_loss"], loss["rew"]),
        "loss con": (metrics["model/cont_loss"], loss["con"]),
        # Both KL terms have the KL's value (each clipped at the free nats), scales 1 and 0.1.
        "loss dyn + 0.1 rep": (metrics["model/kl_loss"], loss["dyn"] + 0.1 * loss["rep"]),
        "loss policy": (metrics["behavior/actor_loss"], loss["policy"]),
        "loss value": (metrics["behavior/critic_loss"], loss["value"]),
        "loss repval": (metrics["behavior/replay_value_loss"], loss["repval"]),
        "return normaliser": (new.agent.return_range, g[f"{prefix}retnorm"]),
    })
    for kind in ("grad", "update"):
        pairs.update({f"{kind} {k}": (v, g[f"{prefix}{kind}_{k}"]) for k, v in recorded[kind].items()})
    after = from_ours({"wm": new.wm, "agent": new.agent._asdict()}, section(g, f"{prefix}after_"))
    pairs.update({f"after {k}": (v, g[f"{prefix}after_{k}"]) for k, v in after.items()})
    written = section(g, f"{prefix}replay_dyn/")  # the posterior states the replay stores
    pairs.update({f"after replay {k}": (entries[f"context_{k}"], v.reshape(*v.shape[:2], -1))
                  for k, v in written.items()})
    return pairs


@pytest.fixture(scope="module", params=list(VARIANTS))
def variant(request):
    return request.param, update_pairs(golden(), request.param)


@pytest.mark.parametrize("prefix", list(VARIANTS))
def test_the_adapter_maps_every_official_parameter(prefix):
    g = golden()
    official = section(g, f"{prefix}param_")
    assert set(official) <= set(NAMES) | FUSED
    assert set(section(g, f"{prefix}grad_")) == {k for k in official if not k.startswith("slowval/")}
    ours = to_ours(official)
    assert sum(x.size for x in jax.tree.leaves(ours)) == sum(x.size for x in official.values())
    assert from_ours(ours, official).keys() == official.keys()


@pytest.mark.parametrize("kind", ["loss", "grad", "update", "after", "return"])
def test_one_update_matches_the_official_code(variant, kind):
    prefix, pairs = variant
    compared = {name: pair for name, pair in pairs.items() if name.startswith(kind)}
    assert compared
    if prefix == "context_update_" and kind == "after":  # and the states the replay stores
        assert {"after replay deter", "after replay stoch"} <= set(compared)
    errors = {name: relative_error(*pair) for name, pair in compared.items()}
    worst = max(errors, key=errors.get)
    assert errors[worst] <= RTOL, f"{prefix}{worst}: relative error {errors[worst]:.2e}"
