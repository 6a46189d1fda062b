"""Configuration: defaults in code, named YAML presets, dotted command-line overrides.

Resolution order (later wins):
  1. the dataclass defaults below (the Dreamer paper's settings);
  2. the agent's own preset `configs/<agent>.yaml`, if it exists;
  3. presets named with `--configs NAME ...`, in order;
  4. dotted overrides such as `--model.deter 64` (parsed to the type of the default).

Unknown keys, wrong types, out-of-range values and unknown presets raise `ConfigError`
with one line that names the offending key and what was expected.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from dreamer.errors import ConfigError

PRESET_DIR = Path(__file__).resolve().parent.parent / "configs"


def _field(default: Any, *, min: float | None = None, max: float | None = None,
           choices: tuple | None = None, positive: bool = False) -> Any:
    """A dataclass field with validation metadata (checked by `validate`)."""
    meta = {"min": min, "max": max, "choices": choices, "positive": positive}
    return dataclasses.field(default=default, metadata=meta)


@dataclasses.dataclass(frozen=True)
class EnvConfig:
    name: str = "dmc_walker_walk"
    action_repeat: int = _field(2, positive=True)
    size: int = _field(64, choices=(64,))
    time_limit: int = _field(1000, positive=True)  # environment steps per episode
    camera: int = _field(-1, min=-1)  # -1: the task's standard camera
    fast_render: bool = False  # no shadows/reflections/skybox: changes the observations
    num_envs: int = _field(1, positive=True)
    parallel: bool = False  # one worker process per environment
    max_restarts: int = _field(5, min=0)  # an env that raises is recreated this often in a row


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """The shared RSSM world model (defaults: PlaNet / Dreamer V1)."""

    latent: str = _field("gaussian", choices=("gaussian", "categorical"))
    deter: int = _field(200, positive=True)
    stoch: int = _field(30, positive=True)  # Gaussian dims, or categorical variables
    classes: int = _field(32, positive=True)  # classes per categorical variable
    hidden: int = _field(200, positive=True)
    min_std: float = _field(0.1, positive=True)
    depth: int = _field(32, positive=True)  # conv encoder/decoder width multiplier
    act: str = _field("elu", choices=("elu", "relu", "silu", "tanh"))
    head_layers: int = _field(2, positive=True)
    head_units: int = _field(400, positive=True)
    cont_head: bool = False  # predict episode continuation (discount)
    reward_grad: bool = True  # reward loss trains the representation; False: the head only
    free_nats: float = _field(3.0, min=0.0)
    kl_scale: float = _field(1.0, min=0.0)
    kl_balance: float = _field(0.5, min=0.0, max=1.0)  # 0.5 = plain KL; DreamerV2 uses 0.8
    lr: float = _field(6e-4, positive=True)
    eps: float = _field(1e-5, positive=True)
    grad_clip: float = _field(100.0, positive=True)


@dataclasses.dataclass(frozen=True)
class BehaviorConfig:
    """The actor-critic learned in imagination (Dreamer, Plan2Explore)."""

    horizon: int = _field(15, min=2)  # lambda-returns need at least two imagined steps
    discount: float = _field(0.99, min=0.0, max=1.0)
    return_lambda: float = _field(0.95, min=0.0, max=1.0)
    actor_layers: int = _field(4, positive=True)
    actor_units: int = _field(400, positive=True)
    value_layers: int = _field(3, positive=True)
    value_units: int = _field(400, positive=True)
    actor_lr: float = _field(8e-5, positive=True)
    value_lr: float = _field(8e-5, positive=True)
    eps: float = _field(1e-5, positive=True)
    grad_clip: float = _field(100.0, positive=True)
    init_std: float = _field(5.0, positive=True)
    min_std: float = _field(1e-4, positive=True)
    mean_scale: float = _field(5.0, positive=True)
    expl_noise: float = _field(0.3, min=0.0)  # Gaussian std added to actions in collection


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """The collection / training schedule, in environment steps (action repeat included)."""

    batch_size: int = _field(50, positive=True)
    seq_len: int = _field(50, min=2)
    prefill: int = _field(5000, min=0)  # random-action environment steps before training
    train_every: int = _field(1000, positive=True)
    train_steps: int = _field(100, positive=True)  # updates per `train_every` env steps
    train_ratio: float = _field(0.0, min=0.0)  # if > 0: replayed steps per env step (overrides)
    replay_capacity: int = _field(1_000_000, positive=True)  # agent steps kept in memory
    eval_every: int = _field(10_000, positive=True)
    eval_episodes: int = _field(1, min=0)
    log_every: int = _field(1000, positive=True)
    video_every: int = _field(50_000, min=0)  # open-loop prediction videos; 0 disables
    precision: str = _field("float32", choices=("float32", "bfloat16"))
    max_nonfinite: int = _field(20, positive=True)  # consecutive skipped updates before stopping
    checkpoint_minutes: float = _field(10.0, min=0.0)  # wall-clock minutes between checkpoints; 0: off
    checkpoint_every: int = _field(0, min=0)  # environment steps between checkpoints; 0: off
    checkpoint_keep: int = _field(3, positive=True)  # newest checkpoints kept on disk

    def updates_after(self, env_steps: int) -> int:
        """Updates earned by `env_steps` environment steps of training (exact integers)."""
        if self.train_ratio > 0:
            return int(env_steps * self.train_ratio // (self.batch_size * self.seq_len))
        return env_steps * self.train_steps // self.train_every


@dataclasses.dataclass(frozen=True)
class PlannerConfig:
    """CEM planning over latent rollouts (PlaNet); the defaults are the paper's."""

    horizon: int = _field(12, positive=True)
    iterations: int = _field(10, positive=True)
    candidates: int = _field(1000, positive=True)
    top_k: int = _field(100, positive=True)
    expl_noise: float = _field(0.3, min=0.0)  # Gaussian std added to actions in collection
    warm_start: bool = False  # start from the previous step's shifted plan


