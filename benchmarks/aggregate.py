"""Evaluation returns of a sweep's runs at step budgets, next to the published numbers.

For every agent x task x budget: the mean and standard deviation over seeds of each seed's
evaluation return at the budget (its latest evaluation at or before the budget, and no more
than `tolerance` x budget before it), the seeds that have no such point and why, and the
published results for the same task near the same budget (`benchmarks.reference`). Beside it,
each seed's mean return of the training episodes that ended in the `TRAINING_BIN` steps before
the budget: how the official score files' points are made (see `training_mean`).
Written as OUT/summary.json and OUT/summary.md; the JSON keeps each run's evaluation curve, so
a recorded sweep can be compared again after its run folders are gone (`RecordedRun`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from benchmarks.reference import REFERENCE_DIR, load_reference
from dreamer.logger import METRICS_FILE, read_metrics

DEFAULT_BUDGETS = (100_000, 500_000, 1_000_000)
TOLERANCE = 0.1  # an evaluation counts for a budget up to 10% of the budget before it
MISSING = "—"
# The official DreamerV3 score files hold training episodes, averaged by its plot.py in 10k-step
# bins labelled by their right edge: the point at 30k is the episodes that ended in [20k, 30k).
TRAINING_BIN = 10_000


@dataclass(frozen=True)
class RunDir:
    agent: str
    env: str
    seed: int
    logdir: Path

    @property
    def obs(self) -> str:
        """What the run observed (`env.obs` of its config.yaml; image for a run without one)."""
        path = Path(self.logdir) / "config.yaml"
        if not path.is_file():
            return "image"
        config = yaml.safe_load(path.read_text())
        return str(config.get("env", {}).get("obs", "image")) if isinstance(config, dict) else "image"


@dataclass(frozen=True)
class RecordedRun:
    """A run known only from a recorded summary JSON: its evaluation curve, last step and
    training episodes' returns (absent from records written before they were kept)."""
    agent: str
    env: str
    seed: int
    curve: tuple[tuple[int, float], ...]
    last_step: int
    record: Path
    obs: str = "image"
    training: tuple[tuple[int, float], ...] = ()


Run = RunDir | RecordedRun


def default_budgets(steps: int) -> list[int]:
    """100k, 500k and 1M where the runs reach them, and the runs' own length."""
    budgets = [b for b in DEFAULT_BUDGETS if b <= steps]
    return budgets if steps in budgets else budgets + [steps]


def current_records(records: Iterable[dict]) -> list[dict]:
    """The records of the latest attempt: a rerun restarts (or resumes) at a lower step than
    the file already holds, and supersedes what was logged from that step on."""
    kept: list[dict] = []
    for record in records:
        step = record.get("step")
        if step is None:
            continue
        while kept and kept[-1]["step"] > step:
            kept.pop()
        kept.append(record)
    return kept


def run_records(logdir: Path) -> list[dict]:
    path = Path(logdir) / METRICS_FILE
    return current_records(read_metrics(path)) if path.is_file() else []


def run_history(run: Run) -> list[dict]:
    """The run's metric records: read from its logdir, or rebuilt from a record's curve."""
    if isinstance(run, RecordedRun):
        records = [{"step": step, "eval/return": value} for step, value in run.curve]
        records += [{"step": step, "train/return": value} for step, value in run.training]
        return sorted(records, key=lambda r: r["step"]) + [{"step": run.last_step}]
    return run_records(run.logdir)


def eval_curve(records: list[dict]) -> list[tuple[int, float]]:
    """(env step, mean evaluation return) pairs; null (non-finite) returns are left out."""
    return [(int(r["step"]), float(r["eval/return"])) for r in records
            if isinstance(r.get("eval/return"), (int, float)) and math.isfinite(r["eval/return"])]


def training_curve(records: list[dict]) -> list[tuple[int, float]]:
    """(env step at the episode's end, its return) of every training episode."""
    return [(int(r["step"]), float(r["train/return"])) for r in records
            if isinstance(r.get("train/return"), (int, float)) and math.isfinite(r["train/return"])]


def training_mean(curve: Sequence[tuple[int, float]], budget: int, width: int = TRAINING_BIN) -> float | None:
    """The mean return of the training episodes that ended in [budget - width, budget)."""
    values = [v for s, v in curve if budget - width <= s < budget]
    return float(np.mean(values)) if values else None


def last_step(records: list[dict]) -> int:
    return max((int(r["step"]) for r in records), default=0)


