"""Configuration: defaults in code, named YAML presets, dotted command-line overrides.

Resolution order (later wins):
  1. the dataclass defaults: this module's sections, the core's (`model`, `behavior`) and the
     section of every registered agent that owns one (`dreamer.registry`);
  2. the chosen agent's own preset (its `AgentSpec.preset`);
  3. presets named with `--configs NAME ...`, in order: the shared ones shipped in
     `dreamer/configs/`, or any agent's preset by the agent's name, or a path to a YAML file;
  4. their `per_env` blocks, then dotted overrides such as `--model.deter 64` (parsed to the
     type of the default).

Unknown keys, wrong types, out-of-range values and unknown presets raise `ConfigError`
with one line that names the offending key and what was expected. Nothing here names an agent.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import types
import typing
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any


from dreamer.core.config import ActorCriticConfig, ModelConfig, option
from dreamer.errors import ConfigError
from dreamer.presets import SHARED_PRESETS, agent_preset, load_preset
from dreamer.registry import agent_specs

# Environment seeds are the run's seed plus offsets below 2**20 (evaluation, hosts, envs), and
# dm_control seeds NumPy's RandomState, which takes seeds below 2**32.
MAX_SEED = 2**31 - 1


@dataclasses.dataclass(frozen=True)
class EnvConfig:
    name: str = "dmc_walker_walk"
    action_repeat: int = option(2, positive=True)
    size: int = option(64, choices=(64,))
    # What the observations carry: 'image' (pixels), 'vector' (the env's own observations as
    # float32 vectors, e.g. DMC's proprioceptive entries; nothing is rendered) or 'both'.
    obs: str = option("image", choices=("image", "vector", "both"))
    time_limit: int = option(1000, positive=True)  # environment steps per episode
    camera: int = option(-1, min=-1)  # -1: the task's standard camera
    fast_render: bool = False  # no shadows/reflections/skybox: changes the observations
    num_envs: int = option(1, positive=True)
    parallel: bool = False  # one worker process per environment
    max_restarts: int = option(5, min=0)  # an env that raises is recreated this often in a row


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """A run's schedule and loop: collection, updates, evaluation, logging and checkpoints, in
    environment steps (action repeat included). Named `run`, as `train` is the command
    (`dreamer.train`)."""

    batch_size: int = option(50, positive=True)
    seq_len: int = option(50, min=2)
    prefill: int = option(5000, min=0)  # environment steps collected before training starts
    # who acts during prefill: 'random' (uniform actions, Dreamer V1 and PlaNet) or 'policy'
    # (the untrained agent, as the official DreamerV3)
    prefill_actions: str = option("random", choices=("random", "policy"))
    train_every: int = option(1000, positive=True)
    train_steps: int = option(100, positive=True)  # updates per `train_every` env steps
    train_ratio: float = option(0.0, min=0.0)  # if > 0: replayed steps per env step (overrides)
    replay_capacity: int = option(1_000_000, positive=True)  # agent steps kept in memory
    cross_episodes: bool = False  # sequences may run into the next episode; False: inside one (Dreamer)
    # each stored step is also queued once, in consecutive sequences that training batches take
    # first (the official DreamerV3's replay.online)
    online: bool = False
    # 1: each replayed sequence starts from the latent state stored with its first step (the
    # policy's when collected, the newest training pass's after), not from zeros; the pass
    # writes its posterior states back (the official DreamerV3's replay_context 1)
    replay_context: int = option(0, min=0, max=1)
    eval_every: int = option(10_000, positive=True)
    eval_episodes: int = option(1, min=0)
    log_every: int = option(1000, positive=True)
    video_every: int = option(50_000, min=0)  # open-loop prediction videos; 0 disables
    precision: str = option("float32", choices=("float32", "bfloat16"))
    max_nonfinite: int = option(20, positive=True)  # consecutive skipped updates before stopping
    checkpoint_minutes: float = option(10.0, min=0.0)  # wall-clock minutes between checkpoints; 0: off
    checkpoint_every: int = option(0, min=0)  # environment steps between checkpoints; 0: off
    checkpoint_keep: int = option(3, positive=True)  # newest checkpoints kept on disk
    # 'sync': collect, then update, in turn; 'overlapped': an actor thread collects while the
    # learner updates (dreamer/overlapped.py), same updates per environment step
    loop: str = option("sync", choices=("sync", "overlapped"))
    max_lag: int = option(1000, min=0)  # overlapped: env steps the policy may miss updates for
    # overlapped: where the collecting policy runs; 'cpu' keeps it off an accelerator's stream,
    # where it would wait behind the updates
    actor_device: str = option("learner", choices=("learner", "cpu"))

    def updates_after(self, env_steps: int) -> int:
        """Updates earned by `env_steps` environment steps of training (exact integers)."""
        if self.train_ratio > 0:
            return int(env_steps * self.train_ratio // (self.batch_size * self.seq_len))
        return env_steps * self.train_steps // self.train_every


@dataclasses.dataclass(frozen=True)
class Config:
    """The sections every run has. `config_class()` adds one section per registered agent
    that declares one (`planet`, `explore`, ...); build configs with `build_config`."""

    agent: str = "dreamer"
    logdir: str = ""  # default: logdir/<env>/<agent>/<seed>
    seed: int = option(0, min=0, max=MAX_SEED)
    steps: int = option(1_000_000, positive=True)  # total environment steps
    devices: int = option(1, positive=True)  # data-parallel over this many local devices
    env: EnvConfig = EnvConfig()
    model: ModelConfig = ModelConfig()
    behavior: ActorCriticConfig = ActorCriticConfig()
    run: RunConfig = RunConfig()

    @property
    def run_dir(self) -> Path:
        if self.logdir:
            return Path(self.logdir)
        return Path("logdir") / self.env.name.replace(":", "_") / self.agent / str(self.seed)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@functools.cache
def config_class() -> type[Config]:
    """`Config` with the section of every registered agent that owns one, in registry order."""
    sections = []
    for spec in agent_specs().values():
        if spec.section is None:
            continue
        if spec.section in {f.name for f in dataclasses.fields(Config)} | {s[0] for s in sections}:
            raise ConfigError(f"agent '{spec.name}' claims config section '{spec.section}', which is taken")
        sections.append((spec.section, spec.config, dataclasses.field(default=spec.config())))
    return dataclasses.make_dataclass("Config", sections, bases=(Config,), frozen=True,
                                      namespace={"__module__": __name__})


# ----------------------------------------------------------------------------- schema

def _schema(cls: type) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls)}


def _types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def valid_keys(cls: type | None = None, prefix: str = "") -> list[str]:
    """Every dotted key of the config, e.g. 'model.deter'."""
    cls = cls or config_class()
    keys = []
    hints = _types(cls)
    for name in _schema(cls):
        if dataclasses.is_dataclass(hints[name]):
            keys += valid_keys(hints[name], f"{prefix}{name}.")
        else:
            keys.append(prefix + name)
    return keys


# Keys and sections renamed since runs were saved: a saved config's old name is read as the new
# one; given on the command line or in a preset, the old name is an unknown key that names its
# successor.
RENAMED_KEYS = {"model.act": "model.activation", "model.cnn_act": "model.cnn_activation",
                "explore.act": "explore.activation", "behavior.value_layers": "behavior.critic_layers",
                "behavior.value_units": "behavior.critic_units", "behavior.value_lr": "behavior.critic_lr"}
RENAMED_SECTIONS = {"train": "run"}


def renamed_key(key: str) -> str | None:
    """The current name of a renamed dotted key or section, else None."""
    section, _, rest = key.partition(".")
    if key in RENAMED_KEYS:
        return RENAMED_KEYS[key]
    if section in RENAMED_SECTIONS:
        return ".".join(filter(None, (RENAMED_SECTIONS[section], rest)))
    return None


def _unknown_key(key: str) -> ConfigError:
    new_name = renamed_key(key)
    if new_name is not None:
        return ConfigError(f"unknown config key '{key}'; it is now '{new_name}'")
    close = difflib.get_close_matches(key, valid_keys(), n=1, cutoff=0.4)
    if not close:  # try matching the last component alone (e.g. 'deter' -> 'model.deter')
        last = {k.split(".")[-1]: k for k in valid_keys()}
        close = [last[m] for m in difflib.get_close_matches(key.split(".")[-1], last, n=1)]
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return ConfigError(f"unknown config key '{key}'{hint}")


_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def coerce(key: str, value: Any, tp: Any) -> Any:
    """Convert a YAML or command-line value to the type of the default, or raise."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            if type(None) in args:
                return None
        inner = [a for a in args if a is not type(None)]
        return coerce(key, value, inner[0])
    bad = ConfigError(f"config key '{key}' expects {_type_name(tp)}, got {value!r}")
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
            return value.lower() in _TRUE
        if isinstance(value, int) and value in (0, 1):  # YAML `parallel: 1`, like '1' on the command line
            return bool(value)
        raise bad
    if tp is int:
        if isinstance(value, bool):
            raise bad
        if isinstance(value, int):
            return value
        try:  # accept '1e6' and 1000.0, but not 1.5
            number = float(value)
        except (TypeError, ValueError):
            raise bad from None
        if not number.is_integer():
            raise bad
        return int(number)
    if tp is float:
        if isinstance(value, bool):
            raise bad
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise bad from None
        if not math.isfinite(number):  # nan would pass every range check
            raise ConfigError(f"config key '{key}' expects a finite float, got {value!r}")
        return number
    if tp is str:
        if value is None or isinstance(value, (dict, list)):  # YAML `logdir:` is None, not 'None'
            raise bad
        return str(value)
    raise ConfigError(f"config key '{key}' has unsupported type {_type_name(tp)}")