@dataclasses.dataclass(frozen=True)
class ExploreConfig:
    """Plan2Explore: ensemble disagreement as an intrinsic reward (defaults: the paper's)."""

    ensemble: int = _field(5, min=2)  # one-step predictors; variance needs at least two
    target: str = _field("embed", choices=("embed", "stoch"))  # next image embedding (paper) or stoch
    layers: int = _field(2, positive=True)
    units: int = _field(400, positive=True)
    action_cond: bool = True  # predictors see the action as well as the latent state
    lr: float = _field(3e-4, positive=True)
    eps: float = _field(1e-5, positive=True)
    grad_clip: float = _field(100.0, positive=True)
    normalise: str = _field("scale", choices=("scale", "running"))
    scale: float = _field(10_000.0, positive=True)  # 'scale': reward = scale * disagreement
    momentum: float = _field(0.99, min=0.0, max=1.0)  # 'running': EMA of the mean disagreement
    mode: str = _field("zero_shot", choices=("zero_shot", "few_shot"))
    steps: int = _field(1_000_000, min=0)  # few_shot: env steps of exploration before the switch


@dataclasses.dataclass(frozen=True)
class Config:
    agent: str = "dreamer"
    logdir: str = ""  # default: logdir/<env>/<agent>/<seed>
    seed: int = _field(0, min=0)
    steps: int = _field(1_000_000, positive=True)  # total environment steps
    devices: int = _field(1, positive=True)  # data-parallel over this many local devices
    env: EnvConfig = EnvConfig()
    model: ModelConfig = ModelConfig()
    behavior: BehaviorConfig = BehaviorConfig()
    train: TrainConfig = TrainConfig()
    planet: PlannerConfig = PlannerConfig()
    explore: ExploreConfig = ExploreConfig()

    @property
    def run_dir(self) -> Path:
        if self.logdir:
            return Path(self.logdir)
        return Path("logdir") / self.env.name.replace(":", "_") / self.agent / str(self.seed)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# ----------------------------------------------------------------------------- schema

def _schema(cls: type) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls)}


