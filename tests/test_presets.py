"""Tests for dreamer.presets: presets apply in order, every key a preset can hold is applied
or refused, agents' own presets, YAML types, the shipped presets."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from dreamer.config import build_config, config_class, config_from_dict, nest, valid_keys
from dreamer.errors import ConfigError
from dreamer.presets import SHARED_PRESETS, available_presets, load_preset
from tests.support import config_error, write

def test_presets_apply_in_order_and_overrides_win(tmp_path):
    write(tmp_path, "a", "model:\n  deter: 10\n  stoch: 11\nrun:\n  batch_size: 7\n")
    write(tmp_path, "b", "model:\n  deter: 20\n")
    config = build_config(["a", "b"], directory=tmp_path)
    assert config.model.deter == 20  # later preset wins
    assert config.model.stoch == 11  # untouched by b
    assert config.run.batch_size == 7
    assert config.model.hidden == 200  # default elsewhere
    config = build_config(["b", "a"], directory=tmp_path)
    assert config.model.deter == 10
    config = build_config(["a", "b"], {"model.deter": "30", "run.batch_size": "3"},
                          directory=tmp_path)
    assert (config.model.deter, config.model.stoch, config.run.batch_size) == (30, 11, 3)


def other_value(field: dataclasses.Field, default):
    """A valid value of `field` other than its default (within its choices and range)."""
    meta = field.metadata
    if meta.get("choices"):  # a single choice (env.size) can only be set to itself
        return next((choice for choice in meta["choices"] if choice != default), default)
    if isinstance(default, bool):
        return not default
    if isinstance(default, (int, float)):
        low, high = meta.get("min"), meta.get("max")
        value = type(default)(default + 1) if high is None or default + 1 <= high else type(default)(default - 1)
        if isinstance(default, float) and high is not None and default + 1 > high:
            value = (default + (low if low is not None else 0.0)) / 2
        return value
    return f"{default}_x" if default else "dmc_cartpole_swingup"


def test_every_key_a_preset_can_hold_is_applied_or_refused(tmp_path):
    """Each dotted key, top-level keys included, set alone to another valid value in a preset
    file: the resolved config holds it, or building fails with one ConfigError line. None is
    silently ignored."""
    full = config_class()
    defaults = full()
    applied, refused = [], []
    for key in valid_keys(full):
        section, _, name = key.rpartition(".")
        cls = type(getattr(defaults, section)) if section else full
        owner = getattr(defaults, section) if section else defaults
        field = {f.name: f for f in dataclasses.fields(cls)}[name]
        value = other_value(field, getattr(owner, name))
        path = tmp_path / f"{key}.yaml"
        path.write_text(yaml.safe_dump(nest({key: value})))
        try:
            config = build_config([str(path)])
        except ConfigError as error:
            assert "\n" not in str(error)
            refused.append(key)
            continue
        resolved = getattr(getattr(config, section), name) if section else getattr(config, name)
        assert resolved == value, f"{key}: the preset sets {value!r}, the config holds {resolved!r}"
        applied.append(key)
    # The agent is chosen by --agent, before any preset; other refusals are keys that need a
    # second key to be valid (e.g. model.unimix needs categorical latents).
    assert "agent" in refused and len(refused) < 10, refused
    assert len(applied) > 100 and {"planet.horizon", "explore.units", "env.obs"} <= set(applied)
    message = config_error([str(tmp_path / "agent.yaml")])
    assert "sets 'agent'" in message and "--agent" in message
    path = write(tmp_path, "per_env_agent", "per_env:\n  dmc_walker: {agent: planet}\n")
    assert "sets 'agent'" in config_error([str(path)], {"env.name": "dmc_walker_walk"})


def test_agent_preset_applied_first(tmp_path):
    write(tmp_path, "p", "model:\n  lr: 2.0e-3\n")
    config = build_config([], agent="planet")
    assert config.agent == "planet"
    assert (config.model.lr, config.model.eps, config.model.grad_clip) == (1e-3, 1e-4, 1000.0)
    config = build_config(["p"], agent="planet", directory=tmp_path)
    assert (config.model.lr, config.model.eps) == (2e-3, 1e-4)  # named preset over agent preset
    config = build_config(["p"], {"model.lr": "3e-3"}, agent="planet", directory=tmp_path)
    assert config.model.lr == 3e-3
    # Each agent's preset is also a named preset, under the agent's name.
    assert build_config(["plan2explore"]).model.deter == 400


def test_agent_from_overrides():
    config = build_config([], {"agent": "plan2explore"})
    assert config.agent == "plan2explore"
    assert config.model.deter == 400  # from the agent's preset


def test_unknown_agent_and_missing_agent_preset(monkeypatch, tmp_path):
    assert "unknown agent 'planett'; did you mean 'planet'?" in config_error(agent="planett")
    # A registered agent whose preset file is gone is an error, never a silent fallback.
    import dreamer.presets
    from dreamer.registry import agent_spec

    broken = dataclasses.replace(agent_spec("planet"), preset=tmp_path / "planet.yaml")
    monkeypatch.setattr(dreamer.presets, "agent_spec", lambda name: broken)
    message = config_error(agent="planet")
    assert "the preset of agent 'planet' is missing" in message and "reinstall" in message


def test_preset_scientific_notation_strings(tmp_path):
    # PyYAML (YAML 1.1) reads `6e-4` and `1e6` as strings; they must still become numbers.
    write(tmp_path, "sci", "model:\n  lr: 6e-4\n  eps: 1e-8\nrun:\n  replay_capacity: 1e6\n"
                           "steps: 2e5\n")
    assert yaml.safe_load((tmp_path / "sci.yaml").read_text())["model"]["lr"] == "6e-4"
    config = build_config(["sci"], directory=tmp_path)
    assert config.model.lr == 6e-4 and type(config.model.lr) is float
    assert config.model.eps == 1e-8
    assert config.run.replay_capacity == 1_000_000 and type(config.run.replay_capacity) is int
    assert config.steps == 200_000 and type(config.steps) is int


def test_preset_yaml_native_types(tmp_path):
    write(tmp_path, "native", "model:\n  lr: 0.001\n  free_nats: 1\n  cont_head: yes\n"
                              "env:\n  fast_render: true\n  parallel: 1\n  name: dmc_cartpole_balance\n"
                              "run:\n  prefill: 1000.0\n")
    config = build_config(["native"], directory=tmp_path)
    assert config.model.lr == 0.001
    assert config.model.free_nats == 1.0 and type(config.model.free_nats) is float
    assert config.model.cont_head is True
    assert config.env.fast_render is True
    assert config.env.parallel is True
    assert config.env.name == "dmc_cartpole_balance"
    assert config.run.prefill == 1000 and type(config.run.prefill) is int


def test_empty_preset_changes_nothing(tmp_path):
    write(tmp_path, "empty", "# only a comment\n")
    assert load_preset("empty", tmp_path) == {}
    assert build_config(["empty"], directory=tmp_path) == config_class()()


def test_preset_by_path(tmp_path):
    path = write(tmp_path, "mine", "seed: 4\n")
    assert build_config([str(path)]).seed == 4
    with pytest.raises(ConfigError, match="config file '.*missing.yaml' does not exist"):
        build_config([str(tmp_path / "missing.yaml")])


def test_shipped_presets():
    assert {"debug", "cpu", "dreamer"} <= set(available_presets())
    debug = build_config(["debug"])
    assert debug.model.deter == 32
    assert debug.model.stoch == 8
    assert debug.run.batch_size == 4
    assert debug.run.seq_len == 12
    assert debug.env.fast_render is True
    assert debug.behavior.horizon == 5
    cpu = build_config(["cpu"])
    assert cpu.steps == 50_000
    assert cpu.model.deter == 128
    assert cpu.run.batch_size == 16
    # Every shipped preset passes validation on its own and round-trips.
    for name in available_presets():
        config = build_config([name])
        assert config_from_dict(config.to_dict()) == config
    assert (SHARED_PRESETS / "debug.yaml").is_file()


