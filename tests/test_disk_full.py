"""A full disk stops a run cleanly: one `error:` line, exit status 2, no hang, the newest
complete checkpoint intact, and once there is space again the same command resumes.

The failures are injected (`DREAMER_CRASH_AT=POINT:N:enospc`, at the exact write) so they run
anywhere, in-process on a fake vector environment; where this process may mount a tmpfs
(root), a real full disk is tried too, end to end (`-m e2e`)."""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from dreamer import faults
from dreamer.logger import read_metrics
from tests.support import run_train, train_in_process

try:  # tests/ is on sys.path under pytest's default (prepend) import mode
    import fake_envs
except ImportError:  # tests/ is a package
    from tests import fake_envs

ARGS = ["--env", "dmc_cartpole_balance", "--configs", "debug", "--steps", "2000",
        "--run.checkpoint_every", "500", "--run.video_every", "0"]
FAST = ["--env", f"gym:{fake_envs.__name__}:FakeDict-v0", "--env.obs", "vector", "--configs", "debug",
        "--steps", "2000", "--run.checkpoint_every", "500", "--run.video_every", "0"]


def run(logdir: Path, fault: str | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    return run_train(*ARGS, "--logdir", str(logdir), timeout=timeout, fault=fault)


def assert_disk_error(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("error: No space left on device") and "rerun the same command" in line, line


def checkpoints_complete(logdir: Path) -> list[str]:
    names = sorted(p.name for p in (logdir / "checkpoints").iterdir())
    assert all(name.startswith("ckpt-") for name in names), names  # no temporary directory left
    for name in names:
        host = json.loads((logdir / "checkpoints" / name / "host.json").read_text())
        assert (logdir / "checkpoints" / name / "state.msgpack").stat().st_size == host["state_bytes"]
    return names


def run_in_process(logdir: Path, monkeypatch, fault: str | None = None) -> subprocess.CompletedProcess:
    faults.reset()
    if fault:
        monkeypatch.setenv(faults.ENV_VAR, fault)
    else:
        monkeypatch.delenv(faults.ENV_VAR, raising=False)
    return train_in_process(*FAST, "--logdir", str(logdir))


def test_injected_full_disk_stops_cleanly_and_the_rerun_resumes(tmp_path, monkeypatch):
    logdir = tmp_path / "run"
    result = run_in_process(logdir, monkeypatch, "replay:12:enospc")  # the episode ending at 600: not written
    assert_disk_error(result)
    assert not [p for p in (logdir / "replay").iterdir() if not p.name.endswith(".npz")]
    first = checkpoints_complete(logdir)
    result = run_in_process(logdir, monkeypatch, "checkpoint:1:enospc")  # resumes, then cannot save
    assert_disk_error(result)
    assert "resuming from" in result.stderr
    assert len(checkpoints_complete(logdir)) >= len(first)
    result = run_in_process(logdir, monkeypatch)  # space again: resumes and finishes
    assert result.returncode == 0, result.stderr[-3000:]
    steps = [m["step"] for m in read_metrics(logdir / "metrics.jsonl")]
    assert max(steps) == 2000 and steps == sorted(steps)


@pytest.mark.e2e
def test_a_real_full_disk(tmp_path):
    mount = tmp_path / "small"
    mount.mkdir()
    if shutil.which("mount") is None or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=1200k", f"tmpfs-{uuid.uuid4().hex[:6]}", str(mount)],
            capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root); the injected test covers the same paths")
    try:
        logdir = mount / "run"
        result = run(logdir, timeout=300)  # the episodes fill 1.2 MB: the run must stop, not hang
        assert_disk_error(result)
        checkpoints_complete(logdir)
        subprocess.run(["mount", "-o", "remount,size=64m", str(mount)], check=True)
        result = run(logdir)
        assert result.returncode == 0, result.stderr[-3000:]
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)
