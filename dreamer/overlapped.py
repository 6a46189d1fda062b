"""The overlapped training loop (`--train.loop overlapped`): an actor thread collects while the
learner (the main thread) updates.

The actor thread steps the training environments with the newest finished train state, puts
every finished episode into the replay, and hands the learner one `Work` item per collection
step: the updates the schedule owes at that step and what else is due there (evaluation,
videos, a log line, a checkpoint). The learner handles the items in order, so

- the updates, evaluations, videos, log lines and checkpoints per environment step are those of
  the synchronous loop (`dreamer.trainer.Trainer`), counted by the same `Schedule`;
- an evaluation at step S sees every update owed up to S, as in the synchronous loop;
- only the collected data differ: the policy that collects step t may miss the updates owed
  in the last `train.max_lag` environment steps, and the actor waits when it would get further
  ahead. `train.max_lag 0` collects with exactly the synchronous loop's parameters.

A checkpoint needs the replay, the schedule and the collection RNG at one step: at a checkpoint
(by steps or minutes), at the end and on SIGINT / SIGTERM the actor stops after its current
step, and the learner runs every update owed up to it and saves ("barrier") before the actor
goes on. Resuming works as for the synchronous loop, from either loop's checkpoints.

The training environments run in worker processes (`env.parallel` is implied): MuJoCo's EGL
context belongs to the thread that made it, and a worker steps and renders without holding
this process's GIL, which the learner needs to dispatch updates. On an accelerator the
actor's policy steps would queue behind the updates on the device's stream; with
`train.actor_device cpu` the actor acts on the host's CPU from a copy of each new state.
"""

from __future__ import annotations

import dataclasses
import sys
import threading
import time
from collections import deque
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from dreamer.collect import make_vector_env, random_actions
from dreamer.config import Config
from dreamer.envs import VectorEnv
from dreamer.logger import Progress
from dreamer.trainer import CollectHook, Interrupted, StopRequests, Trainer


@dataclasses.dataclass(frozen=True)
class Work:
    """What the learner owes after one collection step of the actor."""

    step: int  # environment steps collected, this step included
    updates: int  # updates the schedule owes at `step`
    episodes: tuple[tuple[float, int], ...]  # (return, length in env steps) of episodes that ended
    evaluate: bool
    video: bool
    log: bool
    counts: dict[str, int]  # `Trainer.collection_counts` right after this step, for the log line
    prefilling: bool  # still collecting random actions: no updates, no videos
    barrier: bool  # the actor waits until the learner has handled this item (checkpoint, end, stop)


@jax.jit
def _copy(tree):
    """A copy the actor keeps: the next update donates the learner's buffers."""
    return jax.tree.map(jnp.copy, tree)


