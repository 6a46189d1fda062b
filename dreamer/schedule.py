"""When a run updates, evaluates, logs, records videos and checkpoints: its counters, all in
environment steps (action repeat included), and the rules that read them.

Host-side and JSON-serialisable (`state_dict`), so a checkpoint restores the schedule exactly.
The training loop (`dreamer.trainer.Trainer`) advances it after each collection step and asks
what is due. `UpdateRate` measures the updates as they run and says what the rest would take.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import numpy as np

from dreamer.config import Config, RunConfig
from dreamer.logger import Progress


def crossed(step: int, delta: int, every: int) -> bool:
    """Whether the step counter passed a multiple of `every` in its last increment `delta`."""
    return every > 0 and delta > 0 and step // every > (step - delta) // every


class Schedule:
    def __init__(self, run: RunConfig, action_repeat: int):
        self.cfg, self.action_repeat = run, action_repeat
        self.step = 0  # environment steps collected for training
        self.episodes = 0  # training episodes completed
        self.train_start: int | None = None  # the environment step at which training began
        self.scheduled_updates = 0  # updates run, whether applied or skipped as non-finite

    def prefilling(self, replay_steps: int) -> bool:
        """No updates (and random actions, unless `run.prefill_actions` is 'policy') until the
        replay holds `run.prefill` environment steps and at least one sequence
        (`replay_steps` counts agent steps)."""
        return replay_steps * self.action_repeat < self.cfg.prefill or replay_steps < self.cfg.seq_len

    def updates_due(self, env_steps: int, replay_steps: int) -> int:
        """The updates owed after the last `env_steps` steps, counted as scheduled: a first burst
        of `train_steps` when prefill ends (as Dreamer's pretraining), then `train_steps` per
        `train_every` steps, or `train_ratio` replayed steps per environment step."""
        if self.prefilling(replay_steps):
            return 0
        if self.train_start is None:  # the first step after prefill
            self.train_start = self.step - env_steps
        elif self.cfg.train_ratio == 0 and not crossed(self.step, env_steps, self.cfg.train_every):
            return 0  # the paper's schedule: a burst of updates every `train_every` steps
        owed = self.cfg.train_steps + self.cfg.updates_after(self.step - self.train_start) - self.scheduled_updates
        self.scheduled_updates += owed
        return owed

    def count_kept(self, replay_steps: int, episodes: int) -> None:
        """A start without a checkpoint whose replay kept `episodes` whole episodes of
        `replay_steps` stored steps (each episode's first is its reset) from an earlier start:
        they count as collected, so that the step counter, and every curve over it, counts
        each environment step the data came from."""
        self.step, self.episodes = (replay_steps - episodes) * self.action_repeat, episodes

    def eval_due(self, env_steps: int) -> bool:
        return crossed(self.step, env_steps, self.cfg.eval_every)

    def video_due(self, env_steps: int) -> bool:
        return crossed(self.step, env_steps, self.cfg.video_every)

    def log_due(self, env_steps: int) -> bool:
        return crossed(self.step, env_steps, self.cfg.log_every)

    def checkpoint_due(self, env_steps: int) -> bool:
        """Every `run.checkpoint_every` steps (the wall-clock period is the loop's to check)."""
        return crossed(self.step, env_steps, self.cfg.checkpoint_every)

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step, "episodes": self.episodes, "scheduled_updates": self.scheduled_updates,
                "train_start": self.train_start}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step, self.episodes = state["step"], state["episodes"]
        self.scheduled_updates, self.train_start = state["scheduled_updates"], state["train_start"]


class UpdateRate:
    """The measured seconds per update (the first update of the process, which compiles, not
    counted): shown in the progress bar during a burst with the time the burst has left, and
    once, after `MEASURED` updates, printed with what the rest of the run would take at it,
    with a warning and the alternative where that is more than a day."""

    MEASURED = 3
    DAY = 86_400.0

    def __init__(self, config: Config, schedule: Schedule):
        self.config, self.schedule = config, schedule
        self.last: float | None = None  # when the previous update finished
        self.times: list[float] = []
        self.said = False

    @property
    def seconds(self) -> float | None:
        return float(np.median(self.times)) if self.times else None

    def update_done(self, done: int, owed: int, progress: Progress | None) -> None:
        now = time.time()
        if self.last is not None and done > 1:  # between two updates of one burst
            self.times = (self.times + [now - self.last])[-50:]
        self.last = now
        if self.seconds is None:
            return
        if progress is not None:
            progress.burst(done, owed, (owed - done) * self.seconds)
        if not self.said and len(self.times) >= self.MEASURED:
            self.said = True
            print(self.estimate(owed - done), file=sys.stderr)

    def estimate(self, left_in_burst: int) -> str:
        """One line: seconds per update and the time the run's remaining updates would take."""
        cfg, schedule = self.config.run, self.schedule
        total = cfg.train_steps + cfg.updates_after(self.config.steps - (schedule.train_start or 0))
        left = max(total - schedule.scheduled_updates, 0) + left_in_burst
        seconds = left * self.seconds
        line = (f"{self.seconds:.3g} s per update (measured after compilation): the {left:,} "
                f"updates left to env step {self.config.steps:,} take about {format_duration(seconds)} "
                "of updates alone")
        if seconds > self.DAY:
            line = (f"warning: {line}. For a run that ends sooner, train smaller and less often "
                    "(--configs cpu; see docs/configs.md) or lower --steps")
        return line


def format_duration(seconds: float) -> str:
    if seconds >= 2 * 86_400:
        return f"{seconds / 86_400:.1f} days"
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 60:.0f} min"
