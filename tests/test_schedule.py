"""The run's schedule (`dreamer.schedule`), with hand-computed step counts."""

from __future__ import annotations

import pytest

from dreamer.config import RunConfig
from dreamer.schedule import Schedule, crossed


@pytest.mark.parametrize("step, delta, every, expected", [
    (1000, 8, 1000, True),  # 992 -> 1000 reaches a multiple
    (1004, 8, 1000, True),  # 996 -> 1004 passes one
    (1012, 8, 1000, False),  # 1004 -> 1012 passes none
    (1000, 0, 1000, False),  # no step taken
    (1000, 8, 0, False),  # 0: never
])
def test_crossed(step, delta, every, expected):
    assert crossed(step, delta, every) is expected


def advance(schedule: Schedule, env_steps: int, replay_steps: int) -> int:
    schedule.step += env_steps
    return schedule.updates_due(env_steps, replay_steps)


def test_the_papers_schedule_burst_then_every_train_every():
    # Action repeat 2: prefill 1000 env steps = 500 agent steps in the replay.
    schedule = Schedule(RunConfig(prefill=1000, train_every=100, train_steps=10, seq_len=50), 2)
    assert schedule.prefilling(499) and not schedule.prefilling(500)
    assert advance(schedule, 998, 499) == 0  # still prefilling
    assert advance(schedule, 2, 500) == 10  # the first burst when prefill ends
    assert schedule.train_start == 998
    assert advance(schedule, 2, 501) == 0  # 1002: no multiple of 100 passed
    assert [advance(schedule, 2, 502 + i) for i in range(49)].count(10) == 1  # 1100 passed
    # 1100 - 998 = 102 steps of training earn 10 (burst) + 10 (102 * 10 // 100) = 20.
    assert schedule.scheduled_updates == 20


def test_train_ratio_counts_replayed_steps():
    # 512 replayed steps per env step at batch 16 x 64 = 1024 replayed steps per update:
    # one update per two env steps, after the first burst of train_steps.
    schedule = Schedule(RunConfig(prefill=0, train_ratio=512, batch_size=16, seq_len=64, train_steps=1), 1)
    # Training starts before the collection step that ended prefill (step 0): the burst of 1
    # plus 64 * 512 // 1024 = 32 for those 64 steps.
    assert advance(schedule, 64, 64) == 33
    assert advance(schedule, 1, 65) == 0  # 65 * 512 // 1024 = 32: nothing new
    assert advance(schedule, 1, 66) == 1  # 66 * 512 // 1024 = 33
    assert schedule.scheduled_updates == 34


def test_state_dict_round_trip():
    schedule = Schedule(RunConfig(prefill=0, seq_len=2), 1)
    advance(schedule, 5, 5)
    schedule.episodes = 3
    restored = Schedule(RunConfig(prefill=0, seq_len=2), 1)
    restored.load_state_dict(schedule.state_dict())
    assert restored.state_dict() == schedule.state_dict() == {
        "step": 5, "episodes": 3, "scheduled_updates": 100, "train_start": 0}
