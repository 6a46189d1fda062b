"""The sample-efficiency benchmark: aggregation over seeds and budgets, skipping finished runs,
the command line, and a tiny sweep end to end (local and on Ray); the reference data it holds
runs against is tested in test_reference.py."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest
import yaml

from benchmarks import aggregate, launch, sample_efficiency
from benchmarks.aggregate import RunDir

# ----------------------------------------------------------------------------- aggregation

def write_metrics(logdir: Path, evals: list[tuple[int, float]], extra_steps: list[int] = ()) -> Path:
    logdir.mkdir(parents=True, exist_ok=True)
    lines = [{"step": s, "eval/return": v} for s, v in evals] + [{"step": s, "train/return": 1.0} for s in extra_steps]
    lines.sort(key=lambda r: r["step"])
    (logdir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    return logdir


def test_value_at_takes_the_latest_evaluation_at_or_before_the_budget():
    curve = [(5000, 1.0), (10000, 2.0), (15000, 3.0)]
    assert aggregate.value_at(curve, 10000) == (10000, 2.0)
    assert aggregate.value_at(curve, 11000) == (10000, 2.0)  # within 10% before it
    assert aggregate.value_at(curve, 12000) is None  # 10000 is 17% before
    assert aggregate.value_at(curve, 12000, tolerance=0.2) == (10000, 2.0)
    assert aggregate.value_at(curve, 4000) is None  # never after the budget


def test_current_records_drop_what_a_rerun_superseded():
    records = [{"step": s} for s in (1000, 2000, 3000, 1000, 2000)]
    assert [r["step"] for r in aggregate.current_records(records)] == [1000, 1000, 2000]
    resumed = [{"step": s, "i": i} for i, s in enumerate((1000, 2000, 3000, 2000, 3000, 4000))]
    assert [r["i"] for r in aggregate.current_records(resumed)] == [0, 1, 3, 4, 5]


def test_default_budgets():
    assert aggregate.default_budgets(2000) == [2000]
    assert aggregate.default_budgets(500_000) == [100_000, 500_000]
    assert aggregate.default_budgets(600_000) == [100_000, 500_000, 600_000]
    assert aggregate.default_budgets(2_000_000) == [100_000, 500_000, 1_000_000, 2_000_000]


def test_aggregate_over_seeds_and_budgets_with_missing_points(tmp_path):
    env = "dmc_walker_walk"
    runs = [
        RunDir("dreamer", env, 0, write_metrics(tmp_path / "s0", [(50_000, 100.0), (100_000, 300.0), (500_000, 800.0)])),
        RunDir("dreamer", env, 1, write_metrics(tmp_path / "s1", [(100_000, 500.0), (480_000, 900.0)])),
        # Seed 2 stopped at 300k; its eval at 100k is missing (a null eval, as non-finite returns are logged).
        RunDir("dreamer", env, 2, write_metrics(tmp_path / "s2", [(100_000, None), (200_000, 600.0)], [300_000])),
        RunDir("planet", env, 0, tmp_path / "never_started"),
    ]
    summary = aggregate.aggregate(runs, [100_000, 500_000])
    rows = {(r["agent"], r["budget"]): r for r in summary["rows"]}
    at_100k = rows["dreamer", 100_000]
    assert at_100k["mean"] == pytest.approx(400.0) and at_100k["std"] == pytest.approx(100.0)
    assert (at_100k["seeds"], at_100k["seeds_total"]) == (2, 3)
    assert at_100k["missing"] == [{"seed": 2, "reason": "no evaluation within 10% before the budget"}]
    at_500k = rows["dreamer", 500_000]
    assert [v["step"] for v in at_500k["values"]] == [500_000, 480_000]
    assert at_500k["mean"] == pytest.approx(850.0)
    assert at_500k["missing"] == [{"seed": 2, "reason": "budget not reached (last step 300000)"}]
    assert rows["planet", 100_000]["mean"] is None
    assert rows["planet", 100_000]["missing"] == [{"seed": 0, "reason": "no metrics"}]
    same = {p["id"] for p in at_100k["published_same_method"]}
    assert {"dreamer_v1", "curl_table_dreamer"} <= same
    assert all(p["id"] not in same for p in at_100k["published_other"])
    assert {p["id"] for p in rows["planet", 500_000]["published_same_method"]} == {"curl_table_planet"}
    assert [r["curve"] for r in summary["runs"]] == [
        [[50_000, 100.0], [100_000, 300.0], [500_000, 800.0]], [[100_000, 500.0], [480_000, 900.0]],
        [[200_000, 600.0]], []]
    json.dumps(summary)

    md = aggregate.to_markdown(summary)
    assert "| dmc_walker_walk | 100k | dreamer | 400 ± 100 | 2/3 | Dreamer (CURL T1)" in md
    assert "| dmc_walker_walk | 100k | planet | — | 0/1 |" in md
    assert "seed 2 at 500k: budget not reached (last step 300000)" in md
    assert "Laskin et al. 2020" in md and "../shared/reference/" in md
    assert "uniform random" not in md  # no column unless measured


def test_a_recorded_summary_aggregates_as_its_run_folders_did(tmp_path):
    env = "dmc_walker_walk"
    runs = [RunDir("dreamer", env, 0, write_metrics(tmp_path / "s0", [(50_000, 100.0), (100_000, 300.0)])),
            RunDir("dreamer", env, 1, write_metrics(tmp_path / "s1", [(100_000, 500.0)], [300_000]))]
    summary = aggregate.aggregate(runs, [100_000, 300_000])
    recorded = [aggregate.RecordedRun(r["agent"], r["env"], r["seed"], tuple(map(tuple, r["curve"])),
                                      r["last_step"], tmp_path / "record.json") for r in summary["runs"]]
    again = aggregate.aggregate(recorded, [100_000, 300_000])
    assert again["rows"] == summary["rows"]
    assert [r["last_step"] for r in again["runs"]] == [100_000, 300_000]
    assert again["rows"][1]["missing"] == [{"seed": 0, "reason": "budget not reached (last step 100000)"},
                                           {"seed": 1, "reason": "no evaluation within 10% before the budget"}]


def test_training_episodes_are_binned_as_the_official_score_files(tmp_path):
    """Each seed's mean over the training episodes that ended in [budget - 10k, budget), then the
    mean and std over seeds; kept in the record, so a recorded summary gives the same rows."""
    assert aggregate.training_mean([(19_000, 5.0), (20_000, 1.0), (25_000, 2.0), (29_000, 6.0), (30_000, 9.0)],
                                   30_000) == pytest.approx(3.0)  # 1, 2 and 6: 30k itself is the next bin
    assert aggregate.training_mean([(31_000, 1.0)], 30_000) is None
    env = "dmc_cartpole_swingup"
    logdirs = [tmp_path / "s0", tmp_path / "s1"]
    for logdir, returns in zip(logdirs, ([(21_000, 10.0), (29_000, 30.0)], [(25_000, 40.0)])):
        logdir.mkdir()
        lines = [{"step": s, "train/return": v} for s, v in returns] + [{"step": 30_000, "eval/return": 100.0}]
        (logdir / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    summary = aggregate.aggregate([RunDir("dreamer", env, seed, logdir) for seed, logdir in enumerate(logdirs)],
                                  [30_000])
    assert summary["rows"][0]["training"] == {"mean": pytest.approx(30.0), "std": pytest.approx(10.0), "seeds": 2}
    stopped = write_metrics(tmp_path / "stopped", [], [21_000, 29_000])
    unfinished = aggregate.aggregate([RunDir("dreamer", env, 0, stopped)], [30_000])["rows"][0]
    assert unfinished["training"]["seeds"] == 0  # stopped at 29k: its bin before 30k is not whole
    md = aggregate.to_markdown(summary)
    assert "| ours: training episodes, 10k before |" in md and "| 100 ± 0 | 2/2 | 30 ± 10 |" in md
    recorded = [aggregate.RecordedRun(r["agent"], r["env"], r["seed"], tuple(map(tuple, r["curve"])),
                                      r["last_step"], tmp_path / "record.json", r["obs"], tuple(map(tuple, r["training"])))
                for r in summary["runs"]]
    assert aggregate.aggregate(recorded, [30_000])["rows"] == summary["rows"]


def test_a_run_from_vectors_is_held_against_the_published_vector_curves_only(tmp_path):
    """DreamerV3's proprio score file at 30k / 50k on reacher easy (359 / 631, the numbers of its
    five seeds' mean), and no pixel series for a vector run, nor the proprio one for a pixel run."""
    env = "dmc_reacher_easy"
    vector = write_metrics(tmp_path / "v", [(30_000, 100.0), (50_000, 200.0)])
    (vector / "config.yaml").write_text(yaml.safe_dump({"env": {"obs": "vector"}}))
    pixels = write_metrics(tmp_path / "p", [(30_000, 100.0), (50_000, 200.0)])
    rows = aggregate.aggregate([RunDir("dreamer", env, 0, vector)], [30_000, 50_000])["rows"]
    assert [[(p["id"], round(p["mean"])) for p in r["published_other"]] for r in rows] == [
        [("dreamer_v3_proprio", 359)], [("dreamer_v3_proprio", 631)]]
    assert rows[0]["published_same_method"] == []
    pixel_rows = aggregate.aggregate([RunDir("dreamer", env, 0, pixels)], [30_000, 50_000])["rows"]
    ids = {p["id"] for r in pixel_rows for p in r["published_other"] + r["published_same_method"]}
    assert ids and "dreamer_v3_proprio" not in ids
    summary = aggregate.aggregate([RunDir("dreamer", env, 0, vector)], [30_000])
    recorded = [aggregate.RecordedRun(r["agent"], r["env"], r["seed"], tuple(map(tuple, r["curve"])),
                                      r["last_step"], tmp_path / "record.json", r["obs"]) for r in summary["runs"]]
    assert aggregate.aggregate(recorded, [30_000])["rows"] == summary["rows"]


