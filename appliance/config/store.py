"""The SQLite store (the only module that touches SQLite): running, startup, history.

Running config is kept as *items* (one row per service, one per top-level section) in a
temporal table: a row lives from the commit that wrote it (`since`) until the commit that
replaced or deleted it (`until`, NULL while current). So

- running            = rows with until IS NULL,
- the full snapshot after commit N = rows with since <= N and (until IS NULL or until > N),
- the diff of commit N = rows with since = N (new) and until = N (old),

and a one-service commit against 10,000 services writes two rows, not a 10 MB copy.
Every commit is one SQLite transaction (WAL, synchronous=FULL): a kill -9 at any moment
leaves either the old or the new running config, never half of one.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import stat
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlite_utils

log = logging.getLogger(__name__)

ItemKey = tuple[str, str]  # (kind, key): ("service", "web") or ("section", "datapath")


@dataclass(frozen=True)
class CommitRecord:
    id: int
    at: str
    user: str
    interface: str
    comment: str
    summary: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "at": self.at,
            "user": self.user,
            "interface": self.interface,
            "comment": self.comment,
            "summary": self.summary,
        }


def _m1_initial(db: sqlite_utils.Database) -> None:
    db.execute(
        """CREATE TABLE item (
             kind TEXT NOT NULL, key TEXT NOT NULL, doc TEXT NOT NULL,
             since INTEGER NOT NULL, until INTEGER)"""
    )
    db.execute("CREATE UNIQUE INDEX item_current ON item(kind, key) WHERE until IS NULL")
    db.execute("CREATE INDEX item_since ON item(since)")
    db.execute("CREATE INDEX item_until ON item(until)")
    db["commit_log"].create(
        {"id": int, "at": str, "user": str, "interface": str, "comment": str, "summary": str},
        pk="id",
    )
    db["startup"].create({"kind": str, "key": str, "doc": str}, pk=("kind", "key"))


def _m2_confirmed_commit(db: sqlite_utils.Database) -> None:
    # At most one pending confirmed commit (RFC 6241 8.4), kept here so that a crash or
    # kill -9 inside the confirm window cannot make it permanent: the next start reverts it.
    db.execute(
        """CREATE TABLE confirmed_commit (
             id INTEGER PRIMARY KEY CHECK (id = 1), record TEXT NOT NULL)"""
    )


# Append only: each entry upgrades the schema by one version, inside one transaction.
MIGRATIONS: list[Callable[[sqlite_utils.Database], None]] = [_m1_initial, _m2_confirmed_commit]
SCHEMA_VERSION = len(MIGRATIONS)


class StoreError(Exception):
    pass


# The database holds password hashes, SNMP communities and localized v3 keys: owner only.
FILE_MODE = 0o600
DIR_MODE = 0o700
# History pruning deletes this many rows per transaction.
PRUNE_BATCH = 5000
# Fewer free pages than this (4 MiB at 4 KiB pages) are not worth an incremental vacuum.
COMPACT_MIN_FREE_PAGES = 1024
AUTO_VACUUM_INCREMENTAL = 2
# Files SQLite (and the daemon's single-instance lock) keep beside the database.
SIBLINGS = ("-wal", "-shm", "-journal", ".lock")


def _private_dir(directory: Path) -> None:
    """Create the state directory 0700, or tighten an existing one that is ours alone.

    A directory we do not own, or a shared sticky one such as /tmp, is left as it is: the
    database file itself is 0600 either way, and closing /tmp would break the machine.
    """
    if not directory.exists():
        directory.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    st = directory.stat()
    if st.st_uid != os.geteuid() or st.st_mode & stat.S_ISVTX:
        return
    if stat.S_IMODE(st.st_mode) & 0o077:
        directory.chmod(stat.S_IMODE(st.st_mode) & ~0o077 | DIR_MODE)
        log.info("state directory made private", extra={"path": str(directory)})


def _private_files(db: Path) -> None:
    """Create the database 0600 before SQLite does (it would follow the umask), and tighten
    it and its siblings if they exist. SQLite creates -wal/-shm with the database's mode."""
    fd = os.open(db, os.O_RDWR | os.O_CREAT, FILE_MODE)
    try:
        if stat.S_IMODE(os.fstat(fd).st_mode) != FILE_MODE:
            os.fchmod(fd, FILE_MODE)
    finally:
        os.close(fd)
    for suffix in SIBLINGS:
        sibling = Path(f"{db}{suffix}")
        try:
            if stat.S_IMODE(sibling.stat().st_mode) & 0o077:
                sibling.chmod(FILE_MODE)
        except FileNotFoundError:
            pass


