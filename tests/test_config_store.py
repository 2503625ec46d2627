"""The SQLite store: file permissions, history retention and compaction."""

from __future__ import annotations

import os
import sqlite3
import stat
from pathlib import Path

import pytest

from appliance.config import ConfigService, NotFoundError
from appliance.config.paths import service_path
from appliance.config.store import Store


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _commit(service: ConfigService, changes: list[dict], comment: str = "") -> int | None:
    with service.open_session("tester", "test") as s:
        s.edit(changes)
        return s.commit(comment).commit_id


def test_new_database_and_state_dir_are_private(tmp_path: Path) -> None:
    old = os.umask(0o022)  # the usual umask: files would be 0644 without care
    try:
        state = tmp_path / "state"
        store = Store(state / "sluice.db")
        service = ConfigService(store)
        _commit(service, [{"op": "merge", "path": "/sluice:system", "value": {"hostname": "a"}}])
        assert _mode(state) == 0o700
        siblings = [state / n for n in ("sluice.db", "sluice.db-wal", "sluice.db-shm")]
        assert all(p.exists() for p in siblings)
        for path in siblings:
            assert _mode(path) == 0o600, path
        store.close()
    finally:
        os.umask(old)


def test_existing_files_are_tightened_on_open(tmp_path: Path) -> None:
    state = tmp_path / "state"
    Store(state / "sluice.db").close()
    for name in ("sluice.db", "sluice.db-wal", "sluice.db-shm", "sluice.db.lock"):
        path = state / name
        path.touch()
        path.chmod(0o644)
    state.chmod(0o755)
    store = Store(state / "sluice.db")  # open: SQLite removes -wal/-shm on the last close
    try:
        assert _mode(state) == 0o700
        for name in ("sluice.db", "sluice.db-wal", "sluice.db-shm", "sluice.db.lock"):
            assert _mode(state / name) == 0o600, name
    finally:
        store.close()


def test_a_shared_sticky_directory_is_left_alone(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)  # like /tmp: not ours to close
    Store(shared / "sluice.db").close()
    assert _mode(shared) == 0o1777
    assert _mode(shared / "sluice.db") == 0o600


def _toggle(service: ConfigService, n: int) -> None:
    """n commits, flipping one endpoint's weight like an orchestrator would."""
    ep = f"{service_path('web')}/endpoint[address='198.18.1.1'][port='8080']"
    for i in range(n):
        _commit(service, [{"op": "merge", "path": ep, "value": {"weight": 2 + i % 2}}])


@pytest.fixture
def service(tmp_path: Path) -> ConfigService:
    svc = ConfigService(Store(tmp_path / "sluice.db"))
    yield svc
    svc.store.close()


WEB = {
    "name": "web",
    "vip": "198.18.0.10",
    "port": 80,
    "endpoint": [{"address": "198.18.1.1", "port": 8080}],
}


def test_history_is_pruned_to_max_commits_and_snapshots_stay_whole(
    service: ConfigService,
) -> None:
    assert service.retention() == (1000, 30)  # the defaults
    service.prune_every = 5
    history = {"max-commits": 10, "max-age-days": 0}
    _commit(service, [{"op": "merge", "path": "/sluice:system/config-history", "value": history}])
    _commit(service, [{"op": "create", "path": service_path("web"), "value": WEB}])
    _toggle(service, 40)
    ids = [h["id"] for h in service.history(1000)]
    assert len(ids) < 10 + 5 and ids[0] == service.commit_id
    oldest = ids[-1]
    # the oldest kept commit still rolls back to exactly what it left
    snap = service.snapshot(oldest)
    assert snap["sluice:system"]["config-history"] == history
    assert service.commit_diff(oldest)["changes"]
    with service.open_session("t", "test") as s:
        s.rollback(oldest)
    # a pruned one is refused with an error naming it
    with service.open_session("t", "test") as s, pytest.raises(NotFoundError) as info:
        s.rollback(2)
    assert "commit 2 was pruned" in str(info.value)
    assert info.value.errors[0].path == "commit"
    # the rows of pruned commits are gone
    rows = service.store.conn.execute("SELECT count(*) FROM item").fetchone()[0]
    assert rows <= 2 * 15


def test_age_limit_and_a_pending_confirmed_commit(service: ConfigService) -> None:
    _commit(service, [{"op": "create", "path": service_path("web"), "value": WEB}])
    _toggle(service, 5)
    with service.open_session("t", "test") as s:
        s.edit([{"op": "merge", "path": "/sluice:system", "value": {"hostname": "trial"}}])
        s.commit(confirm_timeout=600)
    confirmed = service.commit_id
    _toggle(service, 3)
    # everything is 40 days old: the age limit (30 days) would prune all but the newest,
    # except what the pending confirmed commit needs to revert
    service.store.conn.execute("UPDATE commit_log SET at = '2000-01-01T00:00:00Z'")
    service.prune_history()
    assert [h["id"] for h in service.history(100)][-1] == confirmed
    service.revert_confirmed("timeout")
    assert "system" not in service.sections
    service.store.conn.execute("UPDATE commit_log SET at = '2000-01-01T00:00:00Z'")
    service.prune_history()
    assert [h["id"] for h in service.history(100)] == [service.commit_id]


def test_pruned_space_is_given_back(service: ConfigService) -> None:
    big = [dict(WEB, name=f"s{i}", vip=f"198.18.{i // 250}.{i % 250 + 1}") for i in range(300)]
    for round_ in range(6):
        for svc in big:
            svc["port"] = 80 + round_
        _commit(
            service, [{"op": "replace", "path": "/sluice:load-balancer", "value": {"service": big}}]
        )
    conn = service.store.conn
    service.store.compact_min_free_pages = 8  # a small database: compact it all the same
    assert conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 2  # incremental
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    _commit(
        service,
        [{"op": "merge", "path": "/sluice:system/config-history", "value": {"max-commits": 10}}],
    )
    conn.execute("UPDATE commit_log SET at = '2000-01-01T00:00:00Z'")
    service.prune_history()
    assert conn.execute("PRAGMA page_count").fetchone()[0] < pages / 2


def test_an_older_database_is_converted_to_incremental_vacuum(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    conn.close()
    store = Store(db)
    assert store.conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 2
    store.close()
