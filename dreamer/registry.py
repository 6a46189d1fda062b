"""Agents by name. The training loop and benchmarks reach agents only through here, and
modules are imported lazily so the core never depends on an agent package."""

from __future__ import annotations

import difflib
import importlib

from dreamer.errors import ConfigError

AGENTS: dict[str, str] = {
    "dreamer": "dreamer.agent:Dreamer",
    "planet": "planet.agent:PlaNet",
    "plan2explore": "explore.agent:Plan2Explore",
}


def agent_class(name: str) -> type:
    if name not in AGENTS:
        close = difflib.get_close_matches(name, AGENTS, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise ConfigError(f"unknown agent '{name}'{hint} (available: {', '.join(sorted(AGENTS))})")
    module, cls = AGENTS[name].split(":")
    return getattr(importlib.import_module(module), cls)
