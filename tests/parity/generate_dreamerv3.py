"""Golden data from the official DreamerV3 code, for tests/test_parity_dreamerv3.py.

    python tests/parity/generate_dreamerv3.py --official PATH [--out tests/data/parity/dreamerv3_parts.npz]

PATH is a git checkout of danijar/dreamerv3 at the pinned commit (`OFFICIAL_COMMIT`), and this
script runs in the official code's own environment (its requirements.txt; CPU jax is enough);
it imports nothing of this library. It runs the official code's own parts on fixed float32
inputs drawn from a seeded NumPy generator and writes what they return:

- `twohot_*`: the reward / critic head (`Head`, output `symexp_twohot`, 255 bins) with given
  output-layer parameters: its bins, predictions, per-item losses and the gradients of the mean
  loss with respect to the layer's kernel and bias;
- `mse_*`: the vector decoder's head (`symlog_mse`) over a 3-vector, the same quantities;
- `onehot_*`: the latent distribution (`OneHot` with 1% unimix, 32 variables of 4 classes): the
  mixed logits, entropy, KL to a second distribution, and the straight-through gradient of a
  weighted sample with respect to the logits;
- `opt_*`: the optimiser `Agent._make_opt` builds (adaptive clipping, LaProp, warmup) applied
  for four steps to given parameters and gradients, one gradient large enough to be clipped:
  each step's updates;
- `retnorm_*`: the return normaliser (`Normalize`, the agent's `retnorm` settings) over three
  batches of returns: offset and scale after each;
- `mlp_*`: the MLP of every encoder, decoder and head (Linear, RMSNorm, SiLU; 3 x 8 units) and
  `core_*`: the RSSM's recurrent core (`RSSM._core`, a block GRU of 2 blocks), each with random
  parameters (`param_<official name>`): the output, and the gradients of a random weighting of
  it with respect to every parameter and input;
- `rssm_*`: one observed RSSM step and the prior on its state, with the KL losses (free nats,
  dynamics and representation scales), `policy_*`: the policy head (bounded normal), and
  `encoder_*`: the encoder on vectors and an image, `vecdec_*` and `imgdec_*`: the decoder's
  vector and image paths with their losses: the same quantities;
- `return_*`: the lambda-returns of a random imagined rollout, as `imag_loss` computes them;
- `update_*`: one whole training step of the official agent (`Agent.train` at a tiny float32
  config with vector and image inputs, `replay_context` 0) on a batch of 2 x 4 steps with an
  episode end inside: every parameter before (`param_`), the batch (`batch_`), each loss term
  (`loss_`), the gradient of every parameter (`grad_`), the optimiser's first update
  (`update_`), the parameters after the step including the slow critic (`after_`) and the return
  normaliser's state. Its samples come from `fixed_normal` and `fixed_categorical`, which stand
  in for `jax.random.normal` and `jax.random.categorical` in both codebases: deterministic
  functions of the shape and of the probabilities, so that the same distributions give the same
  samples without sharing a random-number stream. `discrete_update_*`: the same with vector
  inputs alone and one of 3 discrete actions (the categorical policy). `context_update_*`: vector
  inputs, continuous actions and `replay_context` 1: a batch of 2 x 5 steps whose first step
  holds random stored latent states (`batch_dyn/deter`, `batch_dyn/stoch`) that the 4 trained
  steps start from; also the latent states the step writes back (`replay_dyn/*`).

Nothing is written unless every part ran: a missing checkout, another commit or a missing
dependency is one `error:` line and exit status 2.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

try:
    from tests.parity.common import (
        GeneratorError,
        fixed_categorical,
        fixed_normal,
        pinned_commit,
        run,
    )
except ImportError:  # run as a script: its folder is on the path
    from common import (
        GeneratorError,
        fixed_categorical,
        fixed_normal,
        pinned_commit,
        run,
    )

OFFICIAL_COMMIT = "e3f02248693a79dc8b0ebd62c93683888ddaccfe"
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "data" / "parity" / "dreamerv3_parts.npz"
SEED = 0


def check_checkout(path: Path) -> str:
    """The checkout's commit, which must be the pinned one."""
    if not (path / "dreamerv3").is_dir():
        raise GeneratorError(f"'{path}' is not a checkout of danijar/dreamerv3 (no dreamerv3/ folder)")
    return pinned_commit(path, "danijar/dreamerv3", OFFICIAL_COMMIT)