def _check_range(key: str, value: Any, meta: dict) -> None:
    if value is None:
        return
    if meta.get("choices") and value not in meta["choices"]:
        raise ConfigError(f"config key '{key}' must be one of {list(meta['choices'])}, got {value!r}")
    if meta.get("positive") and not value > 0:
        raise ConfigError(f"config key '{key}' must be positive, got {value!r}")
    if meta.get("min") is not None and value < meta["min"]:
        raise ConfigError(f"config key '{key}' must be >= {meta['min']}, got {value!r}")
    if meta.get("max") is not None and value > meta["max"]:
        raise ConfigError(f"config key '{key}' must be <= {meta['max']}, got {value!r}")


# ----------------------------------------------------------------------------- building

def _apply(cls: type, base: Any, updates: dict, prefix: str = "") -> Any:
    """A new dataclass `base` with nested `updates` applied, coerced and validated."""
    if not isinstance(updates, dict):
        raise ConfigError(f"config section '{prefix.rstrip('.')}' expects a mapping, got {updates!r}")
    fields, hints, changes = _schema(cls), _types(cls), {}
    for name, value in updates.items():
        key = prefix + str(name)
        if name not in fields:
            if isinstance(value, dict) and value and renamed_key(key) is not None:
                key = f"{key}.{next(iter(value))}"  # a renamed section: name the key given in it
            raise _unknown_key(key)
        if dataclasses.is_dataclass(hints[name]):
            changes[name] = _apply(hints[name], getattr(base, name), value, key + ".")
        else:
            changes[name] = coerce(key, value, hints[name])
            _check_range(key, changes[name], fields[name].metadata)
    return dataclasses.replace(base, **changes)


