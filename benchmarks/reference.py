"""Published DMC results (from pixels, and DreamerV3 from proprioceptive vectors), compacted from
../shared/reference into benchmarks/reference/.

    python -m benchmarks.reference [--source ../shared/reference] [--out benchmarks/reference]

Every output file is one *series*: a method as one source reports it, with its citation and the
file it came from. Curves (score files, many seeds) are reduced to the mean and standard
deviation over seeds at each evaluation step (episode-level files are first averaged per seed
in bins); tables become points at their step budget. Rows are `[step, mean, std, seeds]`
(`std`, `seeds` null when the source does not give them). Task names are this library's
(`dmc_<domain>_<task>`, so the cup task is `dmc_ball_in_cup_catch`). Each series says what its
agents observed (`obs`: image or vector, as `--env.obs`); a run is compared with the series of
its own observations only.

`load_reference(task, budget)` and `reference_curves(task)` read the shipped files; aggregation
and plots use them.
"""

from __future__ import annotations

import csv
import functools
import gzip
import json
import math
import re
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dreamer.cli import ArgumentParser, run_command

ROOT = Path(__file__).resolve().parent.parent
REFERENCE_DIR = Path(__file__).resolve().parent / "reference"
DEFAULT_SOURCE = ROOT / ".." / "shared" / "reference"
SHARED = "../shared/reference"  # how sources are named in the shipped files
ALIASES = {"dmc_cup_catch": "dmc_ball_in_cup_catch"}
COLUMNS = ["step", "mean", "std", "seeds"]

# Score files: list of {task, method, seed, xs, ys}. `bin`: steps per bin for files whose
# evaluation steps differ between seeds or are episode-level (None: use the steps as they are).
CURVES = [
    dict(id="dreamer_v1", label="Dreamer V1 (score file)", short="Dreamer V1", agent="dreamer",
         file="curves/dreamer_v1_dmc_vision.json", bin=None,
         citation="Hafner et al. 2020, Dream to Control: Learning Behaviors by Latent Imagination (ICLR)",
         origin="official score file, danijar/dreamer scores/"),
    dict(id="dreamer_v2", label="DreamerV2 (score file)", short="DreamerV2", agent=None,
         file="curves/dreamer_v2_dmc_vision.json", bin=None,
         citation="Hafner et al. 2021, Mastering Atari with Discrete World Models (ICLR)",
         origin="official score file, danijar/dreamerv2 scores/"),
    dict(id="dreamer_v3", label="DreamerV3 (score file)", short="DreamerV3", agent=None,
         file="curves/dreamer_v3_dmc_vision.json.gz", bin=20_000,
         citation="Hafner et al. 2023, Mastering Diverse Domains through World Models",
         origin="official score file, danijar/dreamerv3 scores/"),
    dict(id="dreamer_v3_proprio", label="DreamerV3 from proprio (score file)", short="DreamerV3 proprio",
         agent=None, file="curves/dreamer_v3_dmc_proprio.json.gz", bin=None, obs="vector",
         citation="Hafner et al. 2023, Mastering Diverse Domains through World Models",
         origin="official score file, danijar/dreamerv3 scores/ (config dmc_proprio at 2411f7d)"),
    dict(id="plan2explore_zeroshot", label="Plan2Explore zero-shot (score file)", short="Plan2Explore 0-shot",
         agent="plan2explore", file="curves/plan2explore_zeroshot_dmc_vision.json", bin=50_000,
         citation="Sekar et al. 2020, Planning to Explore via Self-Supervised World Models (ICML)",
         origin="score file, ramanans1/plan2explore"),
    dict(id="curl", label="CURL (DreamerV3 repo)", short="CURL", agent=None,
         file="curves/dmc_vision-curl.json.gz", bin=None,
         citation="Laskin et al. 2020, CURL: Contrastive Unsupervised Representations for RL (ICML)",
         origin="baseline score file, danijar/dreamerv3 scores/"),
    dict(id="drqv2", label="DrQ-v2 (DreamerV3 repo)", short="DrQ-v2", agent=None,
         file="curves/dmc_vision-drqv2.json.gz", bin=None,
         citation="Yarats et al. 2022, Mastering Visual Continuous Control: Improved Data-Augmented RL (ICLR)",
         origin="baseline score file, danijar/dreamerv3 scores/"),
]
TDMPC2 = dict(id="tdmpc2", label="TD-MPC2 (pixels)", short="TD-MPC2", agent=None, directory="tdmpc2_pixels",
              citation="Hansen et al. 2024, TD-MPC2: Scalable, Robust World Models for Continuous Control (ICLR)",
              origin="nicklashansen/tdmpc2 results/tdmpc2-pixels/")
