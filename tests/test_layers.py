"""The architecture, as import rules read from the source (no module is imported):

- the core (`dreamer/core`) is the model: it imports nothing of this project outside itself,
  and its CPU kernels (`dreamer/core/kernels.py`) import nothing of this project at all;
- infra (config, envs, replay, logger, checkpoints, files, devices, the registry) imports no
  agent, no agent layer and no loop;
- an agent (`dreamer/agent.py`, `planet/`, `explore/`) imports no other agent and no loop;
- agents and the agent layer (`dreamer/base_agent.py`) are pure: they never import
  `dreamer.device`, which jits them and places them on devices for the loop;
- the loop and the benchmarks import no agent: they reach agents through `dreamer.registry`
  and the agents' public methods.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROJECT = ("dreamer", "planet", "explore", "benchmarks")
AGENTS = {"dreamer.agent": "dreamer", "dreamer.agent_spec": "dreamer", "planet": "planet", "explore": "explore"}
INFRA = ("dreamer.config", "dreamer.saved_config", "dreamer.presets", "dreamer.errors", "dreamer.envs", "dreamer.replay", "dreamer.logger",
         "dreamer.checkpoint", "dreamer.fileio", "dreamer.device", "dreamer.registry",
         "dreamer.runtime", "dreamer.faults", "dreamer.cli", "dreamer.runlock")
LOOP = ("dreamer.train", "dreamer.trainer", "dreamer.parts", "dreamer.overlapped", "dreamer.stopping", "dreamer.schedule", "dreamer.collect", "dreamer.evaluate", "benchmarks")
# The benchmark of PlaNet's planning cost counts the FLOPs of one CEM iteration with a free
# objective: it calls the pure CEM function (`planet/planner.py` knows no world model or agent).
ALLOWED = {"benchmarks.planning": ["planet.planner"]}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_imports(path: Path) -> set[str]:
    """The project modules `path` imports, anywhere in the file (lazy imports included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
    return {name for name in found if name.split(".")[0] in PROJECT}


def within(name: str, prefixes) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def agent_of(name: str) -> str | None:
    return next((agent for prefix, agent in AGENTS.items() if within(name, [prefix])), None)


MODULES = {module_name(p): p for package in PROJECT for p in sorted((ROOT / package).rglob("*.py"))}


def test_every_module_has_a_layer():
    for name in MODULES:
        layered = within(name, ("dreamer.core", "dreamer.base_agent", *INFRA, *LOOP, *AGENTS))
        assert layered or name == "dreamer", f"{name}: add it to a layer in {__file__}"


@pytest.mark.parametrize("name", sorted(MODULES))
def test_imports_follow_the_layers(name):
    imports = {i for i in project_imports(MODULES[name]) if not within(i, ALLOWED.get(name, []))}
    if name == "dreamer.core.kernels":
        bad = imports
    elif within(name, ["dreamer.core"]):
        bad = {i for i in imports if not within(i, ["dreamer.core"])}
    elif within(name, INFRA):
        bad = {i for i in imports if agent_of(i) or within(i, ["dreamer.base_agent", *LOOP])}
    elif agent_of(name):
        bad = {i for i in imports if (agent_of(i) not in (None, agent_of(name))) or within(i, [*LOOP, "dreamer.device"])}
    elif within(name, ["dreamer.base_agent"]):
        bad = {i for i in imports if agent_of(i) or within(i, [*LOOP, "dreamer.device"])}
    elif within(name, LOOP):
        bad = {i for i in imports if agent_of(i)}
    else:
        bad = set()
    assert not bad, f"{name} imports {sorted(bad)} across the layers"
