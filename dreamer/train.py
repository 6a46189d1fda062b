"""Training entry point: `python -m dreamer.train --env dmc_walker_walk [--agent NAME] ...`.

Prefill the replay with random actions, then alternate collection with the agent's policy and
gradient updates (`run.train_steps` every `run.train_every` environment steps, or a
`run.train_ratio`), evaluating the mode policy every `run.eval_every` steps. Every step
count here is in environment steps, action repeat included. The loop is `dreamer.trainer`;
this module is the command line: flags, the logdir checks, one-line errors and exit statuses.
Rerunning the same command on the same logdir continues from its newest checkpoint.
"""

from __future__ import annotations

if __name__ == "__main__":  # before JAX starts: glibc reads allocator tunables at exec
    from dreamer.runtime import reexec_with_huge_pages

    reexec_with_huge_pages()

import argparse
import contextlib
import os
import sys
from pathlib import Path

import yaml

from dreamer.checkpoint import CHECKPOINT_DIR
from dreamer.cli import ArgumentParser, run_command
from dreamer.config import Config, build_config, parse_overrides
from dreamer.saved_config import save_config
from dreamer.errors import ConfigError, UserError
from dreamer.logger import METRICS_FILE
from dreamer.overlapped import make_trainer
from dreamer.device import DataParallel, join_hosts
from dreamer.presets import preset_description, preset_files
from dreamer.registry import agent_class, agent_specs
from dreamer.runlock import LOCK_FILE, RunLock
from dreamer.stopping import Interrupted, StopRequests
from dreamer.trainer import RunFinished


def help_epilog() -> str:
    """The registered agents and the presets, each with its one-line description."""
    specs, files = agent_specs(), preset_files()
    width = max(map(len, [*specs, *files]))
    agents = [f"  {name:<{width}} {spec.description}" for name, spec in specs.items()]
    presets = [f"  {name:<{width}} {preset_description(file)}" for name, file in files.items()]
    return "\n".join([
        "agents (--agent NAME):", *agents, "",
        "presets (--configs NAME ...; a path to a YAML file works too):", *presets, "",
        "observations (--env.obs): image (default; uint8 64x64 pixels), vector (the env's own",
        "observations as float32 vectors: DMC's proprioceptive entries by name, a gymnasium Box as",
        "'vector', a Dict by key; nothing is rendered) or both. E.g. --configs dreamerv3",
        "dreamerv3_proprio --env dmc_walker_walk trains DreamerV3 from DMC's proprioceptive state.", "",
        "Any config key is set as --section.key VALUE, e.g. --model.deter 64 --run.batch_size 16",
        "--env.action_repeat 4; --print-config lists every key with its resolved value.",
        "Rerunning a command on the same --logdir resumes from its newest checkpoint.",
        "Bad input prints one line 'error: ...' and exits with status 2."])


def parse_args(argv: list[str]) -> tuple[Config, argparse.Namespace]:
    """Command line -> (resolved config, flags). Raises ConfigError on bad input."""
    parser = ArgumentParser(
        prog="python -m dreamer.train", add_help=False,
        description="Train a world-model agent from pixels or vectors. Config resolution: the code defaults, the "
                    "agent's preset,\nthe --configs presets in order, their per-environment blocks, "
                    "then --section.key flags.")
    parser.add_argument("-h", "--help", action="store_true", help="show this help and exit")
    parser.add_argument("--env", help="dmc_<domain>_<task> (any dm_control suite task) or gym:<id>")
    parser.add_argument("--agent", help="the agent to train (default: dreamer; see below)")
    parser.add_argument("--configs", nargs="+", default=[], help="presets applied in order (see below)")
    parser.add_argument("--logdir", help="where the run writes (default: logdir/<env>/<agent>/<seed>)")
    parser.add_argument("--seed", help="the run's seed (default: 0)")
    parser.add_argument("--steps", help="total environment steps, action repeat included")
    parser.add_argument("--devices", help="data-parallel training over this many devices")
    parser.add_argument("--force", action="store_true",
                        help="use a --logdir that is not empty although it holds no training run")
    parser.add_argument("--print-config", action="store_true",
                        help="print the resolved config as YAML and exit; nothing is written")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    args, rest = parser.parse_known_args(argv)
    if args.help:
        parser.epilog = help_epilog()
        parser.print_help()
        raise SystemExit(0)
    overrides = parse_overrides(rest)
    for key in ("env", "logdir", "seed", "steps", "devices"):
        value, dotted = getattr(args, key), "env.name" if key == "env" else key
        if value is None:
            continue
        if dotted != key and dotted in overrides and str(overrides[dotted]) != value:
            raise ConfigError(f"conflicting flags: --{key} {value} and --{dotted} {overrides[dotted]} "
                              f"both set '{dotted}'; give only one")
        overrides[dotted] = value
    config = build_config(args.configs, overrides, agent=args.agent)
    return config, args


