"""Two or more sample-efficiency sweeps in one table and one plot, each under its own label.

    python -m benchmarks.compare --sweep LABEL=DIR [--sweep LABEL=DIR ...] --budgets 25000 50000
        [--record NAME]

A sweep is the `--out` folder of `python -m benchmarks.sample_efficiency` (its runs under
runs/<agent>/<env>/seed_<s>); every run with a metrics.jsonl counts. Sweeps of the same agent
with different presets (DreamerV3's CPU preset against Dreamer V1's `cpu`) get one row and
one curve per label, next to the published curves of their tasks. `--record NAME` writes
benchmarks/results/NAME.{md,json,png}; each sweep's own record holds its command, commit,
machine and wall times.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

from benchmarks import aggregate, plots
from benchmarks.aggregate import RunDir
from dreamer.cli import ArgumentParser, run_command
from dreamer.errors import UserError

RESULTS = Path(__file__).resolve().parent / "results"


def sweep_runs(label: str, sweep: Path) -> list[RunDir]:
    """Every run of the sweep under `label` (runs/<agent>/<env>/seed_<s> with a metrics.jsonl)."""
    found = [RunDir(label, seed_dir.parent.name, int(seed_dir.name.removeprefix("seed_")), seed_dir)
             for seed_dir in sorted(sweep.glob("runs/*/*/seed_*")) if (seed_dir / "metrics.jsonl").is_file()]
    if not found:
        raise UserError(f"no runs with a metrics.jsonl under '{sweep / 'runs'}': give the --out folder "
                        "of a benchmarks.sample_efficiency sweep")
    return found


def parse_sweep(text: str) -> tuple[str, Path]:
    label, sep, path = text.partition("=")
    if not sep or not label or not path:
        raise UserError(f"--sweep {text!r}: expected LABEL=DIR")
    return label, Path(path)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    return run_command(lambda: compare(argv), argv)


def compare(argv: list[str]) -> int:
    parser = ArgumentParser(prog="python -m benchmarks.compare", description=__doc__.split("\n")[0])
    parser.add_argument("--sweep", action="append", required=True, help="LABEL=DIR, once per sweep")
    parser.add_argument("--budgets", type=int, nargs="+", required=True, help="environment steps of the table")
    parser.add_argument("--record", help="write benchmarks/results/NAME.{md,json,png}")
    args = parser.parse_args(argv)
    runs = [run for text in args.sweep for run in sweep_runs(*parse_sweep(text))]
    summary = aggregate.aggregate(runs, args.budgets)
    table = aggregate.to_markdown(summary)
    print(table)
    if args.record:
        with tempfile.TemporaryDirectory() as tmp:
            plots.plot_sweep(runs, Path(tmp), max(args.budgets), args.budgets)
            shutil.copyfile(Path(tmp) / "grid.png", RESULTS / f"{args.record}.png")
        command = "python -m benchmarks.compare " + " ".join(argv)
        (RESULTS / f"{args.record}.md").write_text(
            f"# {args.record}\n\n- command: `{command}`\n\n![learning curves]({args.record}.png)\n\n{table}")
        (RESULTS / f"{args.record}.json").write_text(json.dumps({"command": command, "summary": summary}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
