"""The datapath gate: `make test` fails when datapath tests skipped on a machine that runs them.

Datapath tests (marked ``datapath``) skip where they cannot run: not root, no bcc, no bpffs,
no ``ip netns``. On a developer's non-root machine that is right; in CI it would turn a broken
datapath set-up into a green run. So when ``SLUICE_REQUIRE_DATAPATH=1`` (``make test`` sets
it) and this machine *can* run them, the session fails if any datapath test was skipped or
none ran at all. Without the variable (a developer running one file) nothing is enforced.

With pytest-xdist (``-n 2``, the default) the gate runs in the controller only: it gets
every worker's reports through ``pytest_runtest_logreport``, so it counts across workers; a
worker that happened to draw no datapath test must not fail the run on its own.

Loaded from ``tests/conftest.py`` (``pytest_plugins``).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

ENV = "SLUICE_REQUIRE_DATAPATH"
MARK = "datapath"
BPFFS = Path("/sys/fs/bpf")

_skipped: list[str] = []  # "nodeid: reason" of each skipped datapath test
_ran: list[str] = []  # node ids of datapath tests whose body ran (passed or failed)
_problem: list[str] = []  # the gate's verdict, for the terminal summary


def datapath_problem() -> str | None:
    """Why this machine cannot run the datapath tests, or None if it can."""
    if os.geteuid() != 0:
        return "not root"
    if importlib.util.find_spec("bcc") is None:
        return "bcc is not importable"
    if not os.path.ismount(BPFFS):
        return f"bpffs is not mounted at {BPFFS}"
    import netkit  # the kit's own check: `ip netns` usable

    return netkit.netns_problem()


def _is_worker(config: pytest.Config) -> bool:
    """True in a pytest-xdist worker (the controller sees all workers' reports)."""
    return hasattr(config, "workerinput")


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if MARK not in report.keywords:
        return
    if report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        _skipped.append(f"{report.nodeid}: {reason}")
    elif report.when == "call":
        _ran.append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _is_worker(session.config):
        return
    if os.environ.get(ENV) != "1" or exitstatus not in (pytest.ExitCode.OK,
                                                        pytest.ExitCode.TESTS_FAILED):  # fmt: skip
        return
    if datapath_problem() is not None:
        return  # this machine cannot run them: skipping is right here
    if _skipped:
        _problem.append(
            f"{len(_skipped)} datapath test(s) skipped on a machine that can run them "
            f"(root, bcc, bpffs, ip netns; {ENV}=1):\n  " + "\n  ".join(_skipped)
        )
    elif not _ran:
        _problem.append(
            f"no datapath test ran on a machine that can run them ({ENV}=1): "
            "was the selection narrowed (-m, -k, a path)?"
        )
    if _problem:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for problem in _problem:
        terminalreporter.section("datapath gate", sep="=", red=True, bold=True)
        terminalreporter.line(f"FAILED: {problem}", red=True)
