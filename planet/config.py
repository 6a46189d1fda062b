"""PlaNet's own config section, `planet`: CEM planning over latent rollouts."""

from __future__ import annotations

import dataclasses

from dreamer.core.config import option


@dataclasses.dataclass(frozen=True)
class PlannerConfig:
    """CEM planning over latent rollouts (PlaNet); the defaults are the paper's."""

    horizon: int = option(12, positive=True)
    iterations: int = option(10, positive=True)
    candidates: int = option(1000, positive=True)
    top_k: int = option(100, positive=True)
    expl_noise: float = option(0.3, min=0.0)  # Gaussian std added to actions in collection
    warm_start: bool = False  # start from the previous step's shifted plan
