"""Episode replay buffer: compressed ``.npz`` episodes on disk, sequence sampling in memory.

An episode is a dict of numpy arrays that share a leading time dimension ``T``::

    image        uint8   [T, H, W, C]  and/or vector observations, float32 [T, D] each
    action       float32 [T, A]   action[t] led to observation t (zeros at t=0)
    reward       float32 [T]
    is_first     bool    [T]      True at t=0
    is_last      bool    [T]
    is_terminal  bool    [T]
    ...          any extra keys are stored and sampled too

Sequences lie inside one episode by default, as in Dreamer: an episode is chosen uniformly
among those at least ``seq_len`` long, then a start uniformly inside it. With
``cross_episodes=True`` they are sampled uniformly over start positions in the concatenation
of all stored episodes (in insertion order), so a sequence may cross episode boundaries; the
next episode's ``is_first=True`` tells the model to reset its state there.

With ``online=True`` (DreamerV3's online replay) every stored step is also queued once, in
consecutive non-overlapping sequences, and training batches take the queued sequences first:
each fresh sequence is trained on soon after it arrives, then sampled uniformly like the rest.

A sampled sequence's position can be kept (`sample_with_positions`) to write values back into
its steps later (`overwrite`), e.g. the latent states a training pass computed for them.

Everything here is host-side numpy; images stay uint8 on disk and in memory.
"""

from __future__ import annotations

import copy
import datetime as dt
import os
import uuid
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from dreamer.faults import crash_point
from dreamer.fileio import fsync_directory, write_synced

Episode = dict[str, np.ndarray]
Signature = dict[str, tuple[tuple[int, ...], np.dtype]]
Position = tuple[int, int]  # (serial number of the episode, first step in it) of a sequence

REQUIRED_KEYS = ("action", "reward", "is_first", "is_last", "is_terminal")
FLAG_KEYS = ("is_first", "is_last", "is_terminal")
# Keys that would clash with the keyword arguments of np.savez_compressed.
_RESERVED_KEYS = frozenset({"file", "allow_pickle"})
_TMP_PREFIX = ".tmp-"
_TMP_SUFFIX = ".part"


class InsufficientDataError(RuntimeError):
    """Raised by :meth:`Replay.sample` when fewer than ``seq_len`` steps are stored."""


class ReplayWarning(UserWarning):
    """Warns about replay files that were skipped while loading."""


# ----------------------------------------------------------------------------- validation


def validate_episode(episode: Mapping[str, Any], *, copy_arrays: bool = True) -> Episode:
    """Check an episode's structure and return it as a dict of C-contiguous numpy arrays.

    Args:
        episode: mapping from key to array-like with a common leading time dimension.
        copy_arrays: copy the arrays (so later changes by the caller cannot leak in).

    Raises:
        ValueError: missing keys, bad key names, mismatched lengths, wrong dtypes or ranks,
            an empty episode, or ``is_first[0]`` not True.
    """
    if not isinstance(episode, Mapping):
        raise ValueError(f"an episode must be a dict of arrays, got {type(episode).__name__}")
    missing = [key for key in REQUIRED_KEYS if key not in episode]
    if missing:
        raise ValueError(f"episode is missing keys {missing}; it has {sorted(episode)}")
    arrays: Episode = {}
    for key, value in episode.items():
        if not isinstance(key, str) or not key.isidentifier() or key in _RESERVED_KEYS:
            raise ValueError(f"invalid episode key {key!r}: use a Python identifier, "
                             f"not one of {sorted(_RESERVED_KEYS)}")
        array = np.array(value, order="C") if copy_arrays else np.ascontiguousarray(value)
        if array.ndim == 0 or array.dtype == object:
            raise ValueError(f"episode[{key!r}] must be a non-object array with a time "
                             f"dimension, got dtype {array.dtype} and shape {array.shape}")
        arrays[key] = array
    _check_lengths_and_types(arrays)
    return arrays


