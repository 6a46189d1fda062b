"""The world model every agent shares, and the actor-critic two of them use. It imports nothing
of this project outside `dreamer.core`: no agent, no training loop, no infrastructure.

The names below are imported on first use, so that `dreamer.core.config` (which every agent's
config imports) does not pull in JAX."""

import importlib

_WHERE = {
    "ActorCritic": "actor_critic", "ACState": "actor_critic", "action_dist": "actor_critic",
    "lambda_return": "actor_critic", "CategoricalLatent": "latents", "GaussianLatent": "latents",
    "make_latent": "latents", "RSSM": "rssm", "RSSMCell": "rssm", "WorldModel": "world_model",
    "preprocess": "world_model",
}


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'dreamer.core' has no attribute '{name}'")
    return getattr(importlib.import_module(f"dreamer.core.{_WHERE[name]}"), name)


__all__ = sorted(_WHERE)