# What a run writes into its logdir: a folder with none of them is not a run.
RUN_ENTRIES = ("config.yaml", CHECKPOINT_DIR, "replay", METRICS_FILE, LOCK_FILE)


def prepare_logdir(config: Config, force: bool = False) -> Path:
    logdir = config.run_dir
    if logdir.exists() and not logdir.is_dir():
        raise UserError(f"logdir '{logdir}' exists and is not a directory; choose another --logdir")
    if (not force and logdir.is_dir() and any(logdir.iterdir())
            and not any((logdir / name).exists() for name in RUN_ENTRIES)):
        raise UserError(f"logdir '{logdir}' is not empty and holds no training run (no "
                        f"{', '.join(RUN_ENTRIES)}): files of the same names would be overwritten; "
                        "choose a new or empty --logdir, or pass --force to use it anyway")
    try:
        logdir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"cannot create logdir '{logdir}': {err.strerror}; choose another --logdir") from None
    if not os.access(logdir, os.W_OK):
        raise UserError(f"logdir '{logdir}' is not writable; choose another --logdir")
    return logdir


def parameter_summary(counts: dict[str, int]) -> str:
    """'parameters: 12.34M (world_model 10.1M: encoder 0.39M, ...; actor 0.73M, ...)'."""
    millions = lambda n: f"{n / 1e6:.2f}M"  # noqa: E731
    model = {k.split("/", 1)[1]: n for k, n in counts.items() if k.startswith("world_model/")}
    others = {k: n for k, n in counts.items() if not k.startswith("world_model/")}
    parts = [f"world_model {millions(sum(model.values()))}: "
             + ", ".join(f"{k} {millions(n)}" for k, n in model.items())]
    parts += [f"{k} {millions(n)}" for k, n in others.items()]
    return f"parameters: {millions(sum(counts.values()))} ({'; '.join(parts)})"


def train(argv: list[str], stop: StopRequests) -> int:
    config, args = parse_args(argv)
    if args.print_config:
        print(yaml.safe_dump(config.to_dict(), sort_keys=False), end="")
        return 0
    join_hosts()  # a multi-host run: before any device is used
    agent_class(config.agent)  # an unknown agent or device count fails before anything else
    DataParallel(config.devices, config.run.batch_size)
    new_dirs = [p for p in (config.run_dir, *config.run_dir.parents) if not p.exists()]
    logdir = prepare_logdir(config, args.force)
    try:  # one process per logdir, before anything in it is read or written
        lock = RunLock(logdir)
    except UserError:
        remove_new_dirs(new_dirs)
        raise
    try:
        return run_locked(config, logdir, stop, new_dirs, lock)
    finally:
        lock.release()


def run_locked(config: Config, logdir: Path, stop: StopRequests, new_dirs: list[Path], lock: RunLock) -> int:
    """The run, once this process holds the logdir's lock."""
    try:  # envs, agent and the resume checks run before anything is written into the logdir
        trainer = make_trainer(config, logdir, stop)
    except BaseException as error:  # nothing is written, and a lock file made here goes again
        lock.release(undo=True)
        remove_new_dirs(new_dirs)
        if isinstance(error, RunFinished):
            print(error, file=sys.stderr)
            return 0
        raise
    save_config(config, logdir / "config.yaml")
    print(f"logdir: {logdir}", file=sys.stderr)
    print(parameter_summary(trainer.agent.agent.parameter_counts()), file=sys.stderr)
    try:
        trainer.run()
    except Interrupted as stopped:
        print(stopped, file=sys.stderr)
        return stopped.exit_code
    return 0


def remove_new_dirs(new_dirs: list[Path]) -> None:
    """Remove the (still empty) directories this command made, deepest first."""
    for path in new_dirs:
        with contextlib.suppress(OSError):
            path.rmdir()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    with StopRequests() as stop:  # a signal during start-up ends the run before its first step
        return run_command(lambda: train(argv, stop), argv)


if __name__ == "__main__":
    sys.exit(main())