def import_official(path: Path):
    sys.path.insert(0, str(path))
    try:
        import elements
        import jax
        import jax.numpy as jnp
        import ninjax as nj
        from dreamerv3.agent import Agent
        from embodied.jax import heads, nets, outs, utils
    except ImportError as err:
        raise GeneratorError(f"the official code's dependencies are missing ({err}): run this with its "
                             f"own environment (pip install -r {path}/requirements.txt)") from None
    jax.config.update("jax_platform_name", "cpu")
    nets.COMPUTE_DTYPE = jnp.float32  # float32 throughout, as the test compares
    return dict(elements=elements, jax=jax, jnp=jnp, nj=nj, Agent=Agent, heads=heads, outs=outs, utils=utils)


def head_data(o, rng, name: str, output: str, shape: tuple, targets: np.ndarray) -> dict:
    """An official `Head` of `output` over `shape`, with random output-layer parameters."""
    jax, jnp, nj = o["jax"], o["jnp"], o["nj"]
    features = 6
    x = rng.normal(size=(len(targets), features)).astype(np.float32)
    space = o["elements"].Space(np.float32, shape)

    def fn(x, target):
        out = o["heads"].Head(space, output, name="head")(x)
        return out.pred(), out.loss(target)

    params = nj.init(fn)({}, jnp.asarray(x), jnp.asarray(targets), seed=0)
    params = {k: jnp.asarray(0.3 * rng.normal(size=v.shape), jnp.float32) for k, v in params.items()}
    _, (pred, loss) = nj.pure(fn)(params, x, targets, seed=0)
    grads = jax.grad(lambda p: nj.pure(fn)(p, x, targets, seed=0)[1][1].mean())(params)
    layer = "logits" if output == "symexp_twohot" else "pred"
    if output == "symexp_twohot":
        _, bins = nj.pure(lambda x: o["heads"].Head(space, output, name="head")(x).bins)(params, x, seed=0)
        extra = {"bins": bins}
    else:
        extra = {}
    data = {**extra, "x": x, "target": targets, "kernel": params[f"head/{layer}/kernel"],
            "bias": params[f"head/{layer}/bias"], "pred": pred, "loss": loss,
            "grad_kernel": grads[f"head/{layer}/kernel"], "grad_bias": grads[f"head/{layer}/bias"]}
    return {f"{name}_{k}": np.asarray(v) for k, v in data.items()}


def onehot_data(o, rng) -> dict:
    jax, jnp, outs = o["jax"], o["jnp"], o["outs"]
    logits = rng.normal(size=(5, 32, 4)).astype(np.float32) * 2
    other = rng.normal(size=(5, 32, 4)).astype(np.float32) * 2
    weights = rng.normal(size=(5, 32, 4)).astype(np.float32)
    dist, prior = outs.OneHot(jnp.asarray(logits), 0.01), outs.OneHot(jnp.asarray(other), 0.01)
    grad = jax.grad(lambda lg: (outs.OneHot(lg, 0.01).pred() * weights).sum())(jnp.asarray(logits))
    data = {"logits": logits, "other": other, "weights": weights, "mixed": dist.dist.logits,
            "entropy": dist.entropy(), "kl": dist.kl(prior), "pred": dist.pred(), "pred_grad": grad}
    return {f"onehot_{k}": np.asarray(v) for k, v in data.items()}


def optimiser_data(o, rng) -> dict:
    jax, jnp = o["jax"], o["jnp"]
    opt = o["Agent"]._make_opt(None, lr=4e-5, agc=0.3, eps=1e-20, warmup=3)  # uses nothing of self
    params = {"a": jnp.asarray(rng.normal(size=(5, 4)), jnp.float32),
              "b": jnp.asarray(0.1 * rng.normal(size=(4,)), jnp.float32)}
    state = opt.init(params)
    data = {"a0": params["a"], "b0": params["b"]}
    for step in range(4):
        scale = 1e3 if step == 2 else 1.0  # adaptive clipping acts on this one
        grads = {k: jnp.asarray(scale * rng.normal(size=v.shape), jnp.float32) for k, v in params.items()}
        updates, state = opt.update(grads, state, params)
        params = jax.tree.map(lambda p, u: p + u, params, updates)
        data.update({f"grad_a{step}": grads["a"], f"grad_b{step}": grads["b"],
                     f"update_a{step}": updates["a"], f"update_b{step}": updates["b"]})
    return {f"opt_{k}": np.asarray(v) for k, v in data.items()}


