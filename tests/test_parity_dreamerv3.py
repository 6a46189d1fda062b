"""DreamerV3's parts against the official code, number for number.

`tests/data/parity/dreamerv3_parts.npz` holds what the official code (danijar/dreamerv3 at the
commit stored in it) returned for fixed inputs; `tests/parity/generate_dreamerv3.py` makes it.
Each test runs our part on the same inputs and parameters and asserts a relative error of at
most 1e-5 (float32). `parity_errors()` gives the largest error per quantity, for the record.
"""

from __future__ import annotations

from pathlib import Path
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dreamer.config import build_config
from dreamer.core.actor_critic import Actor, ActorCritic, action_dist, return_scale, update_return_range
from dreamer.core.latents import CategoricalLatent
from dreamer.core.nets import MLP, BlockGRU, laprop
from dreamer.core.rssm import RSSM
from dreamer.core.twohot import ScalarOutput
from dreamer.core.world_model import WorldModel

DATA = Path(__file__).resolve().parent / "data" / "parity" / "dreamerv3_parts.npz"
RTOL = 1e-5


def golden() -> dict[str, np.ndarray]:
    with np.load(DATA, allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


def relative_error(ours, theirs) -> float:
    """max |ours - theirs| / max |theirs|: the largest difference relative to the tensor's
    scale. Element by element, entries that cancel to near zero (a gradient's, a log-probability
    near 0) would turn float32 rounding into large ratios that say nothing about the method."""
    ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    assert ours.shape == theirs.shape, (ours.shape, theirs.shape)
    scale = max(float(np.max(np.abs(theirs), initial=0.0)), float(np.finfo(np.float32).tiny))
    return float(np.max(np.abs(ours - theirs), initial=0.0)) / scale


def dense_grads(g: dict, name: str, loss_fn) -> tuple:
    """Our loss of the official output layer's parameters, and its gradients."""
    def mean_loss(kernel, bias):
        return loss_fn(g[f"{name}_x"] @ kernel + bias).mean()
    return jax.jit(jax.grad(mean_loss, (0, 1)))(g[f"{name}_kernel"], g[f"{name}_bias"])


def twohot(g: dict) -> dict:
    out = ScalarOutput("twohot", 255)
    logits = g["twohot_x"] @ g["twohot_kernel"] + g["twohot_bias"]
    loss = lambda lg: out.loss(lg, g["twohot_target"])  # noqa: E731
    grad_kernel, grad_bias = dense_grads(g, "twohot", loss)
    return {"twohot bins": (out.bins, g["twohot_bins"]),
            "twohot pred": (out.mean(logits), g["twohot_pred"]),
            "twohot loss": (loss(logits), g["twohot_loss"]),
            "twohot grad kernel": (grad_kernel, g["twohot_grad_kernel"]),
            "twohot grad bias": (grad_bias, g["twohot_grad_bias"])}


def symlog_mse(g: dict) -> dict:
    """The vector decoder's loss as the world model computes it (mean over items)."""
    cfg = build_config(["dreamerv3"]).model
    wm = WorldModel(cfg, 2, {"v": ((3,), np.dtype(np.float32))})
    loss = lambda pred: wm.reconstruction_losses({"v": pred}, {"v": g["mse_target"]}, None)["v"]  # noqa: E731
    grad_kernel, grad_bias = dense_grads(g, "mse", loss)
    pred = g["mse_x"] @ g["mse_kernel"] + g["mse_bias"]
    return {"symlog_mse pred": (pred, g["mse_pred"]),
            "symlog_mse loss": (loss(pred), g["mse_loss"].mean()),
            "symlog_mse grad kernel": (grad_kernel, g["mse_grad_kernel"]),
            "symlog_mse grad bias": (grad_bias, g["mse_grad_bias"])}


def categorical(g: dict) -> dict:
    latent = CategoricalLatent(32, 4, unimix=0.01)
    stats = lambda logits: logits.reshape(len(logits), -1)  # noqa: E731
    dist, prior = latent.params(stats(g["onehot_logits"])), latent.params(stats(g["onehot_other"]))

    def weighted_mode(logits):  # the straight-through sample at the likeliest class
        with mock.patch.object(jax.random, "categorical", lambda key, lg: jnp.argmax(lg, -1)):
            sample = latent.sample(latent.params(stats(logits)), jax.random.PRNGKey(0))
        return (sample.reshape(g["onehot_weights"].shape) * g["onehot_weights"]).sum()

    return {"categorical unimix logits": (dist["logits"], g["onehot_mixed"]),
            "categorical entropy": (latent.entropy(dist), g["onehot_entropy"].sum(-1)),
            "categorical kl": (latent.kl(dist, prior), g["onehot_kl"].sum(-1)),
            "categorical straight-through gradient": (jax.grad(weighted_mode)(jnp.asarray(g["onehot_logits"])),
                                                      g["onehot_pred_grad"])}


def optimiser(g: dict) -> dict:
    opt = laprop(lr=4e-5, eps=1e-20, agc=0.3, warmup=3)
    params = {"a": jnp.asarray(g["opt_a0"]), "b": jnp.asarray(g["opt_b0"])}
    state, pairs = opt.init(params), {}
    for step in range(4):
        grads = {k: jnp.asarray(g[f"opt_grad_{k}{step}"]) for k in params}
        updates, state = opt.update(grads, state, params)
        params = jax.tree.map(lambda p, u: p + u, params, updates)
        for k in params:
            pairs[f"laprop update {k} step {step}"] = (updates[k], g[f"opt_update_{k}{step}"])
    return pairs


def return_normaliser(g: dict) -> dict:
    cfg = build_config(["dreamerv3"]).behavior
    return_range, pairs = jnp.zeros(2), {}
    for step, returns in enumerate(g["retnorm_returns"]):
        return_range = update_return_range(cfg, return_range, jnp.asarray(returns))
        ours = jnp.stack([return_range[0], return_scale(cfg, return_range)])
        pairs[f"return normaliser step {step}"] = (ours, g["retnorm_stats"][step])
    return pairs


# The adapter: an official parameter name -> the path of the same parameter in ours.
MLP_NAMES = {**{f"mlp/linear{i}/{p}": f"linear{i}/{p}" for i in range(3) for p in ("kernel", "bias")},
             **{f"mlp/norm{i}/scale": f"norm{i}/norm/scale" for i in range(3)}}
CORE_INPUTS = ("deter", "stoch", "action")  # the official dynin0, 1, 2
CORE_NAMES = {**{f"dyn/dynin{i}/{p}": f"{x}_in/{p}" for i, x in enumerate(CORE_INPUTS) for p in ("kernel", "bias")},
              **{f"dyn/dynin{i}norm/scale": f"{x}_norm/norm/scale" for i, x in enumerate(CORE_INPUTS)},
              **{f"dyn/dynhid0/{p}": f"hidden/{p}" for p in ("kernel", "bias")},
              "dyn/dynhid0norm/scale": "hidden_norm/norm/scale",
              **{f"dyn/dyngru/{p}": f"gates/{p}" for p in ("kernel", "bias")}}


def to_ours(g: dict, prefix: str, names: dict[str, str]) -> dict:
    """The official parameters under `prefix`, as our module's parameter tree (`names` maps
    every one of them; a path's first part may name one of several modules' trees)."""
    tree: dict = {}
    for official, ours in names.items():
        *path, name = ours.split("/")
        node = tree
        for part in path:
            node = node.setdefault(part, {})
        node[name] = jnp.asarray(g[f"{prefix}_param_{official}"])
    assert len(names) == sum(k.startswith(f"{prefix}_param_") for k in g), "an official parameter is unmapped"
    return {"params": tree}


def leaf(tree: dict, path: str):
    for part in path.split("/"):
        tree = tree[part]
    return tree

def gradient_pairs(g: dict, prefix: str, label: str, names: dict[str, str], grad_params: dict,
                   grad_inputs: dict) -> dict:
    """Our gradients (`grad_params`: our parameter tree, `names` giving each official
    parameter's path in it) and input gradients, each against the official one."""
    pairs = {f"{label} grad {official}": (leaf(grad_params, ours), g[f"{prefix}_grad_{official}"])
             for official, ours in names.items()}
    for name, value in grad_inputs.items():
        official = g[f"{prefix}_grad_in_{name}"]
        pairs[f"{label} grad input {name}"] = (np.asarray(value).reshape(official.shape), official)
    return pairs


def module_pairs(g: dict, prefix: str, names: dict[str, str], apply, inputs: dict, label: str) -> dict:
    """Our module's output and gradients (of the official random weighting) against the official."""
    params = to_ours(g, prefix, names)
    loss = lambda p, i: (apply(p, **i) * g[f"{prefix}_weights"]).sum()  # noqa: E731
    grad_params, grad_inputs = jax.jit(jax.grad(loss, (0, 1)))(params, inputs)
    pairs = {f"{label} output": (jax.jit(apply)(params, **inputs), g[f"{prefix}_out"])}
    return {**pairs, **gradient_pairs(g, prefix, label, names, grad_params["params"], grad_inputs)}


def mlp(g: dict) -> dict:
    module = MLP(3, 8, act="silu", norm="rms", initializer="trunc_normal")
    return module_pairs(g, "mlp", MLP_NAMES, lambda p, x: module.apply(p, x), {"x": jnp.asarray(g["mlp_in_x"])},
                        "mlp")


def recurrent_core(g: dict) -> dict:
    module = BlockGRU(16, 8, blocks=2, norm="rms", act="silu")
    inputs = {"deter": jnp.asarray(g["core_in_deter"]), "stoch": jnp.asarray(g["core_in_stoch"]).reshape(5, -1),
              "action": jnp.asarray(g["core_in_action"])}
    return module_pairs(g, "core", CORE_NAMES, lambda p, **i: module.apply(p, i["deter"], i["stoch"], i["action"]),
                        inputs, "block GRU")


RSSM_NAMES = {**{official: f"core/{ours}" for official, ours in CORE_NAMES.items()},
              **{f"dyn/prior{i}/{p}": f"img_hidden_{i}/{p}" for i in range(2) for p in ("kernel", "bias")},
              **{f"dyn/prior{i}norm/scale": f"img_hidden_act_{i}/norm/scale" for i in range(2)},
              **{f"dyn/priorlogit/{p}": f"img_dist/{p}" for p in ("kernel", "bias")},
              **{f"dyn/obs0/{p}": f"obs_hidden/{p}" for p in ("kernel", "bias")},
              "dyn/obs0norm/scale": "obs_hidden_act/norm/scale",
              **{f"dyn/obslogit/{p}": f"obs_dist/{p}" for p in ("kernel", "bias")}}


def rssm_step(g: dict) -> dict:
    """One observed step of our RSSM and the prior on its state, with our KL loss."""
    overrides = {"model.deter": 16, "model.hidden": 8, "model.stoch": 4, "model.classes": 3,
                 "model.gru_blocks": 2, "model.depth": 2}
    rssm = RSSM(build_config(["dreamerv3"], overrides).model, 2)
    inputs = {k: jnp.asarray(g[f"rssm_in_{k}"]) for k in ("deter", "stoch", "tokens", "action")}

    def outputs(params, deter, stoch, tokens, action):
        state = {**rssm.initial(len(deter)), "deter": deter, "stoch": stoch.reshape(len(stoch), -1)}
        post, prior = rssm.obs_step(params, state, action, tokens, jnp.zeros(len(deter), bool), jax.random.PRNGKey(0))
        out = jnp.concatenate([post["deter"], *(x["logits"].reshape(len(deter), -1) for x in (post, prior))], -1)
        loss, _ = rssm.kl_loss(*(jax.tree.map(lambda x: x[:, None], x) for x in (post, prior)))
        return out, loss

    params = to_ours(g, "rssm", RSSM_NAMES)
    out, loss = jax.jit(outputs)(params, **inputs)
    def objective(p, i):
        out, loss = outputs(p, **i)
        return (out * g["rssm_weights"]).sum() + loss
    grad_params, grad_inputs = jax.jit(jax.grad(objective, (0, 1)))(params, inputs)
    pairs = {"rssm step output": (out, g["rssm_out"]), "rssm step KL loss": (loss, g["rssm_loss"])}
    return {**pairs, **gradient_pairs(g, "rssm", "rssm step", RSSM_NAMES, grad_params["params"], grad_inputs)}


def policy(g: dict) -> dict:
    """Our actor and its bounded normal. The adapter fuses the official policy's two output
    layers (mean, stddev) into our one output layer of 2A units, mean first."""
    cfg = build_config(["dreamerv3"], {"behavior.actor_layers": 2, "behavior.actor_units": 8}).behavior
    actor = Actor(cfg, 2, False, "silu", "rms", "trunc_normal")
    names = {f"pol/mlp/linear{i}/{p}": f"mlp/linear{i}/{p}" for i in range(2) for p in ("kernel", "bias")}
    names.update({f"pol/mlp/norm{i}/scale": f"mlp/norm{i}/norm/scale" for i in range(2)})
    head = {p: [g[f"policy_param_pol/head/action/{part}/{p}"] for part in ("mean", "stddev")]
            for p in ("kernel", "bias")}
    params = {"params": {"mlp": {**to_ours({k: v for k, v in g.items() if "/head/" not in k}, "policy", names)
                                 ["params"]["mlp"],
                                 "out": {p: jnp.concatenate(parts, -1) for p, parts in head.items()}}}}

    def outputs(params, feat, action):
        dist = action_dist(cfg, actor.apply(params, feat), False)
        return jnp.concatenate([dist.mean(), dist.log_prob(action)[:, None], dist.entropy()[:, None]], -1)

    inputs = {k: jnp.asarray(g[f"policy_in_{k}"]) for k in ("feat", "action")}
    loss = lambda p, i: (outputs(p, **i) * g["policy_weights"]).sum()  # noqa: E731
    grad_params, grad_inputs = jax.jit(jax.grad(loss, (0, 1)))(params, inputs)
    pairs = {"policy output": (jax.jit(outputs)(params, **inputs), g["policy_out"]),
             **gradient_pairs(g, "policy", "policy", names, grad_params["params"], grad_inputs)}
    out_layer = grad_params["params"]["mlp"]["out"]
    for index, part in enumerate(("mean", "stddev")):
        for p in ("kernel", "bias"):
            ours = jnp.split(out_layer[p], 2, -1)[index]
            pairs[f"policy grad pol/head/action/{part}/{p}"] = (ours, g[f"policy_grad_pol/head/action/{part}/{p}"])
    return pairs


ENCODER_NAMES = {**{f"enc/cnn{i}/{p}": f"encoder/conv{i}/{p}" for i in range(4) for p in ("kernel", "bias")},
                 **{f"enc/cnn{i}norm/scale": f"encoder/norm{i}/norm/scale" for i in range(4)},
                 **{f"enc/mlp{i}/{p}": f"vector_encoder/linear{i}/{p}" for i in range(2) for p in ("kernel", "bias")},
                 **{f"enc/mlp{i}norm/scale": f"vector_encoder/norm{i}/norm/scale" for i in range(2)}}


def encoder(g: dict) -> dict:
    """Our world model's embedding of vectors and an image (vectors first, symlog inputs)."""
    cfg = build_config(["dreamerv3"], {"model.depth": 2, "model.mlp_layers": 2, "model.mlp_units": 8}).model
    space = {"position": ((2,), np.dtype(np.float32)), "velocity": ((3,), np.dtype(np.float32)),
             "image": ((64, 64, 3), np.dtype(np.uint8))}
    wm = WorldModel(cfg, 2, space)
    tree = to_ours(g, "encoder", ENCODER_NAMES)["params"]
    params = {module: {"params": sub} for module, sub in tree.items()}
    image = jnp.asarray(g["encoder_in_image"])
    inputs = {k: jnp.asarray(g[f"encoder_in_{k}"]) for k in ("position", "velocity")}
    loss = lambda p, i: (wm.embed(p, {**i, "image": image}) * g["encoder_weights"]).sum()  # noqa: E731
    grad_params, grad_inputs = jax.jit(jax.grad(loss, (0, 1)))(params, inputs)
    pairs = {"encoder output": (jax.jit(wm.embed)(params, {**inputs, "image": image}), g["encoder_out"])}
    tree = {module: sub["params"] for module, sub in grad_params.items()}
    return {**pairs, **gradient_pairs(g, "encoder", "encoder", ENCODER_NAMES, tree, grad_inputs)}


VECDEC_NAMES = {**{f"dec/mlp/linear{i}/{p}": f"mlp/linear{i}/{p}" for i in range(2) for p in ("kernel", "bias")},
                **{f"dec/mlp/norm{i}/scale": f"mlp/norm{i}/norm/scale" for i in range(2)},
                **{f"dec/vec/{key}/pred/{p}": f"out{i}/{p}" for i, key in enumerate(("position", "velocity"))
                   for p in ("kernel", "bias")}}
STOCH = 12  # the official decoder reads [stoch, deter]; ours [deter, stoch]: the first kernel's rows move


def vector_decoder(g: dict) -> dict:
    """Our world model's vector decoder and its symlog losses, per item."""
    overrides = {"model.deter": 16, "model.stoch": 4, "model.classes": 3, "model.gru_blocks": 2,
                 "model.hidden": 8, "model.mlp_layers": 2, "model.mlp_units": 8}
    keys = ("position", "velocity")
    wm = WorldModel(build_config(["dreamerv3"], overrides).model, 2, {"position": ((2,), np.dtype(np.float32)),
                                                                     "velocity": ((3,), np.dtype(np.float32))})
    params = to_ours(g, "vecdec", VECDEC_NAMES)
    first = params["params"]["mlp"]["linear0"]
    first["kernel"] = jnp.concatenate([first["kernel"][STOCH:], first["kernel"][:STOCH]], 0)
    targets = {k: jnp.asarray(g[f"vecdec_target_{k}"]) for k in keys}

    def outputs(params, deter, stoch):
        preds = wm.decode({"vector_decoder": params}, jnp.concatenate([deter, stoch.reshape(len(stoch), -1)], -1))
        def item(pred, target):  # one item's loss per key: the world model's means over one
            losses = wm.reconstruction_losses(*(jax.tree.map(lambda x: x[None], x) for x in (pred, target)), None)
            return jnp.stack([losses[k] for k in keys])
        per_item = jax.vmap(item)(preds, targets)
        return jnp.concatenate([*(preds[k] for k in keys), per_item], -1)

    inputs = {k: jnp.asarray(g[f"vecdec_in_{k}"]) for k in ("deter", "stoch")}
    loss = lambda p, i: (outputs(p, **i) * g["vecdec_weights"]).sum()  # noqa: E731
    grad_params, grad_inputs = jax.jit(jax.grad(loss, (0, 1)))(params, inputs)
    grad_first = leaf(grad_params["params"], "mlp/linear0/kernel")
    grad_params["params"]["mlp"]["linear0"]["kernel"] = jnp.concatenate([grad_first[16:], grad_first[:16]], 0)
    pairs = {"vector decoder output and losses": (jax.jit(outputs)(params, **inputs), g["vecdec_out"])}
    return {**pairs, **gradient_pairs(g, "vecdec", "vector decoder", VECDEC_NAMES, grad_params["params"],
                                      grad_inputs)}


# The official decoder names its upsampling convolutions by the encoder stage they mirror
# (conv2 first), ours in the order they run (conv0 first); its output layer is `imgout`.
IMGDEC_NAMES = {**{f"dec/sp0/{p}": f"deter_grid/{p}" for p in ("kernel", "bias")},
                **{f"dec/sp1/{p}": f"stoch_hidden/{p}" for p in ("kernel", "bias")},
                "dec/sp1norm/scale": "stoch_hidden_norm/norm/scale",
                **{f"dec/sp2/{p}": f"stoch_grid/{p}" for p in ("kernel", "bias")},
                "dec/spnorm/scale": "grid_norm/norm/scale",
                **{f"dec/conv{2 - i}/{p}": f"conv{i}/{p}" for i in range(3) for p in ("kernel", "bias")},
                **{f"dec/conv{2 - i}norm/scale": f"norm{i}/norm/scale" for i in range(3)},
                **{f"dec/imgout/{p}": f"conv3/{p}" for p in ("kernel", "bias")}}


def image_decoder(g: dict) -> dict:
    """Our world model's image decoder (DreamerV3's) and its squared-error loss, per item; ours
    predicts in [-0.5, 0.5], the official in [0, 1]."""
    overrides = {"model.deter": 16, "model.stoch": 4, "model.classes": 3, "model.gru_blocks": 2,
                 "model.hidden": 8, "model.depth": 2, "model.head_units": 8}
    wm = WorldModel(build_config(["dreamerv3"], overrides).model, 2)
    params = to_ours(g, "imgdec", IMGDEC_NAMES)
    target = jnp.asarray(g["imgdec_target"]) - 0.5  # the preprocessed image, as the loss sees it

    def outputs(params, deter, stoch):
        pred = wm.decode({"decoder": params}, jnp.concatenate([deter, stoch.reshape(len(stoch), -1)], -1))["image"]
        loss = jax.vmap(lambda p, t: wm.reconstruction_losses({"image": p[None]}, {}, t[None])["image"])(pred, target)
        return jnp.concatenate([(pred + 0.5).reshape(len(deter), -1), loss[:, None]], -1)

    inputs = {k: jnp.asarray(g[f"imgdec_in_{k}"]) for k in ("deter", "stoch")}
    loss = lambda p, i: (outputs(p, **i) * g["imgdec_weights"]).sum()  # noqa: E731
    grad_params, grad_inputs = jax.jit(jax.grad(loss, (0, 1)))(params, inputs)
    pairs = {"image decoder output and loss": (jax.jit(outputs)(params, **inputs), g["imgdec_out"])}
    return {**pairs, **gradient_pairs(g, "imgdec", "image decoder", IMGDEC_NAMES, grad_params["params"],
                                      grad_inputs)}


def lambda_returns(g: dict) -> dict:
    """Our DreamerV3 returns (`behavior.returns dreamerv3`, the discount folded into the
    continuation): the official rewards of arriving at states 1..H, continuations and values
    of states 0..H."""
    cfg = build_config(["dreamerv3"]).model
    ac = ActorCritic(build_config(["dreamerv3"]).behavior, WorldModel(cfg, 2), 2, False)
    returns, _, _ = ac.returns(jnp.asarray(g["return_rew"][:, 1:]), jnp.asarray(g["return_val"]),
                               jnp.asarray(g["return_con"]))
    return {"lambda-returns": (returns, g["return_ret"])}


PARTS = {"twohot": twohot, "symlog_mse": symlog_mse, "categorical": categorical, "optimiser": optimiser,
         "return_normaliser": return_normaliser, "mlp": mlp, "recurrent_core": recurrent_core, "rssm_step": rssm_step, "policy": policy,
         "encoder": encoder, "vector_decoder": vector_decoder, "image_decoder": image_decoder,
         "lambda_returns": lambda_returns}


def parity_errors() -> dict[str, float]:
    """Every compared quantity's largest relative error."""
    g = golden()
    return {name: relative_error(ours, theirs) for part in PARTS.values() for name, (ours, theirs) in part(g).items()}


def test_the_golden_data_names_the_official_commit():
    from tests.parity.generate_dreamerv3 import OFFICIAL_COMMIT

    assert str(golden()["official_commit"]) == OFFICIAL_COMMIT


@pytest.mark.parametrize("part", list(PARTS))
def test_matches_the_official_code(part):
    for name, (ours, theirs) in PARTS[part](golden()).items():
        error = relative_error(ours, theirs)
        assert error <= RTOL, f"{name}: relative error {error:.2e}"
