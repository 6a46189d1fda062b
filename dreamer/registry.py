"""Agents by name, discovered as plug-ins: nothing here names an agent.

An agent package declares an `AgentSpec` and registers it under the entry-point group
`dreamer.agents` of its distribution (`setup.cfg` for the agents shipped here):

    [options.entry_points]
    dreamer.agents =
        planet = planet:AGENT

The spec says where the agent class is (imported only when an agent is built), which config
section the agent owns with its dataclass of defaults, and its preset, applied whenever the
agent is chosen. So adding an agent is one package: its code, its config, its preset and one
entry point. The training loop and the benchmarks reach agents only through `agent_class`.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import importlib
from importlib import metadata
from importlib.resources.abc import Traversable

from dreamer.errors import ConfigError

ENTRY_POINT_GROUP = "dreamer.agents"


@dataclasses.dataclass(frozen=True)
class AgentSpec:
    name: str  # the value of --agent
    agent: str  # "module:Class", imported when the agent is built
    description: str  # one line, for --help
    preset: Traversable | None = None  # YAML applied first whenever this agent is chosen
    section: str | None = None  # the config section the agent owns ('planet' -> config.planet)
    config: type | None = None  # that section's frozen dataclass of defaults

    def __post_init__(self):
        if (self.section is None) != (self.config is None):
            raise TypeError(f"agent '{self.name}': give both `section` and `config`, or neither")


@functools.cache
def agent_specs() -> dict[str, AgentSpec]:
    """Every registered agent, by name (read once per process)."""
    specs: dict[str, AgentSpec] = {}
    for entry in metadata.entry_points(group=ENTRY_POINT_GROUP):
        if entry.name in specs:  # the same distribution seen twice on sys.path
            continue
        try:
            spec = entry.load()
        except Exception as err:  # a broken plug-in: one line naming it, not a traceback
            raise ConfigError(f"agent plug-in '{entry.name} = {entry.value}' cannot be loaded "
                              f"({type(err).__name__}: {err}); fix or uninstall it") from None
        if not isinstance(spec, AgentSpec) or spec.name != entry.name:
            raise ConfigError(f"entry point '{entry.name} = {entry.value}' in group "
                              f"'{ENTRY_POINT_GROUP}' must name an AgentSpec with name '{entry.name}'")
        specs[spec.name] = spec
    if not specs:
        raise ConfigError(f"no agent is registered (entry-point group '{ENTRY_POINT_GROUP}'); "
                          "install the package with `pip install -e .` or `pip install dreamer-jax`")
    return specs


def agent_spec(name: str) -> AgentSpec:
    specs = agent_specs()
    if name not in specs:
        close = difflib.get_close_matches(name, specs, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise ConfigError(f"unknown agent '{name}'{hint} (available: {', '.join(sorted(specs))})")
    return specs[name]


def agent_class(name: str) -> type:
    """The agent class registered as `name`, imported now."""
    module, cls = agent_spec(name).agent.split(":")
    return getattr(importlib.import_module(module), cls)
