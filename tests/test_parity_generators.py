"""The parity generators' bad input: one `error:` line, exit status 2, nothing written."""

from __future__ import annotations

import subprocess

import pytest

from tests.parity import generate_dreamer_v1, generate_dreamerv3, generate_plan2explore, generate_planet

GENERATORS = {"dreamerv3": (generate_dreamerv3, ("dreamerv3/agent.py",)),
              "dreamer_v1": (generate_dreamer_v1, ("dreamer.py", "models.py")),
              "planet": (generate_planet, ("planet/control/planning.py",)),
              "plan2explore": (generate_plan2explore, ("plan2explore/networks/one_step_model.py",
                                                      "plan2explore/training/utility.py"))}


def commit_all(path):
    """Make `path` a git repository at some commit that is not the pinned one."""
    run = lambda *args: subprocess.run(["git", "-C", str(path), *args], check=True, capture_output=True)  # noqa: E731
    run("init", "-q")
    run("add", ".")
    run("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "x")


@pytest.mark.parametrize("name", list(GENERATORS))
@pytest.mark.parametrize("case", ["no checkout", "not a git checkout", "another commit"])
def test_bad_checkout_is_one_error_line_and_nothing_written(tmp_path, capsys, name, case):
    module, files = GENERATORS[name]
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    if case != "no checkout":
        for file in files:
            (checkout / file).parent.mkdir(parents=True, exist_ok=True)
            (checkout / file).write_text("")
    if case == "another commit":
        commit_all(checkout)
    out = tmp_path / "golden.npz"
    assert module.main(["--official", str(checkout), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")
    assert ("is at commit" in err[0]) == (case == "another commit")
    assert list(tmp_path.iterdir()) == [checkout]
