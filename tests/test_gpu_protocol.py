"""The GPU protocol's debug variant on the CPU: the same steps at toy size, inside its budget,
with the files it promises."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from tests.support import ROOT


def test_protocol_runs_inside_its_budget_and_writes_its_files(tmp_path):
    out, minutes = tmp_path / "out", 2.0
    start = time.time()
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.gpu_protocol", "--configs", "debug", "--minutes", str(minutes),
         "--eval-every", "500", "--repeats", "3", "--out", str(out)],
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
    run = summary["run"]
    assert run["env_steps"] >= 500 and run["hours_per_1m_steps"] > 0
    assert run["evaluations"] and run["evaluations"][0]["dreamer_v1_published"] is not None
    assert "Dreamer V1 published" in (out / "summary.md").read_text()
