"""DreamerV3's update on this machine, per size, next to the official code's.

    python -m benchmarks.dreamerv3_update [--sizes size1m size12m] [--repeats N] [--out DIR]

For each size preset: the full update (world model, actor, critic) of `--configs dreamerv3
SIZE` at its batch (16 x 64), float32, as the train loop runs it (jitted, state donated):
compile seconds (from scratch, no compilation cache), median seconds per update, FLOPs with the
scans unrolled, and the fraction of the float32 matmul ceiling measured in the same process.
The parameter count is printed too. The official code's figures on a machine of this kind
(reported: 16.9 s at 12M, 4.9 s at 1M) are the bar; `--official FILE` adds figures measured
here from a JSON {size: {"update_seconds": s, "compile_seconds": s, "params": n}}.
"""

from __future__ import annotations

if __name__ == "__main__":  # before JAX starts: glibc reads allocator tunables at exec
    from dreamer.runtime import reexec_with_huge_pages

    reexec_with_huge_pages()

import json
import sys
import time
from pathlib import Path

import jax

from benchmarks.common import command_line, matmul_ceiling_gflops, provenance, write_record
from benchmarks.throughput import measure_update
from dreamer.cli import ArgumentParser, run_command
from dreamer.config import build_config
from dreamer.registry import agent_class

ACTION_SIZE = 6  # walker
# The official code's update on a 2-core CPU of this kind, as reported (seconds); measured here:
# benchmarks/results/dreamerv3_update_cpu.md.
REPORTED_OFFICIAL_SECONDS = {"size1m": 4.9, "size12m": 16.9}


def measure_size(size: str, repeats: int) -> dict:
    config = build_config(["dreamerv3", size], {"env.name": "dmc_walker_walk"})
    counts = agent_class("dreamer")(config, ACTION_SIZE, discrete=False).parameter_counts()
    batch = (config.run.batch_size, config.run.seq_len)
    row = measure_update(config, batch, repeats)  # walker: ACTION_SIZE actions
    return {"size": size, "params": sum(counts.values()), **row}


def to_table(rows: list[dict], ceiling: float, official: dict) -> str:
    lines = ["| size | parameters | update (s) | compile (s) | GFLOP | GFLOP/s (% of ceiling) | official (s) | speed-up |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        rate = r["update_gflop"] / r["update_seconds"]
        ref = official.get(r["size"], {}).get("update_seconds", REPORTED_OFFICIAL_SECONDS.get(r["size"]))
        speedup = f"{ref / r['update_seconds']:.1f}x" if ref else "-"
        lines.append(f"| {r['size']} | {r['params'] / 1e6:.2f}M | {r['update_seconds']:.2f} | "
                     f"{r['compile_seconds']:.1f} | {r['update_gflop']:.0f} | {rate:.0f} ({100 * rate / ceiling:.0f}%) | "
                     f"{ref if ref else '-'} | {speedup} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    parser = ArgumentParser(prog="python -m benchmarks.dreamerv3_update", description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", nargs="+", default=["size1m", "size12m"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--official", type=Path, default=None, help="JSON of the official code's figures here")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    official = json.loads(args.official.read_text()) if args.official else {}
    start = time.time()
    ceiling = matmul_ceiling_gflops()
    rows = [measure_size(size, args.repeats) for size in args.sizes]
    table = to_table(rows, ceiling, official)
    print(table)
    result = {**provenance(command_line("benchmarks.dreamerv3_update", argv), start), "rows": rows,
              "roofline_gflops": ceiling, "official": official, "backend": jax.default_backend()}
    if args.out:
        write_record(args.out, "dreamerv3_update", "DreamerV3 update speed", result,
                     f"matmul ceiling: {ceiling:.0f} GFLOP/s\n\n{table}")


if __name__ == "__main__":
    jax.config.update("jax_enable_compilation_cache", False)  # compile time from scratch
    sys.exit(run_command(lambda: main() or 0, sys.argv[1:]))
