"""Plan2Explore: ensemble-disagreement exploration on the shared world model."""

from explore.agent import P2EState, Plan2Explore
from explore.ensemble import Ensemble, EnsembleState, disagreement

__all__ = ["Ensemble", "EnsembleState", "P2EState", "Plan2Explore", "disagreement"]
