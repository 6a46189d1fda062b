"""Plan2Explore: ensemble-disagreement exploration on the shared world model
(`--agent plan2explore`).

Registered through the entry point `plan2explore = explore:AGENT`; the agent itself
(`explore.agent`) is imported only when it is built.
"""

from importlib import resources

from dreamer.registry import AgentSpec
from explore.config import ExploreConfig

AGENT = AgentSpec(
    name="plan2explore", agent="explore.agent:Plan2Explore", section="explore", config=ExploreConfig,
    preset=resources.files(__name__) / "plan2explore.yaml",
    description="Plan2Explore: explores by ensemble disagreement, then solves tasks zero- or few-shot "
                "(Sekar et al. 2020)")

__all__ = ["AGENT", "ExploreConfig"]