def retnorm_data(o, rng) -> dict:
    nj, jnp = o["nj"], o["jnp"]
    batches = [rng.normal(loc=i, scale=3.0 + i, size=(64,)).astype(np.float32) for i in range(3)]

    def fn(x):
        return o["utils"].Normalize("perc", rate=0.01, limit=1.0, perclo=5.0, perchi=95.0, debias=False,
                                    name="retnorm")(x, update=True)

    state = nj.init(fn)({}, jnp.asarray(batches[0]), seed=0)
    stats = []
    for batch in batches:
        state, (offset, scale) = nj.pure(fn)(state, jnp.asarray(batch), seed=0)
        stats.append([float(offset), float(scale)])
    return {"retnorm_returns": np.stack(batches), "retnorm_stats": np.asarray(stats, np.float32)}


def random_params(jnp, rng, params: dict) -> dict:
    """Every parameter drawn anew (scales around 1, so no normalisation is a no-op)."""
    return {k: jnp.asarray((1.0 + 0.3 * rng.normal(size=v.shape)) if k.endswith("/scale")
                           else 0.3 * rng.normal(size=v.shape), jnp.float32) for k, v in params.items()}


def module_data(o, rng, name: str, fn, inputs: dict) -> dict:
    """An official module's outputs for random parameters, and the gradients of a random
    weighting of them with respect to every parameter and input. `fn` returns the outputs, or
    (outputs, a scalar loss), whose gradient is then added to the weighting's."""
    jax, jnp, nj = o["jax"], o["jnp"], o["nj"]
    inputs = {k: jnp.asarray(v) for k, v in inputs.items()}
    params = random_params(jnp, rng, nj.init(fn)({}, **inputs, seed=0))
    _, result = nj.pure(fn)(params, **inputs, seed=0)
    out, loss = result if isinstance(result, tuple) else (result, None)
    weights = jnp.asarray(rng.normal(size=out.shape), jnp.float32)
    fixed = {k: v for k, v in inputs.items() if not jnp.issubdtype(v.dtype, jnp.floating)}  # images

    def objective(p, i):
        result = nj.pure(fn)(p, **i, **fixed, seed=0)[1]
        out, loss = result if isinstance(result, tuple) else (result, 0.0)
        return (out * weights).sum() + loss
    floats = {k: v for k, v in inputs.items() if k not in fixed}
    grad_params, grad_inputs = jax.grad(objective, (0, 1))(params, floats)
    data = {"out": out, "weights": weights, **({} if loss is None else {"loss": loss})}
    data.update({f"in_{k}": v for k, v in inputs.items()})
    data.update({f"param_{k}": v for k, v in params.items()})
    data.update({f"grad_{k}": v for k, v in grad_params.items()})
    data.update({f"grad_in_{k}": v for k, v in grad_inputs.items()})
    return {f"{name}_{k}": np.asarray(v) for k, v in data.items()}


def mlp_data(o, rng) -> dict:
    """The official MLP (3 x 8 units, Linear, RMSNorm, SiLU): every encoder, decoder and head's."""
    from embodied.jax import nets

    def fn(x):
        return nets.MLP(3, 8, act="silu", norm="rms", name="mlp")(x)
    return module_data(o, rng, "mlp", fn, {"x": rng.normal(size=(5, 6)).astype(np.float32)})


