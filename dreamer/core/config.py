"""The core's own settings: the world model (`model`) and the actor-critic (`behavior`).

Defaults are the PlaNet / Dreamer V1 papers' settings. `option` attaches the range checks
that `dreamer.config` applies to every value from a preset or the command line; agents declare
their own sections with it too.
"""

from __future__ import annotations

import dataclasses
from typing import Any

ACTIVATION_NAMES = ("elu", "relu", "silu", "tanh")
NORM_NAMES = ("none", "layer", "rms")  # dreamer.core.nets.NormAct
INIT_NAMES = ("glorot", "trunc_normal")  # dreamer.core.nets.kernel_init


def option(default: Any, *, min: float | None = None, max: float | None = None,
           choices: tuple | None = None, positive: bool = False) -> Any:
    """A dataclass field with the range checks `dreamer.config` applies to its values."""
    meta = {"min": min, "max": max, "choices": choices, "positive": positive}
    return dataclasses.field(default=default, metadata=meta)


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """The shared RSSM world model (defaults: PlaNet / Dreamer V1)."""

    latent: str = option("gaussian", choices=("gaussian", "categorical"))
    deter: int = option(200, positive=True)
    stoch: int = option(30, positive=True)  # Gaussian dims, or categorical variables
    classes: int = option(32, positive=True)  # classes per categorical variable
    hidden: int = option(200, positive=True)
    min_std: float = option(0.1, positive=True)
    # The recurrent core (dreamer.core.nets): Keras' GRU (Dreamer V1), DreamerV2's normalised
    # GRU, or DreamerV3's block GRU with `gru_blocks` blocks and its own input layers.
    gru: str = option("standard", choices=("standard", "dreamerv2", "block"))
    gru_blocks: int = option(8, positive=True)
    prior_layers: int = option(1, positive=True)  # hidden layers from deter to the prior (V3: 2)
    # The CNNs: the Dreamer papers' strided encoder and transposed-convolution decoder, or
    # DreamerV3's (stride-1 kernel-5 convolutions with max-pooling / nearest upsampling).
    cnn: str = option("dreamer", choices=("dreamer", "dreamerv3"))
    depth: int = option(32, positive=True)  # conv encoder/decoder width multiplier
    activation: str = option("elu", choices=ACTIVATION_NAMES)  # the RSSM's and the heads' layers
    norm: str = option("none", choices=NORM_NAMES)  # before each of those activations
    cnn_activation: str = option("relu", choices=ACTIVATION_NAMES)  # the encoder's and decoder's
    init: str = option("glorot", choices=INIT_NAMES)  # kernels of the RSSM, heads, actor, critic
    head_layers: int = option(2, positive=True)
    head_units: int = option(400, positive=True)
    cont_head: bool = False  # predict episode continuation (discount)
    # The continuation head's target is (1 - terminal) times this. Below 1 the discount is
    # folded into the head (DreamerV3's contdisc, 1 - 1/333) and imagination discounts by the
    # head alone; behavior.discount must then be the same value.
    cont_discount: float = option(1.0, min=0.0, max=1.0)
    # Image reconstruction: a unit Gaussian's negative log-likelihood, 0.5 x squared error
    # (Dreamer V1, PlaNet), or the plain squared error (DreamerV3), summed over pixels.
    image_loss: str = option("gaussian", choices=("gaussian", "mse"))
    # Vector observations: an MLP encoder and decoder of `mlp_layers` x `mlp_units` (with `activation`,
    # `norm` and `init`), inputs squashed by symlog if `symlog_inputs`; reconstruction as a unit
    # Gaussian's NLL (0.5 x squared error, summed over the vector) or DreamerV3's squared error
    # against the symlog of the target.
    mlp_layers: int = option(4, min=0)
    mlp_units: int = option(400, positive=True)
    symlog_inputs: bool = False
    vector_loss: str = option("gaussian", choices=("gaussian", "symlog_mse"))
    image_bits: int = option(8, min=1, max=8)  # bit depth the images are quantised to (PlaNet: 5)
    image_noise: bool = False  # add uniform dequantisation noise of one bin (PlaNet, Plan2Explore)
    reward_scale: float = option(1.0, min=0.0)  # weight of the reward loss (PlaNet: 10)
    reward_grad: bool = True  # reward loss trains the representation; False: the head only
    free_nats: float = option(3.0, min=0.0)
    free_nats_per_step: bool = False  # clip each (batch, time) KL, not their mean (PlaNet, P2E)
    # The KL as two terms with the same value: the dynamics term trains the prior towards the
    # posterior, the representation term the posterior towards the prior. 1 / 1 gives the plain
    # KL's gradients (Dreamer V1, PlaNet; the loss counts its value twice); DreamerV2 balances
    # 0.8 / 0.2, DreamerV3 0.5 / 0.1.
    kl_dyn_scale: float = option(1.0, min=0.0)
    kl_rep_scale: float = option(1.0, min=0.0)
    unimix: float = option(0.0, min=0.0, max=1.0)  # categorical latents: mix in this much uniform
    reward_head: str = option("gaussian", choices=("gaussian", "twohot"))  # twohot: DreamerV3
    twohot_bins: int = option(255, min=3)  # odd: symexp-spaced values over symexp([-20, 20])
    # adam: clipped to a global norm of `grad_clip`; laprop: DreamerV3's (per-tensor adaptive
    # clipping at `agc`, learning rate warmed up over `warmup` updates, no global-norm clip).
    optimizer: str = option("adam", choices=("adam", "laprop"))
    lr: float = option(6e-4, positive=True)
    eps: float = option(1e-7, positive=True)  # TensorFlow's Adam default, which Dreamer used
    grad_clip: float = option(100.0, positive=True)
    agc: float = option(0.3, positive=True)
    warmup: int = option(1000, min=0)