def nest(flat: dict[str, Any]) -> dict:
    """{'model.deter': 8} -> {'model': {'deter': 8}}."""
    tree: dict = {}
    for key, value in flat.items():
        node = tree
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise _unknown_key(key)
        node[leaf] = value
    return tree


def build_config(presets: list[str] = (), overrides: dict[str, Any] | None = None,
                 agent: str | None = None, directory: Traversable = SHARED_PRESETS) -> Config:
    """Defaults -> agent preset -> named presets -> their `per_env` blocks -> dotted overrides.

    A preset may hold `per_env: {ENV_PREFIX: {...}}`, e.g. `per_env: {dmc_cartpole: {env:
    {action_repeat: 8}}}`: settings for environments whose name is ENV_PREFIX or starts with
    ENV_PREFIX + '_'. They are more specific than any preset body, so they apply after all
    bodies (in preset order), and the command line still overrides them.
    """
    overrides = dict(overrides or {})
    agent = str(agent or overrides.get("agent") or Config.agent)
    full = config_class()
    config = full(agent=agent)
    named = [(f"agent '{agent}'", body) for body in agent_preset(agent)]
    named += [(name, load_preset(name, directory)) for name in presets]
    per_env_blocks = []
    for name, body in named:
        preset = dict(body)
        per_env = preset.pop("per_env", None) or {}
        if not isinstance(per_env, dict):
            raise ConfigError(f"'per_env' in preset '{name}' must map environment prefixes to settings")
        for block in (preset, *per_env.values()):
            if isinstance(block, dict) and "agent" in block:  # it comes after the agent's own preset
                raise ConfigError(f"preset '{name}' sets 'agent': presets cannot choose the agent; "
                                  "use --agent on the command line")
        per_env_blocks.append(per_env)
        config = _apply(full, config, preset)
    env_name = str(overrides.get("env.name", config.env.name))
    for per_env in per_env_blocks:
        for prefix, settings in per_env.items():
            if env_name == prefix or env_name.startswith(f"{prefix}_"):
                config = _apply(full, config, settings)
    config = _apply(full, config, nest(overrides))
    return check_consistency(dataclasses.replace(config, agent=agent))


