"""The training command's handling of bad input: one `error:` line, non-zero exit, no traceback
(unless --debug), and nothing changed on disk."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

import dreamer
from dreamer import checkpoint
from dreamer.errors import ConfigError

from tests.support import train_in_process


def snapshot(directory: Path) -> dict[str, bytes | None]:
    """Every path under `directory` with its contents (None for directories)."""
    return {str(p.relative_to(directory)): None if p.is_dir() else p.read_bytes()
            for p in sorted(directory.rglob("*"))}


def assert_one_line_error(result: subprocess.CompletedProcess, *needles: str) -> str:
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "Traceback" not in output, output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    line = lines[0]
    assert line.startswith("error: "), line
    for needle in needles:
        assert needle in line, line
    return line


def make_logdir(path: Path) -> Path:
    """An existing run directory with files in it, which failing commands must not touch."""
    (path / "replay").mkdir(parents=True)
    (path / "notes.txt").write_text("keep me\n")
    (path / "config.yaml").write_text("seed: 123\n")
    (path / "replay" / "episode.npz").write_bytes(b"\x00\x01\x02")
    return path


@pytest.fixture
def logdir(tmp_path: Path) -> Path:
    return make_logdir(tmp_path / "run")


# Each case runs `python -m dreamer.train ARGS --logdir <an existing logdir with files>`.
CASES = {
    "unknown-key": (["--model.detr", "64"], ["model.detr", "did you mean 'model.deter'"]),
    "wrong-type": (["--model.deter", "abc"], ["model.deter", "int", "abc"]),
    "negative-steps": (["--steps", "-5"], ["steps", "positive", "-5"]),
    "zero-batch": (["--run.batch_size", "0"], ["run.batch_size", "positive"]),
    "float-seed": (["--seed", "1.5"], ["seed", "int", "1.5"]),
    "unknown-preset": (["--configs", "nope"], ["unknown preset 'nope'", "cpu", "debug", "dreamer"]),
    "unknown-agent": (["--agent", "nope"], ["unknown agent 'nope'", "dreamer"]),
    "unknown-env": (["--configs", "debug", "--env", "dmc_walker_wlak"],
                    ["dmc_walker_wlak", "dmc_walker_walk"]),
    "unknown-domain": (["--configs", "debug", "--env", "dmc_walkr_walk"], ["dmc_walkr_walk"]),
    "bad-choice": (["--model.latent", "gausian"], ["model.latent", "one of", "gausian"]),
    "missing-config-file": (["--configs", "/nonexistent/my.yaml"], ["/nonexistent/my.yaml", "does not exist"]),
    "no-pixels": (["--configs", "debug", "--env", "gym:tests.fake_envs:FakeNoPixels-v0"],
                  ["FakeNoPixels-v0", "pixels"]),
    "conflicting-flags": (["--env", "dmc_walker_walk", "--env.name", "dmc_cheetah_run"],
                          ["--env", "--env.name", "env.name"]),
    "too-many-devices": (["--configs", "debug", "--devices", "3"], ["--devices 3", "XLA_FLAGS"]),
    # Valid alone, not together: the replay could never hold one sequence.
    "capacity-below-sequence": (["--configs", "debug", "--run.replay_capacity", "5"],
                                ["run.replay_capacity (5)", "run.seq_len (12)"]),
    "seed-too-large": (["--seed", "4294967296"], ["seed", "<= 2147483647"]),
    # Switches that make no sense together name both keys.
    "bins-without-twohot": (["--model.twohot_bins", "101"], ["model.twohot_bins", "model.reward_head", "gaussian"]),
    "even-bins": (["--behavior.critic", "twohot", "--behavior.twohot_bins", "100"],
                  ["behavior.twohot_bins (100)", "odd"]),
    "unimix-gaussian": (["--model.unimix", "0.01"], ["model.unimix", "model.latent", "gaussian"]),
    "percentiles-reversed": (["--behavior.return_norm_low", "95", "--behavior.return_norm_high", "5"],
                             ["behavior.return_norm_low (95.0)", "behavior.return_norm_high (5.0)"]),
    "unknown-dreamerv3-size": (["--configs", "dreamerv3", "size13m"], ["unknown preset 'size13m'", "size12m"]),
    "reinforce-with-dreamer-returns": (["--behavior.actor_grad", "reinforce"],
                                       ["behavior.actor_grad reinforce", "behavior.returns dreamerv3"]),
    "replay-value-with-dreamer-returns": (["--behavior.replay_value_scale", "0.3"],
                                          ["behavior.replay_value_scale 0.3", "behavior.returns"]),
    "entropy-of-tanh-normal": (["--behavior.actor_entropy", "0.001"],
                               ["behavior.actor_entropy", "behavior.actor_dist bounded_normal"]),
    "cont-discount-without-head": (["--model.cont_discount", "0.99"], ["model.cont_discount", "model.cont_head"]),
    "cont-discount-not-the-discount": (["--configs", "dreamerv3", "--behavior.discount", "0.99"],
                                       ["model.cont_discount (0.996997)", "behavior.discount (0.99)"]),
    "blocks-not-dividing-deter": (["--configs", "dreamerv3", "--model.deter", "100"],
                                  ["model.deter (100)", "model.gru_blocks (8)"]),
    "debug": (["--debug", "--model.detr", "64"], []),  # shows the traceback instead
}


# A logdir of an earlier run whose config or checkpoints the new command cannot continue from.
RUN_ARGS = ["--configs", "debug", "--env", "dmc_cartpole_balance"]
RESUME_CASES = {
    "other-config": (["--model.deter", "64", "--seed", "5"],
                     ["another config", "model.deter (saved 32, now 64)", "seed (saved 0, now 5)"]),
    "corrupted-checkpoint": ([], ["corrupted checkpoint", "ckpt-500", "does not match its digest"]),
    "other-version": ([], ["dreamer-jax 9.0.0", "this is dreamer-jax", "ckpt-500"]),
    # host.json parses but is not a run's: skipped as corrupted, never a KeyError or TypeError.
    "host-lacks-key": ([], ["corrupted checkpoint", "ckpt-500", "lacks 'episodes'"]),
    "host-wrong-type": ([], ["corrupted checkpoint", "ckpt-500", "invalid 'step'"]),
    # config.yaml deleted: the checkpoint's own config still guards the run.
    "config-yaml-gone": (["--model.lr", "0.01"], ["another config", "model.lr (saved 0.0006, now 0.01)"]),
    # config.yaml cut short: an error naming what is missing, not defaults filled in.
    "truncated-config": ([], ["the saved config", "lacks", "truncated"]),
}


def make_run_logdir(path: Path, case: str) -> Path:
    """A logdir with the config of RUN_ARGS and a checkpoint of it that is corrupted, from a
    version this one cannot read, or (config-yaml-gone) intact but without config.yaml."""
    import hashlib

    from dreamer.saved_config import save_config
    from dreamer.train import parse_args

    make_logdir(path)
    config, _ = parse_args([*RUN_ARGS, "--logdir", str(path)])
    if case != "config-yaml-gone":
        save_config(config, path / "config.yaml")
    else:
        (path / "config.yaml").unlink()
    if case == "truncated-config":
        text = (path / "config.yaml").read_text()
        (path / "config.yaml").write_text(text[:len(text) // 2].rsplit("\n", 1)[0] + "\n")
    ckpt = path / "checkpoints" / "ckpt-500"
    ckpt.mkdir(parents=True)
    state = b"\x81\xa1a\x00"
    (ckpt / "state.msgpack").write_bytes(state)
    intact = case in ("config-yaml-gone", "finished")
    digest = "sha256:" + (hashlib.sha256(state).hexdigest() if intact else "0" * 64)
    host = {"step": 500, "format": checkpoint.FORMAT, "version": dreamer.__version__, "digest": digest,
            "episodes": 0, "scheduled_updates": 0, "train_start": None,
            "nonfinite_streak": 0, "pending_metrics": {}, "rng": {}, "actor_key": [0, 0],
            "replay": {"rng": {}}, "agent_spec": {"name": "dreamer", "action_size": 1, "discrete": False},
            "metrics_bytes": 0, "config": config.to_dict()}
    if case == "other-version":
        host["version"] = "9.0.0"
    elif case == "host-lacks-key":
        del host["episodes"]
    elif case == "host-wrong-type":
        host["step"] = "abc"
    (ckpt / "host.json").write_text(json.dumps(host))
    return path


@pytest.fixture(scope="module")
def cli_runs(tmp_path_factory):
    """Run every command of this module in-process (`dreamer.train.main`), as it answers on the
    command line: exit status, stdout, stderr."""
    runs = {}
    for name, (args, _) in CASES.items():
        path = make_logdir(tmp_path_factory.mktemp(name) / "run")
        runs[name] = (path, snapshot(path), train_in_process(*args, "--logdir", str(path)))
    file_dir = tmp_path_factory.mktemp("file")
    (file_dir / "not_a_dir").write_text("precious\n")
    runs["logdir-file"] = (file_dir, snapshot(file_dir), train_in_process(
        "--configs", "debug", "--logdir", str(file_dir / "not_a_dir")))
    foreign = tmp_path_factory.mktemp("foreign")  # a folder that is not a run
    (foreign / "notes.txt").write_text("mine\n")
    (foreign / "eval_policy_000001500.gif").write_bytes(b"GIF89a")
    runs["not-a-run"] = (foreign, snapshot(foreign), train_in_process(*RUN_ARGS, "--logdir", str(foreign)))
    latin = tmp_path_factory.mktemp("latin") / "latin.yaml"
    latin.write_bytes(b"# caf\xe9\nseed: 1\n")
    path = make_logdir(tmp_path_factory.mktemp("not-utf8") / "run")
    runs["not-utf8"] = (path, snapshot(path), train_in_process(
        "--configs", str(latin), "--logdir", str(path)))
    path = make_run_logdir(tmp_path_factory.mktemp("finished") / "run", "finished")
    runs["finished"] = (path, snapshot(path), train_in_process(
        *RUN_ARGS, "--steps", "400", "--logdir", str(path)))
    new = tmp_path_factory.mktemp("camera") / "new" / "run"  # a camera the task lacks
    runs["bad-camera"] = (new, {}, train_in_process(*RUN_ARGS, "--env.camera", "99", "--logdir", str(new)))
    bad_yaml = tmp_path_factory.mktemp("yaml") / "broken.yaml"
    bad_yaml.write_text("model: [deter: 3\n")
    path = make_logdir(tmp_path_factory.mktemp("bad-yaml") / "run")
    runs["bad-yaml"] = (path, snapshot(path), train_in_process(
        "--configs", str(bad_yaml), "--logdir", str(path)))
    runs["logdir-unwritable"] = (file_dir, snapshot(file_dir), train_in_process(
        "--configs", "debug", "--logdir", "/proc/dreamer_run"))
    for name, (args, _) in RESUME_CASES.items():
        path = make_run_logdir(tmp_path_factory.mktemp(name) / "run", name)
        runs[name] = (path, snapshot(path), train_in_process(*RUN_ARGS, *args, "--logdir", str(path)))
    return runs


@pytest.mark.parametrize("case", [name for name in CASES if name != "debug"])
def test_bad_input_is_one_line_and_changes_nothing(cli_runs, case):
    path, before, result = cli_runs[case]
    assert_one_line_error(result, *CASES[case][1])
    assert snapshot(path) == before


@pytest.mark.parametrize("case", list(RESUME_CASES))
def test_logdir_that_cannot_be_resumed_is_one_line_and_changes_nothing(cli_runs, case):
    path, before, result = cli_runs[case]
    assert result.returncode == 2
    assert_one_line_error(result, *RESUME_CASES[case][1])
    assert snapshot(path) == before


def test_logdir_is_a_file(cli_runs):
    path, before, result = cli_runs["logdir-file"]
    assert_one_line_error(result, str(path / "not_a_dir"), "not a directory")
    assert snapshot(path) == before
    assert (path / "not_a_dir").read_text() == "precious\n"


def test_a_camera_the_task_lacks_creates_nothing(cli_runs):
    path, _, result = cli_runs["bad-camera"]
    assert_one_line_error(result, "camera=99", "invalid")
    assert not path.parent.exists()  # the directories made for the run are gone again


# The other runs of `cli_runs`, each with what its one error line must say.
SPECIAL_CASES = {
    "not-a-run": ["holds no training run", "--force"],  # a folder that is not a run
    "not-utf8": ["latin.yaml", "not UTF-8"],  # a preset in another encoding
    "bad-yaml": ["broken.yaml", "cannot read config file"],
    "logdir-unwritable": ["/proc/dreamer_run", "choose another --logdir"],
}


@pytest.mark.parametrize("case", list(SPECIAL_CASES))
def test_bad_files_and_folders_are_one_line_and_change_nothing(cli_runs, case):
    path, before, result = cli_runs[case]
    assert_one_line_error(result, *SPECIAL_CASES[case])
    assert snapshot(path) == before


def test_a_finished_run_is_left_as_it_is(cli_runs):
    path, before, result = cli_runs["finished"]
    assert result.returncode == 0, result.stderr
    assert "nothing to do" in result.stderr and "Traceback" not in result.stderr
    assert snapshot(path) == before  # config.yaml not rewritten, no new event file


def test_debug_shows_traceback(cli_runs):
    path, before, result = cli_runs["debug"]
    assert result.returncode != 0
    assert "Traceback" in result.stderr
    assert "ConfigError" in result.stderr
    assert "model.detr" in result.stderr
    assert snapshot(path) == before


# ----------------------------------------------------------------------------- in-process

def test_parse_args_mixes_flags_presets_and_overrides():
    from dreamer.train import parse_args

    config, args = parse_args(["--model.deter", "64", "--configs", "debug", "--run.batch_size", "3",
                               "--env=gym:CartPole-v1", "--seed", "2", "--steps", "100"])
    assert config.model.deter == 64  # override wins over the preset wherever it appears
    assert config.model.stoch == 8  # from the debug preset
    assert config.run.batch_size == 3
    assert (config.env.name, config.seed, config.steps, args.debug) == ("gym:CartPole-v1", 2, 100, False)
    config, args = parse_args(["--debug", "--model.kl_dyn_scale", "0.8", "--agent", "dreamer"])
    assert args.debug is True and config.model.kl_dyn_scale == 0.8 and config.agent == "dreamer"


@pytest.mark.parametrize("args, message", [
    (["--seed"], "argument --seed: expected one argument"),
    (["--configs"], "argument --configs: expected at least one argument"),
    (["--s", "1"], "ambiguous option: --s could match --seed, --steps"),
    (["--model.deter"], "option '--model.deter' needs a value"),
    (["junk"], "unexpected argument 'junk'; options look like --section.key VALUE"),
])
def test_argument_errors_are_config_errors(args, message):
    from dreamer.train import parse_args

    with pytest.raises(ConfigError) as info:
        parse_args(args)
    assert str(info.value) == message


def test_main_prints_one_line(capsys, logdir):
    from dreamer.train import main

    before = snapshot(logdir)
    assert main(["--seed", "--logdir", str(logdir)]) == 2
    err = capsys.readouterr().err
    assert err == "error: argument --seed: expected one argument\n"
    assert main(["--steps", "-5", "--logdir", str(logdir)]) == 2
    assert capsys.readouterr().err == "error: config key 'steps' must be positive, got -5\n"
    assert snapshot(logdir) == before


def test_unknown_env_creates_no_logdir(capsys, tmp_path):
    from dreamer.train import main

    new = tmp_path / "a" / "b" / "run"
    assert main(["--configs", "debug", "--env", "dmc_walker_wlak", "--logdir", str(new)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "dmc_walker_walk" in err
    assert not (tmp_path / "a").exists()  # the directories made for it are gone again


def test_help_lists_agents_presets_and_keys(capsys):
    from dreamer.presets import preset_files
    from dreamer.registry import agent_specs
    from dreamer.train import main

    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for name, spec in agent_specs().items():
        assert f"  {name} " in out and spec.description in out
    for name in preset_files():
        assert f"  {name} " in out
    assert "Sized for a 2-core CPU" in out  # a preset's one-line description
    assert "--section.key VALUE" in out and "--print-config" in out


def test_print_config_resolves_everything_and_writes_nothing(capsys, tmp_path):
    import yaml

    from dreamer.train import main

    logdir = tmp_path / "run"
    assert main(["--agent", "planet", "--configs", "cpu", "--env", "dmc_cartpole_swingup",
                 "--planet.top_k", "20", "--print-config", "--logdir", str(logdir)]) == 0
    config = yaml.safe_load(capsys.readouterr().out)
    assert config["agent"] == "planet" and config["model"]["lr"] == 1e-3  # the agent's preset
    assert config["planet"]["candidates"] == 250  # the cpu preset
    assert config["env"]["action_repeat"] == 8  # a per_env block
    assert config["planet"]["top_k"] == 20  # a flag
    assert not logdir.exists()


def test_evaluate_help_is_complete(capsys):
    from dreamer.evaluate import main

    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for flag in ("--logdir", "--episodes", "--video", "--seed", "--debug", "return MEAN"):
        assert flag in out
