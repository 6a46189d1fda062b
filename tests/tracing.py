"""Counting how often JAX traces an agent's pure functions, from outside the agent.

`count_traces(Dreamer, "update")` wraps the class's method before an agent is built, so the
`jax.jit` the agent makes in its constructor wraps the counting function. Python code runs
only while JAX traces, so every call counted is one trace (one compilation)."""

from __future__ import annotations

import collections
import contextlib
import functools


@contextlib.contextmanager
def count_traces(cls: type, *methods: str):
    counts: collections.Counter = collections.Counter()
    originals = {name: getattr(cls, name) for name in methods}

    def counting(name, original):
        @functools.wraps(original)
        def traced(self, *args, **kwargs):
            counts[name] += 1
            return original(self, *args, **kwargs)
        return traced

    for name, original in originals.items():
        setattr(cls, name, counting(name, original))
    try:
        yield counts
    finally:
        for name, original in originals.items():
            setattr(cls, name, original)
