"""The core's own settings: the world model (`model`) and the actor-critic (`behavior`).

Defaults are the PlaNet / Dreamer V1 papers' settings. `option` attaches the range checks
that `dreamer.config` applies to every value from a preset or the command line; agents declare
their own sections with it too.
"""

from __future__ import annotations

import dataclasses
from typing import Any


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
    depth: int = option(32, positive=True)  # conv encoder/decoder width multiplier
    act: str = option("elu", choices=("elu", "relu", "silu", "tanh"))
    head_layers: int = option(2, positive=True)
    head_units: int = option(400, positive=True)
    cont_head: bool = False  # predict episode continuation (discount)
    reward_grad: bool = True  # reward loss trains the representation; False: the head only
    free_nats: float = option(3.0, min=0.0)
    kl_scale: float = option(1.0, min=0.0)
    kl_balance: float = option(0.5, min=0.0, max=1.0)  # 0.5 = plain KL; DreamerV2 uses 0.8
    lr: float = option(6e-4, positive=True)
    eps: float = option(1e-5, positive=True)
    grad_clip: float = option(100.0, positive=True)


@dataclasses.dataclass(frozen=True)
class ActorCriticConfig:
    """The actor-critic learned in imagination (Dreamer, Plan2Explore): config section `behavior`."""

    horizon: int = option(15, min=2)  # lambda-returns need at least two imagined steps
    discount: float = option(0.99, min=0.0, max=1.0)
    return_lambda: float = option(0.95, min=0.0, max=1.0)
    actor_layers: int = option(4, positive=True)
    actor_units: int = option(400, positive=True)
    value_layers: int = option(3, positive=True)
    value_units: int = option(400, positive=True)
    actor_lr: float = option(8e-5, positive=True)
    value_lr: float = option(8e-5, positive=True)
    eps: float = option(1e-5, positive=True)
    grad_clip: float = option(100.0, positive=True)
    init_std: float = option(5.0, positive=True)
    min_std: float = option(1e-4, positive=True)
    mean_scale: float = option(5.0, positive=True)
    expl_noise: float = option(0.3, min=0.0)  # Gaussian std added to actions in collection


__all__ = ["ActorCriticConfig", "ModelConfig", "option"]