def _types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def valid_keys(cls: type = Config, prefix: str = "") -> list[str]:
    """Every dotted key of the config, e.g. 'model.deter'."""
    keys = []
    hints = _types(cls)
    for name in _schema(cls):
        if dataclasses.is_dataclass(hints[name]):
            keys += valid_keys(hints[name], f"{prefix}{name}.")
        else:
            keys.append(prefix + name)
    return keys


def _unknown_key(key: str) -> ConfigError:
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


def available_presets(directory: Path = PRESET_DIR) -> list[str]:
    return sorted(p.stem for p in directory.glob("*.yaml"))


def load_preset(name: str, directory: Path = PRESET_DIR) -> dict:
    """Read `configs/<name>.yaml` (or a path to a YAML file) safely."""
    path = Path(name) if name.endswith((".yaml", ".yml")) else directory / f"{name}.yaml"
    if not path.is_file():
        if name.endswith((".yaml", ".yml")):
            raise ConfigError(f"config file '{name}' does not exist")
        raise ConfigError(f"unknown preset '{name}'; available presets: {', '.join(available_presets(directory))}")
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(f"cannot read config file '{path}': {str(err).splitlines()[0]}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file '{path}' must hold a mapping of keys, got {type(data).__name__}")
    return data


def build_config(presets: list[str] = (), overrides: dict[str, Any] | None = None,
                 agent: str | None = None, directory: Path = PRESET_DIR) -> Config:
    """Defaults -> agent preset -> named presets -> their `per_env` blocks -> dotted overrides.

    A preset may hold `per_env: {ENV_PREFIX: {...}}`, e.g. `per_env: {dmc_cartpole: {env:
    {action_repeat: 8}}}`: settings for environments whose name is ENV_PREFIX or starts with
    ENV_PREFIX + '_'. They are more specific than any preset body, so they apply after all
    bodies (in preset order), and the command line still overrides them.
    """
    overrides = dict(overrides or {})
    agent = agent or overrides.get("agent") or Config.agent
    config = Config(agent=str(agent))
    names = ([agent] if (directory / f"{agent}.yaml").is_file() else []) + list(presets)
    per_env_blocks = []
    for name in names:
        preset = dict(load_preset(name, directory))
        per_env = preset.pop("per_env", None) or {}
        if not isinstance(per_env, dict):
            raise ConfigError(f"'per_env' in preset '{name}' must map environment prefixes to settings")
        per_env_blocks.append(per_env)
        config = _apply(Config, config, preset)
    env_name = str(overrides.get("env.name", config.env.name))
    for per_env in per_env_blocks:
        for prefix, settings in per_env.items():
            if env_name == prefix or env_name.startswith(f"{prefix}_"):
                config = _apply(Config, config, settings)
    config = _apply(Config, config, nest(overrides))
    return dataclasses.replace(config, agent=str(agent))


def save_config(config: Config, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".yaml.part")
    tmp.write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
    tmp.replace(path)


def config_from_dict(data: dict) -> Config:
    """Rebuild a Config from a saved `config.yaml` mapping (validated like a preset)."""
    return _apply(Config, Config(), data)


# ----------------------------------------------------------------------------- resuming

# Keys a rerun on an existing logdir may change: how long to run, how often to log, evaluate
# and checkpoint, where and on how many devices. Every other key changes what the saved
# state means (network shapes, the data, the schedule of updates), so changing it is an error.
RESUME_SAFE_KEYS = frozenset({
    "logdir", "steps", "devices",
    "train.log_every", "train.eval_every", "train.eval_episodes", "train.video_every",
    "train.checkpoint_minutes", "train.checkpoint_every", "train.checkpoint_keep",
    "train.max_nonfinite", "env.max_restarts", "env.parallel",
})


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


def load_saved_config(path: Path) -> Config:
    """The resolved config a run saved in its logdir (`config.yaml`), validated."""
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(f"cannot read the saved config '{path}': {str(err).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"the saved config '{path}' must hold a mapping of keys; "
                          "move it away or choose another --logdir")
    try:
        return config_from_dict(data)
    except ConfigError as err:
        raise ConfigError(f"the saved config '{path}' is not valid for this version ({err}); "
                          "choose another --logdir") from None


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
