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

    Episodes dropped for capacity stay on disk: the replay directory is the run's record.
    """

    def __init__(self, directory: str | Path | None, *, capacity: int, seq_len: int,
                 seed: int = 0, signature: Signature | None = None, cross_episodes: bool = False) -> None:
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
        self._set_contents(*self._drop_oldest(episodes, paths))

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
        self._set_contents(episodes[::-1], paths[::-1])
        return total

    # -- sampling ----------------------------------------------------------------------

    def sample(self, batch_size: int) -> dict[str, np.ndarray]:
        """Sample ``batch_size`` sequences of ``seq_len`` consecutive steps.

        Returns:
            dict with the episode keys; each value has shape [B, seq_len, ...] and the
            stored dtype.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        total, length = self.num_steps, self._seq_len
        if self._cross_episodes:
            if total < length:
                raise InsufficientDataError(
                    f"replay holds {total} steps in {self.num_episodes} episodes; at least "
                    f"seq_len={length} steps are needed to sample")
            starts = self._rng.integers(0, total - length + 1, size=batch_size)  # [B]
            first = np.searchsorted(self._ends, starts, side="right")  # [B] episode index
            offsets = starts - self._begins[first]  # [B] step within that episode
        else:
            long_enough = np.flatnonzero(self._lengths >= length)
            if not len(long_enough):
                raise InsufficientDataError(
                    f"replay holds no episode of at least seq_len={length} steps (longest: "
                    f"{int(self._lengths.max(initial=0))}); sequences stay inside one episode "
                    f"unless train.cross_episodes is set")
            first = self._rng.choice(long_enough, size=batch_size)  # [B] episode index
            offsets = self._rng.integers(0, self._lengths[first] - length + 1)  # [B]
        batch = {key: np.empty((batch_size, length, *shape), dtype)
                 for key, (shape, dtype) in self._signature.items()}
        for b in range(batch_size):
            for index, src, dst, count in self._segments(int(first[b]), int(offsets[b])):
                episode = self._episodes[index]
                for key, out in batch.items():
                    out[b, dst:dst + count] = episode[key][src:src + count]
        return batch

    def _segments(self, index: int, offset: int) -> Iterator[tuple[int, int, int, int]]:
        """Split one sequence into (episode index, source start, destination start, count)."""
        filled = 0
        while filled < self._seq_len:
            count = min(int(self._lengths[index]) - offset, self._seq_len - filled)
            yield index, offset, filled, count
            filled += count
            index, offset = index + 1, 0

    # -- checkpointing -----------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Sampling RNG state as plain (JSON-serialisable) Python values."""
        return {"rng": copy.deepcopy(self._rng.bit_generator.state)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the sampling RNG state saved by :meth:`state_dict`."""
        rng_state = dict(state["rng"])
        expected = type(self._rng.bit_generator).__name__
        if rng_state.get("bit_generator") != expected:
            raise ValueError(f"replay RNG state is for {rng_state.get('bit_generator')!r}, "
                             f"expected {expected!r}")
        self._rng.bit_generator.state = rng_state

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