def check_consistency(config: Config) -> Config:
    """Limits that involve two keys, checked here rather than by the libraries below."""
    run, model, behavior = config.run, config.model, config.behavior
    if run.replay_capacity < run.seq_len:
        raise ConfigError(f"run.replay_capacity ({run.replay_capacity}) must be at least "
                          f"run.seq_len ({run.seq_len}): the replay must hold one sequence")
    if model.unimix > 0 and model.latent != "categorical":
        raise ConfigError(f"model.unimix ({model.unimix}) mixes categorical latents; model.latent is "
                          f"{model.latent!r}")
    for section, name, key in ((model, "model", "reward_head"), (behavior, "behavior", "critic")):
        head = getattr(section, key)
        if section.twohot_bins % 2 == 0:
            raise ConfigError(f"{name}.twohot_bins ({section.twohot_bins}) must be odd: the bins are "
                              f"symmetric around a zero bin")
        if head != "twohot" and section.twohot_bins != type(section).twohot_bins:  # the default
            raise ConfigError(f"{name}.twohot_bins is set ({section.twohot_bins}) but {name}.{key} is "
                              f"{head!r}: bins need a twohot head")
    if behavior.return_norm_low >= behavior.return_norm_high:
        raise ConfigError(f"behavior.return_norm_low ({behavior.return_norm_low}) must be below "
                          f"behavior.return_norm_high ({behavior.return_norm_high})")
    _check_dreamerv3_parts(config)
    return config


def _check_dreamerv3_parts(config: Config) -> None:
    """DreamerV3's switches that only work together."""
    model, behavior = config.model, config.behavior
    blocks = model.gru_blocks
    if model.gru == "block" and model.deter % blocks:
        raise ConfigError(f"model.deter ({model.deter}) must be a multiple of model.gru_blocks ({blocks})")
    if model.cnn == "dreamerv3":
        if model.deter % blocks or (4 * model.depth) % blocks:
            raise ConfigError(f"model.cnn dreamerv3 splits model.deter ({model.deter}) and 4 x model.depth "
                              f"({4 * model.depth}) into model.gru_blocks ({blocks}) blocks: make both multiples")
        if config.env.size % 16:
            raise ConfigError(f"model.cnn dreamerv3 halves the image four times: env.size ({config.env.size}) "
                              f"must be a multiple of 16")
    if model.cont_discount < 1 and not model.cont_head:
        raise ConfigError(f"model.cont_discount ({model.cont_discount}) is the continuation head's target "
                          f"discount, but model.cont_head is false")
    if model.cont_discount < 1 and behavior.discount != model.cont_discount:
        raise ConfigError(f"model.cont_discount ({model.cont_discount}) folds the discount into the "
                          f"continuation head; behavior.discount ({behavior.discount}) must be the same")
    for key in ("actor_grad", "replay_value_scale"):
        value = getattr(behavior, key)
        if value not in ("dynamics", 0.0) and behavior.returns != "dreamerv3":
            raise ConfigError(f"behavior.{key} {value} needs behavior.returns dreamerv3 (the return of each "
                              f"action's own transition); behavior.returns is {behavior.returns!r}")
    if behavior.actor_entropy > 0 and behavior.actor_dist != "bounded_normal":
        raise ConfigError(f"behavior.actor_entropy ({behavior.actor_entropy}) needs behavior.actor_dist "
                          f"bounded_normal: the tanh-normal's entropy has no closed form")


def config_from_dict(data: dict) -> Config:
    """Rebuild a Config from a saved `config.yaml` mapping (validated like a preset), its
    renamed keys read under their new names."""
    full = config_class()
    return check_consistency(_apply(full, full(), renamed_config(data)))


def renamed_config(data: dict) -> dict:
    """A copy of a nested config mapping with `RENAMED_SECTIONS` and `RENAMED_KEYS` moved to
    their new names."""
    data = {RENAMED_SECTIONS.get(section, section): dict(value) if isinstance(value, dict) else value
            for section, value in data.items()}
    for old, new in RENAMED_KEYS.items():
        (old_section, old_name), (new_section, new_name) = old.split("."), new.split(".")
        if isinstance(data.get(old_section), dict) and old_name in data[old_section]:
            data.setdefault(new_section, {})[new_name] = data[old_section].pop(old_name)
    return data


# ----------------------------------------------------------------------------- command line

TOP_LEVEL_ALIASES = {"env": "env.name"}


def parse_overrides(argv: list[str]) -> dict[str, str]:
    """Parse ['--model.deter', '64', '--env=dmc_x'] into {'model.deter': '64', 'env.name': 'dmc_x'}."""
    overrides, i = {}, 0
    while i < len(argv):
        arg = argv[i]
        if not arg.startswith("--") or len(arg) == 2:
            raise ConfigError(f"unexpected argument '{arg}'; options look like --section.key VALUE")
        key, eq, value = arg[2:].partition("=")
        if not eq:
            if i + 1 >= len(argv) or argv[i + 1].startswith("--"):
                raise ConfigError(f"option '--{key}' needs a value")
            value, i = argv[i + 1], i + 1
        key = TOP_LEVEL_ALIASES.get(key, key)
        if key not in valid_keys():
            raise _unknown_key(key)
        overrides[key] = value
        i += 1
    return overrides
