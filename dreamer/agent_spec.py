"""The Dreamer agent's registration (entry point `dreamer = dreamer.agent_spec:AGENT`), apart
from the agent itself so that building a config imports no JAX."""

from importlib import resources

from dreamer.registry import AgentSpec

AGENT = AgentSpec(
    name="dreamer", agent="dreamer.agent:Dreamer",
    preset=resources.files("dreamer") / "configs" / "dreamer.yaml",
    description="Dreamer: actor-critic learned in imagination, returns backpropagated through the "
                "model (Hafner et al. 2020)")
