"""One smoke test with netconf-console2 (a second, independent client implementation).

The tool is a dev dependency (scripts/setup installs it): a missing one fails, it is not
skipped. NETCONF_CONSOLE2 may name another copy. It needs `six` besides its declared
dependencies (netconf-console2 3.0.1).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import netconfkit as kit
import pytest

TOOL = (
    os.environ.get("NETCONF_CONSOLE2")
    or shutil.which("netconf-console2")
    or shutil.which("netconf-console2", path=str(Path(sys.executable).parent))
)


@pytest.fixture
def h(tmp_path: Path) -> Iterator[kit.Harness]:
    yield from kit.harness(tmp_path)


def test_netconf_console2_edit_commit_get(h: kit.Harness, tmp_path: Path) -> None:
    assert TOOL, "netconf-console2 is not installed (scripts/setup installs it)"
    base = [TOOL, "--host", "127.0.0.1", "--port", str(h.port), "-u", "ops", "-p", kit.PASSWORD]
    data = tmp_path / "web.xml"
    # netconf-console2 wraps the file in <config> itself.
    data.write_text(f'<load-balancer xmlns="{kit.SLUICE_NS}"><service><name>web</name>'
                    "<vip>198.18.0.10</vip><port>80</port></service></load-balancer>")

    def run(*args: str) -> str:
        done = subprocess.run([*base, *args], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert "rpc-error" not in done.stdout, done.stdout
        return done.stdout

    assert "urn:ietf:params:netconf:capability:candidate:1.0" in run("--hello")
    run("--db", "candidate", "--edit-config", str(data), "--commit")
    assert "<name>web</name>" in run("--get-config")
    assert h.service.services["web"]["port"] == 80
