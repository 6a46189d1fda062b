"""The world model every agent shares: encoders, RSSM, decoders, reward and continuation heads.

All methods are pure functions of an explicit parameter dict
`{'encoder'?, 'vector_encoder'?, 'rssm', 'decoder'?, 'vector_decoder'?, 'reward', 'cont'?}` so
they can be jitted, differentiated and vmapped by the agents without any hidden state.

Observations are named inputs (`obs_space`: key -> (shape, dtype)): an image, read by the CNN
encoder and predicted by the CNN decoder, and/or vectors, concatenated in key order and read by
an MLP encoder, predicted by an MLP decoder with one linear output per key. With both, the
embedding is the two encoders' outputs concatenated (vectors first).

Batches are dicts with arrays [B, T, ...]: the inputs (image uint8 [B, T, 64, 64, 3], vectors
float32 [B, T, D]), action [B, T, A] (action[t] led to observation t), reward [B, T],
is_first [B, T], is_terminal [B, T].
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from dreamer.core.config import ModelConfig
from dreamer.core.cnn_v3 import DecoderV3, EncoderV3
from dreamer.core.nets import MLP, Decoder, Dense, Encoder, kernel_init, make_optimizer
from dreamer.core.rssm import RSSM, State
from dreamer.core.twohot import ScalarOutput, symlog

Params = dict
ObsSpace = dict  # key -> (shape, dtype): the observations' named inputs
IMAGE_SPACE = {"image": ((64, 64, 3), jnp.uint8)}


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


def split_space(obs_space: ObsSpace) -> tuple[str | None, dict[str, int]]:
    """(the image's key or None, {vector key: length} in key order); an input that is neither
    one uint8 [H, W, 3] image nor a vector [D] is refused."""
    image, vectors = None, {}
    for key in sorted(obs_space):
        shape, dtype = obs_space[key]
        if len(shape) == 3 and shape[-1] == 3 and jnp.dtype(dtype) == jnp.uint8 and image is None:
            image = key
        elif len(shape) == 1 and jnp.issubdtype(jnp.dtype(dtype), jnp.floating):
            vectors[key] = int(shape[0])
        else:
            raise ValueError(f"observation {key!r} of shape {tuple(shape)} and dtype {jnp.dtype(dtype)} has "
                             "no encoder: inputs are one uint8 [H, W, 3] image and float vectors [D]")
    if image is None and not vectors:
        raise ValueError("the observations have no inputs to encode")
    return image, vectors


class WorldModel:
    def __init__(self, cfg: ModelConfig, action_size: int, obs_space: ObsSpace | None = None,
                 dtype: jnp.dtype = jnp.float32):
        self.cfg = cfg
        self.action_size = action_size
        self.obs_space = IMAGE_SPACE if obs_space is None else dict(obs_space)
        self.image_key, self.vector_sizes = split_space(self.obs_space)
        self.rssm = RSSM(cfg, action_size, dtype)
        mlp = dict(act=cfg.activation, dtype=dtype, norm=cfg.norm, initializer=cfg.init)
        self.vector_encoder = MLP(cfg.mlp_layers, cfg.mlp_units, **mlp)
        self.vector_decoder = VectorDecoder(tuple(self.vector_sizes.values()), cfg.mlp_layers,
                                            cfg.mlp_units, **mlp)
        if cfg.cnn == "dreamerv3":  # normalised like the rest of the model; decoder units: the heads'
            self.encoder = EncoderV3(cfg.depth, cfg.norm, cfg.cnn_activation, dtype, cfg.init)
            self.decoder = DecoderV3(cfg.deter, cfg.depth, cfg.head_units, cfg.gru_blocks, norm=cfg.norm,
                                     act=cfg.cnn_activation, dtype=dtype, initializer=cfg.init)
        else:
            self.encoder = Encoder(cfg.depth, cfg.cnn_activation, dtype=dtype)
            self.decoder = Decoder(cfg.depth, cfg.cnn_activation, dtype=dtype)
        self.reward_out = ScalarOutput(cfg.reward_head, cfg.twohot_bins)
        self.reward_head = MLP(cfg.head_layers, cfg.head_units, self.reward_out.size, cfg.activation, dtype=dtype,
                               out_scale=self.reward_out.out_scale, norm=cfg.norm, initializer=cfg.init)
        self.cont_head = MLP(cfg.head_layers, cfg.head_units, 1, cfg.activation, dtype=dtype, norm=cfg.norm,
                             initializer=cfg.init)
        self.optimizer = make_optimizer(cfg.optimizer, cfg.lr, cfg.eps, cfg.grad_clip, cfg.agc, cfg.warmup)

    @property
    def feat_size(self) -> int:
        return self.rssm.feat_size

    def embed_size(self) -> int:
        """Length E of the encoders' embedding of one observation (from shapes only)."""
        obs = {key: jax.ShapeDtypeStruct((1, *shape), dtype) for key, (shape, dtype) in self.obs_space.items()}
        params = jax.eval_shape(self._init_encoders, jax.random.PRNGKey(0))
        return jax.eval_shape(self.embed, params, obs).shape[-1]

    def _init_encoders(self, key: jax.Array) -> Params:
        k_image, k_vector = jax.random.split(key)
        params = {}
        if self.image_key is not None:
            shape, _ = self.obs_space[self.image_key]
            params["encoder"] = self.encoder.init(k_image, jnp.zeros((1, *shape), jnp.float32))
        if self.vector_sizes:
            size = sum(self.vector_sizes.values())
            params["vector_encoder"] = self.vector_encoder.init(k_vector, jnp.zeros((1, size)))
        return params

    def init(self, key: jax.Array) -> Params:
        keys = jax.random.split(key, 6)
        feat = jnp.zeros((1, self.feat_size))
        params = {**self._init_encoders(keys[0]), "rssm": self.rssm.init(keys[1], self.embed_size())}
        if self.image_key is not None:
            params["decoder"] = self.decoder.init(keys[2], feat)
        if self.vector_sizes:
            params["vector_decoder"] = self.vector_decoder.init(keys[5], feat)
        params["reward"] = self.reward_head.init(keys[3], feat)
        if self.cfg.cont_head:
            params["cont"] = self.cont_head.init(keys[4], feat)
        return params

    # ------------------------------------------------------------------ heads

    def preprocess(self, image: jax.Array, key: jax.Array | None = None) -> jax.Array:
        """uint8 [..., 64, 64, 3] -> floats in [-0.5, 0.5] at `model.image_bits`, with
        dequantisation noise if `model.image_noise` and a key is given."""
        return preprocess(image, self.cfg.image_bits, key if self.cfg.image_noise else None)

    def vector_input(self, obs: dict) -> jax.Array:
        """The vector inputs [..., D_k] concatenated in key order -> [..., D], symlog-squashed
        with `model.symlog_inputs` (DreamerV3)."""
        x = jnp.concatenate([obs[key].astype(jnp.float32) for key in self.vector_sizes], -1)
        return symlog(x) if self.cfg.symlog_inputs else x

    def embed(self, params: Params, obs: dict, key: jax.Array | None = None) -> jax.Array:
        """Observation inputs [..., ...] -> [..., E] (`key`: for the images' dequantisation noise)."""
        return self._embed(params, obs, None if self.image_key is None else self.preprocess(obs[self.image_key], key))

    def _embed(self, params: Params, obs: dict, image: jax.Array | None) -> jax.Array:
        """The embedding given the preprocessed image (what the decoder also predicts)."""
        parts = []
        if self.vector_sizes:
            parts.append(self.vector_encoder.apply(params["vector_encoder"], self.vector_input(obs)))
        if image is not None:
            parts.append(self.encoder.apply(params["encoder"], image))
        return parts[0] if len(parts) == 1 else jnp.concatenate(parts, -1)

    def decode(self, params: Params, feat: jax.Array) -> dict[str, jax.Array]:
        """[..., F] -> predicted inputs: the image's means [..., 64, 64, 3] in [-0.5, 0.5] units,
        each vector's [..., D_k] (in symlog units where `model.vector_loss` is symlog_mse)."""
        preds = {}
        if self.image_key is not None:
            preds[self.image_key] = self.decoder.apply(params["decoder"], feat)
        if self.vector_sizes:
            outs = self.vector_decoder.apply(params["vector_decoder"], feat)
            preds.update(zip(self.vector_sizes, outs))
        return preds

    def reconstruction_losses(self, preds: dict, obs: dict, image: jax.Array | None) -> dict[str, jax.Array]:
        """Per input, the reconstruction loss summed over its elements, mean over [...]:
        the image's as `model.image_loss`, each vector's as `model.vector_loss` (a unit
        Gaussian's NLL, 0.5 x squared error, or DreamerV3's squared error in symlog space)."""
        losses = {}
        if image is not None:
            loss = jnp.square(preds[self.image_key] - image).sum((-3, -2, -1)).mean()
            losses[self.image_key] = 0.5 * loss if self.cfg.image_loss == "gaussian" else loss
        for key in self.vector_sizes:
            target = obs[key].astype(jnp.float32)
            if self.cfg.vector_loss == "symlog_mse":
                losses[key] = jnp.square(preds[key] - symlog(target)).sum(-1).mean()
            else:
                losses[key] = 0.5 * jnp.square(preds[key] - target).sum(-1).mean()
        return losses

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

    def loss(self, params: Params, batch: dict, key: jax.Array, reward_grad: jax.Array | None = None,
             start: State | None = None) -> tuple[jax.Array, tuple[State, dict]]:
        """Negative ELBO over a batch of sequences; returns (loss, (posterior states, metrics)).

        `reward_grad`: a bool scalar that overrides `model.reward_grad` inside jitted code
        (Plan2Explore's few-shot adaptation turns it on mid-run); None: the config's.
        `start`: the state [B, ...] the sequences start from (a replayed context); None: zeros.
        """
        k_noise, k_latent = jax.random.split(key)
        image = None  # the encoder's input and the decoder's target
        if self.image_key is not None:
            image = self.preprocess(batch[self.image_key], k_noise)
        embed = self._embed(params, batch, image)  # [B, T, E]
        post, prior = self.rssm.observe(params["rssm"], embed, batch["action"], batch["is_first"], k_latent,
                                        state=start)
        feat = self.rssm.get_feat(post)  # [B, T, F]
        recon = self.reconstruction_losses(self.decode(params, feat), batch, image)
        # Without reward_grad only the head learns the reward: task rewards cannot shape the
        # latent space (Plan2Explore's exploration must not see them).
        reward_grad = self.cfg.reward_grad if reward_grad is None else reward_grad
        reward_feat = jnp.where(reward_grad, feat, jax.lax.stop_gradient(feat))
        reward_loss = self.reward_loss(params, reward_feat, batch["reward"])
        kl_loss, kl_value = self.rssm.kl_loss(post, prior)
        loss = sum(recon.values()) + self.cfg.reward_scale * reward_loss + kl_loss
        metrics = {f"{name}_loss": value for name, value in recon.items()}
        metrics.update(reward_loss=reward_loss, kl=kl_value, kl_loss=kl_loss)
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
        params, opt_state, metrics["grad_norm"] = self.apply_gradients(params, opt_state, grads)
        return params, opt_state, post, metrics

    def apply_gradients(self, params: Params, opt_state, grads: Params):
        """One optimiser step. Returns (params, opt_state, the gradient's global norm)."""
        updates, opt_state = self.optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, optax.tree.norm(grads)

    # ------------------------------------------------------------------ acting and reporting

    def filter_step(self, params: Params, latent: State, prev_action: jax.Array, obs: dict,
                    is_first: jax.Array, key: jax.Array) -> State:
        """Posterior update from one observation: what an agent does before choosing an action.

        latent [N, ...], prev_action [N, A], obs: the inputs [N, ...] (image uint8
        [N, 64, 64, 3], vectors [N, D]), is_first [N].
        """
        k_noise, k_latent = jax.random.split(key)
        embed = self.embed(params, obs, k_noise)
        post, _ = self.rssm.obs_step(params["rssm"], latent, prev_action, embed, is_first, k_latent)
        return post

    def open_loop_video(self, params: Params, batch: dict, key: jax.Array, context: int = 5) -> jax.Array:
        """Real frames, predictions after `context` observed frames, and their difference.

        Returns uint8 [T, 3 * 64, N * 64, 3]: rows truth / model / error, columns the
        first N <= 6 sequences of the batch (the Dreamer papers' open-loop figure). Needs an
        image input.
        """
        batch = jax.tree.map(lambda x: x[:6], batch)
        k1, k2 = jax.random.split(key)
        embed = self.embed(params, jax.tree.map(lambda x: x[:, :context], batch))
        post, _ = self.rssm.observe(params["rssm"], embed, batch["action"][:, :context],
                                    batch["is_first"][:, :context], k1)
        start = jax.tree.map(lambda x: x[:, -1], post)
        states, _ = self.rssm.imagine(params["rssm"], start, k2, actions=batch["action"][:, context:])
        feat = jnp.concatenate([self.rssm.get_feat(post), self.rssm.get_feat(states)], 1)
        model = jnp.clip(self.decode(params, feat)[self.image_key] + 0.5, 0, 1)
        truth = batch[self.image_key].astype(jnp.float32) / 255.0
        error = (model - truth + 1) / 2
        grid = jnp.concatenate([truth, model, error], 2)  # [N, T, 3H, W, C]
        grid = jnp.transpose(grid, (1, 2, 0, 3, 4))  # [T, 3H, N, W, C]
        t, h, n, w, c = grid.shape
        return (grid.reshape(t, h, n * w, c) * 255).astype(jnp.uint8)


class VectorDecoder(nn.Module):
    """Latent features [..., F] -> one prediction [..., D_k] per vector input: an MLP shared by
    all keys, then a linear output for each (DreamerV3's vector decoder)."""

    sizes: tuple[int, ...]
    layers: int
    units: int
    act: str = "elu"
    dtype: jnp.dtype = jnp.float32
    norm: str = "none"
    initializer: str = "glorot"

    @nn.compact
    def __call__(self, feat: jax.Array) -> tuple[jax.Array, ...]:
        x = MLP(self.layers, self.units, act=self.act, dtype=self.dtype, norm=self.norm,
                initializer=self.initializer, name="mlp")(feat)
        return tuple(Dense(size, dtype=self.dtype, kernel_init=kernel_init(self.initializer), name=f"out{i}")(x)
                     .astype(jnp.float32) for i, size in enumerate(self.sizes))


__all__ = ["WorldModel", "preprocess", "split_space"]
