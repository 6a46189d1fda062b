"""The training driver of one run. `Trainer` is built from its parts (`Parts`: factories of
the environments, the agent on its devices, the replay, the logger and the schedule) and holds
the only copy of each step of a run: collect one agent step (`collect_work`, which says what
the step makes due as a `Work` item), handle an item (its updates, evaluation, video, log
line), checkpoint, and stop. A loop drives those steps: `run_synchronous` here, one after
the other, or `dreamer.overlapped.run_overlapped`, collecting in a thread while the main
thread handles the items. `python -m dreamer.train` composes and runs it (`make_trainer`).

Checkpoints (`dreamer/checkpoint.py`) are written every `run.checkpoint_minutes` and every
`run.checkpoint_every` steps, at the end, and on SIGINT / SIGTERM. A signal is answered
between two updates, two evaluation episodes or two collection steps: the run saves the items
it has not finished (the updates still owed included) with the checkpoint and exits with
128 + the signal number; a second signal ends the process at once (`StopRequests`). A
Trainer on a logdir with a checkpoint continues from it: the counters, RNG states, unfinished
items and evaluation schedule are restored, the replay reloads from disk, and `metrics.jsonl`
is cut back to its length at the checkpoint, so no step is logged or updated twice.
"""

from __future__ import annotations

import dataclasses
import sys
import threading
import time
from collections import defaultdict, deque
from pathlib import Path
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from dreamer import checkpoint
from dreamer.collect import AgentActor, Collector, episode_signature, random_actions, run_episodes
from dreamer.config import Config
from dreamer.envs import VectorEnv
from dreamer.envs.base import IMAGE_KEY, space_key
from dreamer.errors import CheckpointError, ConfigError, TrainingError, UserError
from dreamer.logger import METRICS_FILE, Logger, Progress, truncate_metrics
from dreamer.parts import Parts
from dreamer.replay import InsufficientDataError
from dreamer.schedule import UpdateRate
from dreamer.stopping import Interrupted, StopRequests


class RunFinished(Exception):
    """The run in the logdir has already reached --steps: nothing to do, nothing written."""

    def __init__(self, logdir: Path, step: int, steps: int):
        super().__init__(f"the run in '{logdir}' is at env step {step}, --steps is {steps}: "
                         "nothing to do (raise --steps to train on)")


def check_hosts_agree(config: Config, resume: checkpoint.Resume) -> None:
    """Hosts of a multi-host run update together, so they must checkpoint at the same steps
    (by steps, not wall-clock minutes) and resume from the same step."""
    if jax.process_count() == 1:
        return
    if config.run.checkpoint_minutes > 0:
        raise ConfigError("a multi-host run checkpoints by environment steps only, so that every host "
                          "saves at the same step: set --run.checkpoint_minutes 0 and "
                          "--run.checkpoint_every N")
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


@dataclasses.dataclass(frozen=True)
class Work:
    """What one collection step makes due; the loop handles the items in the order collected.
    An item a signal interrupts is saved with the checkpoint as what is left of it."""

    step: int  # environment steps collected, this step included
    updates: int  # updates the schedule owes at `step` (still owed, for an interrupted item)
    episodes: tuple[tuple[float, int], ...]  # (return, length in env steps) of episodes that ended
    evaluate: bool
    video: bool
    log: bool
    counts: dict[str, int]  # `Trainer.collection_counts` right after this step, for the log line
    prefilling: bool  # still collecting before training starts: no updates, no videos
    barrier: bool  # a checkpoint or the end: collection waits until the item is handled

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Work:
        return cls(**{**data, "episodes": tuple((float(r), int(n)) for r, n in data["episodes"])})


