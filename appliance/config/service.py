"""The config service: the one way to change Sluice's configuration.

Plain Python with no I/O framework inside. Every front door (CLI, NETCONF, console) opens a
`Session`, edits its own candidate, validates and commits through the same path:

    session = service.open_session(user="ops", interface="cli")
    session.edit([{"op": "merge", "path": "/sluice:load-balancer/service[name='web']",
                   "value": {...}}])
    diff = session.commit(comment="add web")

A commit is validated by libyang against the YANG module (changed services only: every
`must` in the model is local to its service) plus the one rule YANG cannot say cheaply (no
two services may claim overlapping VIP/protocol/port ranges), written to the store in one
transaction, and handed as a `Diff` to subscribers (the datapath reconciler, notifications).
"""

from __future__ import annotations

import contextlib
import copy
import ipaddress
import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from appliance.config import secrets
from appliance.config.document import (
    LB,
    SECTION_KIND,
    SERVICE_KIND,
    build_doc,
    from_items,
    items_of,
    split_doc,
)
from appliance.config.errors import (
    AccessDenied,
    ConfigError,
    ConflictError,
    FieldError,
    LockedError,
    NotFoundError,
    ValidationError,
)
from appliance.config.paths import (
    PathError,
    Step,
    format_path,
    module_of,
    parse_path,
    service_path,
)
from appliance.config.revert import ABSENT, revert
from appliance.config.schema import Schema, get_schema
from appliance.config.store import Store
from appliance.config.tree import apply_edit, placement

log = logging.getLogger(__name__)

DATASTORES = ("running", "candidate", "startup")
# History retention defaults (the YANG defaults of /sluice:system/config-history): an
# orchestrator toggling endpoints every few seconds all day still keeps a bounded file.
DEFAULT_MAX_COMMITS = 1000
DEFAULT_MAX_AGE_DAYS = 30
# Prune after this many commits, or on the first commit this many seconds after the last.
PRUNE_EVERY = 100
PRUNE_INTERVAL = 3600.0
# The schema path of a service entry, as secrets.restore names nodes.
_SERVICE_SPATH = f"{LB}/service"
# Past this many errors a user learns nothing more from the list.
MAX_REPORTED_ERRORS = 50

Doc = dict[str, Any]


@dataclass
class Diff:
    """What a commit changed, as effective (defaults filled in) old and new values."""

    commit_id: int | None = None
    services_added: dict[str, Doc] = field(default_factory=dict)
    services_removed: dict[str, Doc] = field(default_factory=dict)
    services_changed: dict[str, tuple[Doc, Doc]] = field(default_factory=dict)
    sections_changed: dict[str, tuple[Doc | None, Doc | None]] = field(default_factory=dict)

    def empty(self) -> bool:
        return not (
            self.services_added
            or self.services_removed
            or self.services_changed
            or self.sections_changed
        )

    def summary(self, limit: int = 20) -> dict[str, Any]:
        def names(d: dict[str, Any]) -> list[str]:
            return sorted(d)[:limit]

        return {
            "services-added": len(self.services_added),
            "services-removed": len(self.services_removed),
            "services-changed": len(self.services_changed),
            "sections-changed": sorted(self.sections_changed),
            "names": {
                "added": names(self.services_added),
                "removed": names(self.services_removed),
                "changed": names(self.services_changed),
            },
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "commit-id": self.commit_id,
            "services-added": self.services_added,
            "services-removed": self.services_removed,
            "services-changed": {
                k: {"old": o, "new": n} for k, (o, n) in self.services_changed.items()
            },
            "sections-changed": {
                k: {"old": o, "new": n} for k, (o, n) in self.sections_changed.items()
            },
        }


@dataclass(frozen=True)
class ConfirmedCommit:
    """The pending confirmed commit (RFC 6241 8.4), as kept in the store.

    `commits`: the commits made under it (the first confirmed commit and any follow-up
    confirmed commits), oldest first; reverting undoes their changes and no others.
    `deadline` is wall-clock time: a restart reverts it whatever the deadline."""

    commits: tuple[int, ...]
    user: str
    owner: str  # the front door's name for who may confirm it, e.g. "netconf session 7"
    persist: str | None
    deadline: float

    def to_record(self) -> dict[str, Any]:
        return {
            "commits": list(self.commits),
            "user": self.user,
            "owner": self.owner,
            "persist": self.persist,
            "deadline": self.deadline,
        }

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> ConfirmedCommit:
        return cls(
            tuple(int(c) for c in record.get("commits", [])),
            str(record.get("user", "")),
            str(record.get("owner", "")),
            record.get("persist"),
            float(record.get("deadline", 0)),
        )


# The item an error path is about: a service, else a top-level section.
_SERVICE_IN_PATH = re.compile(r"^/sluice:load-balancer/service\[name=['\"]([^'\"]*)['\"]\]")
_SECTION_IN_PATH = re.compile(r"^/sluice:([^/\[]+)")