class OverlappedTrainer(Trainer):
    """A `Trainer` whose collection runs in an actor thread, concurrently with the updates."""

    work: Work | None = None  # the item the learner handles; None until the first (`step`)

    def __init__(self, config: Config, logdir: Path, stop: StopRequests | None = None,
                 on_collect: CollectHook | None = None):
        super().__init__(config, logdir, stop, on_collect)
        self.cond = threading.Condition()  # guards everything below that both threads touch
        self.queue: deque[Work] = deque()  # collected, not yet handled by the learner
        self.pause_requested = False  # the learner wants a barrier (signal, checkpoint minutes)
        self.at_barrier = False  # the actor waits for the learner to finish a barrier
        self.closing = False
        self.actor_error: BaseException | None = None
        self.replay_lock = threading.Lock()  # the actor adds episodes, the learner samples
        self.actor_device = (jax.devices("cpu")[0] if config.train.actor_device == "cpu"
                             and jax.default_backend() != "cpu" else None)
        self.acting_state = self.publish(self.state)  # what the actor's policy reads
        if self.actor_device is not None:  # its key splits there too, not behind the updates
            self.actor.key = jax.device_put(self.actor.key, self.actor_device)

    def publish(self, state):
        """The actor's own copy of a finished train state: on the CPU with
        `train.actor_device cpu` (on an accelerator), else on the learner's device."""
        local = self.agent.parallel.local(state)
        copy = _copy(local) if self.actor_device is None else jax.device_put(local, self.actor_device)
        return jax.block_until_ready(copy)

    def make_train_envs(self, seed: int) -> VectorEnv:
        return make_vector_env(self.config, seed, parallel=True)

    @property
    def step(self) -> int:
        """The learner's environment step (the actor's before the loop starts): what the
        evaluations, logs and checkpoints are labelled with."""
        return self.schedule.step if self.work is None else self.work.step

    # ------------------------------------------------------------------ the actor thread

    def actor_main(self) -> None:
        try:
            while self.wait_for_lag():
                work = self.collect_work()
                with self.cond:
                    self.queue.append(work)
                    self.at_barrier = work.barrier
                    self.cond.notify_all()
                    while self.at_barrier and not self.closing:
                        self.cond.wait()
                if work.step >= self.config.steps:
                    return
        except BaseException as error:  # handed to the learner, which raises it
            with self.cond:
                self.actor_error = error
                self.cond.notify_all()

    def wait_for_lag(self) -> bool:
        """Wait while updates owed more than `train.max_lag` environment steps ago are still
        pending. Returns False when the loop closes."""
        with self.cond:
            while not self.closing and self.lagging():
                self.cond.wait()
            return not self.closing

    def lagging(self) -> bool:
        """Work owed `max_lag` steps ago is pending: updates, or a video (whose batch should
        come from the replay of its step)."""
        owed = next((work.step for work in self.queue if work.updates or work.video), None)
        return owed is not None and self.schedule.step - owed >= self.config.train.max_lag

    def act(self, obs: dict) -> np.ndarray:
        if self.schedule.prefilling(self.replay.num_steps):
            return random_actions(self.rng, self.envs.num_envs, self.envs.action_size, self.envs.discrete)
        state = self.agent.on_env_steps(self.acting_state, self.schedule.step)
        return self.actor(self.agent.parallel.local(state), obs)

    def collect_work(self) -> Work:
        """One agent step in every env (as `Trainer.collect`), and what it makes due."""
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
        with self.cond:
            pause = self.pause_requested
        return Work(
            step=schedule.step, updates=schedule.updates_due(env_steps, self.replay.num_steps),
            episodes=tuple((float(ep["reward"].sum()), (len(ep["reward"]) - 1) * repeat) for ep in episodes),
            evaluate=schedule.eval_due(env_steps), video=schedule.video_due(env_steps),
            log=schedule.log_due(env_steps), counts=super().collection_counts(),
            prefilling=schedule.prefilling(self.replay.num_steps),
            barrier=pause or schedule.checkpoint_due(env_steps) or schedule.step >= self.config.steps)

    # ------------------------------------------------------------------ the learner

    def next_work(self) -> Work:
        """The oldest unhandled item; asks for a barrier on a signal or when the checkpoint
        minutes are up."""
        with self.cond:
            while True:
                if self.actor_error is not None:
                    raise self.actor_error
                if not self.pause_requested and (self.stop.signum is not None or self.checkpoint_due(0)):
                    self.pause_requested = True
                if self.queue:
                    return self.queue[0]
                self.cond.wait(timeout=0.1)  # wakes for signals, which run on this thread

    def handle(self, work: Work) -> None:
        """What `Trainer.iteration` does after collecting, at the item's step."""
        self.work = work
        self.state = self.agent.on_env_steps(self.state, work.step)
        for episode_return, length in work.episodes:
            self.last_return = episode_return
            self.logger.scalars({"train/return": episode_return, "train/length": length})
            self.logger.write(work.step)
        if work.updates:
            self.run_updates(work.updates)
        self.unsaved = True
        if work.evaluate:
            self.evaluate()
        if work.video:
            self.report()
        if work.log:
            self.log()

    def run_updates(self, owed: int) -> None:
        """`owed` updates, each next batch sampled and sent to the device while the previous
        update runs; then the actor gets a copy of the new state. At most two updates are in
        flight, so that the actor's policy steps on the same device wait for one update at
        most, not for the whole burst."""
        start = time.time()
        batch, in_flight = self.sample_batch(), None
        for index in range(owed):
            self.state, metrics = self.agent.train(self.state, batch)
            self.metrics.add(self.agent.parallel.local(metrics))
            if index + 1 < owed:
                batch = self.sample_batch()
            jax.block_until_ready(in_flight)
            in_flight = metrics
        self.acting_state = self.publish(self.state)
        self.metrics.add({"perf/train_seconds": time.time() - start})
        self.check_finite(self.metrics.pending["train/nonfinite"][-owed:])

    def collection_counts(self) -> dict[str, int]:
        return self.work.counts  # the actor may be further on

    def sample_batch(self) -> dict:
        with self.replay_lock:
            batch = super().sample_batch()
        batch = self.agent.parallel.shard_batch(batch)
        return jax.device_put(batch) if self.agent.parallel.num_devices == 1 else batch

    def report(self) -> None:
        if self.work.prefilling:
            return
        with self.replay_lock:  # the actor adds to it
            batch = self.replay.sample(min(6, self.config.train.batch_size))
        self.write_report(batch)

    def finish_barrier(self, work: Work) -> bool:
        """Save at a barrier; returns whether the run is over (raises Interrupted on a signal)."""
        final = work.step >= self.config.steps
        if final and self.schedule.last_eval_step != work.step:
            self.evaluate()  # the final evaluation (unless one just ran), before saving
        if self.unsaved:
            self.save()
        if final:
            return True
        if self.stop.signum is not None:
            raise Interrupted(self.stop.signum, work.step, self.last_checkpoint)
        with self.cond:
            self.pause_requested = self.at_barrier = False
            self.cond.notify_all()
        return False

    # ------------------------------------------------------------------ loop

    def run(self) -> None:
        progress = Progress(self.config.steps, initial=min(self.step, self.config.steps))
        self.fps_mark = (self.step, time.time())
        actor = threading.Thread(target=self.actor_main, name="actor", daemon=True)
        try:
            if self.stop.signum is not None:  # a signal during start-up: no step, nothing to save
                raise Interrupted(self.stop.signum, self.step, self.last_checkpoint)
            actor.start()
            while True:
                work = self.next_work()
                self.handle(work)
                progress.update(self.step, self.last_return)
                if work.barrier and self.finish_barrier(work):
                    break
                with self.cond:
                    self.queue.popleft()
                    self.cond.notify_all()
        finally:
            with self.cond:
                self.closing = True
                self.cond.notify_all()
            if actor.is_alive():
                actor.join(timeout=60)  # it finishes its current environment step
            progress.close()
            if actor.is_alive():  # stuck in an environment: its workers end with this process
                print("warning: the actor thread did not stop; its environments are left to exit "
                      "with this process", file=sys.stderr)
                self.logger.close()
                self.eval_envs.close()
            else:
                self.close()


def make_trainer(config: Config, logdir: Path, stop: StopRequests | None = None,
                 on_collect: CollectHook | None = None) -> Trainer:
    """The training loop `train.loop` names."""
    loop = OverlappedTrainer if config.train.loop == "overlapped" else Trainer
    return loop(config, logdir, stop, on_collect)
