"""Checkpoints: everything a run needs to continue, written atomically, the newest K kept.

    LOGDIR/checkpoints/ckpt-<step>/
        state.msgpack   the agent's train state pytree (parameters, optimizer states, PRNG key,
                        update counter, Plan2Explore's phase), flax msgpack of host arrays
        host.json       what lives outside the jitted state: step, episode and update
                        counters, the evaluation schedule, host RNG states, the replay's
                        sampling RNG, metrics.jsonl's length, the run's resolved config,
                        the library version and the sha256 digest of state.msgpack

A checkpoint is written into `checkpoints/tmp-<random>/`, fsynced, then renamed to its final
name, which is atomic: a crash at any moment leaves either the complete checkpoint or a tmp-
directory that restore ignores and the next save removes. Restore takes the newest checkpoint
whose digest verifies and whose host.json has every key of a training run with the right type
(`RUN_SCHEMA`), and skips (with a warning) any that does not. No pickle anywhere: the state is
msgpack of plain arrays, restored into the structure of a freshly built state. The config in
host.json makes a checkpoint self-describing: resume compares the command's config with it,
and with config.yaml, so a run whose config.yaml is gone is still checked.

A second save at the same step (an interrupt right after a periodic save) is named
`ckpt-<step>.1`, `.2`, ...: names sort by (step, index).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
import time
import uuid
from pathlib import Path
from typing import Any, Callable

import jax
import numpy as np
from flax import serialization

from dreamer import __version__
from dreamer.config import Config, config_from_dict
from dreamer.saved_config import RESUME_SAFE_KEYS, differing_keys, flatten, load_saved_config
from dreamer.errors import CheckpointError, ConfigError
from dreamer.faults import crash_point
from dreamer.fileio import fsync_directory, write_synced

FORMAT = 6  # bump when the layout of state.msgpack or host.json changes incompatibly (3: the paper decoder, Keras GRU; 4: numbered prior layers; 5: the critic named critic; 6: every layer named explicitly)
CHECKPOINT_DIR = "checkpoints"
STATE_FILE = "state.msgpack"
HOST_FILE = "host.json"
_NAME = re.compile(r"ckpt-(\d+)(?:\.(\d+))?")
_TMP_PREFIX = "tmp-"
_SET_ASIDE_PREFIX = "corrupted-"


class CorruptCheckpoint(Exception):
    """A checkpoint directory that cannot be used (restore skips it)."""


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    path: Path
    host: dict  # host.json
    state_bytes: bytes  # state.msgpack, verified against the digest

    @property
    def step(self) -> int:
        return int(self.host["step"])


@dataclasses.dataclass(frozen=True)
class Resume:
    """What a run finds in its logdir: the checkpoint to continue from (None: start fresh)
    and the newer checkpoint directories skipped as corrupted, with the reason."""

    checkpoint: Checkpoint | None
    skipped: list[tuple[Path, str]]


# ----------------------------------------------------------------------------- saving

def save(root: Path, state: Any, host: dict, keep: int) -> Path:
    """Write `state` (a pytree of arrays) and `host` (JSON-serialisable, with 'step') as the
    newest checkpoint under `root`, then delete all but the newest `keep`."""
    root.mkdir(parents=True, exist_ok=True)
    _remove_leftovers(root)
    data = serialization.to_bytes(jax.device_get(state))
    host = {**host, "format": FORMAT, "version": __version__, "time": time.time(),
            "state_bytes": len(data), "digest": _digest(data)}
    tmp = root / f"{_TMP_PREFIX}{uuid.uuid4().hex[:12]}"
    tmp.mkdir()
    try:
        write_synced(tmp / STATE_FILE, data)
        crash_point("checkpoint")
        write_synced(tmp / HOST_FILE, json.dumps(host, indent=1).encode())
        fsync_directory(tmp)
        final = root / _free_name(root, int(host["step"]))
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fsync_directory(root)
    prune(root, keep)
    return final


def prune(root: Path, keep: int) -> None:
    """Delete all but the newest `keep` checkpoints. Each is first renamed to a tmp- name, so
    a crash half-way through a deletion never leaves a partial ckpt- directory behind."""
    for _, path in list_checkpoints(root)[:-keep]:
        doomed = root / f"{_TMP_PREFIX}{path.name}-{uuid.uuid4().hex[:6]}"
        os.replace(path, doomed)
        shutil.rmtree(doomed, ignore_errors=True)


def _free_name(root: Path, step: int) -> str:
    taken = [index for (s, index), _ in list_checkpoints(root) if s == step]
    return f"ckpt-{step}" if not taken else f"ckpt-{step}.{max(taken) + 1}"


def _remove_leftovers(root: Path) -> None:
    """tmp- directories are unfinished writes or deletions of a process that died."""
    for path in root.glob(f"{_TMP_PREFIX}*"):
        shutil.rmtree(path, ignore_errors=True)


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# ----------------------------------------------------------------------------- finding

def list_checkpoints(root: Path) -> list[tuple[tuple[int, int], Path]]:
    """((step, index), path) of every ckpt- directory under `root`, oldest first."""
    if not root.is_dir():
        return []
    found = []
    for path in root.iterdir():
        match = _NAME.fullmatch(path.name)
        if match and path.is_dir():
            found.append(((int(match[1]), int(match[2] or 0)), path))
    return sorted(found)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# What host.json must hold: every checkpoint's keys, then those a training run writes.
BASE_SCHEMA: dict[str, Callable[[Any], bool]] = {
    "step": lambda v: _is_int(v) and v >= 0,
    "digest": lambda v: isinstance(v, str),
}
RUN_SCHEMA: dict[str, Callable[[Any], bool]] = {
    **BASE_SCHEMA,
    "episodes": lambda v: _is_int(v) and v >= 0,
    "scheduled_updates": lambda v: _is_int(v) and v >= 0,
    "train_start": lambda v: v is None or _is_int(v),
    "nonfinite_streak": lambda v: _is_int(v) and v >= 0,
    "pending_metrics": lambda v: isinstance(v, dict),
    "rng": lambda v: isinstance(v, dict),
    "actor_key": lambda v: isinstance(v, list) and all(_is_int(x) for x in v),
    "replay": lambda v: isinstance(v, dict) and isinstance(v.get("rng"), dict),
    "agent_spec": lambda v: (isinstance(v, dict) and isinstance(v.get("name"), str)
                             and _is_int(v.get("action_size")) and isinstance(v.get("discrete"), bool)
                             and _is_space(v.get("obs_space", []))),
    "metrics_bytes": lambda v: _is_int(v) and v >= 0,
    "config": lambda v: isinstance(v, dict),
}


def _is_space(value: Any) -> bool:
    """The JSON form of an observation space: [[key, [dims...], dtype string], ...]."""
    return isinstance(value, list) and all(
        isinstance(item, list) and len(item) == 3 and isinstance(item[0], str)
        and isinstance(item[1], list) and all(_is_int(n) and n > 0 for n in item[1])
        and item[2] in ("|u1", "<f4") for item in value)


def check_schema(host: Any, schema: dict[str, Callable[[Any], bool]]) -> None:
    """Raise CorruptCheckpoint naming the first key of `schema` that `host` lacks or that
    has the wrong type."""
    if not isinstance(host, dict):
        raise CorruptCheckpoint(f"{HOST_FILE} is not a JSON object")
    for key, valid in schema.items():
        if key not in host:
            raise CorruptCheckpoint(f"{HOST_FILE} lacks '{key}'")
        if not valid(host[key]):
            raise CorruptCheckpoint(f"{HOST_FILE} has an invalid '{key}': {str(host[key])[:60]!r}")


def read(path: Path, schema: dict[str, Callable[[Any], bool]] = BASE_SCHEMA) -> Checkpoint:
    """Read and verify one checkpoint directory. Raises CorruptCheckpoint if it is unusable
    (unreadable, not matching `schema` or its digest) and CheckpointError if it is intact but
    from an incompatible version."""
    try:
        host = json.loads((path / HOST_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:  # UnicodeDecodeError and JSONDecodeError included
        raise CorruptCheckpoint(f"cannot read {HOST_FILE}: {_reason(err)}") from None
    check_schema(host, BASE_SCHEMA)
    check_version(host, path)
    check_schema(host, schema)
    try:
        data = (path / STATE_FILE).read_bytes()
    except OSError as err:
        raise CorruptCheckpoint(f"cannot read {STATE_FILE}: {_reason(err)}") from None
    if _digest(data) != host["digest"]:
        raise CorruptCheckpoint(f"{STATE_FILE} does not match its digest ({len(data)} bytes, "
                                f"{host.get('state_bytes', '?')} written): truncated or modified")
    return Checkpoint(path, host, data)


def check_version(host: dict, path: Path) -> None:
    """Checkpoints load across patch versions of the library with the same format only."""
    version, fmt = str(host.get("version")), host.get("format")
    if fmt != FORMAT or version.split(".")[:2] != __version__.split(".")[:2]:
        raise CheckpointError(
            f"checkpoint '{path}' was written by dreamer-jax {version} (checkpoint format {fmt}); "
            f"this is dreamer-jax {__version__} (format {FORMAT}): resume it with that version "
            "or choose another --logdir")


def find_latest(root: Path, schema: dict[str, Callable[[Any], bool]] = BASE_SCHEMA) -> Resume:
    """The newest verified checkpoint under `root`. Corrupted ones are skipped; if there are
    checkpoints and none is usable, CheckpointError (nothing is changed on disk)."""
    skipped: list[tuple[Path, str]] = []
    for _, path in reversed(list_checkpoints(root)):
        try:
            return Resume(read(path, schema), skipped)
        except CorruptCheckpoint as err:
            if path.is_dir():  # else pruned by a running trainer meanwhile: not corrupted
                skipped.append((path, str(err)))
    if skipped:
        path, reason = skipped[0]
        raise CheckpointError(
            f"corrupted checkpoint '{path}' ({reason}), and no older valid one "
            f"({len(skipped)} checked); move '{root}' away to start from scratch (the replay "
            "is kept) or choose another --logdir")
    return Resume(None, [])


def set_aside(skipped: list[tuple[Path, str]]) -> None:
    """Rename corrupted checkpoints out of the ckpt- namespace (kept for inspection), so that
    they neither shadow nor outlast the checkpoints the resumed run writes."""
    for path, _ in skipped:
        os.replace(path, path.with_name(f"{_SET_ASIDE_PREFIX}{path.name}-{uuid.uuid4().hex[:6]}"))


# ----------------------------------------------------------------------------- restoring

def restore_state(template: Any, checkpoint: Checkpoint) -> Any:
    """The saved state in the structure of `template` (a freshly built state, or its
    `jax.eval_shape`), as host (numpy) arrays. Shapes and dtypes must match the template."""
    try:
        state = serialization.from_bytes(template, checkpoint.state_bytes)
    except Exception as err:  # msgpack or structure errors: the bytes do not fit this agent
        raise CheckpointError(f"checkpoint '{checkpoint.path}' does not fit this agent "
                              f"({_reason(err)}); choose another --logdir") from None
    expected, got = jax.tree.leaves_with_path(template), jax.tree.leaves_with_path(state)
    if jax.tree.structure(template) != jax.tree.structure(state):
        raise CheckpointError(f"checkpoint '{checkpoint.path}' has another state structure than "
                              "this agent; choose another --logdir")
    for (where, want), (_, have) in zip(expected, got):
        have = np.asarray(have)
        if tuple(have.shape) != tuple(want.shape) or have.dtype != np.dtype(want.dtype):
            raise CheckpointError(
                f"checkpoint '{checkpoint.path}' holds {jax.tree_util.keystr(where)} as "
                f"{have.dtype}{list(have.shape)}, this agent needs {np.dtype(want.dtype)}"
                f"{list(want.shape)}; choose another --logdir")
    return state


# ----------------------------------------------------------------------------- resuming

def prepare_resume(config: Config, logdir: Path) -> Resume:
    """Check that `config` may continue the run in `logdir` and find its checkpoint. Raises
    ConfigError naming the keys that differ from the saved config (other than the safe ones),
    CheckpointError for corrupted or incompatible checkpoints. Reads only."""
    saved_path = logdir / "config.yaml"
    if saved_path.is_file():
        _check_same_run(load_saved_config(saved_path), config, logdir)
    resume = find_latest(logdir / CHECKPOINT_DIR, RUN_SCHEMA)
    if resume.checkpoint is not None:  # the config the checkpoint was trained with
        _check_same_run(checkpoint_config(resume.checkpoint), config, logdir)
    return resume


def checkpoint_config(ckpt: Checkpoint) -> Config:
    """The resolved config a checkpoint was trained with."""
    try:
        return config_from_dict(ckpt.host["config"])
    except ConfigError as err:
        raise CheckpointError(f"checkpoint '{ckpt.path}' holds a config this version cannot "
                              f"read ({err}); choose another --logdir") from None


def _check_same_run(saved: Config, config: Config, logdir: Path) -> None:
    diff = differing_keys(saved, config)
    if diff:
        old, new = flatten(saved.to_dict()), flatten(config.to_dict())
        changes = ", ".join(f"{key} (saved {old.get(key)!r}, now {new[key]!r})" for key in diff)
        raise ConfigError(
            f"logdir '{logdir}' holds a run with another config: {changes}; rerun with the "
            "saved values or choose another --logdir (a rerun may change only "
            f"{', '.join(sorted(RESUME_SAFE_KEYS))})")


def _reason(err: BaseException) -> str:
    text = str(err).splitlines()[0] if str(err) else ""
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


__all__ = ["CHECKPOINT_DIR", "Checkpoint", "Resume", "find_latest", "list_checkpoints",
           "prepare_resume", "prune", "read", "restore_state", "save", "set_aside"]