@dataclass
class _Prepared:
    """A validated candidate: canonical explicit and effective values of what changed."""

    services: dict[str, Doc]
    services_effective: dict[str, Doc]
    sections: dict[str, Doc]
    sections_effective: dict[str, Doc]
    deleted_services: set[str]


class _PortIndex:
    """(VIP, protocol) → claimed port ranges, to refuse overlapping services."""

    def __init__(self) -> None:
        self._ranges: dict[tuple[str, str], dict[str, tuple[int, int]]] = {}
        self._key_of: dict[str, tuple[str, str]] = {}

    @staticmethod
    def claim(svc: Doc) -> tuple[tuple[str, str], int, int]:
        vip = ipaddress.ip_address(svc["vip"]).compressed
        lo = int(svc.get("port", 0))
        return (vip, svc.get("protocol", "tcp")), lo, int(svc.get("port-range-end", lo))

    def set(self, name: str, svc: Doc) -> None:
        self.drop(name)
        key, lo, hi = self.claim(svc)
        self._ranges.setdefault(key, {})[name] = (lo, hi)
        self._key_of[name] = key

    def drop(self, name: str) -> None:
        key = self._key_of.pop(name, None)
        if key is not None:
            self._ranges[key].pop(name, None)

    def conflicts(self, changed: dict[str, Doc], deleted: set[str]) -> list[FieldError]:
        touched = set(changed) | deleted
        pending: dict[tuple[str, str], dict[str, tuple[int, int]]] = {}
        errors: list[FieldError] = []
        for name, svc in changed.items():
            key, lo, hi = self.claim(svc)
            others = {**self._ranges.get(key, {}), **pending.get(key, {})}
            for other, (olo, ohi) in others.items():
                if other == name or (other in touched and other not in pending.get(key, {})):
                    continue
                if lo <= ohi and olo <= hi:
                    what = f"port {lo}" if lo == hi else f"ports {lo}-{hi}"
                    errors.append(
                        FieldError(
                            f"{service_path(name)}/vip",
                            f"{key[0]} {key[1]} {what} is already used by service '{other}'",
                        )
                    )
                    break
            pending.setdefault(key, {})[name] = (lo, hi)
        return errors