# Tables of ../shared/reference/README.md: (heading start, column header -> series, step).
CURL_TABLE = dict(
    heading='## The "PlaNet benchmark"',
    citation="Laskin et al. 2020, CURL (ICML), Table 1",
    series={
        "Dreamer": dict(id="curl_table_dreamer", label="Dreamer (as CURL Table 1 reports it)",
                        short="Dreamer (CURL T1)", agent="dreamer"),
        "PlaNet": dict(id="curl_table_planet", label="PlaNet (as CURL Table 1 reports it)",
                       short="PlaNet (CURL T1)", agent="planet"),
        "CURL": dict(id="curl_table_curl", label="CURL (CURL Table 1)", short="CURL (T1)", agent=None),
        "DrQ": dict(id="curl_table_drq", label="DrQ (DrQ Table 1)", short="DrQ (T1)", agent=None,
                    citation="Kostrikov et al. 2021, Image Augmentation Is All You Need (DrQ, ICLR), Table 1"),
    })
PLANET_TABLE = dict(
    heading="## PlaNet (Hafner et al. 2019), Table 1",
    row="PlaNet (pixels)", step=1_000_000, seeds=5,
    series=dict(id="planet_table1", label="PlaNet (paper, Table 1, after 1000 episodes)",
                short="PlaNet (paper T1)", agent="planet",
                citation="Hafner et al. 2019, Learning Latent Dynamics for Planning from Pixels (ICML), Table 1"))


def canonical_task(name: str) -> str:
    """This library's name for a task named by a source ('dmc_cup_catch', 'walker-walk', 'cup catch')."""
    name = name.strip().lower()
    if not name.startswith("dmc_"):
        name = "dmc_" + re.sub(r"[\s\-]+", "_", name)
    return ALIASES.get(name, name)


# ----------------------------------------------------------------------------- building


def _read_json(path: Path):
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as f:
        return json.load(f)


