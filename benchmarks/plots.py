"""Learning-curve figures: evaluation return against environment steps, one PNG per task and a grid.

Our seeds are drawn as their mean with a band of ± one standard deviation; published curves as
thinner lines with lighter bands, published table entries as points with error bars. Both are
cut at the sweep's horizon (the runs' steps or the largest budget), so a short run is not
squeezed into a corner of a 5M-step axis.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.aggregate import Run, eval_curve, run_history  # noqa: E402
from benchmarks.reference import REFERENCE_DIR, reference_curves  # noqa: E402

AGENT_COLORS = {"dreamer": "tab:blue", "planet": "tab:orange", "plan2explore": "tab:green"}
OTHER_COLORS = ["tab:red", "tab:cyan", "black", "tab:olive"]  # our curves under other labels
REFERENCE_COLORS = ["tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan", "tab:gray", "tab:red",
                    "darkblue", "darkgreen", "goldenrod", "black", "teal"]


def seed_mean_curve(curves: Sequence[Sequence[tuple[int, float]]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(steps, mean, std) over the seeds that have an evaluation at each step."""
    by_step: dict[int, list[float]] = {}
    for curve in curves:
        for step, value in curve:
            by_step.setdefault(step, []).append(value)
    steps = np.array(sorted(by_step), dtype=float)
    mean = np.array([np.mean(by_step[s]) for s in sorted(by_step)])
    std = np.array([np.std(by_step[s]) for s in sorted(by_step)])
    return steps, mean, std


def _step_label(x: float, _pos=None) -> str:
    if x >= 1e6:
        return f"{x / 1e6:g}M"
    return f"{x / 1e3:g}k" if x >= 1e3 else f"{x:g}"


def _reference_style(series_ids: list[str]) -> dict[str, str]:
    return {sid: REFERENCE_COLORS[i % len(REFERENCE_COLORS)] for i, sid in enumerate(series_ids)}


def plot_task(ax, task: str, curves: dict[str, list], horizon: int, budgets: Sequence[int] = (),
              colors: dict[str, str] | None = None, reference_dir: str | Path = REFERENCE_DIR,
              legend: bool = True, random_returns: dict[str, float] | None = None, obs: str = "image") -> None:
    """One task: `curves` maps agent -> per-seed [(step, return), ...]; `random_returns` maps
    agent -> the uniform random policy's mean return on that agent's settings (a level line);
    the published curves are those from `obs` observations."""
    limit = horizon * 1.05
    for series, rows in reference_curves(task, reference_dir, obs):
        rows = [r for r in rows if r[0] <= limit]
        if not rows:
            continue
        color = (colors or {}).get(series.id, "gray")
        steps = np.array([r[0] for r in rows], float)
        mean = np.array([r[1] for r in rows], float)
        std = np.array([r[2] if r[2] is not None else 0.0 for r in rows], float)
        label = f"{series.short} (published)"
        if series.kind == "curve" and len(rows) > 1:
            ax.plot(steps, mean, color=color, lw=1.0, ls="--", label=label)
            ax.fill_between(steps, mean - std, mean + std, color=color, alpha=0.08, lw=0)
        else:
            has_std = any(r[2] is not None for r in rows)
            ax.errorbar(steps, mean, yerr=std if has_std else None, fmt="D", ms=4, color=color, capsize=2,
                        label=label)
    for index, (agent, seeds) in enumerate(curves.items()):
        seeds = [c for c in seeds if c]
        if not seeds:
            continue
        steps, mean, std = seed_mean_curve(seeds)
        color = AGENT_COLORS.get(agent, OTHER_COLORS[index % len(OTHER_COLORS)])
        ax.plot(steps, mean, color=color, lw=2.2, marker="o", ms=3, label=f"{agent} (ours, {len(seeds)} seed{'s' if len(seeds) > 1 else ''})")
        if len(seeds) > 1:
            ax.fill_between(steps, mean - std, mean + std, color=color, alpha=0.25, lw=0)
    levels: dict[float, list[str]] = {}
    for agent, level in (random_returns or {}).items():
        levels.setdefault(round(level, 1), []).append(agent)
    for level, agents in levels.items():
        which = "" if len(levels) == 1 else f" ({', '.join(agents)})"
        ax.axhline(level, color="dimgray", lw=1.0, ls=(0, (1, 2)), label=f"uniform random{which}")
    for budget in budgets:
        ax.axvline(budget, color="k", lw=0.5, ls=":")
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(_step_label))
    ax.set_xlim(0, limit)
    ax.set_ylim(0, 1000)  # DMC returns lie in [0, 1000]
    ax.set_title(task)
    ax.set_xlabel("environment steps")
    ax.set_ylabel("evaluation return")
    ax.grid(alpha=0.3)
    if legend:
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5), frameon=False)


def plot_sweep(runs: Sequence[Run], out: Path, horizon: int, budgets: Sequence[int] = (),
               reference_dir: str | Path = REFERENCE_DIR,
               random_returns: dict[tuple[str, str], dict] | None = None) -> list[Path]:
    """OUT/<task>.png for every task of `runs`, and OUT/grid.png with all of them.
    `random_returns`: (agent, env) -> {"mean": ...} of the uniform random policy, if measured."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tasks: dict[str, dict[str, list]] = {}
    observed = {run.env: run.obs for run in runs}  # a task's published curves: its runs' observations
    for run in runs:
        tasks.setdefault(run.env, {}).setdefault(run.agent, []).append(eval_curve(run_history(run)))
    ids = []
    for task in tasks:
        ids += [s.id for s, _ in reference_curves(task, reference_dir, observed[task]) if s.id not in ids]
    colors = _reference_style(ids)

    def levels(task: str) -> dict[str, float]:
        return {agent: r["mean"] for (agent, env), r in (random_returns or {}).items() if env == task and r}

    paths = []
    for task, curves in tasks.items():
        fig, ax = plt.subplots(figsize=(9.0, 4.4))
        plot_task(ax, task, curves, horizon, budgets, colors, reference_dir, random_returns=levels(task),
                  obs=observed[task])
        fig.tight_layout()
        path = out / f"{task}.png"
        fig.savefig(path, dpi=110, bbox_inches="tight")  # the legend sits outside the axes
        plt.close(fig)
        paths.append(path)
    cols = min(3, len(tasks)) or 1
    rows = math.ceil(len(tasks) / cols) or 1
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.9 * rows), squeeze=False)
    for ax, (task, curves) in zip(axes.flat, tasks.items()):
        plot_task(ax, task, curves, horizon, budgets, colors, reference_dir, legend=False,
                  random_returns=levels(task), obs=observed[task])
    spare = list(axes.flat)[len(tasks):]
    for ax in spare:
        ax.axis("off")
    handles = {}
    for ax in axes.flat:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    if spare:  # the legend in the empty cells
        spare[0].legend(handles.values(), handles.keys(), loc="center", fontsize=7, ncol=max(1, len(spare)))
        fig.tight_layout()
    else:
        fig.legend(handles.values(), handles.keys(), loc="lower center", ncol=min(4, len(handles)) or 1,
                   fontsize=7)
        legend_inches = 0.17 * math.ceil(len(handles) / 4) + 0.2
        fig.tight_layout(rect=(0, legend_inches / fig.get_figheight(), 1, 1))
    path = out / "grid.png"
    fig.savefig(path, dpi=100, bbox_inches="tight")  # a wide legend may overhang the figure
    plt.close(fig)
    return paths + [path]
