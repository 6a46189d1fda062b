"""The published reference data (`benchmarks.reference`): task names, binning of score files,
the shipped files against the shared sources and the papers' numbers, the command line."""

from __future__ import annotations

import json

import pytest

from benchmarks import reference
from benchmarks.reference import canonical_task, load_reference, load_references

SHARED = reference.DEFAULT_SOURCE
needs_shared = pytest.mark.skipif(not (SHARED / "README.md").is_file(),
                                  reason=f"no shared reference data at {SHARED}")


def test_canonical_task_names():
    assert canonical_task("dmc_cup_catch") == "dmc_ball_in_cup_catch"
    assert canonical_task("cup catch") == "dmc_ball_in_cup_catch"
    assert canonical_task("walker-walk") == "dmc_walker_walk"
    assert canonical_task("cartpole swingup") == "dmc_cartpole_swingup"
    assert canonical_task("dmc_walker_walk") == "dmc_walker_walk"


def test_seed_curves_to_rows_means_over_seeds_and_bins():
    nan = float("nan")
    rows = reference.seed_curves_to_rows([([0, 10, 20], [1.0, 3.0, nan]), ([0, 10, 20], [3.0, 5.0, 7.0])], None)
    assert rows == [[0, 2.0, 1.0, 2], [10, 4.0, 1.0, 2], [20, 7.0, 0.0, 1]]
    # Binned: each seed averaged in its bin first; the row's step is the points' mean step.
    rows = reference.seed_curves_to_rows([([8, 12, 21], [2.0, 4.0, 10.0])], 10)
    assert rows == [[10, 3.0, 0.0, 1], [21, 10.0, 0.0, 1]]


def test_shipped_reference_files_are_compact_and_cited():
    series = load_references()
    assert {s.id for s in series} >= {"dreamer_v1", "dreamer_v2", "dreamer_v3", "plan2explore_zeroshot", "curl",
                                      "drqv2", "curl_table_dreamer", "curl_table_planet", "planet_table1"}
    assert sum(p.stat().st_size for p in reference.REFERENCE_DIR.glob("*.json")) < 400_000
    for s in series:
        assert s.citation and s.source.startswith("../shared/reference/"), s.id
        for task, rows in s.tasks.items():
            assert task.startswith("dmc_") and "cup_catch" not in task.replace("ball_in_cup_catch", ""), task
            assert all(len(r) == 4 and r[0] >= 0 for r in rows)


def test_load_reference_matches_published_numbers():
    # Numbers quoted in ../shared/reference/README.md.
    by_id = {p["id"]: p for p in load_reference("dmc_walker_walk", 100_000)}
    assert by_id["dreamer_v1"]["mean"] == pytest.approx(137, abs=1) and by_id["dreamer_v1"]["step"] == 105_000
    assert by_id["curl_table_dreamer"]["mean"] == 277 and by_id["curl_table_dreamer"]["std"] == 12
    assert by_id["curl_table_drq"]["mean"] == 612
    planet = load_reference("dmc_ball_in_cup_catch", 1_000_000, agent="planet")
    assert [(p["id"], p["mean"]) for p in planet] == [("planet_table1", 930)]
    v3 = {p["id"]: p for p in load_reference("dmc_walker_walk", 1_000_000)}["dreamer_v3"]
    assert v3["mean"] == pytest.approx(960, abs=15) and v3["seeds"] >= 5
    assert all(p["agent"] == "dreamer" for p in load_reference("dmc_walker_walk", 500_000, agent="dreamer"))
    assert all(abs(p["step"] - 2_000) <= 200 for p in load_reference("dmc_walker_walk", 2_000))
    assert load_reference("dmc_no_such_task", 100_000) == []


@needs_shared
def test_reference_built_from_shared_files_equals_shipped(tmp_path):
    paths = reference.build(SHARED, tmp_path)
    assert {p.name for p in paths} == {p.name for p in reference.REFERENCE_DIR.glob("*.json")}
    for path in paths:
        assert json.loads(path.read_text()) == json.loads((reference.REFERENCE_DIR / path.name).read_text()), \
            f"{path.name} differs: rerun python -m benchmarks.reference"
    rebuilt = load_references(tmp_path)
    # Mean over the 20 Dreamer tasks at 1M steps (README: V1 700, V2 742, V3 783).
    for sid, expected in (("dreamer_v1", 700), ("dreamer_v2", 742), ("dreamer_v3", 783)):
        series = next(s for s in rebuilt if s.id == sid)
        values = [series.at(task, 1_000_000)["mean"] for task in series.tasks]
        assert len(values) == 20
        assert sum(values) / len(values) == pytest.approx(expected, abs=25), sid


def test_reference_cli_reports_a_missing_source(tmp_path, capsys):
    assert reference.main(["--source", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: no reference data")
