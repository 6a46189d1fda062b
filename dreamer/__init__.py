"""World-model reinforcement learning in JAX: the shared RSSM core, the Dreamer agent and the
training entry point (`python -m dreamer.train`). PlaNet lives in `planet/`, Plan2Explore in
`explore/`; all of them use `dreamer.core`."""

__version__ = "0.1.0"