def value_at(curve: Sequence[tuple[int, float]], budget: int,
             tolerance: float = TOLERANCE) -> tuple[int, float] | None:
    """The latest evaluation at or before `budget`, if no more than `tolerance` x budget before."""
    points = [(s, v) for s, v in curve if budget - tolerance * budget <= s <= budget]
    return max(points) if points else None


def _missing_reason(records: list[dict], budget: int, tolerance: float) -> str:
    if not records:
        return "no metrics"
    reached = last_step(records)
    if reached < budget:
        return f"budget not reached (last step {reached})"
    return f"no evaluation within {tolerance:.0%} before the budget"


def mean_std(values: Sequence[float]) -> tuple[float | None, float | None]:
    """Mean and standard deviation over seeds (population std, as the reference files)."""
    if not values:
        return None, None
    return float(np.mean(values)), float(np.std(values))


def aggregate(runs: Sequence[Run], budgets: Sequence[int], *, tolerance: float = TOLERANCE,
              reference_dir: str | Path = REFERENCE_DIR,
              random_returns: dict[tuple[str, str], dict] | None = None) -> dict:
    """The summary of `runs` at `budgets` (see the module docstring); JSON-serialisable.
    `random_returns` maps (agent, env) to the uniform random policy's {mean, std, episodes}
    on that run's environment settings, shown next to ours when given."""
    records = {run: run_history(run) for run in runs}
    groups: dict[tuple[str, str], list[Run]] = {}
    for run in runs:
        groups.setdefault((run.agent, run.env), []).append(run)
    rows, sources = [], {}
    for (agent, env), members in groups.items():
        for budget in budgets:
            values, missing = [], []
            for run in sorted(members, key=lambda r: r.seed):
                point = value_at(eval_curve(records[run]), budget, tolerance)
                if point is None:
                    missing.append({"seed": run.seed, "reason": _missing_reason(records[run], budget, tolerance)})
                else:
                    values.append({"seed": run.seed, "step": point[0], "return": round(point[1], 2)})
            mean, std = mean_std([v["return"] for v in values])
            training = [m for run in members if last_step(records[run]) >= budget  # a whole bin only
                        and (m := training_mean(training_curve(records[run]), budget)) is not None]
            train_mean, train_std = mean_std(training)
            published = load_reference(env, budget, tolerance=tolerance, directory=reference_dir,
                                       obs=members[0].obs)
            for p in published:
                sources[p["id"]] = {k: p[k] for k in ("label", "short", "agent", "citation", "source")}
            rows.append({
                "agent": agent, "env": env, "budget": budget, "mean": mean, "std": std,
                "seeds": len(values), "seeds_total": len(members), "values": values, "missing": missing,
                "training": {"mean": train_mean, "std": train_std, "seeds": len(training)},
                "random": (random_returns or {}).get((agent, env)),
                "published_same_method": [_short(p) for p in published if p["agent"] == agent],
                "published_other": [_short(p) for p in published if p["agent"] != agent],
            })
    return {
        "budgets": list(budgets), "tolerance": tolerance, "training_bin": TRAINING_BIN,
        "std": "population std over seeds",
        "rows": rows, "sources": dict(sorted(sources.items())),
        "runs": [_run_entry(run, records[run]) for run in runs],
    }


def _run_entry(run: Run, records: list[dict]) -> dict:
    where = {"record": str(run.record)} if isinstance(run, RecordedRun) else {"logdir": str(run.logdir)}
    curve = eval_curve(records)
    return {"agent": run.agent, "env": run.env, "seed": run.seed, "obs": run.obs, **where,
            "last_step": last_step(records),
            "evaluations": len(curve), "curve": [[step, round(value, 2)] for step, value in curve],
            "training": [[step, round(value, 2)] for step, value in training_curve(records)]}


def _short(point: dict) -> dict:
    return {k: point[k] for k in ("id", "short", "step", "mean", "std", "seeds")}


# ----------------------------------------------------------------------------- markdown


def _steps(n: int) -> str:
    if n >= 1_000_000 and n % 100_000 == 0:
        return f"{n / 1e6:g}M"
    if n >= 1000:
        return f"{n // 1000}k" if n % 1000 == 0 else f"{n / 1000:.1f}k"
    return str(n)


def _value(mean: float | None, std: float | None, seeds: int | None = None) -> str:
    if mean is None:
        return MISSING
    return f"{mean:.0f}" if std is None or seeds == 1 else f"{mean:.0f} ± {std:.0f}"


def _published(points: list[dict], budget: int, numbers: dict[str, int]) -> str:
    if not points:
        return MISSING
    cells = []
    for p in points:
        where = "" if p["step"] == budget else f" at {_steps(p['step'])}"
        cells.append(f"{p['short']} [{numbers[p['id']]}]: {_value(p['mean'], p['std'])}{where}")
    return "; ".join(cells)


