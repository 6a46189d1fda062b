"""Tests for dreamer.replay: storage, loading, capacity, sampling and RNG state."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from dreamer.replay import InsufficientDataError, Replay, ReplayWarning, read_episode

IMAGE_SHAPE = (8, 8, 3)
ACTION_DIM = 2


def kept_ids(replay: Replay) -> list[float]:
    """The ids (rewards) of the episodes a replay samples from: 512 sequences see them all."""
    return sorted(float(r) for r in set(replay.sample(512)["reward"].ravel()))


def make_episode(episode_id: int, length: int) -> dict[str, np.ndarray]:
    """Tiny episode whose reward (and image pixels) equal its id, with a step counter."""
    steps = np.arange(length)
    return {
        "image": np.full((length, *IMAGE_SHAPE), episode_id % 256, np.uint8),
        "action": np.zeros((length, ACTION_DIM), np.float32),
        "reward": np.full(length, episode_id, np.float32),
        "is_first": steps == 0,
        "is_last": steps == length - 1,
        "is_terminal": np.zeros(length, bool),
        "step": steps.astype(np.int32),  # an extra key
    }


def fill(replay: Replay, lengths: list[int]) -> None:
    for episode_id, length in enumerate(lengths):
        replay.add_episode(make_episode(episode_id, length))


def npz_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.npz"))


def test_save_and_reload(tmp_path: Path) -> None:
    replay = Replay(tmp_path, capacity=1000, seq_len=4)
    episodes = [make_episode(i, n) for i, n in enumerate([5, 7, 6])]
    paths = [replay.add_episode(ep) for ep in episodes]
    assert paths == npz_files(tmp_path)  # names sort in insertion order
    assert not [p for p in tmp_path.iterdir() if not p.name.endswith(".npz")]

    fresh = Replay(tmp_path, capacity=1000, seq_len=4)
    assert fresh.load() == 18
    assert (fresh.num_steps, fresh.num_episodes, len(fresh)) == (18, 3, 18)
    assert kept_ids(fresh) == [0.0, 1.0, 2.0]
    for original, loaded in zip(episodes, map(read_episode, paths)):
        assert set(loaded) == set(original)
        for key in original:
            assert loaded[key].dtype == original[key].dtype
            np.testing.assert_array_equal(loaded[key], original[key])


def test_memory_only_replay() -> None:
    replay = Replay(None, capacity=100, seq_len=3)
    assert replay.add_episode(make_episode(0, 5)) is None
    assert replay.sample(2)["image"].shape == (2, 3, *IMAGE_SHAPE)
    with pytest.raises(ValueError, match="no directory"):
        replay.load()


def test_sample_shapes_and_dtypes() -> None:
    replay = Replay(None, capacity=100, seq_len=6)
    fill(replay, [10, 4, 9])
    batch = replay.sample(5)
    expected = make_episode(0, 1)
    assert set(batch) == set(expected)
    for key, value in expected.items():
        assert batch[key].shape == (5, 6, *value.shape[1:])
        assert batch[key].dtype == value.dtype


def test_sequences_cross_episode_boundaries() -> None:
    replay = Replay(None, capacity=100, seq_len=5, cross_episodes=True)
    fill(replay, [3, 2, 4])  # total 9 steps: starts 0..4 all cross a boundary
    crossed = 0
    for _ in range(20):
        batch = replay.sample(8)
        for reward, first, step in zip(batch["reward"], batch["is_first"], batch["step"]):
            changes = np.flatnonzero(np.diff(reward)) + 1  # where the episode id changes
            np.testing.assert_array_equal(np.flatnonzero(first[1:]) + 1, changes)
            assert np.all(step[changes] == 0)
            assert np.all(np.diff(reward) >= 0)  # insertion order is preserved
            crossed += len(changes) > 0
    assert crossed == 160


def test_every_start_position_is_reachable() -> None:
    lengths, seq_len = [4, 3, 5], 3
    replay = Replay(None, capacity=100, seq_len=seq_len, cross_episodes=True)
    fill(replay, lengths)
    # Global step index = offset of the episode + step within it.
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    starts = []
    for _ in range(50):
        batch = replay.sample(20)
        starts.extend(offsets[batch["reward"][:, 0].astype(int)] + batch["step"][:, 0])
    counts = np.bincount(starts, minlength=sum(lengths) - seq_len + 1)
    assert len(counts) == sum(lengths) - seq_len + 1
    assert counts.min() > 0  # 1000 draws over 10 positions: each expects 100


def test_sequences_stay_inside_one_episode_by_default() -> None:
    """Dreamer's sampling: an episode uniformly among those at least seq_len long, then a
    start uniformly inside it; shorter episodes are never sampled."""
    replay = Replay(None, capacity=100, seq_len=4)
    fill(replay, [3, 6, 4])  # episode 0 is too short; episode 1 has starts 0..2, episode 2 one
    batch = replay.sample(3000)
    episode, start = batch["reward"][:, 0].astype(int), batch["step"][:, 0]
    assert not batch["is_first"][:, 1:].any()  # no sequence runs into another episode
    np.testing.assert_array_equal(batch["reward"], episode[:, None] * np.ones((1, 4)))
    np.testing.assert_array_equal(batch["step"], start[:, None] + np.arange(4))
    assert set(episode) == {1, 2}
    assert abs(np.mean(episode == 1) - 0.5) < 0.05  # episodes uniformly, not by length
    np.testing.assert_array_equal(np.unique(start[episode == 1]), [0, 1, 2])
    assert np.all(start[episode == 2] == 0)


@pytest.mark.parametrize("cross_episodes", [True, False])
def test_not_enough_steps_raises(cross_episodes: bool) -> None:
    replay = Replay(None, capacity=100, seq_len=8, cross_episodes=cross_episodes)
    with pytest.raises(InsufficientDataError):
        replay.sample(1)
    fill(replay, [3, 4])
    with pytest.raises(InsufficientDataError, match="seq_len=8"):
        replay.sample(1)
    replay.add_episode(make_episode(2, 1 if cross_episodes else 8))
    assert replay.sample(1)["image"].shape[1] == 8


def test_capacity_drops_oldest_in_memory_only(tmp_path: Path) -> None:
    replay = Replay(tmp_path, capacity=10, seq_len=2)
    fill(replay, [4, 4, 4])
    assert (replay.num_episodes, replay.num_steps) == (2, 8)
    assert set(replay.sample(50)["reward"].ravel()) <= {1.0, 2.0}
    assert len(npz_files(tmp_path)) == 3
    replay.add_episode(make_episode(3, 20))  # longer than capacity: kept alone
    assert (replay.num_episodes, replay.num_steps) == (1, 20)
    # Reloading keeps only the newest episodes that fit.
    fresh = Replay(tmp_path, capacity=10, seq_len=2)
    assert fresh.load() == 20
    fresh = Replay(tmp_path, capacity=30, seq_len=2)
    assert fresh.load() == 28
    assert kept_ids(fresh) == [1.0, 2.0, 3.0]


def test_atomic_write_and_damaged_files_are_skipped(tmp_path: Path) -> None:
    replay = Replay(tmp_path, capacity=1000, seq_len=2)
    good = [replay.add_episode(make_episode(i, 5)) for i in range(2)]
    assert sorted(tmp_path.iterdir()) == good  # no temp files left behind

    leftover = tmp_path / f".tmp-{good[1].name}.part"
    leftover.write_bytes(good[1].read_bytes()[:50])
    truncated = tmp_path / "99990101T000000000000-aaaaaaaa-5.npz"
    truncated.write_bytes(good[1].read_bytes()[:-40])
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"this is not a zip file")
    invalid = tmp_path / "99990101T000000000001-bbbbbbbb-5.npz"
    np.savez_compressed(invalid, **{k: v for k, v in make_episode(7, 5).items()
                                    if k != "reward"})

    fresh = Replay(tmp_path, capacity=1000, seq_len=2)
    with pytest.warns(ReplayWarning) as record:
        assert fresh.load() == 10
    messages = " ".join(str(w.message) for w in record)
    for path in (leftover, truncated, garbage, invalid):
        assert path.name in messages
        assert path.exists()  # never deleted
    assert kept_ids(fresh) == [0.0, 1.0]


def test_incompatible_file_is_skipped_on_load(tmp_path: Path) -> None:
    replay = Replay(tmp_path, capacity=1000, seq_len=2)
    old = replay.add_episode(make_episode(0, 5))
    other = Replay(tmp_path / "other", capacity=1000, seq_len=2)
    episode = make_episode(1, 5)
    episode["action"] = np.zeros((5, 3), np.float32)
    other.add_episode(episode).replace(tmp_path / "99990101T000000000000-x-5.npz")  # sorts newest
    fresh = Replay(tmp_path, capacity=1000, seq_len=2)
    with pytest.warns(ReplayWarning, match=old.name):
        assert fresh.load() == 5
    assert kept_ids(fresh) == [1.0]  # the newer episode, not the old one


def test_invalid_episodes_are_rejected() -> None:
    replay = Replay(None, capacity=100, seq_len=2)
    good = make_episode(0, 4)
    cases = {
        "missing": {k: v for k, v in good.items() if k != "is_last"},
        "lengths": {**good, "reward": np.zeros(3, np.float32)},
        "first": {**good, "is_first": np.zeros(4, bool)},
        "float image": {**good, "image": good["image"].astype(np.float32)},
        "empty": make_episode(0, 0),
        "key": {**good, "file": np.zeros(4)},
    }
    for name, episode in cases.items():
        with pytest.raises(ValueError):
            replay.add_episode(episode)
    replay.add_episode(good)
    with pytest.raises(ValueError, match="action"):
        replay.add_episode({**good, "action": np.zeros((4, 5), np.float32)})
    assert replay.num_episodes == 1


def test_added_episode_is_copied() -> None:
    replay = Replay(None, capacity=100, seq_len=2)
    episode = make_episode(0, 4)
    replay.add_episode(episode)
    episode["image"][:] = 200
    assert replay.sample(1)["image"].max() == 0


def test_saved_episode_is_sampled_only_once_inserted(tmp_path: Path) -> None:
    """The two halves of add_episode (the overlapped loop writes outside its lock)."""
    replay = Replay(tmp_path, capacity=100, seq_len=2)
    replay.add_episode(make_episode(1, 4))
    arrays, path = replay.save_episode(make_episode(2, 4))
    assert path.is_file() and read_episode(path)["reward"][0] == 2
    assert kept_ids(replay) == [1.0] and replay.num_episodes == 1
    replay.insert_episode(arrays, path)
    assert kept_ids(replay) == [1.0, 2.0] and replay.num_steps == 8


def test_constructor_validation(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        Replay(tmp_path, capacity=5, seq_len=10)
    with pytest.raises(ValueError):
        Replay(tmp_path, capacity=5, seq_len=0)


def test_seed_determinism_and_state_dict_round_trip() -> None:
    def make(seed: int) -> Replay:
        replay = Replay(None, capacity=100, seq_len=4, seed=seed)
        fill(replay, [6, 7, 8])
        return replay

    def starts(replay: Replay) -> list[tuple[float, int]]:
        batch = replay.sample(6)
        return list(zip(batch["reward"][:, 0].tolist(), batch["step"][:, 0].tolist()))

    a, b, c = make(1), make(1), make(2)
    assert [starts(a) for _ in range(3)] == [starts(b) for _ in range(3)]
    assert [starts(a) for _ in range(3)] != [starts(c) for _ in range(3)]

    state = json.loads(json.dumps(a.state_dict()))
    expected = [starts(a) for _ in range(3)]
    resumed = make(5)
    resumed.load_state_dict(state)
    assert [starts(resumed) for _ in range(3)] == expected




def test_the_runs_signature_not_the_newest_file_decides(tmp_path: Path) -> None:
    # A valid episode of another run (another action size) that sorts newest must not make
    # every episode of this run incompatible: the run's own signature says what fits.
    replay = Replay(tmp_path, capacity=1000, seq_len=2)
    good = [replay.add_episode(make_episode(i, 5)) for i in range(2)]
    foreign = make_episode(9, 5)
    foreign["action"] = np.zeros((5, ACTION_DIM + 1), np.float32)
    Replay(tmp_path / "other", capacity=1000, seq_len=2).add_episode(foreign).replace(
        tmp_path / "99990101T000000000000-x-5.npz")
    signature = {key: (value.shape[1:], value.dtype) for key, value in make_episode(0, 1).items()}
    fresh = Replay(tmp_path, capacity=1000, seq_len=2, signature=signature)
    with pytest.warns(ReplayWarning, match="99990101T000000000000"):
        assert fresh.load() == 10
    assert kept_ids(fresh) == [0.0, 1.0]
    fresh.add_episode(make_episode(2, 5))  # new episodes of the run still fit
    with pytest.raises(ValueError, match="action"):
        fresh.add_episode(foreign)
    assert all(path.exists() for path in good)


# ----------------------------------------------------------------------------- online replay


def starts_of(batch: dict) -> list[tuple[int, int]]:
    """(episode id, step) where each sampled sequence begins."""
    return [(int(r), int(s)) for r, s in zip(batch["reward"][:, 0], batch["step"][:, 0])]


def test_online_sequences_come_first_each_once_inside_episodes() -> None:
    replay = Replay(None, capacity=100, seq_len=4, online=True)
    fill(replay, [10, 3])  # the first holds sequences at 0 and 4 (8-9 are left over); the second none
    assert starts_of(replay.sample(1)) == [(0, 0)]
    assert replay.sample(1, online=False)["reward"].shape == (1, 4)  # a report: the queue waits
    batch, positions = replay.sample_with_positions(3)
    assert starts_of(batch)[0] == (0, 4) and positions[0] == (0, 4)
    replay.add_episode(make_episode(2, 8))  # queues 0 and 4
    assert starts_of(replay.sample(2)) == [(2, 0), (2, 4)]


def test_online_sequences_across_episodes_cover_every_step_once() -> None:
    replay = Replay(None, capacity=100, seq_len=4, cross_episodes=True, online=True)
    fill(replay, [3])  # 3 steps: no whole sequence yet
    replay.add_episode(make_episode(1, 6))  # 9 steps: sequences at global 0 and 4, 8 waits
    replay.add_episode(make_episode(2, 5))  # 14 steps: 8 (episode 1, step 5) and nothing at 12
    assert starts_of(replay.sample(3)) == [(0, 0), (1, 1), (1, 5)]


def test_the_online_queue_survives_a_checkpoint_and_an_undone_draw(tmp_path: Path) -> None:
    replay = Replay(tmp_path, capacity=100, seq_len=2, online=True)
    fill(replay, [6, 4])  # queued: (0, 0), (0, 2), (0, 4), (1, 0), (1, 2)
    replay.sample(1)
    drawn = replay.sampling_state()
    replay.sample(2)
    replay.add_episode(make_episode(2, 4))  # the actor may store an episode meanwhile
    replay.restore_sampling(drawn)  # as a stopped run undoes its unused batch
    state = json.loads(json.dumps(replay.state_dict()))
    fresh = Replay(tmp_path, capacity=100, seq_len=2, online=True)
    fresh.load()
    fresh.load_state_dict(state)
    expected = [(0, 2), (0, 4), (1, 0), (1, 2), (2, 0), (2, 2)]
    assert starts_of(fresh.sample(6)) == starts_of(replay.sample(6)) == expected
    assert replay.sampling_state() == replay.sampling_state()  # taking it twice changes nothing


def test_online_sequences_dropped_for_capacity_are_skipped() -> None:
    replay = Replay(None, capacity=10, seq_len=2, online=True)
    fill(replay, [6, 6])  # the first episode is dropped: its 3 queued sequences with it
    assert starts_of(replay.sample(3)) == [(1, 0), (1, 2), (1, 4)]


# ----------------------------------------------------------------------------- writing back


def test_overwrite_writes_each_value_into_the_step_after_across_episodes() -> None:
    replay = Replay(None, capacity=100, seq_len=3, cross_episodes=True)
    for episode_id, length in enumerate([4, 3]):
        replay.add_episode({**make_episode(episode_id, length), "mark": np.zeros(length, np.int32)})
    positions = [(0, 2), (1, 0)]  # (episode, step): episode 0 steps 2-3 then episode 1 step 0; 1: 0-2
    values = np.arange(6, dtype=np.int32).reshape(2, 3) + 100
    assert replay.overwrite(positions, {"mark": values}, shift=1) == 5  # episode 1 ends after 2 of row 1
    batch = replay.sample(200)  # every start position many times
    marks = {(int(r), int(s)): int(m) for r, s, m in zip(*(batch[k].ravel() for k in ("reward", "step", "mark")))}
    assert marks == {(0, 0): 0, (0, 1): 0, (0, 2): 0, (0, 3): 100,
                     (1, 0): 101, (1, 1): 103, (1, 2): 104}  # row 1 wrote over row 0's 102