def core_data(o, rng) -> dict:
    """The official RSSM's recurrent core (`RSSM._core`: deter 16 in 2 blocks, hidden 8, 4 x 3
    latents, a 2-d action, some of it beyond [-1, 1])."""
    from dreamerv3 import rssm

    space = {"action": o["elements"].Space(np.float32, (2,), -1, 1)}

    def fn(deter, stoch, action):
        core = rssm.RSSM(space, deter=16, hidden=8, stoch=4, classes=3, blocks=2, act="silu", norm="rms",
                         name="dyn")
        return core._core(deter, stoch, action)
    inputs = {"deter": rng.normal(size=(5, 16)), "stoch": rng.uniform(size=(5, 4, 3)),
              "action": 1.5 * rng.normal(size=(5, 2))}
    return module_data(o, rng, "core", fn, {k: v.astype(np.float32) for k, v in inputs.items()})


def rssm_data(o, rng) -> dict:
    """One observed RSSM step (`RSSM._observe`: the core, the posterior layers) and the prior
    layers on its state (`RSSM._prior`), with the KL losses of `RSSM.loss` (free nats 1, scales
    1 and 0.1): the deterministic state, the posterior's and prior's unimix logits, the loss,
    and the gradients of a random weighting of them plus the loss."""
    jax, jnp, outs = o["jax"], o["jnp"], o["outs"]
    from dreamerv3 import rssm

    space = {"action": o["elements"].Space(np.float32, (2,), -1, 1)}
    batch = 5

    def fn(deter, stoch, tokens, action):
        core = rssm.RSSM(space, deter=16, hidden=8, stoch=4, classes=3, blocks=2, act="silu", norm="rms",
                         unimix=0.01, free_nats=1.0, name="dyn")
        carry = {"deter": deter, "stoch": stoch}
        _, (_, feat) = core._observe(carry, tokens, {"action": action}, jnp.zeros(batch, bool), True)
        post, prior = feat["logit"], core._prior(feat["deter"])
        dyn = jnp.maximum(core._dist(jax.lax.stop_gradient(post)).kl(core._dist(prior)), 1.0)
        rep = jnp.maximum(core._dist(post).kl(core._dist(jax.lax.stop_gradient(prior))), 1.0)
        mixed = lambda logit: outs.OneHot(logit, 0.01).dist.logits.reshape(batch, -1)  # noqa: E731
        out = jnp.concatenate([feat["deter"], mixed(post), mixed(prior)], -1)
        return out, dyn.mean() + 0.1 * rep.mean()

    inputs = {"deter": rng.normal(size=(batch, 16)), "stoch": np.eye(3)[rng.integers(0, 3, (batch, 4))],
              "tokens": rng.normal(size=(batch, 7)), "action": 1.5 * rng.normal(size=(batch, 2))}
    return module_data(o, rng, "rssm", fn, {k: v.astype(np.float32) for k, v in inputs.items()})


def policy_data(o, rng) -> dict:
    """The policy (`MLPHead` with the agent's `policy` settings at 2 x 8 units: bounded normal,
    std in [0.1, 1]) on random features: the mean action, log-probability of given actions and
    entropy, and the gradients of a random weighting of them."""
    from embodied.jax import heads

    space = {"action": o["elements"].Space(np.float32, (2,), -1, 1)}

    def fn(feat, action):
        dist = heads.MLPHead(space, {"action": "bounded_normal"}, layers=2, units=8, act="silu", norm="rms",
                             minstd=0.1, maxstd=1.0, name="pol")(feat, bdims=1)["action"]
        return o["jnp"].concatenate([dist.pred(), dist.logp(action)[:, None], dist.entropy()[:, None]], -1)
    inputs = {"feat": rng.normal(size=(5, 6)), "action": rng.uniform(-1.2, 1.2, size=(5, 2))}
    return module_data(o, rng, "policy", fn, {k: v.astype(np.float32) for k, v in inputs.items()})


def encoder_data(o, rng) -> dict:
    """The official encoder (`dreamerv3.rssm.Encoder`: depth 2, a 2 x 8 MLP) on two vector inputs
    and a 64 x 64 image: the tokens, and the gradients of a random weighting of them."""
    from dreamerv3 import rssm

    Space = o["elements"].Space
    space = {"position": Space(np.float32, (2,)), "velocity": Space(np.float32, (3,)),
             "image": Space(np.uint8, (64, 64, 3))}

    def fn(position, velocity, image):
        obs = {"position": position, "velocity": velocity, "image": image}
        enc = rssm.Encoder(space, depth=2, units=8, layers=2, act="silu", norm="rms", symlog=True, name="enc")
        return enc({}, obs, o["jnp"].zeros(len(image), bool), True, single=True)[2]
    inputs = {"position": (10 * rng.normal(size=(3, 2))).astype(np.float32),
              "velocity": rng.normal(size=(3, 3)).astype(np.float32),
              "image": rng.integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)}
    return module_data(o, rng, "encoder", fn, inputs)