@dataclasses.dataclass(frozen=True)
class ActorCriticConfig:
    """The actor-critic learned in imagination (Dreamer, Plan2Explore): config section `behavior`."""

    horizon: int = option(15, min=2)  # lambda-returns need at least two imagined steps
    discount: float = option(0.99, min=0.0, max=1.0)
    return_lambda: float = option(0.95, min=0.0, max=1.0)
    # Actor: 'tanh_normal' (Dreamer: a Gaussian squashed by tanh, mean_scale, init_std) or
    # 'bounded_normal' (DreamerV3: a Gaussian with mean tanh(x) and std in [min_std, max_std]).
    actor_dist: str = option("tanh_normal", choices=("tanh_normal", "bounded_normal"))
    max_std: float = option(1.0, positive=True)  # bounded_normal only
    # Actor gradient: 'dynamics' (backpropagate returns through the model, Dreamer) or
    # 'reinforce' (score function with advantages, DreamerV3), plus `actor_entropy` times the
    # policy's entropy; `actor_out_scale` scales the output layer's initial kernel (V3: 0.01).
    actor_grad: str = option("dynamics", choices=("dynamics", "reinforce"))
    actor_entropy: float = option(0.0, min=0.0)
    actor_out_scale: float = option(1.0, min=0.0)
    # Whose lambda-returns: 'dreamer' (R_t counts the reward predicted at imagined state t,
    # for states 1..H-1; Dreamer V1) or 'dreamerv3' (R_t counts the reward of arriving at
    # t+1, for the start state and states 1..H-1, so an action's return holds its own reward).
    returns: str = option("dreamer", choices=("dreamer", "dreamerv3"))
    # DreamerV3's replay value loss: the critic also regresses lambda-returns computed along
    # the replayed sequence (real rewards, imagined returns as bootstraps), with this weight.
    replay_value_scale: float = option(0.0, min=0.0)
    # Whether that loss also trains the world model's representation through the replayed
    # posterior states (DreamerV3's `repval_grad`); False: the critic only.
    replay_value_grad: bool = True
    actor_layers: int = option(4, positive=True)
    actor_units: int = option(400, positive=True)
    critic_layers: int = option(3, positive=True)
    critic_units: int = option(400, positive=True)
    optimizer: str = option("adam", choices=("adam", "laprop"))  # as model.optimizer
    actor_lr: float = option(8e-5, positive=True)
    critic_lr: float = option(8e-5, positive=True)
    eps: float = option(1e-7, positive=True)
    grad_clip: float = option(100.0, positive=True)
    agc: float = option(0.3, positive=True)
    warmup: int = option(1000, min=0)
    init_std: float = option(5.0, positive=True)
    min_std: float = option(1e-4, positive=True)
    mean_scale: float = option(5.0, positive=True)
    expl_noise: float = option(0.3, min=0.0)  # Gaussian std added to actions in collection
    # Evaluation action: the likeliest of this many actor samples (Dreamer); 0: tanh(mean).
    eval_samples: int = option(100, min=0)
    critic: str = option("gaussian", choices=("gaussian", "twohot"))  # twohot: DreamerV3, zero-initialised
    twohot_bins: int = option(255, min=3)
    # Slow critic (DreamerV3): an EMA of the critic's weights at this rate per update (0: none),
    # towards whose predictions the critic is regularised with weight `slow_critic_reg`.
    slow_critic_rate: float = option(0.0, min=0.0, max=1.0)
    slow_critic_reg: float = option(1.0, min=0.0)
    # Return normalisation (DreamerV3): divide the actor's returns by max(limit, P_high - P_low),
    # the EMAs (rate `return_norm_rate`) of the batch's percentiles of the lambda-returns.
    return_norm: str = option("none", choices=("none", "percentile"))
    return_norm_rate: float = option(0.01, min=0.0, max=1.0)
    return_norm_limit: float = option(1.0, positive=True)
    return_norm_low: float = option(5.0, min=0.0, max=100.0)
    return_norm_high: float = option(95.0, min=0.0, max=100.0)


__all__ = ["ACTIVATION_NAMES", "ActorCriticConfig", "INIT_NAMES", "ModelConfig", "NORM_NAMES", "option"]
