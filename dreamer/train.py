"""Training entry point: `python -m dreamer.train --env dmc_walker_walk [--agent NAME] ...`.

Prefill the replay with random actions, then alternate collection with the agent's policy and
gradient updates (`train.train_steps` every `train.train_every` environment steps, or a
`train.train_ratio`), evaluating the mode policy every `train.eval_every` steps. Every step
count here is in environment steps, action repeat included.

Checkpoints (`dreamer/checkpoint.py`) are written every `train.checkpoint_minutes` and every
`train.checkpoint_every` steps, at the end, and on SIGINT / SIGTERM (after the current step;
the exit status is then 128 + the signal number). Rerunning the same command on the same
logdir continues from the newest checkpoint: the counters, RNG states and evaluation schedule
are restored, the replay reloads from disk, and `metrics.jsonl` is cut back to its length at
the checkpoint, so no step is logged twice.
"""

from __future__ import annotations

if __name__ == "__main__":  # before JAX starts: glibc reads allocator tunables at exec
    from dreamer.runtime import reexec_with_huge_pages

    reexec_with_huge_pages()

import argparse
import contextlib
import os
import signal
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import yaml

from dreamer import checkpoint
from dreamer.collect import AgentActor, Collector, make_vector_env, random_actions, run_episodes
from dreamer.cli import ArgumentParser, run_command
from dreamer.config import Config, build_config, parse_overrides, preset_description, preset_files, save_config
from dreamer.errors import ConfigError, TrainingError, UserError
from dreamer.logger import METRICS_FILE, Logger, Progress, truncate_metrics
from dreamer.parallel import DataParallel
from dreamer.registry import agent_class, agent_specs
from dreamer.replay import Replay


def help_epilog() -> str:
    """The registered agents and the presets, each with its one-line description."""
    agents = [f"  {name:<14} {spec.description}" for name, spec in agent_specs().items()]
    presets = [f"  {name:<14} {preset_description(file)}" for name, file in preset_files().items()]
    return "\n".join([
        "agents (--agent NAME):", *agents, "",
        "presets (--configs NAME ...; a path to a YAML file works too):", *presets, "",
        "Any config key is set as --section.key VALUE, e.g. --model.deter 64 --train.batch_size 16",
        "--env.action_repeat 4; --print-config lists every key with its resolved value.",
        "Rerunning a command on the same --logdir resumes from its newest checkpoint.",
        "Bad input prints one line 'error: ...' and exits with status 2."])


def parse_args(argv: list[str]) -> tuple[Config, argparse.Namespace]:
    """Command line -> (resolved config, flags). Raises ConfigError on bad input."""
    parser = ArgumentParser(
        prog="python -m dreamer.train", add_help=False,
        description="Train a world-model agent from pixels. Config resolution: the code defaults, the "
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


def prepare_logdir(config: Config) -> Path:
    logdir = config.run_dir
    if logdir.exists() and not logdir.is_dir():
        raise UserError(f"logdir '{logdir}' exists and is not a directory; choose another --logdir")
    try:
        logdir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"cannot create logdir '{logdir}': {err.strerror}; choose another --logdir") from None
    if not os.access(logdir, os.W_OK):
        raise UserError(f"logdir '{logdir}' is not writable; choose another --logdir")
    return logdir


