"""The world model every agent shares: encoder, RSSM, decoder, reward and continuation heads.

All methods are pure functions of an explicit parameter dict
`{'encoder', 'rssm', 'decoder', 'reward', 'cont'?}` so they can be jitted, differentiated and
vmapped by the agents without any hidden state.

Batches are dicts with arrays [B, T, ...]: image uint8 [B, T, 64, 64, 3], action [B, T, A]
(action[t] led to observation t), reward [B, T], is_first [B, T], is_terminal [B, T].
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from dreamer.core.config import ModelConfig
from dreamer.core.cnn_v3 import DecoderV3, EncoderV3
from dreamer.core.nets import MLP, Decoder, Encoder, make_optimizer
from dreamer.core.rssm import RSSM, State
from dreamer.core.twohot import ScalarOutput

Params = dict


def preprocess(image: jax.Array, bits: int = 8, noise_key: jax.Array | None = None) -> jax.Array:
    """uint8 pixels [...] -> floats in [-0.5, 0.5]: what the encoder reads and the decoder predicts.

    8 bits without noise: x / 255 - 0.5 (Dreamer). Otherwise PlaNet's preprocessing: keep the
    top `bits` bits, scale the 2^bits bins to [0, 1), and with a `noise_key` add uniform
    dequantisation noise of one bin's width, U(0, 2^-bits), before the shift by -0.5.
    """
    if bits == 8 and noise_key is None:
        return image.astype(jnp.float32) / 255.0 - 0.5
    bins = 2.0 ** bits
    x = jnp.floor(image.astype(jnp.float32) / 2.0 ** (8 - bits)) / bins
    if noise_key is not None:
        x = x + jax.random.uniform(noise_key, x.shape, maxval=1.0 / bins)
    return x - 0.5


class WorldModel:
    def __init__(self, cfg: ModelConfig, action_size: int, dtype: jnp.dtype = jnp.float32):
        self.cfg = cfg
        self.action_size = action_size
        self.rssm = RSSM(cfg, action_size, dtype)
        if cfg.cnn == "dreamerv3":  # normalised like the rest of the model; decoder units: the heads'
            self.encoder = EncoderV3(cfg.depth, cfg.norm, cfg.cnn_act, dtype, cfg.init)
            self.decoder = DecoderV3(cfg.deter, cfg.depth, cfg.head_units, cfg.gru_blocks, norm=cfg.norm,
                                     act=cfg.cnn_act, dtype=dtype, initializer=cfg.init)
        else:
            self.encoder = Encoder(cfg.depth, cfg.cnn_act, dtype=dtype)
            self.decoder = Decoder(cfg.depth, cfg.cnn_act, dtype=dtype)
        self.reward_out = ScalarOutput(cfg.reward_head, cfg.twohot_bins)
        self.reward_head = MLP(cfg.head_layers, cfg.head_units, self.reward_out.size, cfg.act, dtype=dtype,
                               out_scale=self.reward_out.out_scale, norm=cfg.norm, initializer=cfg.init)
        self.cont_head = MLP(cfg.head_layers, cfg.head_units, 1, cfg.act, dtype=dtype, norm=cfg.norm,
                             initializer=cfg.init)
        self.optimizer = make_optimizer(cfg.optimizer, cfg.lr, cfg.eps, cfg.grad_clip, cfg.agc, cfg.warmup)

    @property
    def feat_size(self) -> int:
        return self.rssm.feat_size

    def embed_size(self, image_shape: tuple[int, int, int] = (64, 64, 3)) -> int:
        """Length E of the encoder's embedding of one image (computed from shapes only)."""
        image = jax.ShapeDtypeStruct((1, *image_shape), jnp.float32)
        embed, _ = jax.eval_shape(lambda x: self.encoder.init_with_output(jax.random.PRNGKey(0), x), image)
        return embed.shape[-1]

    def init(self, key: jax.Array, image_shape: tuple[int, int, int] = (64, 64, 3)) -> Params:
        keys = jax.random.split(key, 5)
        feat = jnp.zeros((1, self.feat_size))
        params = {
            "encoder": self.encoder.init(keys[0], jnp.zeros((1, *image_shape), jnp.float32)),
            "rssm": self.rssm.init(keys[1], self.embed_size(image_shape)),
            "decoder": self.decoder.init(keys[2], feat),
            "reward": self.reward_head.init(keys[3], feat),
        }
        if self.cfg.cont_head:
            params["cont"] = self.cont_head.init(keys[4], feat)
        return params

    # ------------------------------------------------------------------ heads

    def preprocess(self, image: jax.Array, key: jax.Array | None = None) -> jax.Array:
        """uint8 [..., 64, 64, 3] -> floats in [-0.5, 0.5] at `model.image_bits`, with
        dequantisation noise if `model.image_noise` and a key is given."""
        return preprocess(image, self.cfg.image_bits, key if self.cfg.image_noise else None)

    def embed(self, params: Params, image: jax.Array, key: jax.Array | None = None) -> jax.Array:
        """uint8 [..., 64, 64, 3] -> [..., E] (`key`: for the dequantisation noise)."""
        return self.encoder.apply(params["encoder"], self.preprocess(image, key))

    def decode(self, params: Params, feat: jax.Array) -> jax.Array:
        """[..., F] -> image means [..., 64, 64, 3] in [-0.5, 0.5] units."""
        return self.decoder.apply(params["decoder"], feat)

    def reward(self, params: Params, feat: jax.Array) -> jax.Array:
        """[..., F] -> predicted reward [...]: the Gaussian's mean or the two-hot expectation."""
        return self.reward_out.mean(self.reward_head.apply(params["reward"], feat))

    def reward_loss(self, params: Params, feat: jax.Array, reward: jax.Array) -> jax.Array:
        """Negative log-likelihood of rewards [...] (constants dropped), mean over [...]:
        a unit Gaussian's, or the two-hot cross-entropy."""
        return self.reward_out.loss(self.reward_head.apply(params["reward"], feat), reward).mean()

    def continuation(self, params: Params, feat: jax.Array) -> jax.Array | None:
        """[..., F] -> probability that the episode continues [...], or None without the head."""
        if "cont" not in params:
            return None
        return jax.nn.sigmoid(self.cont_head.apply(params["cont"], feat)[..., 0])

    # ------------------------------------------------------------------ training

    def loss(self, params: Params, batch: dict, key: jax.Array, reward_grad: jax.Array | None = None
             ) -> tuple[jax.Array, tuple[State, dict]]:
        """Negative ELBO over a batch of sequences; returns (loss, (posterior states, metrics)).

        `reward_grad`: a bool scalar that overrides `model.reward_grad` inside jitted code
        (Plan2Explore's few-shot adaptation turns it on mid-run); None: the config's.
        """
        k_noise, k_latent = jax.random.split(key)
        image = self.preprocess(batch["image"], k_noise)  # encoder input and decoder target
        embed = self.encoder.apply(params["encoder"], image)  # [B, T, E]
        post, prior = self.rssm.observe(params["rssm"], embed, batch["action"], batch["is_first"], k_latent)
        feat = self.rssm.get_feat(post)  # [B, T, F]
        # Unit-variance Gaussian log-likelihoods, constants dropped, or DreamerV3's squared error.
        image_err = self.decode(params, feat) - image
        image_loss = jnp.square(image_err).sum((-3, -2, -1)).mean()
        if self.cfg.image_loss == "gaussian":
            image_loss = 0.5 * image_loss
        # Without reward_grad only the head learns the reward: task rewards cannot shape the
        # latent space (Plan2Explore's exploration must not see them).
        reward_grad = self.cfg.reward_grad if reward_grad is None else reward_grad
        reward_feat = jnp.where(reward_grad, feat, jax.lax.stop_gradient(feat))
        reward_loss = self.reward_loss(params, reward_feat, batch["reward"])
        kl_loss, kl_value = self.rssm.kl_loss(post, prior)
        loss = image_loss + self.cfg.reward_scale * reward_loss + kl_loss
        metrics = {"image_loss": image_loss, "reward_loss": reward_loss, "kl": kl_value}
        if "cont" in params:
            logits = self.cont_head.apply(params["cont"], feat)[..., 0]
            target = (1.0 - batch["is_terminal"].astype(jnp.float32)) * self.cfg.cont_discount
            cont_loss = optax.sigmoid_binary_cross_entropy(logits, target).mean()
            loss += cont_loss
            metrics["cont_loss"] = cont_loss
        metrics["loss"] = loss
        metrics["prior_entropy"] = self.rssm.latent.entropy(prior).mean()
        metrics["post_entropy"] = self.rssm.latent.entropy(post).mean()
        return loss, (post, metrics)

    def update(self, params: Params, opt_state, batch: dict, key: jax.Array,
               reward_grad: jax.Array | None = None):
        """One gradient step on the ELBO. Returns (params, opt_state, posterior, metrics)."""
        grads, (post, metrics) = jax.grad(self.loss, has_aux=True)(params, batch, key, reward_grad)
        updates, opt_state = self.optimizer.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        metrics["grad_norm"] = optax.tree.norm(grads)
        return params, opt_state, post, metrics

    # ------------------------------------------------------------------ acting and reporting

    def filter_step(self, params: Params, latent: State, prev_action: jax.Array, image: jax.Array,
                    is_first: jax.Array, key: jax.Array) -> State:
        """Posterior update from one observation: what an agent does before choosing an action.

        latent [N, ...], prev_action [N, A], image uint8 [N, 64, 64, 3], is_first [N].
        """
        k_noise, k_latent = jax.random.split(key)
        embed = self.embed(params, image, k_noise)
        post, _ = self.rssm.obs_step(params["rssm"], latent, prev_action, embed, is_first, k_latent)
        return post

    def open_loop_video(self, params: Params, batch: dict, key: jax.Array, context: int = 5) -> jax.Array:
        """Real frames, predictions after `context` observed frames, and their difference.

        Returns uint8 [T, 3 * 64, N * 64, 3]: rows truth / model / error, columns the
        first N <= 6 sequences of the batch (the Dreamer papers' open-loop figure).
        """
        batch = jax.tree.map(lambda x: x[:6], batch)
        k1, k2 = jax.random.split(key)
        embed = self.embed(params, batch["image"][:, :context])
        post, _ = self.rssm.observe(params["rssm"], embed, batch["action"][:, :context],
                                    batch["is_first"][:, :context], k1)
        start = jax.tree.map(lambda x: x[:, -1], post)
        states, _ = self.rssm.imagine(params["rssm"], start, k2, actions=batch["action"][:, context:])
        feat = jnp.concatenate([self.rssm.get_feat(post), self.rssm.get_feat(states)], 1)
        model = jnp.clip(self.decode(params, feat) + 0.5, 0, 1)
        truth = batch["image"].astype(jnp.float32) / 255.0
        error = (model - truth + 1) / 2
        grid = jnp.concatenate([truth, model, error], 2)  # [N, T, 3H, W, C]
        grid = jnp.transpose(grid, (1, 2, 0, 3, 4))  # [T, 3H, N, W, C]
        t, h, n, w, c = grid.shape
        return (grid.reshape(t, h, n * w, c) * 255).astype(jnp.uint8)


__all__ = ["WorldModel", "preprocess"]