class ConfigService:
    """Running config in memory (mirrors the store), sessions, locks and subscribers."""

    def __init__(
        self, store: Store, schema: Schema | None = None, *, tolerant: bool = False
    ) -> None:
        """`tolerant`: a stored running config that does not validate (a stricter release)
        is loaded as stored and reported in `load_error` instead of refusing to start; it
        is cleared by the first commit after which running validates as a whole."""
        self.store = store
        self.tolerant = tolerant
        self.load_error: ConfigError | None = None
        self.schema = schema or get_schema()
        self._mutex = threading.RLock()
        self._locks: dict[str, Session] = {}
        self._subscribers: list[Callable[[Diff], None]] = []
        self._validators: list[Callable[[Doc], list[FieldError]]] = []
        self._next_session = 1
        self.sessions: dict[int, Session] = {}
        self._load()
        record = self.store.confirmed_commit()
        self.confirmed: ConfirmedCommit | None = (
            ConfirmedCommit.from_record(record) if record else None
        )
        if self.confirmed is not None:
            # The process that made it is gone (crash, kill -9, reboot) and with it whoever
            # could have confirmed it: an unconfirmed change must not become permanent.
            self.revert_confirmed("not confirmed before a restart")
        self.prune_every = PRUNE_EVERY
        self._pruned_at, self._pruned_time = 0, 0.0
        self.prune_history()

    # -- running -----------------------------------------------------------------------
    def _load(self) -> None:
        rows = self.store.running()
        sections, services = from_items((k, key, doc) for k, key, doc, _ in rows)
        self.versions = {(k, key): since for k, key, _, since in rows}
        self.commit_id = self.store.last_commit_id()
        doc = build_doc(sections, services.values())
        try:
            _, effective = self.schema.validate(doc)
            self.load_error = None
        except ConfigError as exc:
            if not self.tolerant:
                raise
            log.error("stored running config does not validate", extra={"error": str(exc)})
            self.load_error, effective = exc, doc  # as stored; defaults not filled in
        self.sections, self.services = sections, services
        self.sections_effective, self.services_effective = split_doc(effective)
        self.ports = _PortIndex()
        for name, svc in self.services_effective.items():
            self.ports.set(name, svc)
        log.info(
            "running config loaded",
            extra={"services": len(services), "commit": self.commit_id},
        )

    def running_doc(self, *, effective: bool = False, with_secrets: bool = False) -> Doc:
        """The whole running config; secrets masked unless `with_secrets` (agents only)."""
        with self._mutex:
            if effective:
                doc = build_doc(self.sections_effective, self.services_effective.values())
            else:
                doc = build_doc(self.sections, self.services.values())
            doc = copy.deepcopy(doc)
        return doc if with_secrets else secrets.mask(doc, self.schema)

    def add_validator(self, check: Callable[[Doc], list[FieldError]]) -> None:
        """Also refuse a candidate for which `check(whole effective doc)` returns errors.

        For rules the model cannot state, such as what the datapath can carry; the checker
        comes from outside (this package imports no datapath) and is called with the
        service's mutex held, at every validate and commit."""
        self._validators.append(check)

    def _validator_errors(
        self, sections: dict[str, Doc], changed: dict[str, Doc], deleted: set[str]
    ) -> list[FieldError]:
        if not self._validators:
            return []
        gone = changed.keys() | deleted
        kept = [s for n, s in self.services_effective.items() if n not in gone]
        doc = build_doc(sections, [*kept, *changed.values()])
        return [e for check in self._validators for e in check(doc)]

    def subscribe(self, callback: Callable[[Diff], None]) -> None:
        """Call `callback(diff)` after every commit (in the committing thread)."""
        self._subscribers.append(callback)

    def unsubscribe(self, callback: Callable[[Diff], None]) -> None:
        """Stop calling `callback` (a front door that closes); unknown callbacks are ignored."""
        with contextlib.suppress(ValueError):
            self._subscribers.remove(callback)

    def _publish(self, diff: Diff) -> None:
        for callback in list(self._subscribers):
            try:
                callback(diff)
            except Exception:
                log.exception("config subscriber failed", extra={"subscriber": repr(callback)})

    # -- sessions and locks ----------------------------------------------------------------
    def open_session(
        self, user: str, interface: str, *, read_only: bool = False, account: str | None = None
    ) -> Session:
        """`account`: the configured user the session acts for; its role is checked at
        every change (see Session.read_only)."""
        with self._mutex:
            sid = self._next_session
            self._next_session += 1
            session = Session(self, sid, user, interface, read_only=read_only)
            session.account = account
            self.sessions[sid] = session
            return session

    def role_of(self, user: str) -> str | None:
        """"read-write" or "read-only" for a configured user, None if there is no such
        user (any more). Reads the in-memory running sections: no copy, no lock needed."""
        management = (self.sections or {}).get("management") or {}
        for entry in management.get("user", []):
            if entry.get("name") == user:
                return "read-write" if entry.get("role") == "read-write" else "read-only"
        return None

    def lock_owner(self, datastore: str) -> Session | None:
        return self._locks.get(datastore)

    def _lock(self, session: Session, datastore: str) -> None:
        _check_datastore(datastore)
        with self._mutex:
            owner = self._locks.get(datastore)
            if owner is not None and owner is not session:
                who = f"session {owner.id} ({owner.user} via {owner.interface})"
                raise LockedError(
                    f"{datastore} is locked by {who}",
                    [FieldError("", f"lock held by {who}", "lock-denied")],
                )
            if owner is session:
                raise LockedError(f"{datastore} is already locked by this session")
            self._locks[datastore] = session

    def _unlock(self, session: Session, datastore: str) -> None:
        _check_datastore(datastore)
        with self._mutex:
            if self._locks.get(datastore) is not session:
                raise LockedError(f"{datastore} is not locked by this session")
            del self._locks[datastore]

    def _close(self, session: Session) -> None:
        with self._mutex:
            for ds, owner in list(self._locks.items()):
                if owner is session:
                    del self._locks[ds]
            self.sessions.pop(session.id, None)

    def kill_session(self, sid: int) -> None:
        """Forcibly end another session (NETCONF kill-session): its locks and candidate go."""
        with self._mutex:
            session = self.sessions.get(sid)
            if session is None:
                raise NotFoundError(f"no session {sid}")
            session.close()

    def _check_not_locked_by_other(self, session: Session, *datastores: str) -> None:
        for ds in datastores:
            owner = self._locks.get(ds)
            if owner is not None and owner is not session:
                raise LockedError(
                    f"{ds} is locked by session {owner.id} ({owner.user} via {owner.interface})"
                )

    # -- history -------------------------------------------------------------------------
    def retention(self) -> tuple[int, int]:
        """(max-commits, max-age-days) from /sluice:system/config-history."""
        hist = (self.sections_effective.get("system") or {}).get("config-history") or {}
        return (
            int(hist.get("max-commits", DEFAULT_MAX_COMMITS)),
            int(hist.get("max-age-days", DEFAULT_MAX_AGE_DAYS)),
        )

    def prune_history(self) -> int:
        """Prune commits the retention setting no longer keeps, then compact the file.

        Never the newest commit, nor one a pending confirmed commit still needs to revert.
        Returns how many commits went. A failure is logged: it must not fail a commit."""
        with self._mutex:
            self._pruned_at, self._pruned_time = self.commit_id, time.monotonic()
            max_commits, max_age_days = self.retention()
            try:
                keep_from = self.store.retention_bound(max_commits, max_age_days * 86400)
                if self.confirmed is not None and self.confirmed.commits:
                    keep_from = min(keep_from, min(self.confirmed.commits))
                if keep_from <= self.store.oldest_commit_id():
                    return 0
                pruned = self.store.prune(keep_from)
                freed = self.store.compact()
            except Exception:
                log.exception("config history pruning failed")
                return 0
        log.info(
            "config history pruned",
            extra={"commits": pruned, "kept_from": keep_from, "pages_freed": freed},
        )
        return pruned

    def _maybe_prune(self) -> None:
        """Pruning costs a few index range deletes: batch it, every `prune_every` commits
        (or hourly, for the age limit on a quiet appliance), not on every commit."""
        due = self.commit_id - self._pruned_at >= self.prune_every
        if due or time.monotonic() - self._pruned_time >= PRUNE_INTERVAL:
            self.prune_history()

    def _no_commit(self, commit_id: int) -> NotFoundError:
        """A clear error for a commit id history does not hold (pruned, or never made)."""
        oldest = self.store.oldest_commit_id()
        if 0 < commit_id < oldest:
            message = (
                f"commit {commit_id} was pruned from the history (the oldest kept is commit "
                f"{oldest}; see /sluice:system/config-history)"
            )
        else:
            message = f"no commit {commit_id}"
        return NotFoundError(message, [FieldError("commit", message, "data-missing")])

    def history(self, limit: int = 50) -> list[dict[str, Any]]:
        return [r.to_dict() for r in self.store.history(limit)]

    def commit_diff(self, commit_id: int) -> dict[str, Any]:
        """The change commit N made, as explicit old/new values per item (secrets masked)."""
        record = self.store.commit_record(commit_id)
        if record is None:
            raise self._no_commit(commit_id)
        changes = []
        for kind, key, old, new in self.store.changes_of(commit_id):
            if kind == SECTION_KIND:
                old = secrets.mask_section(key, old, self.schema)
                new = secrets.mask_section(key, new, self.schema)
            changes.append({"kind": kind, "name": key, "old": old, "new": new})
        return {**record.to_dict(), "changes": changes}

    def snapshot(self, commit_id: int) -> Doc:
        if self.store.commit_record(commit_id) is None:
            raise self._no_commit(commit_id)
        sections, services = from_items(self.store.snapshot(commit_id))
        return build_doc(sections, services.values())

    # -- startup ---------------------------------------------------------------------------
    def startup_doc(self, *, with_secrets: bool = False) -> Doc:
        """The saved startup config; secrets masked unless `with_secrets` (copies inside the
        appliance, which must carry startup's own secrets, not running's)."""
        sections, services = from_items(self.store.startup())
        doc = build_doc(sections, services.values())
        return doc if with_secrets else secrets.mask(doc, self.schema)

    def _save_startup(self, session: Session) -> None:
        with self._mutex:
            self._check_not_locked_by_other(session, "startup")
            self.store.save_startup(items_of(self.sections, self.services))

    def _delete_startup(self, session: Session) -> None:
        with self._mutex:
            self._check_not_locked_by_other(session, "startup")
            self.store.clear_startup()

    def boots_from_startup(self) -> bool:
        """/sluice:system/boot-from-startup of running."""
        return bool((self.sections_effective.get("system") or {}).get("boot-from-startup"))

    def boot_from_startup(self) -> str | None:
        """At start, with boot-from-startup set: running becomes the saved startup config (a
        commit, so history shows it). Returns why it did not, when it should have."""
        if not self.boots_from_startup():
            return None
        if not self.store.startup():
            log.warning("boot-from-startup is set but no startup config was saved")
            return None
        session = Session(self, 0, "system", "boot", read_only=False)
        try:
            diff = session.copy_startup_to_running("boot from startup")
        except ConfigError as exc:
            log.error("startup config not loaded at boot", extra={"error": str(exc)})
            return f"the startup config was not loaded: {exc}"
        log.info("running config loaded from startup", extra={"commit": diff.commit_id})
        return None

    # -- confirmed commit ----------------------------------------------------------------
    def _set_confirmed(self, confirmed: ConfirmedCommit | None) -> None:
        self.store.set_confirmed_commit(confirmed.to_record() if confirmed else None)
        self.confirmed = confirmed

    def revert_confirmed(self, reason: str) -> Diff:
        """Undo the pending confirmed commit: the inverse of its own changes, as a new commit.

        Not blocked by anyone's lock (it is the appliance undoing a change nobody confirmed,
        not a client's edit), and other commits made since are kept: see `revert` for how a
        node both changed is decided (the later value stays). If the result does not
        validate (a later commit came to depend on the change), the items named in the
        errors keep their current value too. Returns the diff (empty if nothing pending)."""
        with self._mutex:
            pending = self.confirmed
            if pending is None:
                return Diff()
            targets, conflicts = self._revert_targets(pending.commits)
            session = Session(
                self, 0, pending.user or "system", "confirmed-commit", read_only=False
            )
            diff = Diff()
            for _ in range(len(targets) + 1):
                session._reset()
                for (kind, key), value in targets.items():
                    view = session._services if kind == SERVICE_KIND else session._sections
                    view[key] = value
                try:
                    prepared = session._prepare()
                except ValidationError as exc:
                    kept = {item for e in exc.errors if (item := _item_of(e.path)) in targets}
                    if not kept:
                        log.error(
                            "confirmed commit revert is invalid; running kept",
                            extra={"reason": reason, "error": str(exc)},
                        )
                        self._set_confirmed(None)
                        return Diff()
                    for item in kept:
                        conflicts.append(_item_path(*item))
                        del targets[item]
                    continue
                which = ", ".join(map(str, pending.commits)) or "(no change)"
                comment = f"confirmed commit {which} reverted: {reason}"
                if conflicts:
                    comment += "; kept later changes at " + ", ".join(conflicts[:10])
                diff = self._apply_commit(session, prepared, comment, lambda _cid: None)
                break
            else:
                self._set_confirmed(None)
        log.warning(
            "confirmed commit reverted",
            extra={
                "reason": reason,
                "commits": list(pending.commits),
                "commit": diff.commit_id,
                "kept": conflicts[:20],
            },
        )
        if not diff.empty():
            self._publish(diff)
        return diff

    def _revert_targets(
        self, commits: tuple[int, ...]
    ) -> tuple[dict[tuple[str, str], Doc | None], list[str]]:
        """What each item touched by `commits` should become; and the conflicting paths."""
        first: dict[tuple[str, str], tuple[Any, Any]] = {}
        for cid in commits:
            for kind, key, old, new in self.store.changes_of(cid):
                before = first[(kind, key)][0] if (kind, key) in first else old
                first[(kind, key)] = (before, new)
        targets: dict[tuple[str, str], Doc | None] = {}
        conflicts: list[str] = []
        for (kind, key), (before, after) in first.items():
            current = (self.services if kind == SERVICE_KIND else self.sections).get(key)
            spath = _SERVICE_SPATH if kind == SERVICE_KIND else key
            value, found = revert(
                ABSENT if after is None else after,
                ABSENT if current is None else current,
                ABSENT if before is None else before,
                spath,
                _item_path(kind, key),
                self.schema,
                entry=kind == SERVICE_KIND,
            )
            conflicts += found
            value = None if value is ABSENT else value
            if value != current:
                targets[(kind, key)] = value
        return targets, conflicts

    # -- commit ----------------------------------------------------------------------------
    def _apply_commit(
        self,
        session: Session,
        prepared: _Prepared,
        comment: str,
        confirmed: Callable[[int | None], ConfirmedCommit | None] | None = None,
    ) -> Diff:
        """Store the prepared change, update the in-memory running, return the diff.

        `confirmed(commit_id or None)` gives the pending confirmed commit after this one; it
        is stored in the same transaction (or alone when nothing changed)."""
        diff = Diff()
        changes: list[tuple[str, str, Doc | None]] = []
        for name, new in prepared.services.items():
            old = self.services.get(name)
            if old == new:
                continue
            changes.append((SERVICE_KIND, name, new))
            if old is None:
                diff.services_added[name] = prepared.services_effective[name]
            else:
                diff.services_changed[name] = (
                    self.services_effective[name],
                    prepared.services_effective[name],
                )
        for name in prepared.deleted_services:
            if name in self.services:
                changes.append((SERVICE_KIND, name, None))
                diff.services_removed[name] = self.services_effective[name]
        for name in set(prepared.sections) | set(self.sections):
            old, new = self.sections.get(name), prepared.sections.get(name)
            if old != new:
                changes.append((SECTION_KIND, name, new))
                diff.sections_changed[name] = (
                    self.sections_effective.get(name),
                    prepared.sections_effective.get(name),
                )
        if diff.empty():
            if confirmed is not None:
                self._set_confirmed(confirmed(None))
            return diff

        def record(commit_id: int) -> dict[str, Any] | None:
            assert confirmed is not None
            new = confirmed(commit_id)
            return new.to_record() if new is not None else None

        commit_id = self.store.commit(
            changes,
            user=session.user,
            interface=session.interface,
            comment=comment,
            summary=diff.summary(),
            confirmed=record if confirmed is not None else None,
        )
        if confirmed is not None:
            self.confirmed = confirmed(commit_id)
        diff.commit_id = commit_id
        self.commit_id = commit_id
        for kind, key, new in changes:
            self.versions[(kind, key)] = commit_id
            if kind == SERVICE_KIND:
                if new is None:
                    self.services.pop(key, None)
                    self.services_effective.pop(key, None)
                    self.ports.drop(key)
                else:
                    self.services[key] = new
                    self.services_effective[key] = prepared.services_effective[key]
                    self.ports.set(key, prepared.services_effective[key])
        self.sections = prepared.sections
        self.sections_effective = prepared.sections_effective
        if self.load_error is not None:
            # Commits validate what they change; whether the rest is valid again takes a
            # whole validation, paid only while the stored config is known to be bad.
            self._load()
        return diff


