"""Presets: named YAML files of config values, read safely.

The shared presets (debug, cpu, ...) ship inside the package in `dreamer/configs/`; every
registered agent may declare its own (`AgentSpec.preset`), named after the agent. `--configs`
also takes a path to a YAML file. `dreamer.config.build_config` applies them in order.
"""

from __future__ import annotations

from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import yaml

from dreamer.errors import ConfigError
from dreamer.registry import agent_spec, agent_specs

SHARED_PRESETS: Traversable = resources.files("dreamer") / "configs"


def preset_files(directory: Traversable = SHARED_PRESETS) -> dict[str, Traversable]:
    """Every named preset: the shared ones, and each registered agent's own under its name."""
    files = {p.name[:-len(".yaml")]: p for p in directory.iterdir() if p.name.endswith(".yaml")}
    files.update({spec.name: spec.preset for spec in agent_specs().values() if spec.preset is not None})
    return dict(sorted(files.items()))


def available_presets(directory: Traversable = SHARED_PRESETS) -> list[str]:
    return list(preset_files(directory))


def preset_description(file: Traversable) -> str:
    """The first line of a preset's leading comment, for --help."""
    try:
        for line in file.read_text(encoding="utf-8").splitlines():
            if not line.startswith("#"):
                break
            if line.strip("# "):
                return line.strip("# ")
    except (OSError, UnicodeDecodeError):
        pass
    return ""


def read_yaml(file: Traversable | Path, what: str) -> Any:
    try:
        return yaml.safe_load(file.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"cannot read {what} '{file}': it is not UTF-8 text") from None
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(f"cannot read {what} '{file}': {str(err).splitlines()[0]}") from None


def load_preset(name: str, directory: Traversable = SHARED_PRESETS) -> dict:
    """Read a named preset (or a path to a YAML file) safely."""
    if name.endswith((".yaml", ".yml")):
        path = Path(name)
        if not path.is_file():
            raise ConfigError(f"config file '{name}' does not exist")
    else:
        files = preset_files(directory)
        if name not in files:
            raise ConfigError(f"unknown preset '{name}'; available presets: {', '.join(files)}")
        path = files[name]
    return preset_mapping(path)


def preset_mapping(path: Traversable | Path) -> dict:
    data = read_yaml(path, "config file")
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file '{path}' must hold a mapping of keys, got {type(data).__name__}")
    return data


def agent_preset(agent: str) -> list[dict]:
    """The agent's own preset, which must exist if the agent declares one."""
    spec = agent_spec(agent)
    if spec.preset is None:
        return []
    if not spec.preset.is_file():
        raise ConfigError(f"the preset of agent '{agent}' is missing ('{spec.preset}'); "
                          "the installation is incomplete, reinstall the package")
    return [preset_mapping(spec.preset)]
