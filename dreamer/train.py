"""Training entry point: `python -m dreamer.train --env dmc_walker_walk [--agent NAME] ...`.

Prefill the replay with random actions, then alternate collection with the agent's policy and
gradient updates (`train.train_steps` every `train.train_every` environment steps, or a
`train.train_ratio`), evaluating the mode policy every `train.eval_every` steps. Every step
count here is in environment steps, action repeat included.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from collections import defaultdict
from pathlib import Path

import jax
import numpy as np

from dreamer.collect import AgentActor, Collector, make_vector_env, run_episodes
from dreamer.config import Config, build_config, parse_overrides, save_config
from dreamer.core.agent import random_actions
from dreamer.errors import ConfigError, TrainingError, UserError
from dreamer.logger import Logger, Progress
from dreamer.parallel import DataParallel
from dreamer.registry import agent_class
from dreamer.replay import Replay


class _ArgumentParser(argparse.ArgumentParser):
    def error(self, message: str):  # one-line ConfigError instead of usage + exit
        raise ConfigError(message)


def parse_args(argv: list[str]) -> tuple[Config, bool]:
    """Command line -> (resolved config, debug flag). Raises ConfigError on bad input."""
    parser = _ArgumentParser(
        prog="python -m dreamer.train", add_help=True,
        description="Train a world-model agent. Any config key can be set as --section.key VALUE.")
    parser.add_argument("--env", help="dmc_<domain>_<task> or gym:<id>")
    parser.add_argument("--agent", help="dreamer (default), ...")
    parser.add_argument("--configs", nargs="+", default=[], help="presets from configs/, applied in order")
    parser.add_argument("--logdir")
    parser.add_argument("--seed")
    parser.add_argument("--steps", help="total environment steps (action repeat included)")
    parser.add_argument("--devices", help="data-parallel training over this many local devices")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    args, rest = parser.parse_known_args(argv)
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
    return config, args.debug


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


class Trainer:
    """Owns the envs, replay, agent state and logger of one run."""

    def __init__(self, config: Config, logdir: Path):
        self.config, self.logdir = config, logdir
        host_seed = config.seed + 100_000 * jax.process_index()  # hosts collect different data
        self.envs = make_vector_env(config, host_seed)
        self.eval_envs = make_vector_env(config, config.seed + 10_000, num_envs=1, parallel=False)
        self.agent = agent_class(config.agent)(config, self.envs.action_size, self.envs.discrete)
        self.state = self.agent.init(jax.random.PRNGKey(config.seed))  # replicated over devices
        self.replay = Replay(logdir / "replay", capacity=config.train.replay_capacity,
                             seq_len=config.train.seq_len, seed=config.seed)
        self.replay.load()
        self.logger = Logger(logdir)
        self.collector = Collector(self.envs, config.env.action_repeat)
        self.actor = AgentActor(self.agent, self.envs.num_envs, config.seed + 1, "train")
        self.rng = np.random.default_rng(config.seed)
        self.step = 0  # environment steps
        self.train_start: int | None = None  # environment step at which training began
        self.updates_done = 0
        self.nonfinite_streak = 0  # consecutive updates skipped for a non-finite loss
        self.last_eval_step = -1
        self.metrics: dict[str, list[float]] = defaultdict(list)

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
        owed = cfg.train_steps + cfg.updates_after(self.step - self.train_start) - self.updates_done
        start = time.time()
        for _ in range(owed):
            batch = self.agent.parallel.shard_batch(self.replay.sample(cfg.batch_size))
            self.state, metrics = self.agent.train(self.state, batch)
            for key, value in metrics.items():
                self.metrics[key].append(value)
        self.updates_done += owed
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
                             "perf/env_steps_per_second": fps})
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
        cfg = self.config.train
        progress = Progress(self.config.steps)
        last_log, last_time, last_return = 0, time.time(), None
        try:
            while self.step < self.config.steps:
                episodes, env_steps = self.collector.step(self.act)
                self.step += env_steps
                self.state = self.agent.on_env_steps(self.state, self.step)
                for episode in episodes:
                    self.replay.add_episode(episode)
                    last_return = float(episode["reward"].sum())
                    self.logger.scalars({"train/return": last_return,
                                         "train/length": (len(episode["reward"]) - 1) * self.config.env.action_repeat})
                    self.logger.write(self.step)
                self.train(env_steps)
                if _crossed(self.step, env_steps, cfg.eval_every):
                    self.evaluate()
                if cfg.video_every and _crossed(self.step, env_steps, cfg.video_every):
                    self.report()
                if _crossed(self.step, env_steps, cfg.log_every):
                    now = time.time()
                    self.log((self.step - last_log) / max(now - last_time, 1e-9))
                    last_log, last_time = self.step, now
                progress.update(self.step, last_return)
            if self.last_eval_step != self.step:  # a final evaluation unless one just ran
                self.evaluate()
        finally:
            progress.close()
            self.close()

    def close(self) -> None:
        self.logger.close()
        self.envs.close()
        self.eval_envs.close()


def _crossed(step: int, delta: int, every: int) -> bool:
    """Whether the step counter passed a multiple of `every` in its last increment."""
    return delta > 0 and step // every > (step - delta) // every


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    debug = "--debug" in argv
    try:
        config, debug = parse_args(argv)
        agent_class(config.agent)  # an unknown agent or device count fails before anything else
        DataParallel(config.devices, config.train.batch_size)
        new_dirs = [p for p in (config.run_dir, *config.run_dir.parents) if not p.exists()]
        logdir = prepare_logdir(config)
        try:  # envs and agent are built before anything is written into the logdir
            trainer = Trainer(config, logdir)
        except BaseException:
            for path in new_dirs:  # deepest first: remove the (still empty) dirs made above
                with contextlib.suppress(OSError):
                    path.rmdir()
            raise
        save_config(config, logdir / "config.yaml")
        print(f"logdir: {logdir}", file=sys.stderr)
        trainer.run()
    except UserError as err:
        if debug:
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
