"""The one writer of benchmark records (`benchmarks.common.write_record`): every record says
its command, commit, machine and wall time, in its JSON and at the top of its markdown."""

from __future__ import annotations

import json
import time

import pytest

from benchmarks import common


def test_a_record_carries_its_provenance_in_both_files(tmp_path):
    record = {**common.provenance(common.command_line("benchmarks.example", ["--steps", "10 000"]),
                                  time.time() - 125), "figure": 1.5}
    md, js = common.write_record(tmp_path / "results", "example", "An example", record, "| a |\n| --- |\n")
    assert json.loads(js.read_text()) == record
    assert record["command"] == "python -m benchmarks.example --steps '10 000'"
    # 125 s before, plus however long the provenance takes on a busy machine: "2 min" up to 149 s.
    assert 125 <= record["wall_seconds"] < 149 and "CPU cores" in record["machine"] and record["commit"]
    lines = md.read_text().splitlines()
    assert lines[:7] == ["# An example", "", f"- command: `{record['command']}`",
                         f"- commit: `{record['commit']}`", f"- machine: {record['machine']}",
                         "- wall time: 2 min", ""]
    assert lines[7:] == ["| a |", "| --- |"]


def test_a_record_without_provenance_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"lacks \['command', 'commit', 'machine', 'wall_seconds'\]"):
        common.write_record(tmp_path, "bare", "Bare", {"figure": 1.0}, "")
    assert not tmp_path.joinpath("bare.json").exists()


def test_a_record_names_the_machines_folders_by_placeholders(tmp_path):
    sweep = tmp_path / "sweeps" / "v3"
    sweep.mkdir(parents=True)
    given = tmp_path / "sweeps" / ".." / "sweeps" / "v3"  # as typed: resolves to `sweep`
    record = {**common.provenance(f"python -m benchmarks.x --out {given}", time.time()),
              "logdirs": [f"{sweep}/runs/seed_0", f"{sweep}2/runs/seed_0"]}
    md, js = common.write_record(tmp_path / "results", "x", "X", record, f"runs in {sweep}.", folders={given: "DIR"})
    written = json.loads(js.read_text())
    assert written["command"] == "python -m benchmarks.x --out DIR"
    assert written["logdirs"] == ["DIR/runs/seed_0", f"{sweep}2/runs/seed_0"]  # another folder stays
    assert "- command: `python -m benchmarks.x --out DIR`" in md.read_text() and "runs in DIR." in md.read_text()
