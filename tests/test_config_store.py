"""The SQLite store: file permissions, history retention and compaction."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from appliance.config import ConfigService
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
