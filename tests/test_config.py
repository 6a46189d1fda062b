"""Tests for dreamer.config and dreamer.saved_config: defaults, override parsing, validation errors,
saving (presets: test_presets.py)."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from dreamer.config import (
    build_config,
    coerce,
    config_class,
    config_from_dict,
    nest,
    parse_overrides,
    valid_keys,
)
from dreamer.errors import ConfigError, UserError
from dreamer.saved_config import load_saved_config, save_config
from dreamer.presets import load_preset
from tests.support import config_error, write


# ----------------------------------------------------------------------------- defaults

def test_defaults_are_the_dreamer_paper_settings():
    config = config_class()()
    assert config.agent == "dreamer"
    assert config.seed == 0
    assert config.steps == 1_000_000
    assert config.env.name == "dmc_walker_walk"
    assert config.env.action_repeat == 2
    assert config.env.size == 64
    assert config.env.time_limit == 1000

    model = config.model
    assert (model.deter, model.stoch, model.hidden, model.depth) == (200, 30, 200, 32)
    assert model.latent == "gaussian"
    assert model.lr == 6e-4
    assert model.grad_clip == 100.0
    assert model.free_nats == 3.0
    assert model.kl_dyn_scale == model.kl_rep_scale == 1.0

    behavior = config.behavior
    assert behavior.horizon == 15
    assert behavior.discount == 0.99
    assert behavior.return_lambda == 0.95
    assert behavior.actor_lr == 8e-5
    assert behavior.critic_lr == 8e-5
    assert behavior.expl_noise == 0.3

    run = config.run
    assert (run.batch_size, run.seq_len) == (50, 50)
    assert run.prefill == 5000
    assert run.train_every == 1000
    assert run.train_steps == 100
    assert run.train_ratio == 0.0
    assert run.eval_every == 10_000


def test_default_build_equals_code_defaults():
    # dreamer/configs/dreamer.yaml (the default agent's preset) changes nothing.
    assert build_config() == config_class()()
    assert load_preset("dreamer") == {}


def test_types_of_defaults():
    config = config_class()()
    assert type(config.model.deter) is int
    assert type(config.model.lr) is float
    assert type(config.model.free_nats) is float
    assert type(config.env.fast_render) is bool


def test_run_dir():
    assert str(config_class()().run_dir) == "logdir/dmc_walker_walk/dreamer/0"
    config = build_config([], {"env.name": "gym:CartPole-v1", "seed": "3"})
    assert str(config.run_dir) == "logdir/gym_CartPole-v1/dreamer/3"
    assert str(build_config([], {"logdir": "/tmp/x"}).run_dir) == "/tmp/x"


def test_valid_keys():
    keys = valid_keys()
    for key in ("agent", "seed", "steps", "logdir", "env.name", "model.deter",
                "behavior.horizon", "run.batch_size", "run.train_ratio"):
        assert key in keys
    assert "model" not in keys and "env" not in keys
    assert len(keys) == len(set(keys))


def test_updates_after():
    assert config_class()().run.updates_after(1000) == 100  # the paper: 100 per 1000 env steps
    assert config_class()().run.updates_after(999) == 99
    config = build_config([], {"run.train_ratio": "512", "run.batch_size": "16",
                               "run.seq_len": "64"})
    assert config.run.updates_after(10) == 5  # 512 replayed steps per env step / (16 * 64)
    config = build_config([], {"run.train_steps": "5", "run.train_every": "500"})
    assert config.run.updates_after(504) == 5  # integers: no update lost to rounding
    assert config.run.updates_after(4000) == 40


# ----------------------------------------------------------------------------- type parsing

@pytest.mark.parametrize("text, expected", [
    ("64", 64), ("1e6", 1_000_000), ("1000.0", 1000), ("-1", -1), ("0", 0)])
def test_int_parsing(text, expected):
    value = coerce("k", text, int)
    assert value == expected and type(value) is int


@pytest.mark.parametrize("text, expected", [
    ("6e-4", 6e-4), ("0.5", 0.5), ("3", 3.0), ("-1.5", -1.5), ("1E-3", 1e-3)])
def test_float_parsing(text, expected):
    value = coerce("k", text, float)
    assert value == expected and type(value) is float


@pytest.mark.parametrize("text, expected", [
    ("true", True), ("false", False), ("True", True), ("FALSE", False), ("yes", True),
    ("no", False), ("1", True), ("0", False), ("on", True), ("off", False)])
def test_bool_parsing(text, expected):
    assert coerce("k", text, bool) is expected


def test_str_parsing():
    assert coerce("k", "dmc_walker_walk", str) == "dmc_walker_walk"
    assert coerce("k", 123, str) == "123"


def test_overrides_are_typed():
    config = build_config([], {"model.deter": "64", "model.lr": "6e-4", "env.fast_render": "yes",
                               "env.name": "gym:CartPole-v1", "run.replay_capacity": "1e6",
                               "model.latent": "categorical", "seed": "7"})
    assert config.model.deter == 64 and type(config.model.deter) is int
    assert config.model.lr == 6e-4 and type(config.model.lr) is float
    assert config.env.fast_render is True
    assert config.env.name == "gym:CartPole-v1"
    assert config.run.replay_capacity == 1_000_000
    assert config.model.latent == "categorical"
    assert config.seed == 7


def test_config_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        config_class()().seed = 1  # type: ignore[misc]


# ----------------------------------------------------------------------------- errors

def test_errors_are_user_errors():
    assert issubclass(ConfigError, UserError)


@pytest.mark.parametrize("key, suggestion", [
    ("model.detr", "model.deter"),
    ("deter", "model.deter"),
    ("run.batchsize", "run.batch_size"),
    ("behavior.horizn", "behavior.horizon"),
])
def test_unknown_key_suggests_closest(key, suggestion):
    message = config_error([], {key: "1"})
    assert f"unknown config key '{key}'" in message
    assert f"did you mean '{suggestion}'" in message
    with pytest.raises(ConfigError) as info:  # the command line rejects it too
        parse_overrides([f"--{key}", "1"])
    assert str(info.value) == message


def test_unknown_key_in_preset(tmp_path):
    write(tmp_path, "typo", "model:\n  detr: 64\n")
    message = config_error(["typo"], directory=tmp_path)
    assert "unknown config key 'model.detr'" in message
    assert "did you mean 'model.deter'" in message
    write(tmp_path, "section", "modle:\n  deter: 64\n")
    assert "unknown config key 'modle'" in config_error(["section"], directory=tmp_path)


def test_wrong_type():
    message = config_error([], {"model.deter": "abc"})
    assert message == "config key 'model.deter' expects int, got 'abc'"
    message = config_error([], {"seed": "1.5"})
    assert "'seed'" in message and "int" in message and "1.5" in message
    message = config_error([], {"model.lr": "fast"})
    assert "'model.lr'" in message and "float" in message
    message = config_error([], {"env.fast_render": "maybe"})
    assert "'env.fast_render'" in message and "bool" in message
    assert "expects int" in config_error([], {"steps": "1e6.5"})


def test_wrong_type_in_preset(tmp_path):
    write(tmp_path, "bad", "model:\n  deter: [1, 2]\n")
    assert "'model.deter' expects int" in config_error(["bad"], directory=tmp_path)
    write(tmp_path, "boolint", "seed: true\n")  # a YAML bool is not an int
    assert "'seed' expects int" in config_error(["boolint"], directory=tmp_path)
    write(tmp_path, "boolfloat", "model:\n  lr: false\n")
    assert "'model.lr' expects float" in config_error(["boolfloat"], directory=tmp_path)
    write(tmp_path, "intbool", "env:\n  parallel: 2\n")
    assert "'env.parallel' expects bool" in config_error(["intbool"], directory=tmp_path)
    write(tmp_path, "nullstr", "logdir:\n")  # None must not become the directory 'None'
    assert "'logdir' expects str" in config_error(["nullstr"], directory=tmp_path)
    write(tmp_path, "dictstr", "env:\n  name: {a: 1}\n")
    assert "'env.name' expects str" in config_error(["dictstr"], directory=tmp_path)


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_non_finite_floats_rejected(value):
    message = config_error([], {"model.free_nats": value})
    assert "'model.free_nats'" in message and "finite" in message


@pytest.mark.parametrize("key, value, expected", [
    ("steps", "-5", "config key 'steps' must be positive, got -5"),
    ("steps", "0", "config key 'steps' must be positive, got 0"),
    ("run.batch_size", "0", "config key 'run.batch_size' must be positive, got 0"),
    ("seed", "-1", "config key 'seed' must be >= 0, got -1"),
    ("run.seq_len", "1", "config key 'run.seq_len' must be >= 2, got 1"),
    ("behavior.discount", "1.5", "config key 'behavior.discount' must be <= 1.0, got 1.5"),
    ("model.free_nats", "-1", "config key 'model.free_nats' must be >= 0.0, got -1.0"),
    ("model.lr", "0", "config key 'model.lr' must be positive, got 0.0"),
    ("model.latent", "discrete",
     "config key 'model.latent' must be one of ['gaussian', 'categorical'], got 'discrete'"),
    ("env.size", "32", "config key 'env.size' must be one of [64], got 32"),
])
def test_out_of_range(key, value, expected):
    assert config_error([], {key: value}) == expected


def test_range_checked_in_presets(tmp_path):
    write(tmp_path, "neg", "run:\n  batch_size: 0\n")
    assert config_error(["neg"], directory=tmp_path) == \
        "config key 'run.batch_size' must be positive, got 0"


def test_unknown_preset_lists_available(tmp_path):
    write(tmp_path, "alpha", "seed: 1\n")
    write(tmp_path, "beta", "seed: 2\n")
    message = config_error(["nope"], directory=tmp_path)
    assert message == "unknown preset 'nope'; available presets: alpha, beta, dreamer, plan2explore, planet"
    message = config_error(["nope"])  # the shipped directory
    assert "unknown preset 'nope'" in message
    for name in ("cpu", "debug", "dreamer"):
        assert name in message


@pytest.mark.parametrize("text, kind", [("- a\n- b\n", "list"), ("just a string\n", "str"),
                                        ("42\n", "int")])
def test_preset_not_a_mapping(tmp_path, text, kind):
    path = write(tmp_path, "flat", text)
    message = config_error(["flat"], directory=tmp_path)
    assert message == f"config file '{path}' must hold a mapping of keys, got {kind}"


def test_malformed_yaml(tmp_path):
    path = write(tmp_path, "broken", "model:\n  deter: [1, 2\n  stoch: 3\n")
    message = config_error(["broken"], directory=tmp_path)
    assert message.startswith(f"cannot read config file '{path}': ")
    path = write(tmp_path, "tabs", "model:\n\tdeter: 3\n")
    assert f"cannot read config file '{path}'" in config_error(["tabs"], directory=tmp_path)


def test_section_given_a_scalar(tmp_path):
    write(tmp_path, "scalar", "model: 5\n")
    message = config_error(["scalar"], directory=tmp_path)
    assert message == "config section 'model' expects a mapping, got 5"
    write(tmp_path, "null", "run:\n")
    message = config_error(["null"], directory=tmp_path)
    assert message == "config section 'run' expects a mapping, got None"
    with pytest.raises(ConfigError, match="unknown config key 'model'"):
        parse_overrides(["--model", "5"])


def test_value_given_a_mapping_in_overrides():
    with pytest.raises(ConfigError, match="unknown config key 'model.deter.x'"):
        nest({"model.deter": 1, "model.deter.x": 2})


def test_option_without_value():
    with pytest.raises(ConfigError, match=r"^option '--model.deter' needs a value$"):
        parse_overrides(["--model.deter"])
    with pytest.raises(ConfigError, match=r"^option '--model.deter' needs a value$"):
        parse_overrides(["--model.deter", "--model.stoch", "4"])


@pytest.mark.parametrize("argv, bad", [(["junk"], "junk"), (["--model.deter", "64", "extra"], "extra"),
                                       (["--"], "--"), (["-x"], "-x")])
def test_positional_junk(argv, bad):
    with pytest.raises(ConfigError) as info:
        parse_overrides(argv)
    assert str(info.value) == f"unexpected argument '{bad}'; options look like --section.key VALUE"


# ----------------------------------------------------------------------------- save / load

def test_save_config_round_trip(tmp_path):
    config = build_config(["debug"], {"model.lr": "6e-4", "model.latent": "categorical",
                                      "env.name": "gym:CartPole-v1", "seed": "3",
                                      "logdir": str(tmp_path / "run")})
    path = tmp_path / "run" / "config.yaml"
    save_config(config, path)
    assert path.is_file()
    assert not list(path.parent.glob("*.part"))
    data = yaml.safe_load(path.read_text())
    assert data["seed"] == 3
    assert data["model"]["lr"] == 6e-4
    assert data["model"]["deter"] == 32
    assert data["env"]["name"] == "gym:CartPole-v1"
    rebuilt = config_from_dict(data)
    assert rebuilt == config
    save_config(rebuilt, path)  # overwriting is fine
    assert config_from_dict(yaml.safe_load(path.read_text())) == config


def test_config_from_dict_validates():
    with pytest.raises(ConfigError, match="unknown config key 'model.detr'"):
        config_from_dict({"model": {"detr": 3}})
    with pytest.raises(ConfigError, match="'steps' must be positive"):
        config_from_dict({"steps": 0})
    assert config_from_dict({}) == config_class()()


# ----------------------------------------------------------------------------- command line

def test_parse_overrides_forms():
    assert parse_overrides([]) == {}
    assert parse_overrides(["--model.deter=64"]) == {"model.deter": "64"}
    assert parse_overrides(["--model.deter", "64"]) == {"model.deter": "64"}
    assert parse_overrides(["--model.deter", "64", "--run.batch_size=8", "--model.lr", "6e-4"]) == {
        "model.deter": "64", "run.batch_size": "8", "model.lr": "6e-4"}
    assert parse_overrides(["--behavior.expl_noise", "-1"]) == {"behavior.expl_noise": "-1"}
    assert parse_overrides(["--logdir=a=b"]) == {"logdir": "a=b"}
    assert parse_overrides(["--model.deter", "8", "--model.deter", "16"]) == {"model.deter": "16"}


def test_parse_overrides_env_alias():
    assert parse_overrides(["--env", "dmc_cartpole_balance"]) == {"env.name": "dmc_cartpole_balance"}
    assert parse_overrides(["--env=gym:CartPole-v1"]) == {"env.name": "gym:CartPole-v1"}
    assert parse_overrides(["--env.name", "x"]) == {"env.name": "x"}
    config = build_config([], parse_overrides(["--env", "dmc_cartpole_balance", "--model.deter", "64"]))
    assert config.env.name == "dmc_cartpole_balance"
    assert config.model.deter == 64


def test_a_saved_config_with_renamed_keys_reads_them_under_their_new_names(tmp_path):
    config = build_config(overrides={"agent": "plan2explore", "model.activation": "silu",
                                     "model.cnn_activation": "elu", "explore.activation": "tanh"})
    data = config.to_dict()
    for section, old, new in [("model", "act", "activation"), ("model", "cnn_act", "cnn_activation"),
                              ("explore", "act", "activation")]:
        data[section][old] = data[section].pop(new)  # as a run saved before the renames
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    assert load_saved_config(path) == config_from_dict(data) == config
    message = config_error([], {"model.act": "relu"})  # given anew, the old name points to the new
    assert message == "unknown config key 'model.act'; it is now 'model.activation'"


def test_the_critics_renamed_keys_read_from_a_saved_config(tmp_path):
    config = build_config(overrides={"behavior.critic_layers": 2, "behavior.critic_units": 16, "behavior.critic_lr": 1e-4})
    data = config.to_dict()
    for name in ("layers", "units", "lr"):
        data["behavior"][f"value_{name}"] = data["behavior"].pop(f"critic_{name}")
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    assert load_saved_config(path) == config


def test_a_saved_config_with_the_train_section_reads_it_as_run(tmp_path):
    config = build_config(overrides={"run.batch_size": 7, "run.replay_context": 1})
    data = config.to_dict()
    data["train"] = data.pop("run")  # as a run saved before the section was renamed
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    assert load_saved_config(path) == config
    assert config_error([], {"train.batch_size": 8}) == ("unknown config key 'train.batch_size'; "
                                                          "it is now 'run.batch_size'")
    write(tmp_path, "old", "train:\n  batch_size: 8\n")  # a preset of the old layout
    assert config_error([str(tmp_path / "old.yaml")], {}) == ("unknown config key 'train.batch_size'; "
                                                               "it is now 'run.batch_size'")
