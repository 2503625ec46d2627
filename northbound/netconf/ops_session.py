"""lock, unlock, close-session, kill-session.

Locks are the config service's, per datastore, so a NETCONF lock also holds off the CLI
and console (and theirs hold off NETCONF). They go when the session ends, however it ends.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from lxml import etree

from appliance.config import DATASTORES, LockedError, NotFoundError
from northbound.netconf.errors import RpcError
from northbound.netconf.rpc import Dispatcher, datastore, text_of
from northbound.netconf.xmlutil import BASE_NS

if TYPE_CHECKING:
    from northbound.netconf.session import NetconfSession



def _lock(s: NetconfSession, target: str) -> None:
    """On the config worker, so no edit lands between the check and the lock."""
    if target == "candidate" and s.candidate.has_changes():
        # RFC 6241 7.5: no lock on a candidate modified and not committed or discarded;
        # the changes belong to no lock holder, hence session-id 0.
        raise CandidateModified("the candidate has uncommitted changes: commit or "
                                "discard-changes before locking it")
    s.config.lock(target)


class CandidateModified(LockedError):
    pass


async def lock(s: NetconfSession, op: etree._Element) -> None:
    target = datastore(op, "target", DATASTORES)
    assert isinstance(target, str)
    try:
        await s.server.call(_lock, s, target)
    except CandidateModified as exc:
        raise RpcError("lock-denied", str(exc), type="protocol",
                       info={"session-id": "0"}) from None
    except LockedError as exc:
        owner = s.server.config_service.lock_owner(target)
        holder = "0" if owner is None or owner is s.config else str(owner.id)
        raise RpcError("lock-denied", str(exc), type="protocol",
                       info={"session-id": holder}) from None
    s.locked_at[target] = datetime.now(UTC)


async def unlock(s: NetconfSession, op: etree._Element) -> None:
    target = datastore(op, "target", DATASTORES)
    assert isinstance(target, str)
    try:
        await s.server.call(_unlock, s, target)
    except LockedError as exc:
        # RFC 6241 7.6: unlocking a lock this session does not hold is operation-failed.
        raise RpcError("operation-failed", str(exc), type="protocol") from None
    s.locked_at.pop(target, None)


def _unlock(s: NetconfSession, target: str) -> None:
    s.config.unlock(target)
    if target == "candidate":
        # RFC 6241 8.3.5.2: releasing the candidate lock discards what was not committed.
        s.candidate.discard()


async def close_session(s: NetconfSession, op: etree._Element) -> None:
    s.closed = True  # the loop ends the session after sending <ok/>


async def kill_session(s: NetconfSession, op: etree._Element) -> None:
    text = text_of(op, "session-id")
    if not text:
        raise RpcError("missing-element", "kill-session needs a session-id", type="protocol",
                       info={"bad-element": "session-id"})
    try:
        sid = int(text)
    except ValueError:
        sid = -1
    if sid == s.id:
        raise RpcError("invalid-value", "a session cannot kill itself (use close-session)",
                       type="protocol", info={"bad-element": "session-id"})
    if sid < 1 or sid == s.server.candidate.id:
        raise RpcError("invalid-value", f"bad session-id {text!r}", type="protocol",
                       info={"bad-element": "session-id"})
    target = s.server.sessions.get(sid)
    if target is not None:
        await s.server.kill(target, killed_by=s)
        return
    # Not NETCONF: another front door's config session (its locks and candidate go).
    try:
        await s.server.call(s.server.config_service.kill_session, sid)
    except NotFoundError:
        raise RpcError("invalid-value", f"no session {sid}", type="protocol",
                       info={"bad-element": "session-id"}) from None


def register(d: Dispatcher) -> None:
    d.register(BASE_NS, "lock", lock, writes=True)
    d.register(BASE_NS, "unlock", unlock, writes=True)
    d.register(BASE_NS, "close-session", close_session)
    d.register(BASE_NS, "kill-session", kill_session, writes=True)