def _round(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(float(value), digits)


def seed_curves_to_rows(curves: list[tuple[list[float], list[float]]], bin_steps: int | None) -> list[list]:
    """Per-seed (xs, ys) -> rows [step, mean, std, seeds] over seeds. NaNs are dropped. With
    `bin_steps`, each seed's points are first averaged in bins centred on multiples of it, and a
    row's step is the mean step of the points in its bin (so a label never moves the data)."""
    groups: dict[float, list[tuple[float, float]]] = defaultdict(list)  # key -> per-seed (x, y)
    for xs, ys in curves:
        per_seed: dict[float, list[tuple[float, float]]] = defaultdict(list)
        for x, y in zip(xs, ys):
            if y is None or not math.isfinite(float(y)):
                continue
            key = round(float(x) / bin_steps) if bin_steps else float(x)
            per_seed[key].append((float(x), float(y)))
        for key, points in per_seed.items():
            groups[key].append((np.mean([p[0] for p in points]), np.mean([p[1] for p in points])))
    rows = []
    for key in sorted(groups):
        xs, ys = zip(*groups[key])
        rows.append([int(round(float(np.mean(xs)))), _round(np.mean(ys)), _round(np.std(ys)), len(ys)])
    return rows


def _series(spec: dict, kind: str, source: str, tasks: dict, note: str = "", citation: str = "") -> dict:
    return {"id": spec["id"], "label": spec["label"], "short": spec["short"], "agent": spec["agent"],
            "obs": spec.get("obs", "image"), "kind": kind, "citation": spec.get("citation") or citation,
            "source": source, "note": note, "columns": COLUMNS, "tasks": dict(sorted(tasks.items()))}


def build_curve(spec: dict, source: Path) -> dict:
    runs = _read_json(source / spec["file"])
    by_task: dict[str, list] = defaultdict(list)
    for run in runs:
        if run["task"].startswith("stats_"):  # DreamerV2's normalised pseudo-tasks
            continue
        by_task[canonical_task(run["task"])].append((run["xs"], run["ys"]))
    tasks = {task: seed_curves_to_rows(curves, spec["bin"]) for task, curves in by_task.items()}
    seeds = max(len(c) for c in by_task.values())
    note = f"mean and std over seeds (up to {seeds}) of the evaluation return"
    if spec["bin"]:
        note += f"; each seed's points averaged in {spec['bin'] // 1000}k-step bins first"
    return _series(spec, "curve", f"{SHARED}/{spec['file']} ({spec['origin']})", tasks, note)


def build_tdmpc2(source: Path) -> dict:
    spec = TDMPC2
    tasks = {}
    for path in sorted((source / spec["directory"]).glob("*.csv")):
        per_seed: dict[str, tuple[list, list]] = defaultdict(lambda: ([], []))
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                xs, ys = per_seed[row["seed"]]
                xs.append(float(row["step"]))
                ys.append(float(row["reward"]))
        tasks[canonical_task(path.stem)] = seed_curves_to_rows(list(per_seed.values()), None)
    return _series(spec, "curve", f"{SHARED}/{spec['directory']}/*.csv ({spec['origin']})", tasks,
                   "mean and std over 3 seeds of the evaluation return")


def markdown_table(text: str, heading: str) -> list[list[str]]:
    """The first table after the line starting with `heading`: header row, then data rows."""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith(heading)), None)
    if start is None:
        raise ValueError(f"no section starting with {heading!r}")
    rows = []
    for line in lines[start + 1:]:
        if line.startswith("#"):
            break
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if not all(set(c) <= set("-: ") for c in cells):
                rows.append(cells)
        elif rows:
            break
    if not rows:
        raise ValueError(f"no table after {heading!r}")
    return rows


def _number(text: str) -> float:
    return float(text.replace(",", ""))


def build_curl_table(readme: str) -> list[dict]:
    spec = CURL_TABLE
    header, *rows = markdown_table(readme, spec["heading"])
    series_tasks: dict[str, dict] = defaultdict(dict)
    for row in rows:
        task = canonical_task(row[0])
        for column, cell in zip(header[1:], row[1:]):
            method, budget = column.rsplit(" ", 1)
            step = int(_number(budget.lower().replace("k", ""))) * 1000
            mean, _, std = cell.partition("±")
            series_tasks[method].setdefault(task, []).append([step, _number(mean), _number(std), None])
    out = []
    for method, sub in spec["series"].items():
        out.append(_series(sub, "points", f"{SHARED}/README.md, section 'The \"PlaNet benchmark\" at 100k "
                                          f"and 500k steps'", series_tasks[method],
                           "mean ± std as the paper's table gives them; seeds not stated there",
                           spec["citation"]))
    return out


def build_planet_table(readme: str) -> dict:
    spec = PLANET_TABLE
    header, *rows = markdown_table(readme, spec["heading"])
    row = next(r for r in rows if r[0] == spec["row"])
    tasks = {canonical_task(name): [[spec["step"], _number(cell), None, spec["seeds"]]]
             for name, cell in zip(header[2:], row[2:])}
    return _series(spec["series"], "points", f"{SHARED}/README.md, section 'PlaNet (Hafner et al. 2019), "
                                             f"Table 1'", tasks, "final score after 1000 episodes (1M steps), "
                                                                 "5 seeds; std not given")


def build(source: Path = DEFAULT_SOURCE, out: Path = REFERENCE_DIR) -> list[Path]:
    """Read the shared reference files and write one compact JSON per series into `out`."""
    source = Path(source)
    if not (source / "README.md").is_file():
        raise FileNotFoundError(f"no reference data at '{source}' (expected README.md and curves/)")
    readme = (source / "README.md").read_text()
    series = [build_curve(spec, source) for spec in CURVES]
    series += [build_tdmpc2(source), *build_curl_table(readme), build_planet_table(readme)]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for s in series:
        path = out / f"{s['id']}.json"
        path.write_text(dumps_series(s))
        written.append(path)
    load_references.cache_clear()
    return written


