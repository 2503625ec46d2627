"""The datapath gate (tests/datapathgate.py): under SLUICE_REQUIRE_DATAPATH=1 (`make test`), a
datapath test skipped on a machine that can run it fails the run; elsewhere it does not.

Each case runs pytest on a tiny test file in a subprocess, with the gate loaded and its
machine check replaced (so the cases mean the same as root and as a developer)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent

SKIPPED = """
import pytest

@pytest.mark.datapath
def test_dp():
    pytest.skip("needs bcc (python3-bpfcc)")

def test_plain():
    pass
"""
PASSED = """
import pytest

@pytest.mark.datapath
def test_dp():
    pass
"""
NO_DATAPATH = """
def test_plain():
    pass
"""


def run_gate(tmp_path: Path, body: str, *, require: bool, problem: str | None,
             more: tuple[str, ...] = (), args: tuple[str, ...] = ()) -> tuple[int, str]:
    """``more``: bodies of further test files; ``args``: extra pytest arguments."""
    (tmp_path / "conftest.py").write_text(
        "import datapathgate\n"
        f"datapathgate.datapath_problem = lambda: {problem!r}\n"
        'pytest_plugins = ["datapathgate"]\n'
        "def pytest_configure(config):\n"
        '    config.addinivalue_line("markers", "datapath: real kernel")\n'
    )
    (tmp_path / "test_tiny.py").write_text(body)
    for n, extra in enumerate(more):
        (tmp_path / f"test_more{n}.py").write_text(extra)
    env = {k: v for k, v in os.environ.items() if k != "SLUICE_REQUIRE_DATAPATH"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS), env.get("PYTHONPATH")]))
    if require:
        env["SLUICE_REQUIRE_DATAPATH"] = "1"
    # Only the plugins named here (xdist in the XDIST cases): the venv's others (hypothesis,
    # schemathesis...) took most of each run's seconds to import.
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    res = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir",
         str(tmp_path), *args, str(tmp_path)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    return res.returncode, res.stdout + res.stderr


def test_a_skipped_datapath_test_fails_make_test_on_a_capable_machine(tmp_path: Path) -> None:
    code, out = run_gate(tmp_path, SKIPPED, require=True, problem=None)
    assert code == 1, out
    assert "datapath gate" in out and "test_tiny.py::test_dp" in out, out
    assert "needs bcc" in out, out  # the skip reason is shown


def test_no_datapath_test_at_all_fails_make_test_on_a_capable_machine(tmp_path: Path) -> None:
    code, out = run_gate(tmp_path, NO_DATAPATH, require=True, problem=None)
    assert code == 1 and "no datapath test ran" in out, out


def test_datapath_tests_that_ran_pass_the_gate(tmp_path: Path) -> None:
    code, out = run_gate(tmp_path, PASSED, require=True, problem=None)
    assert code == 0 and "datapath gate" not in out, out


@pytest.mark.parametrize(
    ("require", "problem"),
    [(False, None), (True, "not root")],
    ids=["developer-run-without-make-test", "machine-cannot-run-datapath"],
)
def test_the_skip_is_allowed(tmp_path: Path, require: bool, problem: str | None) -> None:
    for body in (SKIPPED, NO_DATAPATH):
        code, out = run_gate(tmp_path, body, require=require, problem=problem)
        assert code == 0 and "datapath gate" not in out, out


XDIST = ("-p", "xdist", "-n", "2", "--dist", "loadfile")  # as the suite runs (pyproject addopts)


def test_the_gate_counts_across_xdist_workers(tmp_path: Path) -> None:
    """Two workers, one file each: the worker whose file has no datapath test must not fail
    the run (the controller sees both workers' reports)."""
    code, out = run_gate(tmp_path, PASSED, require=True, problem=None, more=(NO_DATAPATH,),
                         args=XDIST)  # fmt: skip
    assert code == 0 and "datapath gate" not in out and "2 passed" in out, out


def test_a_skip_in_an_xdist_worker_fails_the_run(tmp_path: Path) -> None:
    code, out = run_gate(tmp_path, SKIPPED, require=True, problem=None, more=(PASSED,),
                         args=XDIST)  # fmt: skip
    assert code == 1, out
    assert "datapath gate" in out and "test_tiny.py::test_dp" in out, out


def test_no_datapath_test_in_any_xdist_worker_fails_the_run(tmp_path: Path) -> None:
    code, out = run_gate(tmp_path, NO_DATAPATH, require=True, problem=None,
                         more=(NO_DATAPATH,), args=XDIST)  # fmt: skip
    assert code == 1 and "no datapath test ran" in out, out
