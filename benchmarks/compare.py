"""Two or more sample-efficiency sweeps in one table and one plot, each under its own label.

    python -m benchmarks.compare --sweep LABEL=DIR|RECORD.json [--sweep ...] --budgets 25000 50000
        [--record NAME]

A sweep is the `--out` folder of `python -m benchmarks.sample_efficiency` (its runs under
runs/<agent>/<env>/seed_<s>); every run with a metrics.jsonl counts. It can also be a recorded
summary, benchmarks/results/NAME.json of `--record` or the sweep's summary.json: its runs'
evaluation curves and uniform random levels are in it, so a sweep can be compared after its
run folders are gone. Sweeps of the same agent with different presets (DreamerV3's CPU preset
against Dreamer V1's `cpu`) get one row and one curve per label, next to the published curves
of their tasks. `--record NAME` writes benchmarks/results/NAME.{md,json,png}; each sweep's own
record holds its command, commit, machine and wall times.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import aggregate, plots
from benchmarks.aggregate import RecordedRun, Run, RunDir
from benchmarks.common import command_line, provenance, write_record
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


def recorded_runs(label: str, record: Path) -> tuple[list[RecordedRun], dict[tuple[str, str], dict]]:
    """The runs of a recorded summary JSON under `label`, and its uniform random levels by (label, env)."""
    try:
        data = json.loads(record.read_text())
        summary = data["summary"] if "summary" in data else data
        runs = [RecordedRun(label, str(r["env"]), int(r["seed"]),
                            tuple((int(step), float(value)) for step, value in r["curve"]), int(r["last_step"]), record,
                            str(r.get("obs", "image")),
                            tuple((int(step), float(value)) for step, value in r.get("training", [])))
                for r in summary["runs"]]
        randoms = {(label, str(row["env"])): dict(row["random"]) for row in summary["rows"] if row.get("random")}
    except OSError as error:
        raise UserError(f"cannot read the record '{record}': {error.strerror}") from None
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise UserError(f"'{record}' is not a sweep summary with evaluation curves ({type(error).__name__}: "
                        f"{error}); records written before the curves were kept need the sweep's --out folder") from None
    if not runs:
        raise UserError(f"the record '{record}' lists no runs")
    return runs, randoms


def parse_sweep(text: str) -> tuple[str, Path]:
    label, sep, path = text.partition("=")
    if not sep or not label or not path:
        raise UserError(f"--sweep {text!r}: expected LABEL=DIR or LABEL=RECORD.json")
    return label, Path(path)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    return run_command(lambda: compare(argv), argv)


def compare(argv: list[str]) -> int:
    parser = ArgumentParser(prog="python -m benchmarks.compare", description=__doc__.split("\n")[0])
    parser.add_argument("--sweep", action="append", required=True, help="LABEL=DIR (a sweep's --out) or LABEL=RECORD.json, once per sweep")
    parser.add_argument("--budgets", type=int, nargs="+", required=True, help="environment steps of the table")
    parser.add_argument("--record", help="write benchmarks/results/NAME.{md,json,png}")
    args = parser.parse_args(argv)
    start = time.time()
    runs: list[Run] = []
    random_returns: dict[tuple[str, str], dict] = {}
    for label, path in map(parse_sweep, args.sweep):
        if path.suffix == ".json":
            recorded, randoms = recorded_runs(label, path)
            runs += recorded
            random_returns |= randoms
        else:
            runs += sweep_runs(label, path)
    summary = aggregate.aggregate(runs, args.budgets, random_returns=random_returns)
    table = aggregate.to_markdown(summary)
    print(table)
    if args.record:
        with tempfile.TemporaryDirectory() as tmp:
            plots.plot_sweep(runs, Path(tmp), max(args.budgets), args.budgets, random_returns=random_returns)
            shutil.copyfile(Path(tmp) / "grid.png", RESULTS / f"{args.record}.png")
        record = {**provenance(command_line("benchmarks.compare", argv), start), "summary": summary}
        folders = {path: f"DIR{i}" for i, (_, path) in enumerate(map(parse_sweep, args.sweep), 1)
                   if path.suffix != ".json"}
        write_record(RESULTS, args.record, args.record, record, f"![learning curves]({args.record}.png)\n\n{table}",
                     folders=folders)
    return 0


if __name__ == "__main__":
    sys.exit(main())