def test_random_baseline_is_a_column_per_agent_and_task(tmp_path):
    env = "dmc_cartpole_swingup"
    runs = [RunDir("dreamer", env, 0, write_metrics(tmp_path / "d", [(25_000, 300.0)])),
            RunDir("planet", env, 0, write_metrics(tmp_path / "p", [(25_000, 200.0)]))]
    baseline = {("dreamer", env): {"mean": 40.25, "std": 5.0, "episodes": 10, "action_repeat": 8}}
    summary = aggregate.aggregate(runs, [25_000], random_returns=baseline)
    rows = {r["agent"]: r for r in summary["rows"]}
    assert rows["dreamer"]["random"]["mean"] == 40.25 and rows["planet"]["random"] is None
    md = aggregate.to_markdown(summary)
    assert "| ours: mean ± std | seeds | uniform random | published, same method |" in md
    assert "| dmc_cartpole_swingup | 25k | dreamer | 300 | 1/1 | 40 ± 5 |" in md
    assert "| dmc_cartpole_swingup | 25k | planet | 200 | 1/1 | — |" in md
    assert "over 10 episodes on the run's own environment settings" in md


# ----------------------------------------------------------------------------- command line, launchers

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent


@pytest.fixture
def fake_train(monkeypatch):
    """Runs go to tests/fake_train.py instead of dreamer.train."""
    monkeypatch.setattr(launch, "TRAIN_MODULE", "fake_train")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), str(TESTS), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.delenv("FAKE_TRAIN_CRASH_SEED", raising=False)


