"""PlaNet: CEM planning in the latent space of the shared world model (`--agent planet`).

Registered through the entry point `planet = planet:AGENT`; the agent itself (`planet.agent`)
is imported only when it is built.
"""

from importlib import resources

from dreamer.registry import AgentSpec
from planet.config import PlannerConfig

AGENT = AgentSpec(
    name="planet", agent="planet.agent:PlaNet", section="planet", config=PlannerConfig,
    preset=resources.files(__name__) / "planet.yaml",
    description="PlaNet: CEM planning over latent rollouts of the world model (Hafner et al. 2019)")

__all__ = ["AGENT", "PlannerConfig"]