class Session:
    """One client's view: its own candidate (an overlay on running), its locks."""

    def __init__(
        self, service: ConfigService, sid: int, user: str, interface: str, *, read_only: bool
    ) -> None:
        self.service = service
        self.id = sid
        self.user = user
        self.interface = interface
        self._read_only = read_only
        # The /sluice:management/user this session acts for (NETCONF, the console), if any:
        # its role is read again at every operation, so a user deleted or demoted by a
        # commit loses write access in sessions already open. None: a local root client.
        self.account: str | None = None
        self.closed = False
        self._reset()

    @property
    def read_only(self) -> bool:
        if self._read_only:
            return True
        return self.account is not None and self.service.role_of(self.account) != "read-write"

    @read_only.setter
    def read_only(self, value: bool) -> None:
        self._read_only = value

    def _reset(self) -> None:
        # None marks a deletion; absent means "as in running".
        self._services: dict[str, Doc | None] = {}
        self._sections: dict[str, Doc | None] = {}
        self._base: dict[tuple[str, str], int] = {}

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._reset()
            self.service._close(self)

    def _require_write(self) -> None:
        if self.closed:
            raise ConfigError("session is closed")
        if self.read_only:
            raise AccessDenied(
                f"user {self.user} is read-only",
                [
                    FieldError(
                        "", f"user {self.user} may not change the configuration", "access-denied"
                    )
                ],
            )

    # -- candidate view ----------------------------------------------------------------------
    def has_changes(self) -> bool:
        return bool(self._services or self._sections)

    def _service_view(self, name: str) -> Doc | None:
        if name in self._services:
            return self._services[name]
        return self.service.services.get(name)

    def _sections_view(self) -> dict[str, Doc]:
        merged = {**self.service.sections, **self._sections}
        return {k: v for k, v in merged.items() if v is not None}

    def _services_view(self) -> dict[str, Doc]:
        merged = {**self.service.services, **self._services}
        return {k: v for k, v in merged.items() if v is not None}

    def candidate_doc(self) -> Doc:
        return build_doc(self._sections_view(), self._services_view().values())

    # -- edit --------------------------------------------------------------------------------
    def edit(self, changes: list[dict[str, Any]]) -> None:
        """Apply edits to the candidate, all or nothing. Each change is
        {"op": merge|replace|create|delete|remove|move, "path": data path, "value": JSON},
        and for an entry of an ordered-by-user list "insert": first|last|before|after and
        "point": the data path of the sibling entry (before/after); see `tree.placement`.

        Secrets a change leaves out (or hands back masked) keep their stored value; only a
        delete/remove drops them (see `secrets`): front doors never show secrets, so a
        backup a client restores cannot carry them."""
        self._edit(changes, keep_secrets=True)

    def _edit(self, changes: list[dict[str, Any]], *, keep_secrets: bool) -> None:
        """`keep_secrets=False`: the values are the appliance's own (a snapshot, startup),
        secrets included, and replace exactly."""
        self._require_write()
        schema = self.service.schema
        with self.service._mutex:
            services = dict(self._services)
            sections = dict(self._sections)
            base = dict(self._base)
            for change in changes:
                if not isinstance(change, dict) or "path" not in change:
                    raise PathError("", "each change needs 'op', 'path' and usually 'value'")
                op = change.get("op", "merge")
                steps = parse_path(str(change["path"]))
                value = change.get("value")
                scope_services, scope_sections = self._scope(steps, op)
                view = _Overlay(self.service, services, sections)
                mini = build_doc(
                    {s: copy.deepcopy(v) for s in scope_sections if (v := view.section(s))},
                    [copy.deepcopy(v) for n in scope_services if (v := view.svc(n)) is not None],
                )
                place = placement(change.get("insert"), change.get("point"), steps)
                apply_edit(mini, steps, op, value, schema, place)
                new_sections, new_services = split_doc(mini)
                keep = keep_secrets and op not in ("delete", "remove")
                for name in scope_sections | set(new_sections):
                    new = new_sections.get(name)
                    if new is not None and keep:
                        new = secrets.restore(name, new, view.section(name), schema)
                    if new != view.section(name):
                        base.setdefault((SECTION_KIND, name), self._version(SECTION_KIND, name))
                        sections[name] = new
                for name in scope_services | set(new_services):
                    new = new_services.get(name)
                    if new is not None and keep and schema.service_secrets:
                        new = secrets.restore(_SERVICE_SPATH, new, view.svc(name), schema)
                    if new != view.svc(name):
                        base.setdefault((SERVICE_KIND, name), self._version(SERVICE_KIND, name))
                        services[name] = new
            self._services, self._sections, self._base = services, sections, base

    def _version(self, kind: str, key: str) -> int:
        return self.service.versions.get((kind, key), 0)

    def _scope(self, steps: list[Step], op: str) -> tuple[set[str], set[str]]:
        """Which items an edit at `steps` can touch: (service names, section names)."""
        if steps and steps[0].name != LB:
            return set(), {steps[0].name}
        if (
            len(steps) >= 2
            and steps[1].name == "service"
            and [k for k, _ in steps[1].keys] == ["name"]
        ):
            return {steps[1].keys[0][1]}, set()
        if not steps and op == "replace":
            everything = set(self._services_view())
            return everything, set(self._sections_view())
        lb_sections = {LB} if LB in self._sections_view() else set()
        if steps:
            return set(self._services_view()), lb_sections
        return set(self._services_view()), set(self._sections_view())

    # -- validate / commit -------------------------------------------------------------------
    def validate(self) -> None:
        """Check the candidate; raises ValidationError listing every problem found."""
        with self.service._mutex:
            self._prepare()

    def _prepare(self) -> _Prepared:
        schema = self.service.schema
        changed = {n: d for n, d in self._services.items() if d is not None}
        deleted = {n for n, d in self._services.items() if d is None}
        sections = self._sections_view()
        try:
            explicit, effective = schema.validate(build_doc(sections, changed.values()))
        except ValidationError as first:
            raise ValidationError(self._all_errors(sections, changed) or first.errors) from None
        ex_sections, ex_services = split_doc(explicit)
        ef_sections, ef_services = split_doc(effective)
        errors = self.service.ports.conflicts(ef_services, deleted)
        errors = errors or self.service._validator_errors(ef_sections, ef_services, deleted)
        if errors:
            raise ValidationError(errors[:MAX_REPORTED_ERRORS])
        return _Prepared(ex_services, ef_services, ex_sections, ef_sections, deleted)

    def _all_errors(self, sections: dict[str, Doc], changed: dict[str, Doc]) -> list[FieldError]:
        """libyang stops at the first error; validate item by item to report each one."""
        schema = self.service.schema
        errors: list[FieldError] = []
        try:
            schema.validate(build_doc(sections, []))
        except ValidationError as exc:
            errors.extend(exc.errors)
        if len(changed) > 1 or errors:
            for svc in changed.values():
                try:
                    schema.validate(build_doc({}, [svc]))
                except ValidationError as exc:
                    errors.extend(exc.errors)
                if len(errors) >= MAX_REPORTED_ERRORS:
                    break
        return errors

    def commit(
        self,
        comment: str = "",
        *,
        confirm_timeout: float | None = None,
        persist: str | None = None,
        owner: str = "",
        confirming: bool = False,
        by: Session | None = None,
    ) -> Diff:
        """Validate and make the candidate running, atomically; returns what changed.

        `confirm_timeout` (seconds): a confirmed commit (or a follow-up one, which extends
        the pending one); the service keeps it in the store until `confirming=True` on a
        later commit ends it, or `service.revert_confirmed` undoes it. Who may confirm
        (`owner`, `persist`) is the front door's to check.

        `by`: the session committing a candidate it shares with others (NETCONF's one
        candidate, RFC 6241 8.3): its locks count, and history names its user."""
        self._require_write()
        actor = by or self
        actor._require_write()
        svc = self.service
        confirmed = None
        if confirm_timeout is not None:
            deadline = time.time() + confirm_timeout

            def confirmed(cid: int | None) -> ConfirmedCommit | None:
                # Called under the mutex: a follow-up extends the one pending then.
                earlier = svc.confirmed.commits if svc.confirmed is not None else ()
                commits = (*earlier, cid) if cid else earlier
                return ConfirmedCommit(commits, self.user, owner, persist, deadline)

        elif confirming:

            def confirmed(cid: int | None) -> ConfirmedCommit | None:
                return None

        with svc._mutex:
            svc._check_not_locked_by_other(actor, "running", "candidate")
            if not self.has_changes():
                if confirmed is not None:
                    svc._set_confirmed(confirmed(None))
                return Diff()
            prepared = self._prepare()
            stale = [
                (kind, key)
                for (kind, key), version in self._base.items()
                if svc.versions.get((kind, key), 0) != version
            ]
            if stale:
                paths = [
                    service_path(key) if kind == SERVICE_KIND else f"/{module_of(key)}:{key}"
                    for kind, key in stale
                ]
                raise ConflictError(
                    "running changed since this candidate was edited; discard and redo: "
                    + ", ".join(paths),
                    [FieldError(p, "changed by another session", "resource-denied") for p in paths],
                )
            diff = svc._apply_commit(actor, prepared, comment, confirmed)
            self._reset()
            svc._maybe_prune()
        if not diff.empty():
            log.info(
                "config committed",
                extra={
                    "commit": diff.commit_id,
                    "user": actor.user,
                    "via": actor.interface,
                    **{k: v for k, v in diff.summary().items() if k != "names"},
                },
            )
            svc._publish(diff)
        return diff

    def discard(self) -> None:
        """Drop every uncommitted change of this session."""
        self._reset()

    def pending_diff(self) -> dict[str, Any]:
        """The candidate's changes against running, explicit values (for the commit bar)."""
        svc = self.service
        out: dict[str, Any] = {"services": {}, "sections": {}}
        for name, new in self._services.items():
            out["services"][name] = {"old": svc.services.get(name), "new": new}
        for name, new in self._sections.items():
            out["sections"][name] = {
                "old": secrets.mask_section(name, svc.sections.get(name), svc.schema),
                "new": secrets.mask_section(name, new, svc.schema),
            }
        return out

    # -- locks, startup, rollback ------------------------------------------------------------
    def lock(self, datastore: str) -> None:
        self.service._lock(self, datastore)

    def unlock(self, datastore: str) -> None:
        self.service._unlock(self, datastore)

    def copy_running_to_startup(self) -> None:
        self._require_write()
        self.service._save_startup(self)

    def delete_startup(self) -> None:
        self._require_write()
        self.service._delete_startup(self)

    def rollback(self, commit_id: int, comment: str = "") -> Diff:
        """Make running what it was right after commit `commit_id` (a new commit)."""
        self._require_write()
        if self.has_changes():
            raise ConfigError("the candidate has uncommitted changes; discard them first")
        doc = self.service.snapshot(commit_id)
        self._edit([{"op": "replace", "path": "/", "value": doc}], keep_secrets=False)
        try:
            return self.commit(comment or f"rollback to commit {commit_id}")
        except ConfigError:
            self.discard()
            raise

    def load_startup(self) -> None:
        """Make the candidate the startup config, secrets taken from startup (not running)."""
        self._require_write()
        doc = self.service.startup_doc(with_secrets=True)
        self.discard()
        self._edit([{"op": "replace", "path": "/", "value": doc}], keep_secrets=False)

    def copy_startup_to_running(self, comment: str = "") -> Diff:
        """Running becomes the startup config, startup's secrets included (a new commit)."""
        self._require_write()
        if self.has_changes():
            raise ConfigError("the candidate has uncommitted changes; discard them first")
        self.load_startup()
        try:
            return self.commit(comment or "copy startup to running")
        except ConfigError:
            self.discard()
            raise

    # -- read --------------------------------------------------------------------------------
    def get(self, path: str = "/", datastore: str = "running", *, effective: bool = False) -> Any:
        """The node at `path` in a datastore (JSON, secrets masked); NotFoundError if absent."""
        _check_datastore(datastore)
        svc = self.service
        steps = parse_path(path)
        with svc._mutex:
            if datastore == "startup":
                if effective:
                    doc = svc.schema.with_defaults(svc.startup_doc(with_secrets=True))
                    doc = secrets.mask(doc, svc.schema)
                else:
                    doc = svc.startup_doc()
            elif datastore == "candidate":
                doc = copy.deepcopy(self.candidate_doc())
                if effective:
                    doc = svc.schema.with_defaults(doc)
                doc = secrets.mask(doc, svc.schema)
            elif len(steps) >= 2 and steps[1].name == "service" and steps[1].keys:
                name = steps[1].key_dict().get("name", "")
                svc_doc = (svc.services_effective if effective else svc.services).get(name)
                doc = build_doc({}, [copy.deepcopy(svc_doc)] if svc_doc else [])
            else:
                doc = svc.running_doc(effective=effective)
        return select(doc, steps, svc.schema)


