"""What every benchmark records and how: `write_record` (the one writer of records: the
command, commit, machine and wall time, then the benchmark's own figures), the matmul ceiling,
and how the timing benchmarks time a call."""

from __future__ import annotations

import json
import os
import platform
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def git_commit() -> str:
    """HEAD's hash of the checkout this code runs from (whatever the working directory), with
    '-dirty' when tracked files differ from it; 'unknown' for an installed package."""
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, cwd=here)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, cwd=here).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def machine() -> str:
    devices = ", ".join(sorted({d.device_kind for d in jax.devices()}))
    return f"{platform.machine()}, {os.cpu_count()} CPU cores, {platform.system()}; JAX {jax.__version__} on {devices}"


def command_line(module: str, argv: list[str] | None = None) -> str:
    """`python -m MODULE ARGS` as it was run (ARGS: this process's by default)."""
    return shlex.join(["python", "-m", module, *(sys.argv[1:] if argv is None else argv)])


def provenance(command: str, started: float) -> dict[str, Any]:
    """What every record starts with: the command, the commit, the machine, the wall time in
    seconds since `started`."""
    return {"command": command, "commit": git_commit(), "machine": machine(),
            "wall_seconds": round(time.time() - started, 1)}


def write_record(out: Path, name: str, title: str, record: dict[str, Any], body: str,
                 folders: dict[str | Path, str] | None = None) -> tuple[Path, Path]:
    """Write a benchmark's record as `out/NAME.json` (`record`, which holds its `provenance`)
    and `out/NAME.md`: the title, the provenance as a list, then `body` (tables, notes).
    `folders` maps folders of this machine (a sweep's, a run's) to the names the record gives
    them (DIR, LOGDIR): a record names no path of the machine it ran on."""
    missing = [key for key in ("command", "commit", "machine", "wall_seconds") if key not in record]
    if missing:
        raise ValueError(f"record {name!r} lacks {missing}: start it with provenance(...)")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / f"{name}.json", out / f"{name}.md"
    json_path.write_text(with_placeholders(json.dumps(record, indent=1), folders or {}) + "\n")
    minutes = record["wall_seconds"] / 60
    wall = f"{record['wall_seconds']:.0f} s" if minutes < 2 else f"{minutes:.0f} min"
    header = (f"# {title}\n\n- command: `{record['command']}`\n- commit: `{record['commit']}`\n"
              f"- machine: {record['machine']}\n- wall time: {wall}\n")
    md_path.write_text(with_placeholders(header + "\n" + body.strip(), folders or {}) + "\n")
    return md_path, json_path


def with_placeholders(text: str, folders: dict[str | Path, str]) -> str:
    """`text` with each folder's path, as given or resolved, written as its placeholder."""
    forms = {str(form): placeholder for folder, placeholder in folders.items()
             for form in (Path(folder), Path(folder).resolve())}
    for form in sorted(forms, key=len, reverse=True):  # a resolved path may extend the given one
        text = re.sub(re.escape(form) + r"(?![\w-]|\.\w)", forms[form], text)
    return text


def matmul_ceiling_gflops(sizes=(1024, 2048, 4096), repeats: int = 5) -> float:
    """Best sustained float32 matmul throughput under XLA (as ../shared/tools/roofline.py)."""
    best_rate = 0.0
    for n in sizes:
        a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32)
        f = jax.jit(jnp.dot)
        f(a, a).block_until_ready()
        for _ in range(repeats):
            start = time.perf_counter()
            f(a, a).block_until_ready()
            best_rate = max(best_rate, 2 * n**3 / (time.perf_counter() - start) / 1e9)
    return best_rate


def xla_flops(fn, *args) -> float:
    """FLOPs of `fn(*args)` from XLA's cost analysis (a while-loop body counts once)."""
    cost = jax.jit(fn).lower(*args).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(cost.get("flops", 0.0))


def median_seconds(fn, repeats: int) -> float:
    """The median wall time of `repeats` calls of `fn`, each waited for (`block_until_ready`)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return float(np.median(times))
