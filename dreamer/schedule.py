"""When a run updates, evaluates, logs, records videos and checkpoints: its counters, all in
environment steps (action repeat included), and the rules that read them.

Host-side and JSON-serialisable (`state_dict`), so a checkpoint restores the schedule exactly.
The training loop (`dreamer.trainer.Trainer`) advances it after each collection step and asks
what is due.
"""

from __future__ import annotations

from typing import Any

from dreamer.config import TrainConfig


def crossed(step: int, delta: int, every: int) -> bool:
    """Whether the step counter passed a multiple of `every` in its last increment `delta`."""
    return every > 0 and delta > 0 and step // every > (step - delta) // every


class Schedule:
    def __init__(self, train: TrainConfig, action_repeat: int):
        self.cfg, self.action_repeat = train, action_repeat
        self.step = 0  # environment steps collected for training
        self.episodes = 0  # training episodes completed
        self.train_start: int | None = None  # the environment step at which training began
        self.scheduled_updates = 0  # updates run, whether applied or skipped as non-finite

    def prefilling(self, replay_steps: int) -> bool:
        """Random actions and no updates until the replay holds `train.prefill` environment
        steps and at least one sequence (`replay_steps` counts agent steps)."""
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

    def eval_due(self, env_steps: int) -> bool:
        return crossed(self.step, env_steps, self.cfg.eval_every)

    def video_due(self, env_steps: int) -> bool:
        return crossed(self.step, env_steps, self.cfg.video_every)

    def log_due(self, env_steps: int) -> bool:
        return crossed(self.step, env_steps, self.cfg.log_every)

    def checkpoint_due(self, env_steps: int) -> bool:
        """Every `train.checkpoint_every` steps (the wall-clock period is the loop's to check)."""
        return crossed(self.step, env_steps, self.cfg.checkpoint_every)

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step, "episodes": self.episodes, "scheduled_updates": self.scheduled_updates,
                "train_start": self.train_start}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step, self.episodes = state["step"], state["episodes"]
        self.scheduled_updates, self.train_start = state["scheduled_updates"], state["train_start"]