class StopRequests:
    """SIGINT and SIGTERM ask the run to stop: the training loop finishes its current step,
    saves a checkpoint and ends. A second signal stops at once (KeyboardInterrupt), keeping
    the newest complete checkpoint."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.signum: int | None = None
        self._previous: dict = {}

    def _request(self, signum: int, frame) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum

    def __enter__(self) -> StopRequests:
        if threading.current_thread() is threading.main_thread():  # only it may set handlers
            self._previous = {s: signal.signal(s, self._request) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc_info) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}


class Interrupted(Exception):
    """The run stopped on a signal, after saving a checkpoint (or with nothing new to save)."""

    def __init__(self, signum: int, step: int, path: Path | None):
        name = signal.Signals(signum).name
        saved = f"latest checkpoint '{path}'" if path else "no checkpoint yet"
        super().__init__(f"interrupted by {name} at env step {step}; {saved}; rerun the same "
                         "command to resume")
        self.exit_code = 128 + signum


class Trainer:
    """Owns the envs, replay, agent state and logger of one run."""

    def __init__(self, config: Config, logdir: Path, stop: StopRequests | None = None):
        self.config, self.logdir = config, logdir
        self.stop = stop or StopRequests()
        host_seed = config.seed + 100_000 * jax.process_index()  # hosts collect different data
        self.envs = make_vector_env(config, host_seed)
        try:
            self.eval_envs = make_vector_env(config, config.seed + 10_000, num_envs=1, parallel=False)
        except BaseException:
            self.envs.close()
            raise
        try:
            self.agent = agent_class(config.agent)(config, self.envs.action_size, self.envs.discrete)
            # Everything that can reject the logdir runs before anything in it is written.
            resume = checkpoint.prepare_resume(config, logdir)
            self.state = self.initial_state(resume.checkpoint)  # replicated over devices
        except BaseException:
            self.envs.close()
            self.eval_envs.close()
            raise
        self.replay = Replay(logdir / "replay", capacity=config.train.replay_capacity,
                             seq_len=config.train.seq_len, seed=config.seed)
        self.replay.load()
        self.collector = Collector(self.envs, config.env.action_repeat)
        self.actor = AgentActor(self.agent, self.envs.num_envs, config.seed + 1, "train")
        self.rng = np.random.default_rng(config.seed)
        self.step = 0  # environment steps
        self.episodes = 0  # training episodes completed
        self.train_start: int | None = None  # environment step at which training began
        self.scheduled_updates = 0  # updates run, applied or skipped as non-finite
        self.nonfinite_streak = 0  # consecutive updates skipped for a non-finite loss
        self.last_eval_step = -1
        self.metrics: dict[str, list] = defaultdict(list)  # since the last log
        self.last_return: float | None = None  # of the latest training episode, for the progress bar
        self.fps_mark = (0, time.time())  # (step, time) of the last log line
        self.last_checkpoint = resume.checkpoint.path if resume.checkpoint else None
        self.logger = self.open_logger(resume)
        self.last_save_time = time.time()
        self.unsaved = False  # steps taken since the last checkpoint

    # ------------------------------------------------------------------ checkpoints

    def initial_state(self, ckpt: checkpoint.Checkpoint | None):
        if ckpt is None:
            return self.agent.init(jax.random.PRNGKey(self.config.seed))
        state = checkpoint.restore_state(self.agent.state_template(), ckpt)
        return self.agent.parallel.replicate(jax.device_put(state))

    def open_logger(self, resume: checkpoint.Resume) -> Logger:
        """Restore the host-side counters from the checkpoint (if any), cut metrics.jsonl back
        to what was logged up to it, and open the logger after it."""
        ckpt, metrics = resume.checkpoint, self.logdir / METRICS_FILE
        for path, reason in resume.skipped:
            print(f"warning: skipping corrupted checkpoint '{path}' ({reason})", file=sys.stderr)
        checkpoint.set_aside(resume.skipped)
        if ckpt is None:
            if metrics.exists() and metrics.stat().st_size:
                print(f"warning: no checkpoint in '{self.logdir}': starting at step 0 (the replay's "
                      f"{self.replay.num_episodes} episodes are kept, metrics.jsonl restarts)", file=sys.stderr)
            truncate_metrics(metrics, 0)
            return Logger(self.logdir, purge_step=0 if metrics.exists() else None)
        self.load_host_state(ckpt.host)
        truncate_metrics(metrics, int(ckpt.host["metrics_bytes"]))
        print(f"resuming from '{ckpt.path}' at env step {self.step}", file=sys.stderr)
        return Logger(self.logdir, purge_step=self.step + 1)

    def host_state(self) -> dict:
        """Everything besides the train state that the run needs to continue (JSON)."""
        pending = {key: [np.asarray(values).dtype.name, np.asarray(values).tolist()]
                   for key, values in jax.device_get(dict(self.metrics)).items()}
        return {
            "step": self.step, "episodes": self.episodes, "scheduled_updates": self.scheduled_updates,
            "train_start": self.train_start, "last_eval_step": self.last_eval_step,
            "nonfinite_streak": self.nonfinite_streak,
            "rng": self.rng.bit_generator.state,  # prefill's random actions
            "actor_key": np.asarray(self.actor.key).tolist(),  # collection noise
            "replay": {**self.replay.state_dict(), "steps": self.replay.num_steps,
                       "episodes": self.replay.num_episodes},
                        "agent_spec": {"name": self.config.agent, "action_size": int(self.envs.action_size),
                           "discrete": bool(self.envs.discrete)},
            "pending_metrics": pending,  # updates since the last log line
            "metrics_bytes": self.logger.metrics_size(),
        }

    def load_host_state(self, host: dict) -> None:
        self.step, self.episodes = host["step"], host["episodes"]
        self.scheduled_updates = host["scheduled_updates"]
        self.train_start, self.last_eval_step = host["train_start"], host["last_eval_step"]
        self.nonfinite_streak = host["nonfinite_streak"]
        self.rng.bit_generator.state = host["rng"]
        self.actor.key = jnp.asarray(host["actor_key"], jnp.uint32)
        self.replay.load_state_dict(host["replay"])
        for key, (dtype, values) in host["pending_metrics"].items():
            self.metrics[key] = [np.asarray(value, dtype) for value in values]

    def save(self) -> Path:
        path = checkpoint.save(self.logdir / checkpoint.CHECKPOINT_DIR, self.state, self.host_state(),
                               self.config.train.checkpoint_keep)
        self.last_save_time, self.unsaved, self.last_checkpoint = time.time(), False, path
        return path

    def checkpoint_due(self, env_steps: int) -> bool:
        cfg = self.config.train
        by_steps = cfg.checkpoint_every > 0 and _crossed(self.step, env_steps, cfg.checkpoint_every)
        by_time = cfg.checkpoint_minutes > 0 and time.time() - self.last_save_time >= 60 * cfg.checkpoint_minutes
        return by_steps or by_time

    # ------------------------------------------------------------------ phases

    def prefilling(self) -> bool:
        stored = self.replay.num_steps * self.config.env.action_repeat
        return stored < self.config.train.prefill or self.replay.num_steps < self.config.train.seq_len

    def act(self, obs: dict) -> np.ndarray:
        if self.prefilling():
            return random_actions(self.rng, self.envs.num_envs, self.envs.action_size, self.envs.discrete)
        return self.actor(self.state, obs)

    def train(self, env_steps: int) -> None:
        """Run the updates the schedule owes: a first burst of `train_steps` when prefill ends
        (as Dreamer's pretraining), then `train_steps` per `train_every` steps (or the ratio)."""
        if self.prefilling():
            return
        cfg = self.config.train
        if self.train_start is None:  # the first step after prefill
            self.train_start = self.step - env_steps
        elif cfg.train_ratio == 0 and not _crossed(self.step, env_steps, cfg.train_every):
            return  # the paper's schedule: a burst of updates every `train_every` steps
        owed = cfg.train_steps + cfg.updates_after(self.step - self.train_start) - self.scheduled_updates
        start = time.time()
        for _ in range(owed):
            batch = self.agent.parallel.shard_batch(self.replay.sample(cfg.batch_size))
            self.state, metrics = self.agent.train(self.state, batch)
            for key, value in metrics.items():
                self.metrics[key].append(value)
        self.scheduled_updates += owed
        if owed:
            jax.block_until_ready(self.state)  # dispatch is asynchronous: time the compute
            self.metrics["perf/train_seconds"].append(time.time() - start)
            self.check_finite(self.metrics["train/nonfinite"][-owed:])

    def check_finite(self, flags: list) -> None:
        """Count consecutive updates skipped for a non-finite loss or gradient (the update
        itself left the parameters unchanged); stop the run after `train.max_nonfinite`."""
        flags = [bool(flag) for flag in jax.device_get(flags)]
        if not any(flags):
            self.nonfinite_streak = 0
            return
        longest = 0
        for flag in flags:
            self.nonfinite_streak = self.nonfinite_streak + 1 if flag else 0
            longest = max(longest, self.nonfinite_streak)
        print(f"warning: {sum(flags)} update(s) skipped for a non-finite loss or gradient at env step "
              f"{self.step}", file=sys.stderr)
        self.logger.scalar("train/skipped_updates", sum(flags))
        self.logger.write(self.step)
        if longest >= self.config.train.max_nonfinite:
            raise TrainingError(
                f"{longest} consecutive updates had a non-finite loss or gradient (at env step "
                f"{self.step}); none was applied. Check the rewards and observations, lower "
                f"model.lr, or raise train.max_nonfinite")

    def evaluate(self) -> None:
        self.last_eval_step = self.step
        episodes = self.config.train.eval_episodes
        if episodes == 0:
            return
        actor = AgentActor(self.agent, 1, self.config.seed + self.step, "eval")
        done = run_episodes(self.eval_envs, lambda obs: actor(self.state, obs),
                            self.config.env.action_repeat, episodes)
        returns = [float(ep["reward"].sum()) for ep in done]
        self.logger.scalar("eval/return", float(np.mean(returns)))
        self.logger.scalar("eval/return_std", float(np.std(returns)))
        self.logger.scalar("eval/length", float(len(done[0]["reward"]) - 1) * self.config.env.action_repeat)
        self.logger.video("eval/policy", done[0]["image"])
        self.logger.write(self.step)

    def log(self, fps: float) -> None:
        values = jax.device_get(dict(self.metrics))
        self.logger.scalars({key: float(np.mean(v)) for key, v in values.items()})
        self.metrics.clear()
        self.logger.scalars({"replay/steps": self.replay.num_steps, "replay/episodes": self.replay.num_episodes,
                             "train/episodes": self.episodes, "perf/env_steps_per_second": fps})
        self.logger.write(self.step)

    def report(self) -> None:
        if self.prefilling():
            return
        batch = self.replay.sample(min(6, self.config.train.batch_size))
        for name, video in jax.device_get(self.agent.report(self.state, batch)).items():
            self.logger.video(f"train/{name}", video)
        self.logger.write(self.step)

    # ------------------------------------------------------------------ loop

    def run(self) -> None:
        if self.step >= self.config.steps:
            print(f"the run in '{self.logdir}' is at env step {self.step}, --steps is {self.config.steps}: "
                  "nothing to do (raise --steps to train on)", file=sys.stderr)
        progress = Progress(self.config.steps, initial=min(self.step, self.config.steps))
        self.fps_mark = (self.step, time.time())
        try:
            while self.step < self.config.steps and self.stop.signum is None:
                env_steps = self.iteration()
                self.unsaved = True
                if self.step >= self.config.steps and self.last_eval_step != self.step:
                    self.evaluate()  # the final evaluation (unless one just ran), before saving
                if self.checkpoint_due(env_steps) or self.step >= self.config.steps:
                    self.save()
                progress.update(self.step, self.last_return)
            if self.unsaved:  # stopped by a signal between two checkpoints
                self.save()
            if self.stop.signum is not None and self.step < self.config.steps:
                raise Interrupted(self.stop.signum, self.step, self.last_checkpoint)
        finally:
            progress.close()
            self.close()

    def iteration(self) -> int:
        """One collection step in every env, then what the schedule owes at the new step
        count: updates, evaluation, videos, a log line. Returns the environment steps taken."""
        cfg = self.config.train
        episodes, env_steps = self.collector.step(self.act)
        self.step += env_steps
        self.state = self.agent.on_env_steps(self.state, self.step)
        for episode in episodes:
            self.replay.add_episode(episode)
            self.episodes += 1
            self.last_return = float(episode["reward"].sum())
            self.logger.scalars({"train/return": self.last_return,
                                 "train/length": (len(episode["reward"]) - 1) * self.config.env.action_repeat})
            self.logger.write(self.step)
        self.train(env_steps)
        if _crossed(self.step, env_steps, cfg.eval_every):
            self.evaluate()
        if cfg.video_every and _crossed(self.step, env_steps, cfg.video_every):
            self.report()
        if _crossed(self.step, env_steps, cfg.log_every):
            (last_step, last_time), now = self.fps_mark, time.time()
            self.log((self.step - last_step) / max(now - last_time, 1e-9))
            self.fps_mark = (self.step, now)
        return env_steps

    def close(self) -> None:
        self.logger.close()
        self.envs.close()
        self.eval_envs.close()


def _crossed(step: int, delta: int, every: int) -> bool:
    """Whether the step counter passed a multiple of `every` in its last increment."""
    return delta > 0 and step // every > (step - delta) // every


def train(argv: list[str], stop: StopRequests) -> int:
    config, args = parse_args(argv)
    if args.print_config:
        print(yaml.safe_dump(config.to_dict(), sort_keys=False), end="")
        return 0
    agent_class(config.agent)  # an unknown agent or device count fails before anything else
    DataParallel(config.devices, config.train.batch_size)
    new_dirs = [p for p in (config.run_dir, *config.run_dir.parents) if not p.exists()]
    logdir = prepare_logdir(config)
    try:  # envs, agent and the resume checks run before anything is written into the logdir
        trainer = Trainer(config, logdir, stop)
    except BaseException:
        for path in new_dirs:  # deepest first: remove the (still empty) dirs made above
            with contextlib.suppress(OSError):
                path.rmdir()
        raise
    save_config(config, logdir / "config.yaml")
    print(f"logdir: {logdir}", file=sys.stderr)
    try:
        trainer.run()
    except Interrupted as stopped:
        print(stopped, file=sys.stderr)
        return stopped.exit_code
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    with StopRequests() as stop:  # a signal during start-up ends the run before its first step
        return run_command(lambda: train(argv, stop), argv)


if __name__ == "__main__":
    sys.exit(main())