class Trainer:
    """One run: its parts, its state, and the steps a loop drives (see the module's doc)."""

    def __init__(self, config: Config, logdir: Path, parts: Parts, stop: StopRequests | None = None,
                 on_collect: CollectHook | None = None, loop: Callable[[Trainer], None] | None = None):
        self.config, self.logdir = config, logdir
        self.stop = stop or StopRequests()
        self.on_collect = on_collect
        self.loop = loop or run_synchronous
        host_seed = config.seed + 100_000 * jax.process_index()  # hosts collect different data
        self.envs = parts.make_envs(host_seed)
        try:
            self.eval_envs = parts.make_eval_envs(config.seed + 10_000)
        except BaseException:
            self.envs.close()
            raise
        try:
            self.agent = parts.make_agent(self.envs)
            # Everything that can reject the logdir runs before anything in it is written.
            resume = checkpoint.prepare_resume(config, logdir)
            check_hosts_agree(config, resume)
            if (resume.checkpoint is not None and resume.checkpoint.step >= config.steps
                    and not resume.checkpoint.host.get("pending_work")):
                raise RunFinished(logdir, resume.checkpoint.step, config.steps)
            self.state = self.initial_state(resume.checkpoint)  # replicated over devices
            self.actor = AgentActor(self.agent, self.envs.num_envs, config.seed + 1, "train")
            self.collector = Collector(self.envs, config.env.action_repeat,  # resets: renders once
                                       extras=self.actor.context)
        except BaseException:
            self.envs.close()
            self.eval_envs.close()
            raise
        self.replay = parts.make_replay(logdir / "replay",
                                        episode_signature(self.envs, self.agent.agent.context_space()))
        self.replay.load()
        self.replay_lock = threading.Lock()  # an actor thread may add episodes while updates sample
        self.acting_state = self.state  # what the training policy reads (`publish`)
        self.publish: Callable = lambda state: state  # a loop that acts beside the updates copies
        self.rng = np.random.default_rng(config.seed)  # prefill's random actions
        self.schedule = parts.make_schedule()
        self.metrics = UpdateMetrics(config.run.max_nonfinite)
        self.pending: deque[Work] = deque()  # collected, not yet handled (restored on resume)
        self.work: Work | None = None  # the item being handled: its step labels the logs
        self.last_return: float | None = None  # of the latest training episode, for the progress bar
        self.fps_mark = (0, time.time())  # (step, time) of the last log line
        self.last_checkpoint = resume.checkpoint.path if resume.checkpoint else None
        self.logger = self.open_logger(resume, parts.make_logger)
        self.stop.on_exit.append(self.logger.flush)
        self.progress: Progress | None = None
        self.rate = UpdateRate(config, self.schedule)
        self.last_save_time = time.time()
        self.unsaved = False  # steps collected or items handled since the last checkpoint
        self.envs_stuck = False  # a collection thread could not be stopped (overlapped loop)

    @property
    def step(self) -> int:
        """The environment step of the item being handled (of collection before the first):
        what the evaluations, logs and checkpoints are labelled with."""
        return self.schedule.step if self.work is None else self.work.step

    def run(self) -> None:
        """Run the loop to `config.steps` or to a signal (then raises `Interrupted`)."""
        self.progress = Progress(self.config.steps, initial=min(self.step, self.config.steps))
        self.fps_mark = (self.step, time.time())
        try:
            self.loop(self)
        finally:
            self.progress.close()
            self.close(envs=not self.envs_stuck)

    # ------------------------------------------------------------------ checkpoints

    def initial_state(self, ckpt: checkpoint.Checkpoint | None):
        if ckpt is None:
            return self.agent.init(jax.random.PRNGKey(self.config.seed))
        return self.agent.restore(checkpoint.restore_state(self.agent.agent.state_template(), ckpt))

    def open_logger(self, resume: checkpoint.Resume, make_logger: Callable) -> Logger:
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
            if self.replay.num_episodes:  # an earlier start's data, its parameters lost
                self.schedule.count_kept(self.replay.num_steps, self.replay.num_episodes)
                print(f"warning: no checkpoint in '{self.logdir}': the replay's {self.replay.num_episodes} "
                      f"episodes from an earlier start are kept and counted, so training starts at env "
                      f"step {self.schedule.step} with fresh parameters (metrics.jsonl restarts)",
                      file=sys.stderr)
            truncate_metrics(metrics, 0)
            return make_logger(self.logdir, 0 if metrics.exists() else None)
        truncate_metrics(metrics, int(ckpt.host["metrics_bytes"]))
        owed = sum(work.updates for work in self.pending)
        unfinished = f" ({owed} updates still owed there)" if owed else ""
        print(f"resuming from '{ckpt.path}' at env step {self.step}{unfinished}", file=sys.stderr)
        return make_logger(self.logdir, self.step + 1)

    def host_state(self) -> dict:
        """Everything besides the train state that the run needs to continue (JSON)."""
        return {
            **self.schedule.state_dict(), **self.metrics.state_dict(),
            "rng": self.rng.bit_generator.state,  # prefill's random actions
            "actor_key": np.asarray(self.actor.key).tolist(),  # collection noise
            "replay": {**self.replay.state_dict(), "steps": self.replay.num_steps,
                       "episodes": self.replay.num_episodes},
            "pending_work": [work.to_dict() for work in self.pending],
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
        self.pending = deque(Work.from_dict(item) for item in host.get("pending_work", []))

    def save(self) -> Path:
        """A checkpoint of the run as it stands: the train state, the replay's and schedule's
        counters at the newest collected step, and the items not yet handled."""
        path = checkpoint.save(self.logdir / checkpoint.CHECKPOINT_DIR, self.agent.local(self.state),
                               self.host_state(), self.config.run.checkpoint_keep)
        self.last_save_time, self.unsaved, self.last_checkpoint = time.time(), False, path
        return path

    def minutes_due(self) -> bool:
        """`run.checkpoint_minutes` have passed since the last checkpoint."""
        minutes = self.config.run.checkpoint_minutes
        return minutes > 0 and time.time() - self.last_save_time >= 60 * minutes

    def stopped(self) -> bool:
        return self.stop.signum is not None

    def interrupt(self) -> None:
        """Save what is unsaved (the unfinished items included) and raise `Interrupted`."""
        if self.unsaved:
            self.save()
        raise Interrupted(self.stop.signum, self.schedule.step, self.last_checkpoint)

    # ------------------------------------------------------------------ collection

    def act(self, obs: dict) -> np.ndarray:
        if self.schedule.prefilling(self.replay.num_steps) and self.config.run.prefill_actions == "random":
            return random_actions(self.rng, self.envs.num_envs, self.envs.action_size, self.envs.discrete)
        state = self.agent.on_env_steps(self.acting_state, self.schedule.step)
        return self.actor(self.agent.local(state), obs)

    def collect_work(self) -> Work:
        """One agent step in every env; finished episodes go to the replay. Returns what the
        step makes due."""
        episodes, env_steps = self.collector.step(self.act)
        if self.on_collect is not None:
            self.on_collect(self.envs, episodes)
        schedule, repeat = self.schedule, self.config.env.action_repeat
        schedule.step += env_steps
        saved = [self.replay.save_episode(episode) for episode in episodes]  # file writes: unlocked
        with self.replay_lock:
            for arrays, path in saved:
                self.replay.insert_episode(arrays, path)
        schedule.episodes += len(episodes)
        self.unsaved = True
        return Work(
            step=schedule.step, updates=schedule.updates_due(env_steps, self.replay.num_steps),
            episodes=tuple((float(ep["reward"].sum()), (len(ep["reward"]) - 1) * repeat) for ep in episodes),
            evaluate=schedule.eval_due(env_steps) or schedule.step >= self.config.steps,  # and at the end
            video=schedule.video_due(env_steps),
            log=schedule.log_due(env_steps), counts=self.collection_counts(),
            prefilling=schedule.prefilling(self.replay.num_steps),
            barrier=self.minutes_due() or schedule.checkpoint_due(env_steps) or schedule.step >= self.config.steps)

    def collection_counts(self) -> dict[str, int]:
        """What the log line reports of the replay and the training environments."""
        return {"replay/steps": self.replay.num_steps, "replay/episodes": self.replay.num_episodes,
                "train/episodes": self.schedule.episodes, "env/restarts": self.envs.restarts}

    # ------------------------------------------------------------------ handling an item

    def handle(self, work: Work) -> Work | None:
        """What `work`'s step makes due, in order: its episodes' returns, its updates, the
        evaluation, a video, a log line. Returns None when done, or what is left of the item
        when a signal stopped it (between two updates or two evaluation episodes)."""
        self.work = work
        self.state = self.agent.on_env_steps(self.state, work.step)
        for episode_return, length in work.episodes:
            self.last_return = episode_return
            self.logger.scalars({"train/return": episode_return, "train/length": length})
            self.logger.write(work.step)
        work = dataclasses.replace(work, episodes=())
        if work.updates:
            done = self.run_updates(work.updates)
            work = dataclasses.replace(work, updates=work.updates - done)
            if work.updates:
                return work
        self.unsaved = True
        if work.evaluate:
            if not self.evaluate():
                return work
            work = dataclasses.replace(work, evaluate=False)
        if work.video:
            self.report(work)
        if work.log:
            self.log(work)
        return None

    def run_updates(self, owed: int) -> int:
        """Up to `owed` updates, one at a time on the device, each next batch drawn while the
        previous update runs; stops after the update in progress on a signal. Then the acting
        policy gets the new state (`publish`). Returns the updates done."""
        start, done = time.time(), 0
        batch, positions = self.sample_batch()
        for done in range(1, owed + 1):
            self.state, metrics, entries = self.agent.update(self.state, batch)
            self.metrics.add(self.agent.local(metrics))
            drawn = self.replay.sampling_state()  # before the next batch
            written = positions
            if done < owed:
                batch, positions = self.sample_batch()
            jax.block_until_ready(metrics)
            if entries:  # the replay context: each posterior state goes with the step after it
                with self.replay_lock:
                    self.replay.overwrite(written, self.agent.host_rows(entries), shift=1)
            self.rate.update_done(done, owed, self.progress)
            if self.stopped():
                self.replay.restore_sampling(drawn)  # the rerun draws the unused batch again
                break
        self.acting_state = self.publish(self.state)
        self.metrics.add({"perf/train_seconds": time.time() - start})
        self.check_finite(self.metrics.pending["train/nonfinite"][-done:])
        return done

    def sample_batch(self) -> tuple[dict, list]:
        """One training batch [B, T, ...] from the replay, on the devices, and where its
        sequences lie in the replay."""
        try:
            with self.replay_lock:
                batch, positions = self.replay.sample_with_positions(self.config.run.batch_size)
        except InsufficientDataError as error:  # e.g. episodes shorter than seq_len
            raise TrainingError(str(error)) from None
        return self.agent.shard(batch), positions

    def check_finite(self, flags: list) -> None:
        """Warn about updates skipped for a non-finite loss or gradient; stop the run after
        `run.max_nonfinite` in a row."""
        skipped, longest = self.metrics.count_nonfinite(flags)
        if not skipped:
            return
        print(f"warning: {skipped} update(s) skipped for a non-finite loss or gradient at env step "
              f"{self.step}", file=sys.stderr)
        self.logger.scalar("train/skipped_updates", skipped)
        self.logger.write(self.step)
        if longest >= self.config.run.max_nonfinite:
            raise TrainingError(
                f"{longest} consecutive updates had a non-finite loss or gradient (at env step "
                f"{self.step}); none was applied. Check the rewards and observations, lower "
                f"model.lr, or raise run.max_nonfinite")

    def evaluate(self) -> bool:
        """`run.eval_episodes` episodes of the eval policy, logged; False if a signal
        stopped it between two episodes (it is run again, the same, on resume)."""
        episodes = self.config.run.eval_episodes
        if episodes == 0:
            return True
        actor = AgentActor(self.agent, 1, self.config.seed + self.step, "eval")
        state = self.agent.local(self.state)
        done = run_episodes(self.eval_envs, lambda obs: actor(state, obs), self.config.env.action_repeat,
                            episodes, stop=self.stopped)
        if len(done) < episodes:
            return False
        returns = [float(ep["reward"].sum()) for ep in done]
        self.logger.scalar("eval/return", float(np.mean(returns)))
        self.logger.scalar("eval/return_std", float(np.std(returns)))
        self.logger.scalar("eval/length", float(len(done[0]["reward"]) - 1) * self.config.env.action_repeat)
        if IMAGE_KEY in done[0]:
            self.logger.video("eval/policy", done[0][IMAGE_KEY])
        self.logger.write(self.step)
        return True

    def log(self, work: Work) -> None:
        (last_step, last_time), now = self.fps_mark, time.time()
        self.fps_mark = (self.step, now)
        self.logger.scalars(self.metrics.means())
        self.logger.scalars({**work.counts,
                             "perf/env_steps_per_second": (self.step - last_step) / max(now - last_time, 1e-9)})
        self.logger.write(self.step)

    def report(self, work: Work) -> None:
        """The agent's videos of a replayed batch (open-loop predictions) into the logs."""
        if work.prefilling:
            return
        with self.replay_lock:
            batch = self.replay.sample(min(6, self.config.run.batch_size), online=False)
        videos = self.agent.report(self.state, batch)
        for name, video in jax.device_get(videos).items():
            self.logger.video(f"train/{name}", video)
        self.logger.write(self.step)

    # ------------------------------------------------------------------ checkpoints and the end

    def finish(self, work: Work) -> bool:
        """After a barrier item: a checkpoint. Returns whether the run is over."""
        if self.unsaved:
            self.save()
        return work.step >= self.config.steps

    def close(self, envs: bool = True) -> None:
        """Close the logs and the environments (`envs` False: not the training ones, which a
        stuck collection thread still holds; their workers end with this process)."""
        self.logger.close()
        if envs:
            self.envs.close()
        self.eval_envs.close()


def run_synchronous(trainer: Trainer) -> None:
    """The loop that collects one step, then handles what it made due, then collects again."""
    while not trainer.stopped():
        if not trainer.pending:
            trainer.pending.append(trainer.collect_work())
            continue  # a signal during collection stops before the updates
        work = trainer.pending[0]
        left = trainer.handle(work)
        if left is not None:
            trainer.pending[0] = left
            break
        trainer.progress.update(trainer.step, trainer.last_return)
        trainer.pending.popleft()
        if work.barrier and trainer.finish(work):
            return
    trainer.interrupt()