def sweep(out: Path, *extra: str, steps: int = 2000, seeds: int = 2) -> int:
    return sample_efficiency.main(["--agents", "dreamer", "--envs", "dmc_cartpole_balance", "--seeds", str(seeds),
                                   "--steps", str(steps), "--out", str(out), "--quiet", *extra])


def invocations(out: Path, seed: int) -> int:
    path = out / "runs" / "dreamer" / "dmc_cartpole_balance" / f"seed_{seed}" / "invocations"
    return len(path.read_text().splitlines()) if path.exists() else 0


def test_finished_runs_are_skipped_and_unfinished_ones_rerun(tmp_path, fake_train, monkeypatch, capsys):
    out = tmp_path / "sweep"
    monkeypatch.setenv("FAKE_TRAIN_CRASH_SEED", "1")
    assert sweep(out, "--workers", "2") == 1
    assert "1 run(s) did not finish: dreamer/dmc_cartpole_balance/seed_1" in capsys.readouterr().err
    runs = out / "runs" / "dreamer" / "dmc_cartpole_balance"
    assert (runs / "seed_0" / "done.json").is_file() and not (runs / "seed_1" / "done.json").exists()
    attempts = [json.loads(line) for line in (out / "attempts.jsonl").read_text().splitlines()]
    assert sorted((a["seed"], a["exit_code"], a["finished"]) for a in attempts) == [(0, 0, True), (1, 1, False)]

    monkeypatch.delenv("FAKE_TRAIN_CRASH_SEED")
    assert sweep(out) == 0  # only the unfinished run again, in the same logdir
    assert (invocations(out, 0), invocations(out, 1)) == (1, 2)
    summary = json.loads((out / "summary.json").read_text())
    assert [v["return"] for v in summary["rows"][0]["values"]] == [200.0, 300.0]  # the rerun's own curve
    assert sweep(out) == 0  # everything finished: nothing runs
    assert (invocations(out, 0), invocations(out, 1)) == (1, 2)
    assert "all 2 runs already finished" in capsys.readouterr().err
    assert sweep(out, steps=3000) == 0  # a longer budget continues both runs
    assert (invocations(out, 0), invocations(out, 1)) == (2, 3)
    assert sweep(out, steps=1000) == 0  # a shorter one is covered by the finished runs
    assert (invocations(out, 0), invocations(out, 1)) == (2, 3)
    assert len((out / "attempts.jsonl").read_text().splitlines()) == 5


