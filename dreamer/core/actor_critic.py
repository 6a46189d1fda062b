"""Actor-critic learned in imagination (Dreamer). Plan2Explore reuses it with another reward.

The actor maximises lambda-returns by backpropagating them through the learned dynamics
(reparameterised actions); the critic regresses the same returns with a stop-gradient. Only
the actor's and the critic's parameters are differentiated: the world model is an input.

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
    initializer: str = "glorot"

    @nn.compact
    def __call__(self, feat: jax.Array) -> jax.Array:
        size = self.action_size if self.discrete else 2 * self.action_size
        return MLP(self.cfg.actor_layers, self.cfg.actor_units, size, self.act, norm=self.norm, initializer=self.initializer,
                   out_scale=self.cfg.actor_out_scale, name="mlp")(feat)


def action_dist(cfg: ActorCriticConfig, out: jax.Array, discrete: bool) -> distrax.Distribution:
    """One-hot categorical (discrete actions); for continuous actions `actor_dist`: Dreamer's
    tanh-transformed diagonal Gaussian, or DreamerV3's bounded normal, a diagonal Gaussian with
    mean tanh(x) and std in [min_std, max_std] (its samples can leave [-1, 1]; the environment
    clips them, and the model sees them divided by max(1, |a|))."""
    if discrete:
        return distrax.OneHotCategorical(logits=out)
    mean, raw_std = jnp.split(out, 2, -1)
    if cfg.actor_dist == "bounded_normal":
        std = (cfg.max_std - cfg.min_std) * jax.nn.sigmoid(raw_std + 2.0) + cfg.min_std
        return distrax.MultivariateNormalDiag(jnp.tanh(mean), std)
    mean = cfg.mean_scale * jnp.tanh(mean / cfg.mean_scale)
    raw_init = jnp.log(jnp.exp(cfg.init_std) - 1.0)  # softplus(raw_init) == init_std
    std = jax.nn.softplus(raw_std + raw_init) + cfg.min_std
    return distrax.Transformed(distrax.MultivariateNormalDiag(mean, std), distrax.Block(distrax.Tanh(), 1))


def lambda_return(reward: jax.Array, value: jax.Array, discount: jax.Array, bootstrap: jax.Array,
                  lambda_: float | jax.Array) -> jax.Array:
    """TD(lambda) returns with a reverse scan over time (axis 1).

    reward, value, discount [N, H]; bootstrap [N]; lambda_ a scalar or [N, H]:
      R_t = r_t + d_t ((1 - lambda_t) V_{t+1} + lambda_t R_{t+1}),  with V_H = R_H = bootstrap.
    Dreamer predicts reward[t], value[t] and discount[t] from the same imagined state s_t;
    DreamerV3 passes the reward and continuation of arriving at s_{t+1} (see `ActorCritic`).
    """
    lambda_ = jnp.broadcast_to(lambda_, reward.shape)
    next_value = jnp.concatenate([value[:, 1:], bootstrap[:, None]], 1)
    inputs = reward + discount * next_value * (1.0 - lambda_)

    def step(ret, xs):
        inp, disc, lam = xs
        ret = inp + disc * lam * ret
        return ret, ret

    _, returns = jax.lax.scan(step, bootstrap, (inputs.T, discount.T, lambda_.T), reverse=True)
    return returns.T


class ACState(NamedTuple):
    actor: dict
    critic: dict
    actor_opt: optax.OptState
    critic_opt: optax.OptState
    slow_critic: dict  # the slow critic's parameters; {} without one
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
    """The actor and the critic; their layers use the world model's activation, normalisation
    and initialiser (`model.activation`, `model.norm`, `model.init`)."""

    def __init__(self, cfg: ActorCriticConfig, world_model: WorldModel, action_size: int, discrete: bool):
        self.cfg = cfg
        self.wm = world_model
        self.discrete = discrete
        act, norm, init = world_model.cfg.activation, world_model.cfg.norm, world_model.cfg.init
        self.actor = Actor(cfg, action_size, discrete, act, norm, init)
        self.critic_out = ScalarOutput(cfg.critic, cfg.twohot_bins)
        self.critic = MLP(cfg.critic_layers, cfg.critic_units, self.critic_out.size, act,
                         out_scale=self.critic_out.out_scale, norm=norm, initializer=init)
        self.actor_opt = make_optimizer(cfg.optimizer, cfg.actor_lr, cfg.eps, cfg.grad_clip, cfg.agc, cfg.warmup)
        self.critic_opt = make_optimizer(cfg.optimizer, cfg.critic_lr, cfg.eps, cfg.grad_clip, cfg.agc, cfg.warmup)
        # DreamerV3's contdisc: the continuation head already holds the discount.
        self.folded_discount = world_model.cfg.cont_head and world_model.cfg.cont_discount < 1

    def init(self, key: jax.Array) -> ACState:
        feat = jnp.zeros((1, self.wm.feat_size))
        k1, k2 = jax.random.split(key)
        actor, critic = self.actor.init(k1, feat), self.critic.init(k2, feat)
        slow_critic = jax.tree.map(jnp.copy, critic) if self.cfg.slow_critic_rate > 0 else {}
        return ACState(actor, critic, self.actor_opt.init(actor), self.critic_opt.init(critic), slow_critic,
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
        for continuous actions the likeliest of `eval_samples` samples (Dreamer's estimate of
        the tanh-normal's mode; Dreamer's code takes the first batch row's likeliest index for
        every row, here each row takes its own; 1: a plain sample, as DreamerV3 evaluates), or
        with `eval_samples` 0 the distribution's median: tanh(mean), or the bounded normal's mean."""
        out = self.actor.apply(actor_params, feat)
        if self.discrete:
            return jax.nn.one_hot(jnp.argmax(out, -1), out.shape[-1])
        if self.cfg.eval_samples == 0:
            return self.location(out)
        dist = action_dist(self.cfg, out, self.discrete)
        samples, log_prob = dist.sample_and_log_prob(seed=key, sample_shape=self.cfg.eval_samples)
        best = jnp.argmax(log_prob, 0)  # [N]
        return jnp.take_along_axis(samples, best[None, :, None], 0)[0]

    def location(self, out: jax.Array) -> jax.Array:
        """The policy's central action [..., A] from the actor's output: tanh(mean) for the
        tanh-normal (its median) and the bounded normal (its mean); the probabilities for
        discrete actions."""
        if self.discrete:
            return jax.nn.softmax(out, -1)
        mean, _ = jnp.split(out, 2, -1)
        if self.cfg.actor_dist == "bounded_normal":
            return jnp.tanh(mean)
        return jnp.tanh(self.cfg.mean_scale * jnp.tanh(mean / self.cfg.mean_scale))

    def value_of(self, critic_params: dict, feat: jax.Array) -> jax.Array:
        """[..., F] -> predicted return [...]: the Gaussian's mean or the two-hot expectation."""
        return self.critic_out.mean(self.critic.apply(critic_params, feat))

    def imagine(self, actor_params, wm_params, start: State, key: jax.Array) -> dict:
        """Roll the actor out in the model from `start` [N, ...] for `horizon` steps:
        {'feat' [N, H+1, F] (index 0 the start), 'action' [N, H, A] (action t taken at feat t)}."""
        policy = lambda feat, k: self.sample(actor_params, feat, k)  # noqa: E731
        states, actions = self.wm.rssm.imagine(wm_params["rssm"], start, key,
                                               horizon=self.cfg.horizon, policy=policy)
        start_feat = self.wm.rssm.get_feat(start)[:, None]
        feat = jnp.concatenate([start_feat, self.wm.rssm.get_feat(states)], 1)  # [N, H+1, F]
        return {"feat": feat, "action": actions}

    def _discount(self, wm_params, feat: jax.Array) -> jax.Array:
        """Per-state discount [...]: `discount` times the continuation head's probability, or
        the head alone where it holds the discount (model.cont_discount)."""
        cont = self.wm.continuation(wm_params, feat)
        if cont is None:
            return jnp.full(feat.shape[:-1], self.cfg.discount)
        return cont if self.folded_discount else self.cfg.discount * cont

    def returns(self, reward: jax.Array, value: jax.Array, discount: jax.Array
                ) -> tuple[jax.Array, jax.Array, slice]:
        """Lambda-returns of an imagined rollout, their weights, and which states they belong to.

        reward [N, H] (of arriving at feat[:, 1:]), value and discount [N, H+1] (every state).
        'dreamer': R_t = r(s_t) + d_t(...) for states 1..H-1, weights the product of the
        discounts before t. 'dreamerv3': R_t = r(s_{t+1}) + d_{t+1}(...) for states 0..H-1,
        so that R_t - V(s_t) is the advantage of the action taken at s_t; weights the
        product of the continuations up to and including t (DreamerV3's `weight`).
        """
        lam = self.cfg.return_lambda
        if self.cfg.returns == "dreamer":
            returns = lambda_return(reward[:, :-1], value[:, 1:-1], discount[:, 1:-1], value[:, -1], lam)
            weight = jnp.cumprod(jnp.concatenate([jnp.ones_like(discount[:, :1]), discount[:, 1:-2]], 1), 1)
            return returns, weight, slice(1, -1)
        returns = lambda_return(reward, value[:, :-1], discount[:, 1:], value[:, -1], lam)
        weight = jnp.cumprod(discount[:, :-1], 1) / (1.0 if self.folded_discount else self.cfg.discount)
        return returns, weight, slice(0, -1)

    def actor_loss(self, actor_params, critic_params, wm_params, start: State, key, reward_fn: RewardFn,
                   return_range: jax.Array):
        cfg, sg = self.cfg, jax.lax.stop_gradient
        # REINFORCE differentiates only the log-probabilities: no gradient through the rollout.
        seq = self.imagine(sg(actor_params) if cfg.actor_grad == "reinforce" else actor_params, wm_params, start, key)
        reward = reward_fn(seq)  # [N, H]: reward for arriving at feat[:, 1:]
        value = self.value_of(critic_params, seq["feat"])  # [N, H+1]
        discount = self._discount(wm_params, seq["feat"])  # [N, H+1]
        returns, weight, states = self.returns(reward, value, discount)
        # Later imagined steps count less where the model predicts the episode may have ended.
        weight = sg(weight)
        if cfg.return_norm != "none":
            return_range = update_return_range(cfg, return_range, sg(returns))
        scale = return_scale(cfg, return_range)
        dist = self.dist(actor_params, sg(seq["feat"][:, states]))  # the policy at those states
        if cfg.actor_grad == "reinforce":  # the score function of each action times its advantage
            advantage = sg((returns - value[:, states]) / scale)
            objective = dist.log_prob(sg(seq["action"][:, states.start:])) * advantage  # action t at state t
        else:  # the returns' gradient through the imagined dynamics
            objective = returns / scale
        if cfg.actor_entropy > 0:
            objective += cfg.actor_entropy * dist.entropy()
        loss = -(weight * objective).mean()
        aux = {"feat": seq["feat"][:, states], "returns": returns, "weight": weight,
               "reward": reward, "action": seq["action"], "return_range": return_range}
        return loss, aux

    def critic_loss(self, critic_params, slow_critic_params, feat: jax.Array, returns: jax.Array,
                    weight: jax.Array) -> jax.Array:
        """Weighted mean over [...] of the critic's loss at feat [..., F] towards returns [...]
        (and towards the slow critic's predictions, if any). The gradient reaches the critic and
        `feat`; the targets are constants."""
        out = self.critic.apply(critic_params, feat)
        loss = self.critic_out.loss(out, returns)
        if self.cfg.slow_critic_rate > 0:  # towards the slow critic's predictions
            loss += self.cfg.slow_critic_reg * self.critic_out.loss(out, self.value_of(slow_critic_params, feat))
        return (weight * loss).mean()

    def replay_returns(self, replay: dict, start_returns: jax.Array) -> jax.Array:
        """DreamerV3's replay value targets: lambda-returns along the replayed sequences with
        their real rewards and terminal flags, bootstrapped by the imagined returns of each
        posterior state, cut where an episode ends. replay: feat [B, T, F], reward,
        is_terminal, is_last [B, T]; start_returns [B, T]. Returns [B, T-1] (states 0..T-2)."""
        live = (1.0 - replay["is_terminal"][:, 1:].astype(jnp.float32)) * self.cfg.discount
        lam = (1.0 - replay["is_last"][:, 1:].astype(jnp.float32)) * self.cfg.return_lambda
        return lambda_return(replay["reward"][:, 1:], start_returns[:, :-1], live, start_returns[:, -1], lam)

    def update(self, state: ACState, wm_params, start: State, key: jax.Array, reward_fn: RewardFn,
               replay: dict | None = None) -> tuple[ACState, dict, jax.Array]:
        """One actor and one value step from imagined rollouts starting at `start` [N, ...].
        With `replay_value_scale` > 0, `replay` (see `replay_returns`) holds the replayed
        sequences whose posterior states are `start`, in order (N = B * T).

        Returns (new state, metrics, representation loss): the scaled replay value loss as a
        function of `replay['feat']` under the critic before its step, for the world model's
        gradient (`replay_value_grad`; DreamerV3's `repval_grad`), else 0."""
        sg = jax.lax.stop_gradient
        start, wm_params = sg(start), sg(wm_params)
        (actor_loss, aux), actor_grads = jax.value_and_grad(self.actor_loss, has_aux=True)(
            state.actor, state.critic, wm_params, start, key, reward_fn, state.return_range)
        scale = self.cfg.replay_value_scale
        if scale > 0:
            batch, length = replay["reward"].shape
            targets = sg(self.replay_returns(replay, aux["returns"][:, 0].reshape(batch, length)))
            live = 1.0 - replay["is_last"][:, :-1].astype(jnp.float32)

        def replay_loss(critic_params, feat):  # feat [B, T, F]: the critic on replayed states 0..T-2
            return self.critic_loss(critic_params, state.slow_critic, feat[:, :-1], targets, live)

        def total_critic_loss(critic_params):
            imagined = self.critic_loss(critic_params, state.slow_critic, sg(aux["feat"]), aux["returns"], aux["weight"])
            replayed = replay_loss(critic_params, sg(replay["feat"])) if scale > 0 else jnp.zeros(())
            return imagined + scale * replayed, (imagined, replayed)

        (_, (critic_loss, replay_value_loss)), critic_grads = jax.value_and_grad(total_critic_loss, has_aux=True)(
            state.critic)
        representation_loss = jnp.zeros(())
        if scale > 0 and self.cfg.replay_value_grad:
            representation_loss = scale * replay_loss(sg(state.critic), replay["feat"])
        actor_updates, actor_opt = self.actor_opt.update(actor_grads, state.actor_opt, state.actor)
        critic_updates, critic_opt = self.critic_opt.update(critic_grads, state.critic_opt, state.critic)
        critic = optax.apply_updates(state.critic, critic_updates)
        rate, slow_critic = self.cfg.slow_critic_rate, state.slow_critic
        if rate > 0:
            slow_critic = jax.tree.map(lambda slow, new: (1 - rate) * slow + rate * new, slow_critic, critic)
        new_state = ACState(optax.apply_updates(state.actor, actor_updates), critic, actor_opt, critic_opt,
                            slow_critic, aux["return_range"])
        metrics = {
            "actor_loss": actor_loss, "critic_loss": critic_loss,
            "imagined_reward": aux["reward"].mean(), "imagined_return": aux["returns"].mean(),
            "actor_grad_norm": optax.tree.norm(actor_grads),
            "action_abs": jnp.abs(aux["action"]).mean(),
            # How much the policy depends on the state: the spread of its central action over
            # the start states, mean over action dimensions (0: the same action everywhere).
            "action_spread": self.location(self.actor.apply(state.actor, aux["feat"][:, 0])).std(0).mean(),
            "return_scale": return_scale(self.cfg, aux["return_range"]),
        }
        if self.discrete or self.cfg.actor_dist == "bounded_normal":  # the tanh-normal has no closed form
            metrics["actor_entropy"] = self.dist(state.actor, aux["feat"]).entropy().mean()
        if scale > 0:
            metrics["replay_value_loss"] = replay_value_loss
        return new_state, metrics, representation_loss