class _Overlay:
    """Read access to a candidate being edited (before it is swapped in)."""

    def __init__(
        self,
        service: ConfigService,
        services: dict[str, Doc | None],
        sections: dict[str, Doc | None],
    ) -> None:
        self._service, self._services, self._sections = service, services, sections

    def svc(self, name: str) -> Doc | None:
        return self._services[name] if name in self._services else self._service.services.get(name)

    def section(self, name: str) -> Doc | None:
        if name in self._sections:
            return self._sections[name]
        return self._service.sections.get(name)


def select(doc: Doc, steps: list[Step], schema: Schema) -> Any:
    """The node at `steps` inside a document; NotFoundError naming the path if absent."""
    node: Any = doc
    spath = ""
    target = format_path(steps)
    missing = NotFoundError(
        f"{target} does not exist", [FieldError(target, "does not exist", "data-missing")]
    )
    for i, step in enumerate(steps):
        key = f"{module_of(step.name)}:{step.name}" if i == 0 else step.name
        spath = step.name if i == 0 else f"{spath}/{step.name}"
        if not isinstance(node, dict) or key not in node:
            raise missing
        node = node[key]
        if step.keys and spath in schema.lists:
            keys = step.key_dict()
            found = [e for e in node if all(str(e.get(k)) == v for k, v in keys.items())]
            if not found:
                raise missing
            node = found[0]
    return node


def _check_datastore(name: str) -> None:
    if name not in DATASTORES:
        raise ConfigError(
            f"unknown datastore {name!r}; one of {', '.join(DATASTORES)}",
            [FieldError("datastore", f"unknown datastore {name!r}")],
        )


def _item_of(path: str) -> tuple[str, str] | None:
    """The (kind, key) of the item an error's data path is in."""
    if match := _SERVICE_IN_PATH.match(path):
        return SERVICE_KIND, match.group(1)
    if match := _SECTION_IN_PATH.match(path):
        return SECTION_KIND, match.group(1)
    return None


def _item_path(kind: str, key: str) -> str:
    return service_path(key) if kind == SERVICE_KIND else f"/{module_of(key)}:{key}"
