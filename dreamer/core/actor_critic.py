"""Actor-critic learned in imagination (Dreamer). Plan2Explore reuses it with another reward.

The actor maximises lambda-returns by backpropagating them through the learned dynamics
(reparameterised actions); the value regresses the same returns with a stop-gradient. Only
the actor's and the value's parameters are differentiated: the world model is an input.

DreamerV3's techniques are switches of the config section `behavior`: a two-hot critic
(`critic`), a slow critic the critic is regularised towards (`slow_critic_rate`), and returns
normalised by their percentile range (`return_norm`).
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import distrax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from dreamer.core.config import ActorCriticConfig
from dreamer.core.nets import MLP, make_optimizer
from dreamer.core.rssm import State
from dreamer.core.twohot import ScalarOutput
from dreamer.core.world_model import WorldModel

# seq = {'feat': [N, H+1, F] (index 0 is the start state), 'action': [N, H, A]} -> rewards [N, H]
RewardFn = Callable[[dict], jax.Array]


class Actor(nn.Module):
    """Latent features -> action distribution parameters."""

    cfg: ActorCriticConfig
    action_size: int
    discrete: bool
    act: str = "elu"
    norm: str = "none"

    @nn.compact
    def __call__(self, feat: jax.Array) -> jax.Array:
        size = self.action_size if self.discrete else 2 * self.action_size
        return MLP(self.cfg.actor_layers, self.cfg.actor_units, size, self.act, norm=self.norm)(feat)


def action_dist(cfg: ActorCriticConfig, out: jax.Array, discrete: bool) -> distrax.Distribution:
    """Tanh-transformed diagonal Gaussian (continuous) or one-hot categorical (discrete)."""
    if discrete:
        return distrax.OneHotCategorical(logits=out)
    mean, raw_std = jnp.split(out, 2, -1)
    mean = cfg.mean_scale * jnp.tanh(mean / cfg.mean_scale)
    raw_init = jnp.log(jnp.exp(cfg.init_std) - 1.0)  # softplus(raw_init) == init_std
    std = jax.nn.softplus(raw_std + raw_init) + cfg.min_std
    return distrax.Transformed(distrax.MultivariateNormalDiag(mean, std), distrax.Block(distrax.Tanh(), 1))


def lambda_return(reward: jax.Array, value: jax.Array, discount: jax.Array, bootstrap: jax.Array,
                  lambda_: float) -> jax.Array:
    """TD(lambda) returns with a reverse scan over time (axis 1).

    reward, value, discount [N, H]; bootstrap [N]. As in Dreamer, reward[t], value[t] and
    discount[t] are all predicted from the same imagined state s_t:
      R_t = r_t + d_t ((1 - lambda) V(s_{t+1}) + lambda R_{t+1}),  with V(s_H) = R_H = bootstrap.
    """
    next_value = jnp.concatenate([value[:, 1:], bootstrap[:, None]], 1)
    inputs = reward + discount * next_value * (1.0 - lambda_)

    def step(ret, xs):
        inp, disc = xs
        ret = inp + disc * lambda_ * ret
        return ret, ret

    _, returns = jax.lax.scan(step, bootstrap, (inputs.T, discount.T), reverse=True)
    return returns.T


class ACState(NamedTuple):
    actor: dict
    value: dict
    actor_opt: optax.OptState
    value_opt: optax.OptState
    slow_value: dict  # the slow critic's parameters; {} without one
    return_range: jax.Array  # [2]: EMAs of the returns' low and high percentiles (return_norm)


def update_return_range(cfg: ActorCriticConfig, return_range: jax.Array, returns: jax.Array) -> jax.Array:
    """One EMA step of the (low, high) percentiles of the lambda-returns [...] -> [2]."""
    batch = jnp.percentile(returns, jnp.array([cfg.return_norm_low, cfg.return_norm_high]))
    return (1.0 - cfg.return_norm_rate) * return_range + cfg.return_norm_rate * batch


def return_scale(cfg: ActorCriticConfig, return_range: jax.Array) -> jax.Array:
    """What the returns are divided by: max(limit, high - low); 1 without normalisation."""
    if cfg.return_norm == "none":
        return jnp.ones((), jnp.float32)
    return jnp.maximum(cfg.return_norm_limit, return_range[1] - return_range[0])


class ActorCritic:
    """The actor and the critic; their layers use the world model's activation and
    normalisation (`model.act`, `model.norm`)."""

    def __init__(self, cfg: ActorCriticConfig, world_model: WorldModel, action_size: int, discrete: bool):
        self.cfg = cfg
        self.wm = world_model
        self.discrete = discrete
        act, norm = world_model.cfg.act, world_model.cfg.norm
        self.actor = Actor(cfg, action_size, discrete, act, norm)
        self.value_out = ScalarOutput(cfg.critic, cfg.twohot_bins)
        self.value = MLP(cfg.value_layers, cfg.value_units, self.value_out.size, act,
                         zero_out=self.value_out.zero_init, norm=norm)
        self.actor_opt = make_optimizer(cfg.optimizer, cfg.actor_lr, cfg.eps, cfg.grad_clip, cfg.agc, cfg.warmup)
        self.value_opt = make_optimizer(cfg.optimizer, cfg.value_lr, cfg.eps, cfg.grad_clip, cfg.agc, cfg.warmup)

    def init(self, key: jax.Array) -> ACState:
        feat = jnp.zeros((1, self.wm.feat_size))
        k1, k2 = jax.random.split(key)
        actor, value = self.actor.init(k1, feat), self.value.init(k2, feat)
        slow_value = jax.tree.map(jnp.copy, value) if self.cfg.slow_critic_rate > 0 else {}
        return ACState(actor, value, self.actor_opt.init(actor), self.value_opt.init(value), slow_value,
                       jnp.zeros(2, jnp.float32))

    def dist(self, actor_params: dict, feat: jax.Array) -> distrax.Distribution:
        return action_dist(self.cfg, self.actor.apply(actor_params, feat), self.discrete)

    def sample(self, actor_params: dict, feat: jax.Array, key: jax.Array) -> jax.Array:
        """Reparameterised sample (straight-through one-hot for discrete actions)."""
        dist = self.dist(actor_params, feat)
        action = dist.sample(seed=key)
        if self.discrete:
            probs = dist.probs
            action = action.astype(jnp.float32) + probs - jax.lax.stop_gradient(probs)
        return action

    def mode(self, actor_params: dict, feat: jax.Array, key: jax.Array) -> jax.Array:
        """Deterministic-in-spirit evaluation action [N, A]: the most likely discrete action;
        for continuous actions Dreamer's estimate of the tanh-normal's mode, the likeliest of
        `eval_samples` samples (Dreamer's code takes the first batch row's likeliest index
        for every row; here each row takes its own), or with `eval_samples` 0 tanh(mean),
        the distribution's median."""
        out = self.actor.apply(actor_params, feat)
        if self.discrete:
            return jax.nn.one_hot(jnp.argmax(out, -1), out.shape[-1])
        if self.cfg.eval_samples == 0:
            mean, _ = jnp.split(out, 2, -1)
            return jnp.tanh(self.cfg.mean_scale * jnp.tanh(mean / self.cfg.mean_scale))
        dist = action_dist(self.cfg, out, self.discrete)
        samples, log_prob = dist.sample_and_log_prob(seed=key, sample_shape=self.cfg.eval_samples)
        best = jnp.argmax(log_prob, 0)  # [N]
        return jnp.take_along_axis(samples, best[None, :, None], 0)[0]

    def value_of(self, value_params: dict, feat: jax.Array) -> jax.Array:
        """[..., F] -> predicted return [...]: the Gaussian's mean or the two-hot expectation."""
        return self.value_out.mean(self.value.apply(value_params, feat))

    def imagine(self, actor_params, wm_params, start: State, key: jax.Array) -> dict:
        """Roll the actor out in the model from `start` [N, ...] for `horizon` steps:
        {'feat' [N, H+1, F] (index 0 the start), 'action' [N, H, A]}."""
        policy = lambda feat, k: self.sample(actor_params, feat, k)  # noqa: E731
        states, actions = self.wm.rssm.imagine(wm_params["rssm"], start, key,
                                               horizon=self.cfg.horizon, policy=policy)
        start_feat = self.wm.rssm.get_feat(start)[:, None]
        feat = jnp.concatenate([start_feat, self.wm.rssm.get_feat(states)], 1)  # [N, H+1, F]
        return {"feat": feat, "action": actions}

    def _discount(self, wm_params, feat: jax.Array) -> jax.Array:
        cont = self.wm.continuation(wm_params, feat)
        if cont is None:
            return jnp.full(feat.shape[:-1], self.cfg.discount)
        return self.cfg.discount * cont

    def actor_loss(self, actor_params, value_params, wm_params, start: State, key, reward_fn: RewardFn,
                   return_range: jax.Array):
        seq = self.imagine(actor_params, wm_params, start, key)
        reward = reward_fn(seq)  # [N, H]: reward for arriving at feat[:, 1:]
        value = self.value_of(value_params, seq["feat"])  # [N, H+1]
        discount = self._discount(wm_params, seq["feat"][:, 1:])  # [N, H]
        returns = lambda_return(reward[:, :-1], value[:, 1:-1], discount[:, :-1], value[:, -1],
                                self.cfg.return_lambda)  # [N, H-1], for states 1..H-1
        # Later imagined steps count less where the model predicts the episode may have ended.
        weight = jnp.cumprod(jnp.concatenate([jnp.ones_like(discount[:, :1]), discount[:, :-2]], 1), 1)
        weight = jax.lax.stop_gradient(weight)
        if self.cfg.return_norm != "none":
            return_range = update_return_range(self.cfg, return_range, jax.lax.stop_gradient(returns))
        loss = -(weight * returns).mean() / return_scale(self.cfg, return_range)
        aux = {"feat": seq["feat"][:, 1:-1], "returns": returns, "weight": weight,
               "reward": reward, "action": seq["action"], "return_range": return_range}
        return loss, aux

    def value_loss(self, value_params, slow_value_params, feat: jax.Array, returns: jax.Array,
                   weight: jax.Array) -> jax.Array:
        feat = jax.lax.stop_gradient(feat)
        out = self.value.apply(value_params, feat)
        loss = self.value_out.loss(out, returns)
        if self.cfg.slow_critic_rate > 0:  # towards the slow critic's predictions
            loss += self.cfg.slow_critic_reg * self.value_out.loss(out, self.value_of(slow_value_params, feat))
        return (weight * loss).mean()

    def update(self, state: ACState, wm_params, start: State, key: jax.Array,
               reward_fn: RewardFn) -> tuple[ACState, dict]:
        """One actor and one value step from imagined rollouts starting at `start` [N, ...]."""
        start = jax.tree.map(jax.lax.stop_gradient, start)
        wm_params = jax.lax.stop_gradient(wm_params)
        (actor_loss, aux), actor_grads = jax.value_and_grad(self.actor_loss, has_aux=True)(
            state.actor, state.value, wm_params, start, key, reward_fn, state.return_range)
        value_loss, value_grads = jax.value_and_grad(self.value_loss)(
            state.value, state.slow_value, aux["feat"], aux["returns"], aux["weight"])
        actor_updates, actor_opt = self.actor_opt.update(actor_grads, state.actor_opt, state.actor)
        value_updates, value_opt = self.value_opt.update(value_grads, state.value_opt, state.value)
        value = optax.apply_updates(state.value, value_updates)
        rate, slow_value = self.cfg.slow_critic_rate, state.slow_value
        if rate > 0:
            slow_value = jax.tree.map(lambda slow, new: (1 - rate) * slow + rate * new, slow_value, value)
        new_state = ACState(optax.apply_updates(state.actor, actor_updates), value, actor_opt, value_opt,
                            slow_value, aux["return_range"])
        metrics = {
            "actor_loss": actor_loss, "value_loss": value_loss,
            "imagined_reward": aux["reward"].mean(), "imagined_return": aux["returns"].mean(),
            "actor_grad_norm": optax.tree.norm(actor_grads),
            "action_abs": jnp.abs(aux["action"]).mean(),
            "return_scale": return_scale(self.cfg, aux["return_range"]),
        }
        return new_state, metrics
