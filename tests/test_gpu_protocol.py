"""The GPU protocol's debug variant on the CPU: the same steps at toy size, inside its budget,
with the files it promises."""

from __future__ import annotations

import pytest

import json
import os
import subprocess
import sys
import time

from tests.support import ROOT

pytestmark = pytest.mark.e2e  # the protocol's processes, as on a lent accelerator


def test_protocol_runs_inside_its_budget_and_writes_its_files(tmp_path):
    # Four minutes: on 2 cores the debug update's compile alone takes 25-30 s and the run's first
    # evaluation comes about 50 s after it starts; a CI worker sharing the cores doubles both.
    out, minutes = tmp_path / "out", 4.0
    start = time.time()
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.gpu_protocol", "--configs", "debug", "--minutes", str(minutes),
         "--eval-every", "500", "--repeats", "3", "--batch", "4", "12", "--out", str(out)],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
        timeout=60 * minutes + 60)
    assert result.returncode == 0, result.stderr[-3000:]
    assert time.time() - start < 60 * minutes + 15  # the budget holds (process start included)
    files = sorted(p.name for p in out.iterdir())
    assert files == ["curve.png", "metrics.jsonl", "summary.json", "summary.md", "train.log"]
    assert all((out / name).stat().st_size < 16 * 2**20 for name in files)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["device"].startswith("cpu") and summary["versions"]["jax"]
    assert set(summary["throughput"]) == {"float32", "bfloat16"}
    assert summary["throughput"]["float32"]["update_seconds"] > 0
    assert summary["throughput"]["float32"]["batch"] == [4, 12]
    run = summary["run"]
    assert run["env_steps"] >= 500 and run["hours_per_1m_steps"] > 0
    assert run["evaluations"] and run["evaluations"][0]["dreamer_v1_published"] is not None
    assert "Dreamer V1 published" in (out / "summary.md").read_text()


def test_a_precision_that_would_end_after_the_deadline_is_skipped(monkeypatch):
    from benchmarks import gpu_protocol, throughput

    def measure_update(config, batch_shape, repeats):  # each precision takes 1 s
        time.sleep(1.0)
        return {"update_seconds": 0.01, "precision": config.run.precision}

    monkeypatch.setattr(throughput, "measure_update", measure_update)
    # float32 ends after 1 s; bfloat16 would end after 2 s, past the deadline at 1.5 s.
    rows = gpu_protocol.throughput(["debug"], "dmc_walker_walk", time.time() + 1.5, repeats=1,
                                   batch=(4, 12))
    assert rows == {"float32": {"update_seconds": 0.01, "precision": "float32"},
                    "bfloat16": {"skipped": "no time left"}}
    rows = gpu_protocol.throughput(["debug"], "dmc_walker_walk", time.time() + 60, repeats=1,
                                   batch=(4, 12))
    assert rows["bfloat16"] == {"update_seconds": 0.01, "precision": "bfloat16"}


def test_a_batch_that_is_not_positive_is_one_error_line(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.gpu_protocol", "--minutes", "1", "--batch", "0", "12",
         "--out", str(tmp_path / "out")],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip() == "error: --batch needs two positive sizes, got 0 12"
    assert not any(tmp_path.iterdir())
