"""The overlapped training loop (`--run.loop overlapped`): an actor thread collects while the
learner (the main thread) updates.

It drives the same `dreamer.trainer.Trainer` as the synchronous loop, in two threads: the
actor thread runs `Trainer.collect_work` (the newest finished train state acts, finished
episodes go into the replay) and queues each step's `Work` item; the learner runs
`Trainer.handle` and `Trainer.finish` on the items in order. So

- the updates, evaluations, videos, log lines and checkpoints per environment step are those of
  the synchronous loop, counted by the same `Schedule`;
- an evaluation at step S sees every update owed up to S, as in the synchronous loop;
- only the collected data differ: the policy that collects step t may miss the updates owed
  in the last `run.max_lag` environment steps, and the actor waits when it would get further
  ahead. `run.max_lag 0` collects with exactly the synchronous loop's parameters.

A checkpoint needs the replay, the schedule and the collection RNG at one step: at a checkpoint
(by steps or minutes) and at the end the actor waits after that step until the learner has
run every update owed up to it and saved ("barrier"). On SIGINT / SIGTERM the learner stops
after its current update and the actor after its current step; the checkpoint then holds
the items not yet handled. Resuming works as for the synchronous loop, from either loop's
checkpoints.

The training environments run in worker processes (`env.parallel` is implied): MuJoCo's EGL
context belongs to the thread that made it, and a worker steps and renders without holding
this process's GIL, which the learner needs to dispatch updates. On an accelerator the
actor's policy steps would queue behind the updates on the device's stream; with
`run.actor_device cpu` the actor acts on the host's CPU from a copy of each new state.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import jax
import jax.numpy as jnp

from dreamer.config import Config
from dreamer.stopping import StopRequests
from dreamer.parts import Parts, default_parts
from dreamer.trainer import CollectHook, Trainer, Work


@jax.jit
def _copy(tree):
    """A copy the actor keeps: the next update donates the learner's buffers."""
    return jax.tree.map(jnp.copy, tree)


class Overlapped:
    """The two threads' shared state around one `Trainer`; `run` is the loop."""

    def __init__(self, trainer: Trainer):
        self.trainer = trainer
        self.cond = threading.Condition()  # guards trainer.pending and everything below
        self.at_barrier = False  # the actor waits for the learner to finish a barrier item
        self.closing = False
        self.actor_error: BaseException | None = None
        cfg = trainer.config.run
        self.actor_device = (jax.devices("cpu")[0] if cfg.actor_device == "cpu"
                             and jax.default_backend() != "cpu" else None)
        trainer.publish = self.publish
        trainer.acting_state = self.publish(trainer.state)
        if self.actor_device is not None:  # its key splits there too, not behind the updates
            trainer.actor.key = jax.device_put(trainer.actor.key, self.actor_device)

    def publish(self, state):
        """The actor's own copy of a finished train state: on the CPU with
        `run.actor_device cpu` (on an accelerator), else on the learner's device."""
        local = self.trainer.agent.local(state)
        copy = _copy(local) if self.actor_device is None else jax.device_put(local, self.actor_device)
        return jax.block_until_ready(copy)

    # ------------------------------------------------------------------ the actor thread

    def actor_main(self) -> None:
        trainer = self.trainer
        try:
            while self.wait_for_lag():
                work = trainer.collect_work()
                with self.cond:
                    trainer.pending.append(work)
                    self.at_barrier = work.barrier
                    self.cond.notify_all()
                    while self.at_barrier and not self.closing:
                        self.cond.wait()
                if work.step >= trainer.config.steps:
                    return
        except BaseException as error:  # handed to the learner, which raises it
            with self.cond:
                self.actor_error = error
                self.cond.notify_all()

    def wait_for_lag(self) -> bool:
        """Wait while updates owed more than `run.max_lag` environment steps ago are still
        pending. Returns False when the loop closes."""
        with self.cond:
            while not self.closing and self.lagging():
                self.cond.wait()
            return not self.closing

    def lagging(self) -> bool:
        """Work owed `max_lag` steps ago is pending: updates, or a video (whose batch should
        come from the replay of its step)."""
        trainer = self.trainer
        owed = next((work.step for work in trainer.pending if work.updates or work.video), None)
        return owed is not None and trainer.schedule.step - owed >= trainer.config.run.max_lag

    # ------------------------------------------------------------------ the learner

    def next_work(self) -> Work | None:
        """The oldest unhandled item; None once a signal asks the run to stop."""
        with self.cond:
            while True:
                if self.actor_error is not None:
                    raise self.actor_error
                if self.trainer.stopped():
                    return None
                if self.trainer.pending:
                    return self.trainer.pending[0]
                self.cond.wait(timeout=0.1)  # wakes for signals, which run on this thread

    def learn(self) -> bool:
        """Handle the items until the run ends (True) or a signal stops it (False)."""
        trainer = self.trainer
        while (work := self.next_work()) is not None:
            left = trainer.handle(work)
            with self.cond:
                if left is not None:
                    trainer.pending[0] = left
                    return False
                trainer.pending.popleft()  # at a barrier the actor waits: nothing follows it
            trainer.progress.update(trainer.step, trainer.last_return)
            if work.barrier and trainer.finish(work):
                return True
            with self.cond:
                self.at_barrier = self.at_barrier and not work.barrier
                self.cond.notify_all()
        return False

    def close_actor(self, actor: threading.Thread) -> None:
        """Stop the actor after its current environment step (the queue then holds every
        collected step); if it is stuck in an environment, leave it to exit with the process."""
        with self.cond:
            self.closing = True
            self.cond.notify_all()
        if actor.is_alive():
            actor.join(timeout=60)
        if actor.is_alive():
            print("warning: the actor thread did not stop; its environments are left to exit "
                  "with this process", file=sys.stderr)
            self.trainer.envs_stuck = True

    def run(self) -> None:
        trainer = self.trainer
        actor = threading.Thread(target=self.actor_main, name="actor", daemon=True)
        try:
            if not trainer.stopped():  # a signal during start-up: no step, nothing to save
                actor.start()
                if self.learn():
                    return
            self.close_actor(actor)
            with self.cond:
                if self.actor_error is not None:
                    raise self.actor_error
            trainer.interrupt()
        finally:
            self.close_actor(actor)


def run_overlapped(trainer: Trainer) -> None:
    """The overlapped loop (`run.loop overlapped`) over `trainer`."""
    Overlapped(trainer).run()


def make_trainer(config: Config, logdir: Path, stop: StopRequests | None = None,
                 on_collect: CollectHook | None = None, parts: Parts | None = None) -> Trainer:
    """The run of `config` in `logdir`, with the loop `run.loop` names. The overlapped loop
    steps its training environments in worker processes: MuJoCo's EGL context belongs to the
    thread that made it, and a worker steps without holding the GIL the learner needs."""
    overlapped = config.run.loop == "overlapped"
    parts = parts or default_parts(config, parallel_envs=True if overlapped else None)
    return Trainer(config, logdir, parts, stop, on_collect, loop=run_overlapped if overlapped else None)