def _check_lengths_and_types(episode: Episode) -> None:
    """Validate the common length, dtypes and ranks of an episode's arrays."""
    length = len(episode["reward"])
    if length == 0:
        raise ValueError("episode is empty (T=0)")
    mismatched = {key: len(value) for key, value in episode.items() if len(value) != length}
    if mismatched:
        raise ValueError(f"all arrays must share the time dimension T={length} of 'reward'; "
                         f"got lengths {mismatched}")
    image = episode.get("image")
    if image is not None and (image.dtype != np.uint8 or image.ndim != 4):
        raise ValueError(f"episode['image'] must be uint8 [T, H, W, C], got {image.dtype} "
                         f"{image.shape}")
    for key in FLAG_KEYS:
        if episode[key].dtype != np.bool_ or episode[key].ndim != 1:
            raise ValueError(f"episode[{key!r}] must be bool [T], got {episode[key].dtype} "
                             f"{episode[key].shape}")
    if episode["reward"].ndim != 1:
        raise ValueError(f"episode['reward'] must be [T], got {episode['reward'].shape}")
    if episode["action"].ndim != 2:
        raise ValueError(f"episode['action'] must be [T, A], got {episode['action'].shape}")
    if not episode["is_first"][0]:
        raise ValueError("episode['is_first'][0] must be True")


def _signature(episode: Episode) -> Signature:
    """Per-key (step shape, dtype): episodes must agree on it to be sampled together."""
    return {key: (value.shape[1:], value.dtype) for key, value in episode.items()}


def _describe_mismatch(expected: Signature, got: Signature) -> str:
    """Human-readable difference between two episode signatures."""
    parts = []
    if set(expected) != set(got):
        parts.append(f"keys {sorted(got)} instead of {sorted(expected)}")
    for key in sorted(set(expected) & set(got)):
        if expected[key] != got[key]:
            parts.append(f"{key}: step shape/dtype {got[key]} instead of {expected[key]}")
    return "; ".join(parts)


# ----------------------------------------------------------------------------- file io


def _write_atomically(path: Path, episode: Episode) -> None:
    """Write ``episode`` to ``path`` as compressed npz via a temp file + fsync + rename."""
    tmp = path.with_name(f"{_TMP_PREFIX}{path.name}{_TMP_SUFFIX}")
    try:
        write_synced(tmp, lambda f: np.savez_compressed(f, **episode))
        crash_point("replay")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)


def read_episode(path: str | Path) -> Episode | None:
    """Read and validate one episode file; warn and return None if it is unusable."""
    try:
        with open(path, "rb") as f:  # own the handle: np.load leaks it on corrupt zips
            data = np.load(f, allow_pickle=False)
            if not isinstance(data, np.lib.npyio.NpzFile):
                raise ValueError("not an .npz archive")
            with data:
                episode = {key: data[key] for key in data.files}  # forces decompression
        return validate_episode(episode, copy_arrays=False)
    except Exception as exc:  # corrupt files must never crash training
        warnings.warn(f"skipping unreadable replay file {path}: {exc!r}", ReplayWarning,
                      stacklevel=2)
        return None


# ----------------------------------------------------------------------------- replay


