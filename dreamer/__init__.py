"""World-model reinforcement learning in JAX: the shared RSSM core, the Dreamer agent and the
training entry point (`python -m dreamer.train`). PlaNet lives in `planet/`, Plan2Explore in
`explore/`; all of them use `dreamer.core`.

`dreamer.load(logdir)` returns a trained agent's evaluation policy (see `dreamer.evaluate`)."""

from __future__ import annotations

__version__ = "0.1.0"


def load(logdir, *, seed: int | None = None):
    """The evaluation policy of the newest checkpoint in `logdir`: `action, state =
    policy(observation, state)` on one observation at a time (state None starts an episode).
    See `dreamer.evaluate.Policy`."""
    from dreamer.evaluate import load as load_policy  # imports JAX only when called

    return load_policy(logdir, seed=seed)


__all__ = ["__version__", "load"]