def vector_decoder_data(o, rng) -> dict:
    """The official decoder's vector path (`dreamerv3.rssm.Decoder`, a 2 x 8 MLP from
    [stoch, deter], one `symlog_mse` output per key): the sum of each key's loss on given
    targets, and the gradients of it and of a random weighting of the predictions."""
    jnp = o["jnp"]
    from dreamerv3 import rssm

    Space = o["elements"].Space
    space = {"position": Space(np.float32, (2,)), "velocity": Space(np.float32, (3,))}
    targets = {"position": (10 * rng.normal(size=(3, 2))).astype(np.float32),
               "velocity": rng.normal(size=(3, 3)).astype(np.float32)}

    def fn(deter, stoch):
        dec = rssm.Decoder(space, units=8, layers=2, act="silu", norm="rms", symlog=True, name="dec")
        _, _, recons = dec({}, {"deter": deter, "stoch": stoch}, jnp.zeros(len(deter), bool), True, single=True)
        preds = jnp.concatenate([recons[k].pred() for k in sorted(space)], -1)
        losses = jnp.stack([recons[k].loss(jnp.asarray(targets[k])) for k in sorted(space)], -1)
        return jnp.concatenate([preds, losses], -1)  # [B, 2 + 3 + 2]
    inputs = {"deter": rng.normal(size=(3, 16)).astype(np.float32),
              "stoch": np.eye(3)[rng.integers(0, 3, (3, 4))].astype(np.float32)}
    data = module_data(o, rng, "vecdec", fn, inputs)
    data.update({f"vecdec_target_{k}": v for k, v in targets.items()})
    return data


def image_decoder_data(o, rng) -> dict:
    """The official decoder's image path (`dreamerv3.rssm.Decoder`, depth 2, block-linear input
    of 2 blocks): the predicted image (in [0, 1]) and its squared-error loss against a target
    image, and the gradients of a random weighting of them."""
    jnp = o["jnp"]
    from dreamerv3 import rssm

    space = {"image": o["elements"].Space(np.uint8, (64, 64, 3))}
    target = rng.uniform(size=(3, 64, 64, 3)).astype(np.float32)

    def fn(deter, stoch):
        dec = rssm.Decoder(space, depth=2, units=8, act="silu", norm="rms", bspace=2, name="dec")
        _, _, recons = dec({}, {"deter": deter, "stoch": stoch}, jnp.zeros(len(deter), bool), True, single=True)
        pred, loss = recons["image"].pred(), recons["image"].loss(jnp.asarray(target))
        return jnp.concatenate([pred.reshape(len(deter), -1), loss[:, None]], -1)
    inputs = {"deter": rng.normal(size=(3, 16)).astype(np.float32),
              "stoch": np.eye(3)[rng.integers(0, 3, (3, 4))].astype(np.float32)}
    data = module_data(o, rng, "imgdec", fn, inputs)
    data["imgdec_target"] = target
    return data


def return_data(o, rng) -> dict:
    """The official lambda-returns (`dreamerv3.agent.lambda_return`) of an imagined rollout as
    `imag_loss` calls it (continuation holding the discount, lambda 0.95, bootstrapped from the
    target values): rewards, continuations and values [N, H + 1], returns [N, H]."""
    from dreamerv3.agent import lambda_return

    jnp = o["jnp"]
    n, h = 4, 6
    rew = rng.normal(size=(n, h + 1)).astype(np.float32)
    con = rng.uniform(0.9, 1.0, size=(n, h + 1)).astype(np.float32)
    con[0, 3] = 0.0  # an episode end inside the rollout
    val = (5 * rng.normal(size=(n, h + 1))).astype(np.float32)
    ret = lambda_return(jnp.zeros_like(con), 1 - con, rew, val, val, 1, 0.95)
    return {"return_rew": rew, "return_con": con, "return_val": val, "return_ret": np.asarray(ret)}


