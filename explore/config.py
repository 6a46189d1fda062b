"""Plan2Explore's own config section, `explore`: the ensemble and its intrinsic reward."""

from __future__ import annotations

import dataclasses

from dreamer.core.config import ACTIVATION_NAMES, option


@dataclasses.dataclass(frozen=True)
class ExploreConfig:
    """Plan2Explore: ensemble disagreement as an intrinsic reward (defaults: the paper's code,
    ramanans1/plan2explore)."""

    ensemble: int = option(5, min=2)  # one-step predictors; variance needs at least two
    target: str = option("embed", choices=("embed", "stoch"))  # next image embedding (paper) or stoch
    layers: int = option(2, positive=True)
    units: int = option(1024, positive=True)
    activation: str = option("relu", choices=ACTIVATION_NAMES)
    action_cond: bool = True  # the action enters every layer of the predictors
    bootstrap: bool = True  # each member trains on its own resample of the batch's sequences
    # The reference trains the ensemble inside the world model's Adam (lr 6e-4, eps 1e-4,
    # clip 100); here it has its own Adam with those settings.
    lr: float = option(6e-4, positive=True)
    eps: float = option(1e-4, positive=True)
    grad_clip: float = option(100.0, positive=True)
    normalise: str = option("scale", choices=("scale", "running"))
    scale: float = option(10_000.0, positive=True)  # 'scale': reward = scale * disagreement
    momentum: float = option(0.99, min=0.0, max=1.0)  # 'running': EMA of the mean disagreement
    # few_shot: after `steps` environment steps the task policy collects and task rewards train
    # the representation too (the reference's adaptation phase).
    mode: str = option("zero_shot", choices=("zero_shot", "few_shot"))
    steps: int = option(1_000_000, min=0)  # few_shot: env steps of exploration before the switch
