"""Tests for dreamer.logger: metrics.jsonl, TensorBoard events, GIF videos, progress bar."""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tensorboardX.proto import event_pb2

from dreamer.logger import Logger, Progress, read_metrics


def event_files(logdir: Path) -> list[Path]:
    return list(logdir.glob("events.out.tfevents.*"))


def read_summaries(logdir: Path) -> list[tuple[int, event_pb2.Summary.Value]]:
    """(step, summary value) pairs from the TFRecord event file in ``logdir``."""
    (path,) = event_files(logdir)
    data, pos, values = path.read_bytes(), 0, []
    while pos < len(data):
        (length,) = struct.unpack("<Q", data[pos:pos + 8])  # then 4 bytes of length crc
        event = event_pb2.Event.FromString(data[pos + 12:pos + 12 + length])
        values.extend((event.step, value) for value in event.summary.value)
        pos += 12 + length + 4  # record + 4 bytes of data crc
    return values


def test_metrics_jsonl_lines(tmp_path: Path) -> None:
    with Logger(tmp_path, tensorboard=False) as logger:
        logger.scalar("train/return", 1.5)
        logger.scalars({"model/kl": np.float32(0.25), "eval/return": 3})
        logger.write(10)
        logger.write(15)  # nothing accumulated: no line
        logger.scalar("train/return", 2.0)
        logger.scalar("train/return", 4.0)  # averaged with the previous value
        logger.write(20)
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == [
        {"step": 10, "train/return": 1.5, "model/kl": 0.25, "eval/return": 3.0},
        {"step": 20, "train/return": 3.0},
    ]
    assert read_metrics(tmp_path) == read_metrics(tmp_path / "metrics.jsonl")
    assert event_files(tmp_path) == []


def test_non_finite_values_give_valid_json(tmp_path: Path) -> None:
    with Logger(tmp_path, tensorboard=False) as logger:
        logger.scalars({"a": math.nan, "b": math.inf, "c": -math.inf, "d": 1.0})
        logger.write(1)
    line = (tmp_path / "metrics.jsonl").read_text().strip()
    record = json.loads(line, parse_constant=lambda name: pytest.fail(f"got {name}"))
    assert record == {"step": 1, "a": None, "b": None, "c": None, "d": 1.0}


def test_read_metrics_skips_truncated_last_line_and_resume(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "x": 1.0}\n{"step": 2, "x"')
    assert read_metrics(path) == [{"step": 1, "x": 1.0}]
    # A new logger ends the broken line, so later lines stay parseable.
    with Logger(tmp_path, tensorboard=False) as logger:
        logger.scalar("x", 3.0)
        logger.write(3)
    with pytest.warns(UserWarning, match=":2:"):
        assert read_metrics(path) == [{"step": 1, "x": 1.0}, {"step": 3, "x": 3.0}]


def test_tensorboard_event_file_is_written(tmp_path: Path) -> None:
    with Logger(tmp_path) as logger:
        logger.scalar("train/return", 1.0)
        logger.write(5)
    ((step, value),) = read_summaries(tmp_path)
    assert (step, value.tag, value.simple_value) == (5, "train/return", 1.0)


def test_video_gif_file_and_summary(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(6, 16, 16, 3), dtype=np.uint8)
    with Logger(tmp_path) as logger:
        logger.video("eval/policy", frames, fps=10)
        logger.video("eval/float", frames[:4] / 255.0)
        logger.write(42)
    gif = tmp_path / "videos" / "eval_policy_000000042.gif"
    with Image.open(gif) as image:
        assert image.format == "GIF" and image.size == (16, 16)
        assert image.n_frames == 6
        assert image.info.get("loop") == 0
    with Image.open(tmp_path / "videos" / "eval_float_000000042.gif") as image:
        assert image.n_frames == 4
    # TensorBoard gets the same GIF bytes as an image summary, which it animates.
    summaries = {value.tag: (step, value.image) for step, value in read_summaries(tmp_path)}
    step, image = summaries["eval/policy"]
    assert (step, image.height, image.width, image.colorspace) == (42, 16, 16, 3)
    assert image.encoded_image_string == gif.read_bytes()
    assert set(summaries) == {"eval/policy", "eval/float"}
    assert not (tmp_path / "metrics.jsonl").read_text()  # videos add no metrics line


def test_video_rejects_bad_shapes(tmp_path: Path) -> None:
    with Logger(tmp_path, tensorboard=False) as logger:
        with pytest.raises(ValueError):
            logger.video("v", np.zeros((4, 8, 8), np.uint8))
        with pytest.raises(ValueError):
            logger.scalar("step", 1.0)


def test_console_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with Logger(tmp_path, tensorboard=False, console=True) as logger:
        logger.scalar("train/return", 12.5)
        logger.write(7)
    assert "train/return 12.5" in capsys.readouterr().out


def test_progress_bar() -> None:
    progress = Progress(100, initial=10, mininterval=0.0)
    progress.update(50, last_return=3.25)
    progress.update(40)  # never moves backwards
    assert progress.step == 50
    progress.close()
    with Progress(10, disable=True) as quiet:
        quiet.update(5, 1.0)


def test_logging_starts_no_thread(tmp_path: Path) -> None:
    # TensorBoard events are written in the caller's thread: no writer thread that could die
    # on a full disk and leave the next flush waiting for it forever.
    import threading

    before = threading.active_count()
    with Logger(tmp_path) as logger:
        logger.scalar("train/return", 1.0)
        logger.video("eval/policy", np.zeros((2, 8, 8, 3), np.uint8))
        logger.write(1)
        assert threading.active_count() == before
    assert event_files(tmp_path)