class Store:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.compact_min_free_pages = COMPACT_MIN_FREE_PAGES
        _private_dir(self.path.parent)
        _private_files(self.path)
        conn = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False)
        self.db = sqlite_utils.Database(conn)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute("PRAGMA foreign_keys=ON")
        self._incremental_vacuum_mode()
        self._migrate()

    @property
    def conn(self) -> sqlite3.Connection:
        return self.db.conn

    def close(self) -> None:
        self.conn.close()

    # -- schema versions ---------------------------------------------------------------
    def schema_version(self) -> int:
        return int(self.conn.execute("PRAGMA user_version").fetchone()[0])

    def _migrate(self) -> None:
        version = self.schema_version()
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path} has store schema version {version}, newer than this Sluice "
                f"({SCHEMA_VERSION}); refusing to touch it"
            )
        for number in range(version, SCHEMA_VERSION):
            with self._transaction():
                MIGRATIONS[number](self.db)
                self.conn.execute(f"PRAGMA user_version={number + 1}")

    def _transaction(self) -> _Transaction:
        return _Transaction(self.conn)

    # -- running -----------------------------------------------------------------------
    def running(self) -> list[tuple[str, str, dict[str, Any], int]]:
        rows = self.conn.execute(
            "SELECT kind, key, doc, since FROM item WHERE until IS NULL ORDER BY rowid"
        )
        return [(k, key, json.loads(doc), since) for k, key, doc, since in rows]

    def last_commit_id(self) -> int:
        row = self.conn.execute("SELECT max(id) FROM commit_log").fetchone()
        return int(row[0] or 0)

    def commit(
        self,
        changes: Iterable[tuple[str, str, dict[str, Any] | None]],
        *,
        user: str,
        interface: str,
        comment: str,
        summary: dict[str, Any],
        confirmed: Callable[[int], dict[str, Any] | None] | None = None,
    ) -> int:
        """Write one commit atomically; `changes` holds (kind, key, new doc or None).

        `confirmed(commit_id)`, if given, returns the pending confirmed-commit record to keep
        (None: none pending any more), written in the same transaction as the commit."""
        at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        with self._transaction():
            cur = self.conn.execute(
                "INSERT INTO commit_log (at, user, interface, comment, summary) "
                "VALUES (?, ?, ?, ?, ?)",
                (at, user, interface, comment, json.dumps(summary)),
            )
            commit_id = int(cur.lastrowid or 0)
            changes = list(changes)
            self.conn.executemany(
                "UPDATE item SET until = ? WHERE kind = ? AND key = ? AND until IS NULL",
                [(commit_id, kind, key) for kind, key, _ in changes],
            )
            self.conn.executemany(
                "INSERT INTO item (kind, key, doc, since) VALUES (?, ?, ?, ?)",
                [
                    (kind, key, json.dumps(doc, separators=(",", ":")), commit_id)
                    for kind, key, doc in changes
                    if doc is not None
                ],
            )
            if confirmed is not None:
                self._write_confirmed(confirmed(commit_id))
        return commit_id

    # -- the pending confirmed commit ----------------------------------------------------
    def confirmed_commit(self) -> dict[str, Any] | None:
        row = self.conn.execute("SELECT record FROM confirmed_commit WHERE id = 1").fetchone()
        return json.loads(row[0]) if row else None

    def set_confirmed_commit(self, record: dict[str, Any] | None) -> None:
        with self._transaction():
            self._write_confirmed(record)

    def _write_confirmed(self, record: dict[str, Any] | None) -> None:
        if record is None:
            self.conn.execute("DELETE FROM confirmed_commit")
        else:
            self.conn.execute(
                "INSERT OR REPLACE INTO confirmed_commit (id, record) VALUES (1, ?)",
                (json.dumps(record),),
            )

    # -- history -----------------------------------------------------------------------
    def _incremental_vacuum_mode(self) -> None:
        """auto_vacuum=INCREMENTAL, so pages freed by pruning history can be given back.

        The mode can only be chosen before the first table exists, or by a full VACUUM:
        a new database gets it for free; one made by an older Sluice is rebuilt once, here.
        """
        if self.conn.execute("PRAGMA auto_vacuum").fetchone()[0] == AUTO_VACUUM_INCREMENTAL:
            return
        self.conn.execute(f"PRAGMA auto_vacuum={AUTO_VACUUM_INCREMENTAL}")
        if self.conn.execute("PRAGMA page_count").fetchone()[0]:
            log.info("store rebuilt once for incremental vacuum", extra={"db": str(self.path)})
            self.conn.execute("VACUUM")

    def oldest_commit_id(self) -> int:
        row = self.conn.execute("SELECT min(id) FROM commit_log").fetchone()
        return int(row[0] or 0)

    def retention_bound(self, max_commits: int, max_age_seconds: float) -> int:
        """The oldest commit id the retention limits keep (0: no commits at all)."""
        newest = self.last_commit_id()
        row = self.conn.execute(
            "SELECT id FROM commit_log ORDER BY id DESC LIMIT 1 OFFSET ?", (max_commits - 1,)
        ).fetchone()
        keep_from = int(row[0]) if row else 0
        if max_age_seconds > 0:
            cutoff = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - max_age_seconds))
            row = self.conn.execute(
                "SELECT min(id) FROM commit_log WHERE at >= ?", (cutoff,)
            ).fetchone()
            keep_from = max(keep_from, int(row[0]) if row[0] is not None else newest)
        return min(keep_from, newest)

    def prune(self, keep_from: int, batch: int = PRUNE_BATCH) -> int:
        """Forget commits older than `keep_from`; returns how many went.

        The snapshot of every kept commit stays whole: only item rows that stopped being
        current before `keep_from` go (rows replaced *by* `keep_from` stay, for its diff).
        Batched, each batch its own short transaction, so a first prune of a long history
        never holds the write lock for long."""
        pruned = 0
        while True:
            with self._transaction():
                gone = self.conn.execute(
                    "DELETE FROM item WHERE rowid IN (SELECT rowid FROM item "
                    "WHERE until IS NOT NULL AND until < ? LIMIT ?)",
                    (keep_from, batch),
                ).rowcount
            if gone < batch:
                break
        while True:
            with self._transaction():
                gone = self.conn.execute(
                    "DELETE FROM commit_log WHERE id IN (SELECT id FROM commit_log "
                    "WHERE id < ? LIMIT ?)",
                    (keep_from, batch),
                ).rowcount
            pruned += gone
            if gone < batch:
                break
        return pruned

    def compact(self) -> int:
        """Give free pages back to the file system once there are enough to matter."""
        free = int(self.conn.execute("PRAGMA freelist_count").fetchone()[0])
        if free < self.compact_min_free_pages:
            return 0
        # executescript steps the pragma to the end; execute() frees one page per call.
        self.conn.executescript(f"PRAGMA incremental_vacuum({free});")
        return free

    def history(self, limit: int = 50) -> list[CommitRecord]:
        rows = self.conn.execute(
            "SELECT id, at, user, interface, comment, summary FROM commit_log "
            "ORDER BY id DESC LIMIT ?",
            (limit,),
        )
        return [CommitRecord(r[0], r[1], r[2], r[3], r[4], json.loads(r[5])) for r in rows]

    def commit_record(self, commit_id: int) -> CommitRecord | None:
        row = self.conn.execute(
            "SELECT id, at, user, interface, comment, summary FROM commit_log WHERE id = ?",
            (commit_id,),
        ).fetchone()
        return (
            CommitRecord(row[0], row[1], row[2], row[3], row[4], json.loads(row[5]))
            if row
            else None
        )

    def snapshot(self, commit_id: int) -> list[tuple[str, str, dict[str, Any]]]:
        """The whole running config as it stood right after commit `commit_id`."""
        rows = self.conn.execute(
            "SELECT kind, key, doc FROM item WHERE since <= ? AND (until IS NULL OR until > ?) "
            "ORDER BY rowid",
            (commit_id, commit_id),
        )
        return [(k, key, json.loads(doc)) for k, key, doc in rows]

    def changes_of(self, commit_id: int) -> list[tuple[str, str, Any, Any]]:
        """(kind, key, old doc or None, new doc or None) for every item commit N touched."""
        old = {
            (k, key): json.loads(doc)
            for k, key, doc in self.conn.execute(
                "SELECT kind, key, doc FROM item WHERE until = ?", (commit_id,)
            )
        }
        new = {
            (k, key): json.loads(doc)
            for k, key, doc in self.conn.execute(
                "SELECT kind, key, doc FROM item WHERE since = ?", (commit_id,)
            )
        }
        return [(k, key, old.get((k, key)), new.get((k, key))) for k, key in {**old, **new}]

    # -- startup -----------------------------------------------------------------------
    def startup(self) -> list[tuple[str, str, dict[str, Any]]]:
        """The saved startup config (empty when none was saved or it was deleted)."""
        rows = self.conn.execute("SELECT kind, key, doc FROM startup ORDER BY rowid")
        return [(k, key, json.loads(doc)) for k, key, doc in rows]

    def save_startup(self, items: Iterable[tuple[str, str, dict[str, Any]]]) -> None:
        with self._transaction():
            self.conn.execute("DELETE FROM startup")
            self.conn.executemany(
                "INSERT INTO startup (kind, key, doc) VALUES (?, ?, ?)",
                [(k, key, json.dumps(doc)) for k, key, doc in items],
            )

    def clear_startup(self) -> None:
        with self._transaction():
            self.conn.execute("DELETE FROM startup")


class _Transaction:
    """BEGIN IMMEDIATE … COMMIT, or ROLLBACK on any exception."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> None:
        self.conn.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *_: object) -> None:
        self.conn.execute("ROLLBACK" if exc_type else "COMMIT")
