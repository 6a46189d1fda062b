"""Training logs: ``metrics.jsonl`` + TensorBoard scalars, GIF videos, a tqdm progress bar.

Scalars are accumulated with :meth:`Logger.scalar` and written by :meth:`Logger.write`
as one JSON object per line (``{"step": 1000, "train/return": 12.5, ...}``) and as
TensorBoard scalars. Non-finite values are written to JSON as ``null`` so every line is
valid JSON. Videos become animated GIFs under ``logdir/videos`` and GIF image summaries
in TensorBoard (which animates them); no moviepy is needed.
"""

from __future__ import annotations

import io
import json
import math
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any, TextIO

import numpy as np
from PIL import Image
from tqdm import tqdm

from dreamer.faults import crash_point
from dreamer.fileio import write_synced

METRICS_FILE = "metrics.jsonl"
VIDEO_DIR = "videos"


# ----------------------------------------------------------------------------- helpers


def to_uint8_frames(frames: np.ndarray) -> np.ndarray:
    """Convert frames [T, H, W, C] (C in 1 or 3; uint8, or float in [0, 1]) to uint8 RGB."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] not in (1, 3) or frames.shape[0] == 0:
        raise ValueError(f"video frames must have shape [T, H, W, 3] (or [T, H, W, 1]) "
                         f"with T >= 1, got {frames.shape}")
    if frames.dtype != np.uint8:
        if not np.issubdtype(frames.dtype, np.floating):
            raise ValueError(f"video frames must be uint8 or float in [0, 1], "
                             f"got {frames.dtype}")
        frames = np.nan_to_num(frames, nan=0.0)
        frames = np.round(np.clip(frames, 0.0, 1.0) * 255.0).astype(np.uint8)
    if frames.shape[-1] == 1:
        frames = np.repeat(frames, 3, axis=-1)
    return np.ascontiguousarray(frames)  # [T, H, W, 3] uint8


def encode_gif(frames: np.ndarray, fps: int) -> bytes:
    """Encode uint8 frames [T, H, W, 3] as an endlessly looping animated GIF.

    Note that Pillow merges identical consecutive frames into one longer frame.
    """
    images = [Image.fromarray(frame) for frame in frames]
    duration_ms = max(int(round(1000 / fps)), 20)  # browsers slow down faster GIFs
    buffer = io.BytesIO()
    images[0].save(buffer, format="GIF", save_all=True, append_images=images[1:],
                   duration=duration_ms, loop=0)
    return buffer.getvalue()


def _json_value(value: float) -> float | None:
    """JSON cannot hold NaN or infinities: write them as null."""
    return value if math.isfinite(value) else None


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """Parse a ``metrics.jsonl`` file (or the one in a log directory) into a list of dicts.

    A truncated last line (from a crash mid-write) is skipped silently; other undecodable
    lines are skipped with a warning.
    """
    path = Path(path)
    if path.is_dir():
        path = path / METRICS_FILE
    lines = path.read_text(encoding="utf-8").splitlines()
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if number != len(lines):
                warnings.warn(f"{path}:{number}: skipping undecodable line", stacklevel=2)
    return records


def truncate_metrics(path: str | Path, size: int) -> None:
    """Cut ``metrics.jsonl`` back to its first ``size`` bytes (its length at a checkpoint), so
    that a resumed run rewrites the steps after it instead of duplicating them. The shorter
    copy replaces the file atomically: a crash here leaves the old or the new file, whole."""
    path = Path(path)
    if not path.exists() or path.stat().st_size <= size:
        return
    with open(path, "rb") as f:
        kept = f.read(size)
    tmp = path.with_name(f".{path.name}.part")
    write_synced(tmp, kept)
    os.replace(tmp, path)


# ----------------------------------------------------------------------------- logger


class Logger:
    """Accumulates scalars and videos and writes them at a given step.

    Args:
        logdir: output directory (created if missing).
        tensorboard: also write TensorBoard event files into ``logdir``.
        console: also print each write as one line (through tqdm, so bars stay intact).
        purge_step: when resuming from a checkpoint, the first step not covered by it:
            TensorBoard hides what earlier event files logged from this step on.
    """

    def __init__(self, logdir: str | Path, *, tensorboard: bool = True,
                 console: bool = False, purge_step: int | None = None) -> None:
        self.logdir = Path(logdir)
        self.logdir.mkdir(parents=True, exist_ok=True)
        self._console = console
        self._sums: dict[str, float] = {}
        self._counts: dict[str, int] = {}
        self._videos: dict[str, tuple[np.ndarray, int]] = {}
        self._metrics: TextIO | None = self._open_metrics(self.logdir / METRICS_FILE)
        self._writer = EventFile(self.logdir, purge_step) if tensorboard else None

    @staticmethod
    def _open_metrics(path: Path) -> TextIO:
        """Open for appending; end a line left unfinished by a crash so it stays separate."""
        unfinished = False
        if path.exists() and path.stat().st_size > 0:
            with open(path, "rb") as f:
                f.seek(-1, os.SEEK_END)
                unfinished = f.read(1) != b"\n"
        handle = open(path, "a", encoding="utf-8")
        if unfinished:
            handle.write("\n")
        return handle

    def flush(self) -> None:
        """Everything written so far onto disk (metrics and TensorBoard events)."""
        if self._metrics is not None:
            self._metrics.flush()
        if self._writer is not None:
            self._writer.flush()

    def metrics_size(self) -> int:
        """Bytes written to ``metrics.jsonl`` so far (every write ends with a whole line)."""
        if self._metrics is None:
            raise RuntimeError("Logger is closed")
        self._metrics.flush()
        return os.fstat(self._metrics.fileno()).st_size

    # -- accumulating ------------------------------------------------------------------

    def scalar(self, name: str, value: float) -> None:
        """Add a value for the next write; several values for one name are averaged."""
        self._check_name(name)
        self._sums[name] = self._sums.get(name, 0.0) + float(value)
        self._counts[name] = self._counts.get(name, 0) + 1

    def scalars(self, mapping: dict[str, float]) -> None:
        """Add several scalars (see :meth:`scalar`)."""
        for name, value in mapping.items():
            self.scalar(name, value)

    def video(self, name: str, frames: np.ndarray, fps: int = 20) -> None:
        """Add a video for the next write: frames uint8 [T, H, W, 3] or float in [0, 1]."""
        self._check_name(name)
        if fps <= 0:
            raise ValueError(f"fps must be positive, got {fps}")
        self._videos[name] = (to_uint8_frames(frames), int(fps))

    @staticmethod
    def _check_name(name: str) -> None:
        if not isinstance(name, str) or not name or name == "step":
            raise ValueError(f"invalid metric name {name!r}")

    # -- writing -----------------------------------------------------------------------

    def write(self, step: int) -> None:
        """Write everything accumulated since the last write at ``step``, then reset."""
        if self._metrics is None:
            raise RuntimeError("Logger is closed")
        step = int(step)
        means = {name: self._sums[name] / self._counts[name] for name in self._sums}
        videos = self._videos
        self._sums, self._counts, self._videos = {}, {}, {}
        if means:
            self._write_scalars(step, means)
        for name, (frames, fps) in videos.items():
            self._write_video(step, name, frames, fps)
        if self._writer is not None and (means or videos):
            self._writer.flush()

    def _write_scalars(self, step: int, means: dict[str, float]) -> None:
        """One JSON line (flushed and synced), TensorBoard scalars, optional console line."""
        record = {"step": step, **{name: _json_value(v) for name, v in means.items()}}
        assert self._metrics is not None
        crash_point("metrics")
        self._metrics.write(json.dumps(record, allow_nan=False) + "\n")
        self._metrics.flush()
        os.fsync(self._metrics.fileno())
        if self._writer is not None:
            for name, value in means.items():
                self._writer.scalar(name, value, step)
        if self._console:
            text = " | ".join(f"{name} {value:.4g}" for name, value in means.items())
            tqdm.write(f"[{step}] {text}", file=sys.stdout)

    def _write_video(self, step: int, name: str, frames: np.ndarray, fps: int) -> None:
        """Save a GIF file and an animated GIF image summary in TensorBoard."""
        gif = encode_gif(frames, fps)
        video_dir = self.logdir / VIDEO_DIR
        video_dir.mkdir(exist_ok=True)
        (video_dir / f"{name.replace('/', '_')}_{step:09d}.gif").write_bytes(gif)
        if self._writer is not None:
            self._writer.gif(name, gif, frames.shape[1:], step)

    def close(self) -> None:
        """Close the files; anything accumulated but not written is discarded."""
        if self._metrics is not None:
            self._metrics.close()
            self._metrics = None
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __enter__(self) -> Logger:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class EventFile:
    """A TensorBoard event file written in the caller's thread, with tensorboardX's
    `EventsWriter`. (tensorboardX's SummaryWriter writes from a thread of its own: when a write
    fails, e.g. on a full disk, that thread dies and the next flush waits for it forever. Here
    the error is raised where the training loop can stop cleanly.)

    `purge_step`: when resuming, TensorBoard hides what earlier event files logged from it on.
    """

    def __init__(self, logdir: Path, purge_step: int | None = None):
        from tensorboardX.event_file_writer import EventsWriter  # slow import: only when needed
        from tensorboardX.proto.event_pb2 import Event, SessionLog
        from tensorboardX.proto.summary_pb2 import Summary
        from tensorboardX.summary import scalar

        self._event, self._summary, self._scalar = Event, Summary, scalar
        self._events = EventsWriter(str(logdir / "events"))  # events.out.tfevents.<time>.<host>
        if purge_step is not None:
            self._events.write_event(Event(step=purge_step, wall_time=time.time(),
                                           session_log=SessionLog(status=SessionLog.START)))

    def _write(self, summary: Any, step: int) -> None:
        self._events.write_event(self._event(summary=summary, step=int(step), wall_time=time.time()))

    def scalar(self, name: str, value: float, step: int) -> None:
        self._write(self._scalar(name, value), step)

    def gif(self, name: str, gif: bytes, shape: tuple[int, int, int], step: int) -> None:
        """An animated GIF as an image summary (TensorBoard animates it); shape [H, W, C]."""
        height, width, channels = shape
        image = self._summary.Image(height=height, width=width, colorspace=channels, encoded_image_string=gif)
        self._write(self._summary(value=[self._summary.Value(tag=name, image=image)]), step)

    def flush(self) -> None:
        self._events.flush()

    def close(self) -> None:
        self._events.close()


# ----------------------------------------------------------------------------- progress


class Progress:
    """Console progress bar over environment steps: count, steps/s, last return, ETA.

    Args:
        total_steps: target number of environment steps.
        initial: steps already done (e.g. when resuming).
        mininterval: minimum seconds between redraws; by default 1 s on a terminal and
            60 s otherwise, so redirected logs are not flooded.
        disable: hide the bar entirely.
    """

    def __init__(self, total_steps: int, initial: int = 0, *,
                 mininterval: float | None = None, disable: bool = False) -> None:
        if mininterval is None:
            mininterval = 1.0 if sys.stderr.isatty() else 60.0
        self._bar = tqdm(total=total_steps, initial=initial, desc="env steps", unit="step",
                         unit_scale=True, mininterval=mininterval, dynamic_ncols=True,
                         smoothing=0.05, disable=disable)
        self._mininterval, self._drawn = mininterval, time.monotonic()

    @property
    def step(self) -> int:
        """The step the bar shows."""
        return self._bar.n

    def update(self, step: int, last_return: float | None = None) -> None:
        """Move the bar to ``step`` and show the latest episode return, if any."""
        if last_return is not None:
            self._bar.set_postfix_str(f"return {float(last_return):.1f}", refresh=False)
        delta = int(step) - self._bar.n
        if delta > 0:
            self._bar.update(delta)

    def burst(self, done: int, owed: int, seconds_left: float) -> None:
        """Show the updates done of a burst's `owed` and the time the burst has left (redrawn
        at most every `mininterval` seconds: the step count, which redraws the bar, stands
        still during a burst)."""
        minutes, seconds = divmod(int(seconds_left), 60)
        self._bar.set_description_str(f"updates {done}/{owed} ({minutes}:{seconds:02d} left)"
                                      if done < owed else "env steps", refresh=False)
        if time.monotonic() - self._drawn >= self._mininterval:
            self._bar.refresh()
            self._drawn = time.monotonic()

    def close(self) -> None:
        """Draw the final state and release the terminal line."""
        self._bar.close()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
