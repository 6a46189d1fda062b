"""A run's saved config (`config.yaml` in its logdir): written durably, read back validated, and
compared with a rerun's config to decide whether the rerun may resume the run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from dreamer.config import Config, config_from_dict, renamed_config, valid_keys
from dreamer.errors import ConfigError
from dreamer.fileio import fsync_directory, write_synced
from dreamer.presets import read_yaml
from dreamer.registry import agent_specs


def save_config(config: Config, path: Path) -> None:
    """Write `path` durably: a synced temporary file renamed over it (removed if the write fails)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".yaml.part")
    try:
        write_synced(tmp, yaml.safe_dump(config.to_dict(), sort_keys=False).encode())
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)


# Keys a rerun on an existing logdir may change: how long to run, how often to log, evaluate
# and checkpoint, where and on how many devices. Every other key changes what the saved
# state means (network shapes, the data, the schedule of updates), so changing it is an error.
RESUME_SAFE_KEYS = frozenset({
    "logdir", "steps", "devices",
    "run.log_every", "run.eval_every", "run.eval_episodes", "run.video_every",
    "run.checkpoint_minutes", "run.checkpoint_every", "run.checkpoint_keep",
    "run.max_nonfinite", "env.max_restarts", "env.parallel", "run.loop", "run.max_lag",
    "run.actor_device",
})


# Keys added after runs were saved, whose defaults are what those runs did (image observations):
# a saved config without them takes the defaults instead of being refused as truncated.
LATER_KEYS = frozenset({"env.obs", "model.mlp_layers", "model.mlp_units", "model.symlog_inputs",
                        "model.vector_loss", "run.online", "run.replay_context",
                        "run.prefill_actions"})


def flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    """{'model': {'deter': 8}} -> {'model.deter': 8}."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = value
    return flat


def differing_keys(saved: Config, new: Config, ignore: frozenset = RESUME_SAFE_KEYS) -> list[str]:
    """Dotted keys whose values differ between two configs, apart from `ignore`."""
    old, cur = flatten(saved.to_dict()), flatten(new.to_dict())
    return sorted(key for key in cur if key not in ignore and old.get(key) != cur[key])


def _required_keys(agent: Any) -> list[str]:
    """What a saved config must hold: the base sections and the run's own agent's section (other
    agents' sections may come and go as plug-ins are installed)."""
    keys = valid_keys(Config)
    spec = agent_specs().get(agent) if isinstance(agent, str) else None
    if spec is not None and spec.section is not None:
        keys += valid_keys(spec.config, f"{spec.section}.")
    return keys


def load_saved_config(path: Path) -> Config:
    """The resolved config a run saved in its logdir (`config.yaml`), validated."""
    data = read_yaml(path, "the saved config")
    if not isinstance(data, dict):
        raise ConfigError(f"the saved config '{path}' must hold a mapping of keys; "
                          "move it away or choose another --logdir")
    # A truncated file would otherwise be read with defaults filled in. Keys a rerun may change
    # anyway, and keys added since, are filled in: a run saved before one of them existed can
    # still resume.
    data = renamed_config(data)
    missing = sorted(set(_required_keys(data.get("agent"))) - set(flatten(data)) - RESUME_SAFE_KEYS
                     - LATER_KEYS)
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise ConfigError(f"the saved config '{path}' lacks {shown}: it is truncated or from another "
                          "version; restore it, delete it (the checkpoint holds the run's config), "
                          "or choose another --logdir")
    try:
        return config_from_dict(data)
    except ConfigError as err:
        raise ConfigError(f"the saved config '{path}' is not valid for this version ({err}); "
                          "choose another --logdir") from None
