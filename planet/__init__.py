"""PlaNet: CEM planning in the latent space of the shared world model (`--agent planet`)."""

from planet.agent import PlaNet
from planet.planner import Plan, cem, initial_plan, shift_plan

__all__ = ["PlaNet", "Plan", "cem", "initial_plan", "shift_plan"]
