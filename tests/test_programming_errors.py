"""A commit the datapath cannot program is reported to the committer and as an alarm, not
only logged. Unit test: a stand-in reconciler plays the datapath that fails (no kernel)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from appliance.alarms import Alarms
from appliance.config import ConfigService
from appliance.config.paths import service_path
from appliance.config.store import Store
from appliance.control.api import CallContext, commit_result
from appliance.daemon import DatapathStart


class FailingDatapath:
    """Stands in for DatapathReconciler: cannot program a service named "bad"."""

    def __init__(self) -> None:
        self.errors: dict[str, str] = {}

    def start(self, effective: dict[str, Any]) -> None: ...

    def apply(self, diff: Any) -> None:
        for name in diff.services_added:
            if name == "bad":
                self.errors[name] = "selection map full"

    def close(self) -> None: ...


def test_a_commit_that_cannot_be_programmed_is_reported(tmp_path: Path) -> None:
    service = ConfigService(Store(tmp_path / "c.db"))
    alarms, state = Alarms(), {}
    datapath = FailingDatapath()
    starter = DatapathStart(datapath, service, state, alarms)
    starter.start()
    with service.open_session("ops", "test") as s:
        s.edit([{"op": "create", "path": service_path("bad"), "value": {
            "name": "bad", "vip": "198.18.0.10", "port": 80}}])
        diff = s.commit("one the datapath refuses")
        result = commit_result(CallContext(s, state), diff)
    assert result["datapath-errors"] == {"bad": "selection map full"}
    active = {a["name"]: a for a in alarms.active()}
    assert "bad" in active["datapath-programming"]["text"]
    datapath.errors.clear()  # the background retry succeeded
    starter.report_programming()  # what its watcher thread runs every few seconds
    assert not alarms.active()
    service.store.close()
