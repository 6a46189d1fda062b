"""Plan2Explore's own config section, `explore`: the ensemble and its intrinsic reward."""

from __future__ import annotations

import dataclasses

from dreamer.core.config import option


@dataclasses.dataclass(frozen=True)
class ExploreConfig:
    """Plan2Explore: ensemble disagreement as an intrinsic reward (defaults: the paper's)."""

    ensemble: int = option(5, min=2)  # one-step predictors; variance needs at least two
    target: str = option("embed", choices=("embed", "stoch"))  # next image embedding (paper) or stoch
    layers: int = option(2, positive=True)
    units: int = option(400, positive=True)
    action_cond: bool = True  # predictors see the action as well as the latent state
    lr: float = option(3e-4, positive=True)
    eps: float = option(1e-5, positive=True)
    grad_clip: float = option(100.0, positive=True)
    normalise: str = option("scale", choices=("scale", "running"))
    scale: float = option(10_000.0, positive=True)  # 'scale': reward = scale * disagreement
    momentum: float = option(0.99, min=0.0, max=1.0)  # 'running': EMA of the mean disagreement
    mode: str = option("zero_shot", choices=("zero_shot", "few_shot"))
    steps: int = option(1_000_000, min=0)  # few_shot: env steps of exploration before the switch