KERNEL_SCALE = 0.5
UPDATE_CONFIG = {  # the official defaults at tiny sizes; no warmup, so that the step moves
    "agent.dyn.rssm": dict(deter=16, hidden=8, stoch=4, classes=3, blocks=2),
    "agent.enc.simple": dict(depth=2, units=8, layers=2),
    "agent.dec.simple": dict(depth=2, units=8, layers=2, bspace=2),
    "agent.rewhead": dict(layers=1, units=8), "agent.conhead": dict(layers=1, units=8),
    "agent.policy": dict(layers=2, units=8), "agent.value": dict(layers=2, units=8),
    "agent.imag_length": 3, "agent.opt.warmup": 0}


def update_batch(rng, batch: int, length: int, discrete: bool) -> dict:
    """A replayed batch in the official layout (action t is taken at step t): two vectors and an
    image, 2-d continuous actions; or the vectors alone and one of 3 discrete actions. The
    second sequence's episode ends at step 2 and the next one starts at step 3."""
    data = {"position": (5 * rng.normal(size=(batch, length, 2))).astype(np.float32),
            "velocity": rng.normal(size=(batch, length, 3)).astype(np.float32)}
    if not discrete:
        data["image"] = rng.integers(0, 256, (batch, length, 64, 64, 3), dtype=np.uint8)
    data["reward"] = rng.normal(size=(batch, length)).astype(np.float32)
    data["action"] = (rng.integers(0, 3, (batch, length)).astype(np.int32) if discrete
                      else rng.uniform(-1.2, 1.2, (batch, length, 2)).astype(np.float32))
    data.update({k: np.zeros((batch, length), bool) for k in ("is_first", "is_last", "is_terminal")})
    data["is_first"][:, 0] = data["is_first"][1, 3] = True
    data["is_terminal"][1, 2] = data["is_last"][1, 2] = True
    return data