def dumps_series(series: dict) -> str:
    """Compact JSON, one task per line (small files, readable diffs)."""
    head = {k: v for k, v in series.items() if k != "tasks"}
    lines = ["{"] + [f" {json.dumps(k)}: {json.dumps(v)}," for k, v in head.items()] + [' "tasks": {']
    items = list(series["tasks"].items())
    for i, (task, rows) in enumerate(items):
        comma = "," if i < len(items) - 1 else ""
        lines.append(f"  {json.dumps(task)}: {json.dumps(rows, separators=(',', ':'))}{comma}")
    return "\n".join(lines + [" }", "}"]) + "\n"


# ----------------------------------------------------------------------------- loading


@dataclass(frozen=True)
class Series:
    id: str
    label: str
    short: str
    agent: str | None  # the library's agent this series is the published counterpart of
    obs: str  # what its agents observed: "image" or "vector"
    kind: str  # "curve" or "points"
    citation: str
    source: str
    note: str
    tasks: dict  # task -> [[step, mean, std, seeds], ...]

    def rows(self, task: str) -> list[list]:
        return self.tasks.get(canonical_task(task), [])

    def at(self, task: str, budget: int, tolerance: float = 0.1) -> dict | None:
        """The row nearest to `budget`, if within `tolerance` x budget of it."""
        rows = [r for r in self.rows(task) if abs(r[0] - budget) <= tolerance * budget]
        if not rows:
            return None
        step, mean, std, seeds = min(rows, key=lambda r: (abs(r[0] - budget), -r[0]))
        return {"id": self.id, "label": self.label, "short": self.short, "agent": self.agent,
                "step": step, "mean": mean, "std": std, "seeds": seeds,
                "citation": self.citation, "source": self.source}


@functools.lru_cache(maxsize=8)
def load_references(directory: str | Path = REFERENCE_DIR) -> tuple[Series, ...]:
    """Every series in `directory` (the shipped benchmarks/reference by default)."""
    paths = sorted(Path(directory).glob("*.json"))
    if not paths:
        raise FileNotFoundError(f"no reference files in '{directory}'; run python -m benchmarks.reference")
    series = []
    for path in paths:
        data = json.loads(path.read_text())
        series.append(Series(**{k: data[k] for k in Series.__dataclass_fields__}))
    return tuple(series)


def load_reference(task: str, budget: int, *, agent: str | None = None, tolerance: float = 0.1,
                   directory: str | Path = REFERENCE_DIR, obs: str = "image") -> list[dict]:
    """Published results for `task` near `budget` environment steps from `obs` observations,
    one dict per series (`label`, `mean`, `std`, `seeds`, the `step` they were measured at,
    `citation`, `source`); only the series that are `agent`'s counterpart when `agent` is given."""
    found = []
    for series in load_references(directory):
        if series.obs != obs or (agent is not None and series.agent != agent):
            continue
        point = series.at(task, budget, tolerance)
        if point is not None:
            found.append(point)
    return found


def reference_curves(task: str, directory: str | Path = REFERENCE_DIR,
                     obs: str = "image") -> list[tuple[Series, list[list]]]:
    """(series, rows) for every series from `obs` observations that has `task`."""
    return [(s, s.rows(task)) for s in load_references(directory) if s.obs == obs and s.rows(task)]


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m benchmarks.reference", description=__doc__.split("\n")[0])
    parser.add_argument("--source", default=str(DEFAULT_SOURCE), help="the shared reference folder")
    parser.add_argument("--out", default=str(REFERENCE_DIR))
    args = parser.parse_args(argv)
    try:
        paths = build(Path(args.source), Path(args.out))
    except (OSError, ValueError, KeyError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    total = sum(p.stat().st_size for p in paths)
    print(f"wrote {len(paths)} files ({total / 1024:.0f} KiB) to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(run_command(lambda: main() or 0, sys.argv[1:]))
