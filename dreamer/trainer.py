"""The training loop of one run: `Trainer` owns its environments, replay, agent state, logger
and checkpoints, and runs collection, updates, evaluation and logs on the schedule of
`dreamer.schedule.Schedule`. `python -m dreamer.train` (the command line) builds and runs it.

Checkpoints (`dreamer/checkpoint.py`) are written every `train.checkpoint_minutes` and every
`train.checkpoint_every` steps, at the end, and on SIGINT / SIGTERM (after the current step;
the exit status is then 128 + the signal number). A Trainer on a logdir with a checkpoint
continues from it: the counters, RNG states and evaluation schedule are restored, the replay
reloads from disk, and `metrics.jsonl` is cut back to its length at the checkpoint, so no step
is logged twice.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from dreamer import checkpoint
from dreamer.collect import AgentActor, Collector, episode_signature, make_vector_env, random_actions, run_episodes
from dreamer.config import Config
from dreamer.envs import VectorEnv
from dreamer.envs.base import IMAGE_KEY, space_key
from dreamer.errors import CheckpointError, ConfigError, TrainingError, UserError
from dreamer.logger import METRICS_FILE, Logger, Progress, truncate_metrics
from dreamer.registry import agent_class
from dreamer.replay import InsufficientDataError, Replay
from dreamer.schedule import Schedule


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


class RunFinished(Exception):
    """The run in the logdir has already reached --steps: nothing to do, nothing written."""

    def __init__(self, logdir: Path, step: int, steps: int):
        super().__init__(f"the run in '{logdir}' is at env step {step}, --steps is {steps}: "
                         "nothing to do (raise --steps to train on)")


class Interrupted(Exception):
    """The run stopped on a signal, after saving a checkpoint (or with nothing new to save)."""

    def __init__(self, signum: int, step: int, path: Path | None):
        name = signal.Signals(signum).name
        saved = f"latest checkpoint '{path}'" if path else "no checkpoint yet"
        super().__init__(f"interrupted by {name} at env step {step}; {saved}; rerun the same "
                         "command to resume")
        self.exit_code = 128 + signum


def check_hosts_agree(config: Config, resume: checkpoint.Resume) -> None:
    """Hosts of a multi-host run update together, so they must checkpoint at the same steps
    (by steps, not wall-clock minutes) and resume from the same step."""
    if jax.process_count() == 1:
        return
    if config.train.checkpoint_minutes > 0:
        raise ConfigError("a multi-host run checkpoints by environment steps only, so that every host "
                          "saves at the same step: set --train.checkpoint_minutes 0 and "
                          "--train.checkpoint_every N")
    from jax.experimental import multihost_utils

    step = resume.checkpoint.step if resume.checkpoint is not None else 0
    steps = np.asarray(multihost_utils.process_allgather(np.asarray(step, np.int64))).ravel().tolist()
    if len(set(steps)) > 1:
        raise UserError(f"the hosts would resume from different steps {steps} (host {jax.process_index()} "
                        f"from {step}); give every host the logdir of the same run, each with its "
                        "checkpoint at the same step")


class UpdateMetrics:
    """The metrics of the updates since the last log line (device arrays, read only when
    logged), and the count of consecutive non-finite updates that stops a run."""

    def __init__(self, max_nonfinite: int):
        self.max_nonfinite = max_nonfinite
        self.pending: dict[str, list] = defaultdict(list)
        self.nonfinite_streak = 0

    def add(self, metrics: dict) -> None:
        for key, value in metrics.items():
            self.pending[key].append(value)

    def count_nonfinite(self, flags: list) -> tuple[int, int]:
        """Count the updates of the last burst that were skipped for a non-finite loss or
        gradient (the update itself left the parameters unchanged). Returns (skipped, longest
        streak of consecutive skips, the previous bursts' included)."""
        flags = [bool(flag) for flag in jax.device_get(flags)]
        longest = 0
        for flag in flags:
            self.nonfinite_streak = self.nonfinite_streak + 1 if flag else 0
            longest = max(longest, self.nonfinite_streak)
        return sum(flags), longest

    def means(self) -> dict[str, float]:
        """The mean of every metric since the last call; clears them."""
        values = jax.device_get(dict(self.pending))
        self.pending.clear()
        return {key: float(np.mean(v)) for key, v in values.items()}

    def state_dict(self) -> dict:
        pending = {key: [np.asarray(values).dtype.name, np.asarray(values).tolist()]
                   for key, values in jax.device_get(dict(self.pending)).items()}
        return {"pending_metrics": pending, "nonfinite_streak": self.nonfinite_streak}

    def load_state_dict(self, state: dict) -> None:
        self.nonfinite_streak = state["nonfinite_streak"]
        for key, (dtype, values) in state["pending_metrics"].items():
            self.pending[key] = [np.asarray(value, dtype) for value in values]


# Called after each collection step with the training envs and the episodes that just
# finished, before they enter the replay (benchmarks record physics states or hide rewards).
CollectHook = Callable[[VectorEnv, list[dict]], None]


class Trainer:
    """One run: collection with the agent's policy into the replay, the updates, evaluation,
    logging and checkpoints, on the schedule of `dreamer.schedule.Schedule`."""

    def __init__(self, config: Config, logdir: Path, stop: StopRequests | None = None,
                 on_collect: CollectHook | None = None):
        self.config, self.logdir = config, logdir
        self.stop = stop or StopRequests()
        self.on_collect = on_collect
        host_seed = config.seed + 100_000 * jax.process_index()  # hosts collect different data
        self.envs = self.make_train_envs(host_seed)
        try:
            self.eval_envs = make_vector_env(config, config.seed + 10_000, num_envs=1, parallel=False)
        except BaseException:
            self.envs.close()
            raise
        try:
            self.agent = agent_class(config.agent)(config, self.envs.action_size, self.envs.discrete,
                                                   self.envs.obs_space)
            # Everything that can reject the logdir runs before anything in it is written.
            resume = checkpoint.prepare_resume(config, logdir)
            check_hosts_agree(config, resume)
            if resume.checkpoint is not None and resume.checkpoint.step >= config.steps:
                raise RunFinished(logdir, resume.checkpoint.step, config.steps)
            self.state = self.initial_state(resume.checkpoint)  # replicated over devices
            self.collector = Collector(self.envs, config.env.action_repeat)  # resets: renders once
        except BaseException:
            self.envs.close()
            self.eval_envs.close()
            raise
        self.replay = Replay(logdir / "replay", capacity=config.train.replay_capacity,
                             seq_len=config.train.seq_len, seed=config.seed,
                             signature=episode_signature(self.envs),
                             cross_episodes=config.train.cross_episodes)
        self.replay.load()
        self.actor = AgentActor(self.agent, self.envs.num_envs, config.seed + 1, "train")
        self.rng = np.random.default_rng(config.seed)  # prefill's random actions
        self.schedule = Schedule(config.train, config.env.action_repeat)
        self.metrics = UpdateMetrics(config.train.max_nonfinite)
        self.last_return: float | None = None  # of the latest training episode, for the progress bar
        self.fps_mark = (0, time.time())  # (step, time) of the last log line
        self.last_checkpoint = resume.checkpoint.path if resume.checkpoint else None
        self.logger = self.open_logger(resume)
        self.last_save_time = time.time()
        self.unsaved = False  # steps taken since the last checkpoint

    @property
    def step(self) -> int:
        """Environment steps collected for training so far."""
        return self.schedule.step

    def make_train_envs(self, seed: int) -> VectorEnv:
        return make_vector_env(self.config, seed)

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
        if ckpt is not None:
            try:  # values the schema cannot judge (RNG states): refused before anything changes
                self.load_host_state(ckpt.host)
            except (KeyError, TypeError, ValueError) as err:
                raise CheckpointError(f"checkpoint '{ckpt.path}' cannot be restored ({type(err).__name__}: "
                                      f"{err}); move it away to resume from an older one") from None
        for path, reason in resume.skipped:
            print(f"warning: skipping corrupted checkpoint '{path}' ({reason})", file=sys.stderr)
        checkpoint.set_aside(resume.skipped)
        if ckpt is None:
            if metrics.exists() and metrics.stat().st_size:
                print(f"warning: no checkpoint in '{self.logdir}': starting at step 0 (the replay's "
                      f"{self.replay.num_episodes} episodes are kept, metrics.jsonl restarts)", file=sys.stderr)
            truncate_metrics(metrics, 0)
            return Logger(self.logdir, purge_step=0 if metrics.exists() else None)
        truncate_metrics(metrics, int(ckpt.host["metrics_bytes"]))
        print(f"resuming from '{ckpt.path}' at env step {self.step}", file=sys.stderr)
        return Logger(self.logdir, purge_step=self.step + 1)

    def host_state(self) -> dict:
        """Everything besides the train state that the run needs to continue (JSON)."""
        return {
            **self.schedule.state_dict(), **self.metrics.state_dict(),
            "rng": self.rng.bit_generator.state,  # prefill's random actions
            "actor_key": np.asarray(self.actor.key).tolist(),  # collection noise
            "replay": {**self.replay.state_dict(), "steps": self.replay.num_steps,
                       "episodes": self.replay.num_episodes},
            "agent_spec": {"name": self.config.agent, "action_size": int(self.envs.action_size),
                           "discrete": bool(self.envs.discrete),
                           "obs_space": [list(item) for item in space_key(self.envs.obs_space)]},
            "metrics_bytes": self.logger.metrics_size(),
            "config": self.config.to_dict(),  # the checkpoint describes its own run
        }

    def load_host_state(self, host: dict) -> None:
        self.schedule.load_state_dict(host)
        self.metrics.load_state_dict(host)
        self.rng.bit_generator.state = host["rng"]
        self.actor.key = jnp.asarray(host["actor_key"], jnp.uint32)
        self.replay.load_state_dict(host["replay"])

    def save(self) -> Path:
        path = checkpoint.save(self.logdir / checkpoint.CHECKPOINT_DIR, self.agent.parallel.local(self.state),
                               self.host_state(), self.config.train.checkpoint_keep)
        self.last_save_time, self.unsaved, self.last_checkpoint = time.time(), False, path
        return path

    def checkpoint_due(self, env_steps: int) -> bool:
        minutes = self.config.train.checkpoint_minutes
        by_time = minutes > 0 and time.time() - self.last_save_time >= 60 * minutes
        return self.schedule.checkpoint_due(env_steps) or by_time

    # ------------------------------------------------------------------ collection and updates

    def act(self, obs: dict) -> np.ndarray:
        if self.schedule.prefilling(self.replay.num_steps):
            return random_actions(self.rng, self.envs.num_envs, self.envs.action_size, self.envs.discrete)
        return self.actor(self.agent.parallel.local(self.state), obs)

    def collect(self) -> int:
        """One agent step in every env; finished episodes go to the replay. Returns the
        environment steps taken."""
        episodes, env_steps = self.collector.step(self.act)
        if self.on_collect is not None:
            self.on_collect(self.envs, episodes)
        self.schedule.step += env_steps
        self.state = self.agent.on_env_steps(self.state, self.step)
        for episode in episodes:
            self.replay.add_episode(episode)
            self.schedule.episodes += 1
            self.last_return = float(episode["reward"].sum())
            self.logger.scalars({"train/return": self.last_return,
                                 "train/length": (len(episode["reward"]) - 1) * self.config.env.action_repeat})
            self.logger.write(self.step)
        return env_steps

    def update(self, env_steps: int) -> None:
        """Run the updates the schedule owes after the last `env_steps` steps."""
        owed = self.schedule.updates_due(env_steps, self.replay.num_steps)
        if not owed:
            return
        start = time.time()
        for _ in range(owed):
            batch = self.agent.parallel.shard_batch(self.sample_batch())
            self.state, metrics = self.agent.train(self.state, batch)
            self.metrics.add(self.agent.parallel.local(metrics))
        jax.block_until_ready(self.state)  # dispatch is asynchronous: time the compute
        self.metrics.add({"perf/train_seconds": time.time() - start})
        self.check_finite(self.metrics.pending["train/nonfinite"][-owed:])

    def sample_batch(self) -> dict:
        """One training batch [B, T, ...] from the replay (host arrays)."""
        try:
            return self.replay.sample(self.config.train.batch_size)
        except InsufficientDataError as error:  # e.g. episodes shorter than seq_len
            raise TrainingError(str(error)) from None

    def check_finite(self, flags: list) -> None:
        """Warn about updates skipped for a non-finite loss or gradient; stop the run after
        `train.max_nonfinite` in a row."""
        skipped, longest = self.metrics.count_nonfinite(flags)
        if not skipped:
            return
        print(f"warning: {skipped} update(s) skipped for a non-finite loss or gradient at env step "
              f"{self.step}", file=sys.stderr)
        self.logger.scalar("train/skipped_updates", skipped)
        self.logger.write(self.step)
        if longest >= self.config.train.max_nonfinite:
            raise TrainingError(
                f"{longest} consecutive updates had a non-finite loss or gradient (at env step "
                f"{self.step}); none was applied. Check the rewards and observations, lower "
                f"model.lr, or raise train.max_nonfinite")

    # ------------------------------------------------------------------ evaluation and logs

    def evaluate(self) -> None:
        self.schedule.last_eval_step = self.step
        episodes = self.config.train.eval_episodes
        if episodes == 0:
            return
        actor = AgentActor(self.agent, 1, self.config.seed + self.step, "eval")
        state = self.agent.parallel.local(self.state)
        done = run_episodes(self.eval_envs, lambda obs: actor(state, obs),
                            self.config.env.action_repeat, episodes)
        returns = [float(ep["reward"].sum()) for ep in done]
        self.logger.scalar("eval/return", float(np.mean(returns)))
        self.logger.scalar("eval/return_std", float(np.std(returns)))
        self.logger.scalar("eval/length", float(len(done[0]["reward"]) - 1) * self.config.env.action_repeat)
        if IMAGE_KEY in done[0]:
            self.logger.video("eval/policy", done[0][IMAGE_KEY])
        self.logger.write(self.step)

    def log(self) -> None:
        (last_step, last_time), now = self.fps_mark, time.time()
        self.fps_mark = (self.step, now)
        self.logger.scalars(self.metrics.means())
        self.logger.scalars({**self.collection_counts(),
                             "perf/env_steps_per_second": (self.step - last_step) / max(now - last_time, 1e-9)})
        self.logger.write(self.step)

    def collection_counts(self) -> dict[str, int]:
        """What the log line reports of the replay and the training environments."""
        return {"replay/steps": self.replay.num_steps, "replay/episodes": self.replay.num_episodes,
                "train/episodes": self.schedule.episodes, "env/restarts": self.envs.restarts}

    def report(self) -> None:
        if self.schedule.prefilling(self.replay.num_steps):
            return
        self.write_report(self.replay.sample(min(6, self.config.train.batch_size)))

    def write_report(self, batch: dict) -> None:
        """The agent's videos of `batch` (open-loop predictions) into the logs."""
        videos = self.agent.report(self.agent.parallel.local(self.state), batch)
        for name, video in jax.device_get(videos).items():
            self.logger.video(f"train/{name}", video)
        self.logger.write(self.step)

    # ------------------------------------------------------------------ loop

    def run(self) -> None:
        progress = Progress(self.config.steps, initial=min(self.step, self.config.steps))
        self.fps_mark = (self.step, time.time())
        try:
            while self.step < self.config.steps and self.stop.signum is None:
                env_steps = self.iteration()
                self.unsaved = True
                if self.step >= self.config.steps and self.schedule.last_eval_step != self.step:
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
        env_steps = self.collect()
        self.update(env_steps)
        if self.schedule.eval_due(env_steps):
            self.evaluate()
        if self.schedule.video_due(env_steps):
            self.report()
        if self.schedule.log_due(env_steps):
            self.log()
        return env_steps

    def close(self) -> None:
        self.logger.close()
        self.envs.close()
        self.eval_envs.close()
