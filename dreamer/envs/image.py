"""Small numpy image helpers: frame checking and square resizing."""

from __future__ import annotations

import numpy as np


def _area_indices(src: int, dst: int) -> np.ndarray:
    """Start index of each of `dst` near-equal bins over `src` pixels (src >= dst)."""
    return (np.arange(dst) * src) // dst


def _resize_axis(image: np.ndarray, dst: int, axis: int) -> np.ndarray:
    """Resizes one axis: box-average when shrinking, nearest when growing."""
    src = image.shape[axis]
    if src == dst:
        return image
    if src > dst:
        starts = _area_indices(src, dst)  # [dst]
        counts = np.diff(np.append(starts, src))  # [dst]
        sums = np.add.reduceat(image.astype(np.float32), starts, axis=axis)
        shape = [1] * image.ndim
        shape[axis] = dst
        return sums / counts.reshape(shape)
    index = ((np.arange(dst) + 0.5) * src / dst).astype(np.int64)  # [dst]
    return np.take(image, index, axis=axis)


def resize(image: np.ndarray, size: int) -> np.ndarray:
    """Resizes uint8 [H, W, C] to uint8 [size, size, C] (area when shrinking, nearest when growing).

    The aspect ratio is not kept: non-square frames are squashed to a square.
    """
    if image.shape[:2] == (size, size):
        return image
    out = _resize_axis(_resize_axis(image, size, 0), size, 1)
    if out.dtype != np.uint8:
        out = np.clip(np.rint(out), 0, 255).astype(np.uint8)
    return out


def to_rgb(frame: object) -> np.ndarray | None:
    """Returns `frame` as uint8 [H, W, 3], or None when it is not an RGB(A) image."""
    if frame is None:
        return None
    frame = np.asarray(frame)
    if frame.ndim != 3 or frame.shape[-1] not in (3, 4) or min(frame.shape[:2]) < 1:
        return None
    frame = frame[..., :3]
    if frame.dtype != np.uint8:
        if not np.issubdtype(frame.dtype, np.number):
            return None
        frame = np.clip(frame, 0, 255).astype(np.uint8)
    return frame
