"""The entry points' one re-execution with glibc's huge-page allocator tunable."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dreamer import runtime

ROOT = Path(__file__).resolve().parents[1]
PROBE = """
import json, os, sys
if __name__ == "__main__":
    from dreamer.runtime import reexec_with_huge_pages
    print("start", flush=True)  # printed once per process image
    reexec_with_huge_pages()
    print(json.dumps({"pid": os.getpid(), "tunables": os.environ.get("GLIBC_TUNABLES", ""),
                      "argv": sys.argv[1:]}))
"""


def run_probe(tmp_path: Path, **env: str) -> tuple[list[str], dict]:
    script = tmp_path / "probe.py"
    script.write_text(PROBE)
    full_env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "DREAMER_HUGE_PAGES")}
    full_env.update(env, PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-u", str(script), "--flag", "value"], env=full_env,
                         capture_output=True, text=True, timeout=60, check=True).stdout.splitlines()
    return out[:-1], json.loads(out[-1])


@pytest.mark.skipif(not runtime.huge_pages_supported(), reason="needs Linux, glibc >= 2.35 and THP")
def test_reexecutes_once_with_the_tunable_keeping_arguments(tmp_path):
    starts, result = run_probe(tmp_path, GLIBC_TUNABLES="glibc.malloc.arena_max=4")
    assert starts == ["start", "start"]  # re-executed exactly once, not in a loop
    assert result["tunables"] == "glibc.malloc.arena_max=4:" + runtime.TUNABLE  # user's kept
    assert result["argv"] == ["--flag", "value"]


def test_switched_off_or_already_set_runs_as_is(tmp_path):
    starts, result = run_probe(tmp_path, DREAMER_HUGE_PAGES="0")
    assert starts == ["start"] and result["tunables"] == ""
    starts, result = run_probe(tmp_path, GLIBC_TUNABLES="glibc.malloc.hugetlb=0")
    assert starts == ["start"] and result["tunables"] == "glibc.malloc.hugetlb=0"  # user's choice


def test_unsupported_platform_is_left_alone(monkeypatch):
    monkeypatch.setattr(runtime.platform, "libc_ver", lambda: ("glibc", "2.31"))
    assert not runtime.huge_pages_supported()
    monkeypatch.setattr(runtime.platform, "libc_ver", lambda: ("", ""))
    assert not runtime.huge_pages_supported()