def to_markdown(summary: dict, header: str = "") -> str:
    """The summary as markdown: our returns with the same method's published numbers, other
    published methods at the same budgets, the sources, and which seeds are missing where."""
    numbers = {sid: i + 1 for i, sid in enumerate(summary["sources"])}
    lines = [header.rstrip(), ""] if header else []
    with_random = any(row.get("random") for row in summary["rows"])
    random_head = (" uniform random |", " --- |") if with_random else ("", "")
    with_training = any(row.get("training", {}).get("seeds") for row in summary["rows"])
    bin_steps = _steps(summary.get("training_bin", TRAINING_BIN))
    training_head = (f" ours: training episodes, {bin_steps} before |", " --- |") if with_training else ("", "")
    lines += ["| task | budget | agent | ours: mean ± std | seeds |" + training_head[0] + random_head[0]
              + " published, same method |",
              "| --- | --- | --- | --- | --- |" + training_head[1] + random_head[1] + " --- |"]
    notes = []
    for row in summary["rows"]:
        ours = _value(row["mean"], row["std"], row["seeds"])
        rand = row.get("random")
        random_cell = f" {_value(rand['mean'], rand['std'], rand['episodes']) if rand else MISSING} |" \
            if with_random else ""
        training = row.get("training", {})
        training_cell = f" {_value(training.get('mean'), training.get('std'), training.get('seeds'))} |" \
            if with_training else ""
        lines.append(f"| {row['env']} | {_steps(row['budget'])} | {row['agent']} | {ours} | "
                     f"{row['seeds']}/{row['seeds_total']} |{training_cell}{random_cell} "
                     f"{_published(row['published_same_method'], row['budget'], numbers)} |")
        for miss in row["missing"]:
            notes.append(f"- {row['agent']} {row['env']} seed {miss['seed']} at {_steps(row['budget'])}: "
                         f"{miss['reason']}")
    agents = {row["agent"] for row in summary["rows"]}
    seen, other = set(), []
    for row in summary["rows"]:  # published methods that are no agent of this sweep
        key = (row["env"], row["budget"])
        if key in seen:
            continue
        seen.add(key)
        points = {p["id"]: p for r in summary["rows"] if (r["env"], r["budget"]) == key
                  for p in r["published_other"] if p["id"] not in _same_ids(summary, agents)}
        for p in points.values():
            other.append(f"| {row['env']} | {_steps(row['budget'])} | {p['short']} [{numbers[p['id']]}] | "
                         f"{_value(p['mean'], p['std'])} | {_steps(p['step'])} |")
    if other:
        lines += ["", "Other published methods at the same budgets:", "",
                  "| task | budget | method | return | at step |", "| --- | --- | --- | --- | --- |", *other]
    if notes:
        lines += ["", f"Missing points ({MISSING} or fewer seeds than run):", "", *notes]
    lines += ["", f"Ours: each seed's latest evaluation return at or before the budget (at most "
                  f"{summary['tolerance']:.0%} of it before); mean ± {summary['std']}. Published: the point "
                  f"nearest the budget within {summary['tolerance']:.0%}, its step shown when it differs."
              + (f" Training episodes: each seed's mean return of the training episodes that ended in the "
                 f"{bin_steps} steps before the budget, as the official DreamerV3 score files bin theirs."
                 if with_training else "")
              + (" Uniform random: mean ± std of the return of uniformly random actions over "
                 f"{_random_episodes(summary)} episodes on the run's own environment settings "
                 "(measured, not quoted)." if with_random else ""), "",
              "Sources:" if numbers else "No published results within the tolerance of these budgets "
                                         "for these tasks.", ""]
    for sid, number in numbers.items():
        s = summary["sources"][sid]
        lines.append(f"{number}. {s['label']}: {s['citation']}. From {s['source']}.")
    return "\n".join(lines) + "\n"


def _random_episodes(summary: dict) -> str:
    counts = sorted({row["random"]["episodes"] for row in summary["rows"] if row.get("random")})
    return "/".join(str(c) for c in counts)


def _same_ids(summary: dict, agents: set[str]) -> set[str]:
    return {sid for sid, s in summary["sources"].items() if s["agent"] in agents}


def write_summary(summary: dict, out: Path, header: str = "") -> tuple[Path, Path]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / "summary.json", out / "summary.md"
    json_path.write_text(json.dumps(summary, indent=1) + "\n")
    md_path.write_text(to_markdown(summary, header))
    return md_path, json_path