def assert_one_line_error(code: int, capsys, *needles: str) -> None:
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("error: "), err
    for needle in needles:
        assert needle in err[0], err


@pytest.mark.parametrize("args, needles", [
    (["--agents", "dreamr"], ["unknown agent 'dreamr'", "did you mean 'dreamer'"]),
    (["--envs", "dmc_walker_walkk"], ["Unknown environment 'dmc_walker_walkk'", "dmc_walker_walk"]),
    (["--envs", "walker"], ["Unknown environment 'walker'"]),
    (["--seeds", "0"], ["--seeds must be at least 1"]),
    (["--random-episodes", "-1"], ["--random-episodes must be at least 0"]),
    (["--steps", "many"], ["--steps", "invalid int value"]),
    (["--configs", "nosuchpreset"], ["unknown preset 'nosuchpreset'"]),
    (["--model.detr", "8"], ["model.detr"]),
    (["--seed", "3"], ["--seed is set by the sweep"]),
    (["--budgets", "0"], ["--budgets must be positive"]),
    (["--address", "auto"], ["need --launcher ray"]),
    (["--launcher", "slurm"], ["invalid choice: 'slurm'"]),
    (["--record", "../x"], ["--record takes a plain name"]),
])
def test_bad_input_is_one_line_error_and_writes_nothing(tmp_path, capsys, args, needles):
    base = {"--agents": ["dreamer"], "--envs": ["dmc_cartpole_balance"], "--steps": ["1000"], "--seeds": ["1"]}
    flags = dict(base)
    rest = list(args)
    if args[0] in base:
        flags[args[0]] = args[1:]
        rest = []
    argv = [x for k, v in flags.items() for x in (k, *v)] + rest + ["--out", str(tmp_path / "out")]
    assert_one_line_error(sample_efficiency.main(argv), capsys, *needles)
    assert not (tmp_path / "out").exists()


