"""Every command a user runs answers bad input the same way: one `error:` line, exit status 2,
no traceback, within seconds, and nothing written; the Python API raises the library's own
exception type."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

import dreamer
from dreamer.errors import UserError
from tests.support import ROOT

COMMANDS = ["dreamer.train", "dreamer.evaluate", "benchmarks.sample_efficiency", "benchmarks.throughput",
            "benchmarks.planning", "benchmarks.exploration", "benchmarks.archive.memory", "benchmarks.archive.checkpoint_cost",
            "benchmarks.gpu_protocol", "benchmarks.record_run", "benchmarks.reference", "benchmarks.stop_latency",
            "benchmarks.official_spread"]


@pytest.fixture(scope="module")
def bad_flag_runs(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("cwd")  # an empty folder: anything written would show here

    def run(module: str):
        start = time.time()
        result = subprocess.run([sys.executable, "-m", module, "--no-such-flag", "1"], cwd=cwd,
                                env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True,
                                text=True, timeout=120)
        return result, time.time() - start

    with ThreadPoolExecutor(max_workers=2) as pool:
        results = dict(zip(COMMANDS, pool.map(run, COMMANDS)))
    return cwd, results


@pytest.mark.parametrize("module", COMMANDS)
def test_a_bad_flag_is_one_error_line(bad_flag_runs, module):
    cwd, results = bad_flag_runs
    result, seconds = results[module]
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr  # the flag or a required one
    assert seconds < 60
    assert not any(cwd.iterdir())


def test_the_api_raises_the_librarys_error(tmp_path):
    (tmp_path / "notes.txt").write_text("not a run\n")
    with pytest.raises(UserError, match="not the logdir of a training run"):
        dreamer.load(tmp_path)
    with pytest.raises(UserError, match="not the logdir of a training run"):
        dreamer.load(tmp_path / "missing")
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_the_official_spread_needs_a_checkout_and_an_official_run(tmp_path):
    def run(*args):
        return subprocess.run([sys.executable, "-m", "benchmarks.official_spread", *args], cwd=tmp_path,
                              env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=60)

    (tmp_path / "dreamerv3").mkdir()
    (tmp_path / "dreamerv3" / "agent.py").write_text("")
    for args, message in (((tmp_path / "x", tmp_path), "is not a checkout of danijar/dreamerv3"),
                          ((tmp_path, tmp_path), "holds no official run")):
        result = run("--official", str(args[0]), "--logdir", str(args[1]))
        assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
        assert result.stderr.startswith("error: ") and message in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dreamerv3"]