def update_data(o, rng, discrete: bool, context: bool = False) -> dict:
    """One official training step (see the module's docstring); `discrete`: the second batch
    layout of `update_batch`, under the prefix `discrete_`; `context`: vectors only, replay
    context 1, under the prefix `context_`."""
    from unittest import mock

    import ruamel.yaml

    jax, jnp, nj, elements = o["jax"], o["jnp"], o["nj"], o["elements"]
    from dreamerv3 import agent as agent_module

    folder = Path(agent_module.__file__).parent
    configs = ruamel.yaml.YAML(typ="safe").load((folder / "configs.yaml").read_text())
    config = elements.Config(configs["defaults"]).update(UPDATE_CONFIG)
    batch, length = 2, 4
    config = elements.Config(**config.agent, logdir="", seed=0, jax=config.jax, batch_size=batch,
                             batch_length=length, replay_context=int(context), report_length=length,
                             replica=0, replicas=1)
    Space = elements.Space
    obs_space = {"position": Space(np.float32, (2,)), "velocity": Space(np.float32, (3,)),
                 "reward": Space(np.float32), **{k: Space(bool) for k in ("is_first", "is_last", "is_terminal")}}
    if not discrete and not context:
        obs_space["image"] = Space(np.uint8, (64, 64, 3))
    action = Space(np.int32, (), 0, 3) if discrete else Space(np.float32, (2,), -1, 1)
    agent = object.__new__(agent_module.Agent)  # the inner agent, without the outer jit wrapper
    agent.__init__(obs_space, {"action": action}, config)
    data = update_batch(rng, batch, length + context, discrete)
    if context:  # the stored latent states: only the first step's are read
        del data["image"]
        data["dyn/deter"] = rng.normal(size=(batch, length + 1, config.dyn.rssm.deter)).astype(np.float32)
        classes = rng.integers(0, config.dyn.rssm.classes, (batch, length + 1, config.dyn.rssm.stoch))
        data["dyn/stoch"] = np.eye(config.dyn.rssm.classes, dtype=np.float32)[classes]
    inputs = {**data, "stepid": np.zeros((batch, length + context, 20), np.uint8),
              "consec": np.zeros((batch, length + context), np.int32)}

    def train(inputs):
        return agent.train(agent.init_train(batch), inputs)

    def gradients(inputs):
        carry, obs, prevact, _ = agent._apply_replay_context(agent.init_train(batch), inputs)
        _, _, grads, aux = nj.grad(agent.loss, agent.modules, has_aux=True)(carry, obs, prevact, training=True)
        return grads, aux[3]

    with mock.patch.object(jax.random, "normal", fixed_normal), \
            mock.patch.object(jax.random, "categorical", fixed_categorical):
        state = nj.init(train)({}, inputs, seed=0)
        learned = [k for k in state if not k.startswith(("opt/", "retnorm/", "valnorm/", "advnorm/"))
                   and not k.endswith("_count/value")]
        params = {**state, **random_params(jnp, rng, {k: state[k] for k in learned})}
        # Two-hot outputs peaked around the middle bins, so that rewards and values stay in a
        # plausible range; sharper latent logits, so that the KL exceeds the free nats in places.
        for k in learned:
            if "/head/logits/" in k:
                peak = -0.5 * np.abs(np.arange(params[k].shape[-1]) - params[k].shape[-1] // 2)
                params[k] = params[k] + peak if k.endswith("bias") else 0.1 * params[k]
            elif k.startswith(("dyn/obslogit/", "dyn/priorlogit/")):
                params[k] = 4.0 * params[k]
            elif not k.endswith("/scale"):
                params[k] = KERNEL_SCALE * params[k]
        _, (grads, metrics) = nj.pure(gradients)(params, inputs, seed=0)
        after, (_, outs, _) = nj.pure(train)(params, inputs, seed=0)
    opt = agent._make_opt(**config.opt)
    trained = {k: params[k] for k in grads}
    updates, _ = opt.update(grads, opt.init(trained), trained)
    for k, update in updates.items():  # the same step as the agent's own optimiser
        np.testing.assert_allclose(after[k], trained[k] + update, rtol=1e-6, atol=1e-9)
    out = {f"batch_{k}": v for k, v in data.items()}
    out.update({f"param_{k}": params[k] for k in learned})
    out.update({f"loss_{k[5:]}": v for k, v in metrics.items() if k.startswith("loss/")})
    out.update({f"grad_{k}": v for k, v in grads.items()})
    out.update({f"update_{k}": v for k, v in updates.items()})
    out.update({f"after_{k}": after[k] for k in learned})
    out["retnorm"] = jnp.stack([after["retnorm/lo/value"], after["retnorm/hi/value"]])
    out.update({f"replay_{k}": v for k, v in outs.get("replay", {}).items() if k != "stepid"})
    prefix = "discrete_" if discrete else "context_" if context else ""
    return {f"{prefix}update_{k}": np.asarray(v) for k, v in out.items()}


def generate(o) -> dict:
    rng = np.random.default_rng(SEED)
    twohot_targets = np.array([0.0, 0.5, -3.0, 1e3, -1e6, 20.0, 1e-3], np.float32)
    data = head_data(o, rng, "twohot", "symexp_twohot", (), twohot_targets)
    data.update(head_data(o, rng, "mse", "symlog_mse", (3,), (rng.normal(size=(5, 3)) * 50).astype(np.float32)))
    data.update(onehot_data(o, rng))
    data.update(optimiser_data(o, rng))
    data.update(retnorm_data(o, rng))
    data.update(mlp_data(o, rng))
    data.update(core_data(o, rng))
    data.update(rssm_data(o, rng))
    data.update(policy_data(o, rng))
    data.update(encoder_data(o, rng))
    data.update(vector_decoder_data(o, rng))
    data.update(image_decoder_data(o, rng))
    data.update(return_data(o, rng))
    data.update(update_data(o, rng, discrete=False))
    data.update(update_data(o, rng, discrete=True))
    data.update(update_data(o, rng, discrete=False, context=True))
    return data


def main(argv: list[str] | None = None) -> int:
    return run(argv, "generate_dreamerv3.py", "danijar/dreamerv3", DEFAULT_OUT, check_checkout, import_official,
               generate)


if __name__ == "__main__":
    sys.exit(main())