class Replay:
    """Episode store with a step capacity and uniform fixed-length sequence sampling.

    Args:
        directory: where episodes are saved as ``.npz`` files (created if missing), or None
            to keep them in memory only.
        capacity: maximum number of steps kept in memory; the oldest episodes are dropped
            beyond it (the newest episode is always kept, even if longer than capacity).
        seq_len: length T of sampled sequences.
        seed: seed of the sampling random generator.
        cross_episodes: let sequences run on into the next stored episode (uniform over all
            start positions) instead of staying inside one episode (Dreamer's sampling).
        signature: per key, the step shape and dtype every episode must have (a training run
            gives its environment's, see `dreamer.collect.episode_signature`); None: whatever
            the first stored (when loading: the newest) episode has.
        online: queue every added step once, in consecutive sequences, for `sample` to take
            first (DreamerV3's `replay.online`); episodes read by `load` are not queued.

    Episodes dropped for capacity stay on disk: the replay directory is the run's record.
    """

    def __init__(self, directory: str | Path | None, *, capacity: int, seq_len: int,
                 seed: int = 0, signature: Signature | None = None, cross_episodes: bool = False,
                 online: bool = False) -> None:
        if seq_len < 1:
            raise ValueError(f"seq_len must be >= 1, got {seq_len}")
        if capacity < seq_len:
            raise ValueError(f"capacity ({capacity}) must be >= seq_len ({seq_len})")
        self._directory = None if directory is None else Path(directory)
        if self._directory is not None:
            self._directory.mkdir(parents=True, exist_ok=True)
        self._capacity = int(capacity)
        self._seq_len = int(seq_len)
        self._rng = np.random.default_rng(seed)
        self._cross_episodes = bool(cross_episodes)
        self._expected = None if signature is None else dict(signature)
        self._last_stamp: dt.datetime | None = None
        self._online = bool(online)
        self._queue: list[Position] = []  # online sequences, in the order they arrived
        self._queue_next = 0  # the first of them not yet sampled
        self._cursor: Position | None = None  # where the next online sequence starts (cross_episodes)
        self._first_serial = 0  # serial number of the oldest episode in memory
        self._set_contents([], [])

    # -- public properties -------------------------------------------------------------

    @property
    def num_steps(self) -> int:
        """Total number of steps stored in memory."""
        return int(self._ends[-1]) if len(self._ends) else 0

    @property
    def num_episodes(self) -> int:
        """Number of episodes stored in memory."""
        return len(self._episodes)

    def __len__(self) -> int:
        return self.num_steps

    def __repr__(self) -> str:
        return (f"Replay(directory={self._directory}, episodes={self.num_episodes}, "
                f"steps={self.num_steps}/{self._capacity}, seq_len={self._seq_len})")

    # -- adding and loading ------------------------------------------------------------

    def add_episode(self, episode: Mapping[str, Any]) -> Path | None:
        """Validate, store (and save, if there is a directory) one episode.

        Returns the path of the saved file, or None for a memory-only replay.
        """
        arrays, path = self.save_episode(episode)
        self.insert_episode(arrays, path)
        return path

    def save_episode(self, episode: Mapping[str, Any]) -> tuple[Episode, Path | None]:
        """The first half of `add_episode`: validate and write the file, without touching
        what `sample` reads (a collecting thread does this outside the sampler's lock).
        Returns the arrays and the path for `insert_episode`."""
        arrays = validate_episode(episode)
        if self._signature is not None and _signature(arrays) != self._signature:
            raise ValueError("episode does not match the stored episodes: "
                             + _describe_mismatch(self._signature, _signature(arrays)))
        path = None
        if self._directory is not None:
            path = self._directory / self._new_filename(len(arrays["reward"]))
            _write_atomically(path, arrays)
        return arrays, path

    def insert_episode(self, arrays: Episode, path: Path | None) -> None:
        """The second half of `add_episode`: make a saved episode sampleable."""
        episodes, paths = self._episodes + [arrays], self._paths + [path]
        kept = self._drop_oldest(episodes, paths)
        self._first_serial += len(episodes) - len(kept[0])
        self._set_contents(*kept)
        if self._online:
            self._queue_new(self._first_serial + self.num_episodes - 1)

    def _queue_new(self, serial: int) -> None:
        """Queue the online sequences that the new episode `serial` completes."""
        length = self._seq_len
        if not self._cross_episodes:
            count = len(self._episodes[serial - self._first_serial]["reward"]) // length
            self._queue.extend((serial, k * length) for k in range(count))
            return
        if self._cursor is None or self._cursor[0] < self._first_serial:  # first, or dropped
            self._cursor = (serial, 0)
        start = int(self._begins[self._cursor[0] - self._first_serial]) + self._cursor[1]
        while start + length <= self.num_steps:
            self._queue.append(self._position(start))
            start += length
        self._cursor = self._position(start) if start < self.num_steps else (serial + 1, 0)

    def _position(self, start: int) -> Position:
        """The position of the global step `start` (of the steps in memory, oldest first)."""
        index = int(np.searchsorted(self._ends, start, side="right"))
        return self._first_serial + index, start - int(self._begins[index])

    def load(self) -> int:
        """Replace the in-memory contents with the newest episodes in ``directory``.

        Files are read newest first (by name) until capacity is reached. Unreadable or
        invalid files, and files that do not match the expected keys, shapes and dtypes (the
        `signature`, or the newest episode's), are skipped with a :class:`ReplayWarning`; no
        file is ever deleted here.

        Returns:
            the number of steps loaded.
        """
        if self._directory is None:
            raise ValueError("this Replay has no directory to load episodes from")
        self._warn_about_temp_files()
        episodes: list[Episode] = []
        paths: list[Path | None] = []
        total = 0
        for path in sorted(self._directory.glob("*.npz"), reverse=True):
            episode = read_episode(path) if path.is_file() else None
            if episode is None or not self._compatible(episode, episodes, path):
                continue
            length = len(episode["reward"])
            if episodes and total + length > self._capacity:
                break
            episodes.append(episode)
            paths.append(path)
            total += length
        self._first_serial, self._queue, self._queue_next, self._cursor = 0, [], 0, None
        self._set_contents(episodes[::-1], paths[::-1])
        return total

    # -- sampling ----------------------------------------------------------------------

    def sample(self, batch_size: int, *, online: bool = True) -> dict[str, np.ndarray]:
        """Sample ``batch_size`` sequences of ``seq_len`` consecutive steps; with an online
        replay the queued sequences come first (`online` False: uniform only, for reports).

        Returns:
            dict with the episode keys; each value has shape [B, seq_len, ...] and the
            stored dtype.
        """
        return self.sample_with_positions(batch_size, online=online)[0]

    def sample_with_positions(self, batch_size: int, *, online: bool = True
                              ) -> tuple[dict[str, np.ndarray], list[Position]]:
        """`sample`, and where each sequence lies, for `overwrite`."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        queued = []
        while online and self._queue_next < len(self._queue) and len(queued) < batch_size:
            serial, offset = self._queue[self._queue_next]
            self._queue_next += 1
            if serial >= self._first_serial:  # not dropped for capacity since
                queued.append((serial - self._first_serial, offset))
        first, offsets = self._uniform_starts(batch_size - len(queued))
        starts = queued + list(zip(first.tolist(), offsets.tolist()))
        batch = {key: np.empty((batch_size, self._seq_len, *shape), dtype)
                 for key, (shape, dtype) in self._signature.items()}
        for b, (episode_index, offset) in enumerate(starts):
            for index, src, dst, count in self._segments(episode_index, offset, self._seq_len):
                episode = self._episodes[index]
                for key, out in batch.items():
                    out[b, dst:dst + count] = episode[key][src:src + count]
        return batch, [(self._first_serial + index, offset) for index, offset in starts]

    def _uniform_starts(self, count: int) -> tuple[np.ndarray, np.ndarray]:
        """(episode index, first step) of `count` sequences drawn uniformly, [count] each."""
        total, length = self.num_steps, self._seq_len
        if self._cross_episodes:
            if total < length:
                raise InsufficientDataError(
                    f"replay holds {total} steps in {self.num_episodes} episodes; at least "
                    f"seq_len={length} steps are needed to sample")
            starts = self._rng.integers(0, total - length + 1, size=count)  # [count]
            first = np.searchsorted(self._ends, starts, side="right")  # episode index
            return first, starts - self._begins[first]
        long_enough = np.flatnonzero(self._lengths >= length)
        if not len(long_enough):
            raise InsufficientDataError(
                f"replay holds no episode of at least seq_len={length} steps (longest: "
                f"{int(self._lengths.max(initial=0))}); sequences stay inside one episode "
                f"unless run.cross_episodes is set")
        first = self._rng.choice(long_enough, size=count)  # [count] episode index
        return first, self._rng.integers(0, self._lengths[first] - length + 1)

    def overwrite(self, positions: list[Position], values: Mapping[str, np.ndarray], shift: int = 0) -> int:
        """Write `values[key]` [B, T, ...] into the stored steps of the sequences at `positions`
        (from `sample_with_positions`), step t of row b into step t + `shift` of its sequence,
        in memory only (the files keep what was collected). Steps that are no longer stored,
        or lie beyond the newest step, are skipped. Returns the number of steps written."""
        written, length = 0, next(iter(values.values())).shape[1]
        for b, (serial, offset) in enumerate(positions):
            index, begin = serial - self._first_serial, offset + shift
            if index < 0 or index >= self.num_episodes:
                continue
            for index, src, dst, count in self._segments(index, begin, length):
                for key, value in values.items():
                    self._episodes[index][key][src:src + count] = value[b, dst:dst + count]
                written += count
        return written

    def _segments(self, index: int, offset: int, length: int) -> Iterator[tuple[int, int, int, int]]:
        """Split `length` steps from step `offset` of episode `index` on into (episode index,
        source start, destination start, count), running on into the next episodes; stops at
        the newest stored step."""
        filled = 0
        while index < self.num_episodes and offset >= self._lengths[index]:
            offset -= int(self._lengths[index])
            index += 1
        while filled < length and index < self.num_episodes:
            count = min(int(self._lengths[index]) - offset, length - filled)
            yield index, offset, filled, count
            filled += count
            index, offset = index + 1, 0

    # -- checkpointing -----------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Sampling RNG state and the online queue as plain (JSON-serialisable) Python values;
        positions count episodes back from the newest, which `load` renumbers."""
        end = self._first_serial + self.num_episodes
        relative = lambda position: [position[0] - end, position[1]]
        return {"rng": copy.deepcopy(self._rng.bit_generator.state),
                "online_queue": [relative(position) for position in self._queue[self._queue_next:]],
                "online_cursor": None if self._cursor is None else relative(self._cursor)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the sampling RNG state and online queue saved by :meth:`state_dict`."""
        rng_state = dict(state["rng"])
        expected = type(self._rng.bit_generator).__name__
        if rng_state.get("bit_generator") != expected:
            raise ValueError(f"replay RNG state is for {rng_state.get('bit_generator')!r}, "
                             f"expected {expected!r}")
        self._rng.bit_generator.state = rng_state
        end = self._first_serial + self.num_episodes
        absolute = lambda position: (end + int(position[0]), int(position[1]))
        self._queue = [absolute(position) for position in state.get("online_queue", [])]
        self._queue_next = 0
        cursor = state.get("online_cursor")
        self._cursor = None if cursor is None else absolute(cursor)

    def sampling_state(self) -> tuple:
        """The sampler's state in this process (RNG and online queue), to undo the draws after
        it with `restore_sampling` while episodes may still be added. The queued sequences drawn
        before it are forgotten (no undo reaches them), so the queue does not grow with the run."""
        del self._queue[:self._queue_next]
        self._queue_next = 0
        return copy.deepcopy(self._rng.bit_generator.state), self._queue_next

    def restore_sampling(self, state: tuple) -> None:
        self._rng.bit_generator.state, self._queue_next = state

    # -- internals ---------------------------------------------------------------------

    def _set_contents(self, episodes: list[Episode], paths: list[Path | None]) -> None:
        """Install a new episode list and rebuild the sampling index."""
        self._episodes = episodes
        self._paths = paths
        self._signature: Signature | None = (
            self._expected if self._expected is not None else _signature(episodes[0]) if episodes else None)
        self._lengths = np.array([len(ep["reward"]) for ep in episodes], np.int64)  # [E]
        self._ends = np.cumsum(self._lengths)  # [E] exclusive end of each episode
        self._begins = self._ends - self._lengths  # [E] first global step of each episode

    def _drop_oldest(self, episodes: list[Episode], paths: list[Path | None]
                     ) -> tuple[list[Episode], list[Path | None]]:
        """Drop the oldest episodes while over capacity, keeping at least the newest."""
        total = sum(len(ep["reward"]) for ep in episodes)
        drop = 0
        while total > self._capacity and drop < len(episodes) - 1:
            total -= len(episodes[drop]["reward"])
            drop += 1
        return episodes[drop:], paths[drop:]

    def _compatible(self, episode: Episode, newer: list[Episode], path: Path) -> bool:
        """While loading: does ``episode`` match the expected signature (or, without one, the
        newer episodes already accepted)?"""
        if self._expected is None and not newer:
            return True
        expected = self._expected if self._expected is not None else _signature(newer[0])
        got = _signature(episode)
        if got == expected:
            return True
        warnings.warn(f"skipping replay file {path}: "
                      + _describe_mismatch(expected, got), ReplayWarning, stacklevel=3)
        return False

    def _warn_about_temp_files(self) -> None:
        """Leftover temp files come from interrupted writes: report, ignore, keep them."""
        assert self._directory is not None
        leftovers = sorted(self._directory.glob(f"{_TMP_PREFIX}*{_TMP_SUFFIX}"))
        if leftovers:
            names = ", ".join(p.name for p in leftovers[:3])
            warnings.warn(f"ignoring {len(leftovers)} incomplete replay file(s) in "
                          f"{self._directory}: {names}", ReplayWarning, stacklevel=3)

    def _new_filename(self, length: int) -> str:
        """Unique name whose lexicographic order follows insertion order."""
        now = dt.datetime.now(dt.timezone.utc)
        if self._last_stamp is not None and now <= self._last_stamp:
            now = self._last_stamp + dt.timedelta(microseconds=1)
        self._last_stamp = now
        return f"{now:%Y%m%dT%H%M%S%f}-{uuid.uuid4().hex[:8]}-{length}.npz"