def test_a_logdir_with_other_settings_is_an_error(tmp_path, fake_train, capsys):
    out = tmp_path / "sweep"
    assert sweep(out, seeds=1, steps=1000) == 0
    capsys.readouterr()
    assert_one_line_error(sweep(out, "--configs", "debug", seeds=1, steps=1000), capsys, "holds a run with other "
                                                                                          "settings")


def test_ray_launcher_without_ray_says_how_to_install(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    code = sweep(tmp_path / "out", "--launcher", "ray", seeds=1)
    assert_one_line_error(code, capsys, "--launcher ray needs Ray: pip install -e '.[ray]'")


def test_ray_sweep_completes_and_aggregates(tmp_path, fake_train, capsys):
    pytest.importorskip("ray", reason="Ray is not installed (pip install -e '.[ray]')")
    out = tmp_path / "sweep"
    start = time.time()
    assert sweep(out, "--launcher", "ray", "--cpus-per-run", "1", "--budgets", "1000", "2000") == 0
    print(f"ray sweep: {time.time() - start:.1f} s")
    summary = json.loads((out / "summary.json").read_text())
    rows = {r["budget"]: r for r in summary["rows"]}
    assert rows[1000]["mean"] == pytest.approx(150.0) and rows[1000]["std"] == pytest.approx(50.0)
    assert rows[2000]["seeds"] == 2
    assert (out / "plots" / "grid.png").is_file() and (out / "summary.md").is_file()
    attempts = [json.loads(line) for line in (out / "attempts.jsonl").read_text().splitlines()]
    assert sorted(a["seed"] for a in attempts if a["finished"]) == [0, 1]
    assert sweep(out, "--launcher", "ray") == 0  # finished runs are skipped, Ray is not even started
    assert "all 2 runs already finished" in capsys.readouterr().err
    assert (invocations(out, 0), invocations(out, 1)) == (1, 1)


# ----------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def debug_sweep(tmp_path_factory):
    """One real tiny sweep through dreamer.train, run twice: (out, first seconds, second seconds)."""
    out = tmp_path_factory.mktemp("sweep")
    argv = ["--agents", "dreamer", "--envs", "dmc_cartpole_balance", "--seeds", "1", "--steps", "1000",
            "--configs", "debug", "--out", str(out), "--quiet"]
    times = []
    for _ in range(2):
        start = time.time()
        assert sample_efficiency.main(argv) == 0
        times.append(time.time() - start)
    return out, argv, times


@pytest.mark.e2e  # the sweep runs dreamer.train in real processes on MuJoCo
def test_debug_sweep_writes_table_json_and_plots(debug_sweep):
    out, _, _ = debug_sweep
    summary = json.loads((out / "summary.json").read_text())
    (row,) = summary["rows"]
    assert (row["agent"], row["env"], row["budget"], row["seeds"]) == ("dreamer", "dmc_cartpole_balance", 1000, 1)
    assert row["values"][0]["step"] == 1000 and row["mean"] > 0
    md = (out / "summary.md").read_text()
    assert "| dmc_cartpole_balance | 1k | dreamer |" in md and "--configs debug" in md
    for png in ("grid.png", "dmc_cartpole_balance.png"):
        assert (out / "plots" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    logdir = out / "runs" / "dreamer" / "dmc_cartpole_balance" / "seed_0"
    assert {"done.json", "train.log", "metrics.jsonl", "config.yaml"} <= {p.name for p in logdir.iterdir()}


@pytest.mark.e2e  # the sweep runs dreamer.train in real processes on MuJoCo
def test_rerunning_a_finished_sweep_skips_the_run(debug_sweep):
    out, _, (first, second) = debug_sweep
    assert second < first / 3, (first, second)
    assert len((out / "attempts.jsonl").read_text().splitlines()) == 1


@pytest.mark.e2e  # the sweep runs dreamer.train in real processes on MuJoCo
def test_record_copies_table_plot_and_provenance(debug_sweep, tmp_path, monkeypatch):
    out, argv, _ = debug_sweep
    monkeypatch.setattr(sample_efficiency, "RESULTS", tmp_path)
    assert sample_efficiency.main([*argv, "--aggregate-only", "--record", "tiny"]) == 0
    prov = json.loads((tmp_path / "tiny.json").read_text())
    assert prov["summary"]["rows"] and prov["wall_seconds"] > 0
    assert prov["command"].startswith("python -m benchmarks.sample_efficiency --agents dreamer")
    assert "--out DIR " in prov["command"] and str(out) not in (tmp_path / "tiny.json").read_text()
    assert prov["commit"] and "CPU cores" in prov["machine"]
    (run,) = prov["runs"]
    assert run["finished"] and run["attempts"] == 1 and run["wall_seconds"] > 0
    assert "![learning curves](tiny.png)" in (tmp_path / "tiny.md").read_text()
    assert (tmp_path / "tiny.png").read_bytes()[:4] == b"\x89PNG"


def test_random_baseline_is_one_measurement_per_settings_at_seed_0(tmp_path, monkeypatch):
    from benchmarks import record_run

    calls = []
    monkeypatch.setattr(record_run, "random_policy_returns",
                        lambda config, episodes: calls.append((config.seed, config.env.action_repeat)) or [5.0])
    env = "dmc_cartpole_balance"
    jobs = [launch.make_job(tmp_path, agent, env, seed, 1000, configs)
            for configs in ([], ["cpu"]) for agent in ("dreamer", "planet", "plan2explore") for seed in (1, 0)]
    result = sample_efficiency.random_baselines(jobs[:6], 3, tmp_path)
    # Paper settings: Dreamer and Plan2Explore repeat actions 2 times on cartpole, PlaNet 8.
    assert calls == [(0, 2), (0, 8)]
    assert result["dreamer", env] == result["plan2explore", env] != result["planet", env]
    cpu = sample_efficiency.random_baselines(jobs[6:], 3, tmp_path)  # one set of env settings for all
    assert calls == [(0, 2), (0, 8), (0, 8)]  # repeat 8 as PlaNet's, but faster rendering: measured anew
    assert cpu["dreamer", env] == cpu["planet", env] == cpu["plan2explore", env]
    sample_efficiency.random_baselines(jobs, 3, tmp_path)  # all cached in DIR/random_returns.json
    assert len(calls) == 3


@pytest.mark.e2e  # the sweep runs dreamer.train in real processes on MuJoCo
def test_random_baseline_is_measured_once_on_the_runs_settings(debug_sweep, monkeypatch):
    from benchmarks import record_run

    out, argv, _ = debug_sweep
    calls = []

    def measure(config, episodes):
        calls.append((config.seed, config.env.action_repeat, config.env.time_limit, episodes))
        return [10.0, 30.0]

    monkeypatch.setattr(record_run, "random_policy_returns", measure)
    for _ in range(2):  # the second aggregation reads DIR/random_returns.json
        assert sample_efficiency.main([*argv, "--aggregate-only", "--random-episodes", "2"]) == 0
    config = yaml.safe_load((out / "runs" / "dreamer" / "dmc_cartpole_balance" / "seed_0" / "config.yaml").read_text())
    assert calls == [(0, config["env"]["action_repeat"], config["env"]["time_limit"], 2)]
    (row,) = json.loads((out / "summary.json").read_text())["rows"]
    assert row["random"] == {"mean": 20.0, "std": 10.0, "episodes": 2, "action_repeat": config["env"]["action_repeat"]}
    assert "| 1/1 | 20 ± 10 |" in (out / "summary.md").read_text()


# ----------------------------------------------------------------------------- comparing sweeps


def test_compare_puts_sweeps_of_one_agent_side_by_side(tmp_path, monkeypatch, capsys):
    from benchmarks import compare

    env = "dmc_cartpole_swingup"
    for sweep, returns in (("v3", [(25_000, 300.0), (50_000, 500.0)]), ("v1", [(25_000, 150.0), (50_000, 260.0)])):
        write_metrics(tmp_path / sweep / "runs" / "dreamer" / env / "seed_0", returns)
    monkeypatch.setattr(compare, "RESULTS", tmp_path)
    argv = ["--sweep", f"V3 cpu={tmp_path / 'v3'}", "--sweep", f"V1 cpu={tmp_path / 'v1'}",
            "--budgets", "25000", "50000", "--record", "pair"]
    assert compare.main(argv) == 0
    md = (tmp_path / "pair.md").read_text()
    for row in ("| dmc_cartpole_swingup | 25k | V3 cpu | 300 | 1/1 |", "| dmc_cartpole_swingup | 50k | V3 cpu | 500 | 1/1 |",
                "| dmc_cartpole_swingup | 25k | V1 cpu | 150 | 1/1 |", "| dmc_cartpole_swingup | 50k | V1 cpu | 260 | 1/1 |"):
        assert row in md
    assert (tmp_path / "pair.png").read_bytes()[:4] == b"\x89PNG"
    assert compare.main(["--sweep", f"x={tmp_path / 'missing'}", "--budgets", "1"]) == 2
    assert capsys.readouterr().err.strip().startswith("error: no runs with a metrics.jsonl")


def test_compare_reads_a_recorded_sweep_with_its_random_level(tmp_path, monkeypatch, capsys):
    """A record's JSON stands in for its run folders, which do not outlive the machine."""
    from benchmarks import compare

    env = "dmc_reacher_easy"
    run = RunDir("dreamer", env, 0, write_metrics(tmp_path / "v3", [(20_000, 140.0), (25_000, 85.0), (50_000, 49.5)]))
    random = {"mean": 82.4, "std": 57.1, "episodes": 10, "action_repeat": 4}
    summary = aggregate.aggregate([run], [25_000, 50_000], random_returns={("dreamer", env): random})
    (tmp_path / "v3.json").write_text(json.dumps({"provenance": {}, "summary": summary}))
    write_metrics(tmp_path / "v1" / "runs" / "dreamer" / env / "seed_0", [(25_000, 300.0), (50_000, 600.0)])
    monkeypatch.setattr(compare, "RESULTS", tmp_path)
    argv = ["--sweep", f"V3 cpu={tmp_path / 'v3.json'}", "--sweep", f"V1 cpu={tmp_path / 'v1'}",
            "--budgets", "25000", "50000", "--record", "pair"]
    assert compare.main(argv) == 0
    md = (tmp_path / "pair.md").read_text()
    assert "| dmc_reacher_easy | 50k | V3 cpu | 50 | 1/1 | 82 ± 57 |" in md
    assert "| dmc_reacher_easy | 50k | V1 cpu | 600 | 1/1 | — |" in md
    assert "--sweep 'V3 cpu=" in md  # the command as a shell takes it
    (v3,) = [r for r in json.loads((tmp_path / "pair.json").read_text())["summary"]["runs"] if r["agent"] == "V3 cpu"]
    assert v3["curve"] == [[20_000, 140.0], [25_000, 85.0], [50_000, 49.5]] and v3["record"] == str(tmp_path / "v3.json")

    capsys.readouterr()
    del summary["runs"][0]["curve"]  # a record from before curves were kept
    (tmp_path / "old.json").write_text(json.dumps({"summary": summary}))
    for bad in ("old.json", "missing.json"):
        before = sorted(tmp_path.iterdir())
        assert compare.main(["--sweep", f"x={tmp_path / bad}", "--budgets", "1", "--record", "again"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and "\n" not in err and bad in err
        assert sorted(tmp_path.iterdir()) == before
