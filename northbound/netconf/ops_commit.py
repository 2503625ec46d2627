"""commit (with :confirmed-commit:1.1), cancel-commit, discard-changes.

The pending confirmed commit lives in the config service, which keeps it in the store in
the same transaction as the commit: a crash or kill -9 inside the confirm window cannot
make it permanent (the next start reverts it). This module keeps what only NETCONF knows:
which session issued it (who may confirm, whose end reverts it) and the timer.

If no confirming commit arrives within confirm-timeout, or the session that made it ends
(without persist), or cancel-commit is sent, the service reverts it: the inverse of the
confirmed commit's own changes, as a new commit (history shows both), not blocked by any
session's lock, and keeping what other sessions and front doors committed since (see
appliance/config/revert.py). Only one confirmed commit is pending at a time (RFC 6241
section 8.4); a follow-up confirmed commit extends it, and its changes are reverted too.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lxml import etree

from appliance.config import ConfigError, Session
from northbound.netconf.errors import RpcError
from northbound.netconf.rpc import Dispatcher, call, check_unlocked, text_of
from northbound.netconf.xmlutil import BASE_NS, child

if TYPE_CHECKING:
    from northbound.netconf.server import NetconfServer
    from northbound.netconf.session import NetconfSession

log = logging.getLogger(__name__)

DEFAULT_CONFIRM_TIMEOUT = 600


@dataclass
class Pending:
    owner: int  # NETCONF session id that issued it
    persist: str | None
    timer: asyncio.TimerHandle | None = None


class ConfirmedCommits:
    def __init__(self, server: NetconfServer) -> None:
        self.server = server
        self.pending: Pending | None = None

    def _arm(self, timeout: float) -> None:
        assert self.pending is not None
        if self.pending.timer is not None:
            self.pending.timer.cancel()
        loop = asyncio.get_running_loop()
        self.pending.timer = loop.call_later(
            timeout, lambda: self.server.spawn(self.roll_back("timeout"))
        )

    def _disarm(self) -> Pending | None:
        pending, self.pending = self.pending, None
        if pending is not None and pending.timer is not None:
            pending.timer.cancel()
        return pending

    async def roll_back(self, reason: str, session: Session | None = None) -> None:
        """Undo the pending confirmed commit. `session` is accepted for callers that name
        the ending session; the revert runs as the appliance, under nobody's locks."""
        pending = self._disarm()
        if pending is None:
            return
        service = self.server.config_service
        try:
            diff = await self.server.call(service.revert_confirmed, reason)
            log.warning("confirmed commit rolled back",
                        extra={"reason": reason, "commit": diff.commit_id})
        except ConfigError as exc:
            log.error("confirmed commit rollback failed",
                      extra={"reason": reason, "error": str(exc)})
        self.server.notify_confirmed_commit(pending.owner, "cancel" if reason == "cancel"
                                            else "timeout")


def _int(text: str | None, name: str, default: int) -> int:
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise RpcError("invalid-value", f"{name} must be a positive integer", type="protocol",
                       info={"bad-element": name})
    return value


async def commit(s: NetconfSession, op: etree._Element) -> None:
    cc: ConfirmedCommits = s.server.confirmed
    confirmed = child(op, "confirmed") is not None
    timeout = _int(text_of(op, "confirm-timeout"), "confirm-timeout", DEFAULT_CONFIRM_TIMEOUT)
    persist = text_of(op, "persist")
    persist_id = text_of(op, "persist-id")
    pending = cc.pending
    if pending is not None:
        # Only the issuing session (or whoever knows the persist token) may confirm/extend.
        if pending.persist is not None:
            if persist_id != pending.persist:
                raise RpcError("invalid-value", "a persistent confirmed commit is pending; "
                               "give its persist-id", type="protocol",
                               info={"bad-element": "persist-id"})
        elif pending.owner != s.id:
            raise RpcError("in-use", f"a confirmed commit of session {pending.owner} is pending",
                           type="protocol", info={"session-id": str(pending.owner)})
    elif persist_id is not None:
        raise RpcError("invalid-value", "no confirmed commit with that persist-id is pending",
                       type="protocol", info={"bad-element": "persist-id"})
    comment = "netconf commit" + (" (confirmed)" if confirmed else "")
    check_unlocked(s, "candidate", "running")
    if confirmed:
        await call(s, s.candidate.commit, comment, confirm_timeout=timeout, persist=persist,
                   owner=f"netconf session {s.id}", by=s.config)
        if pending is None:
            cc.pending = Pending(s.id, persist)
            event = "start"
        else:
            pending.owner, pending.persist = s.id, persist
            event = "extend"
        cc._arm(timeout)
        s.server.notify_confirmed_commit(s.id, event, timeout)
    elif pending is not None:
        await call(s, s.candidate.commit, comment, confirming=True, by=s.config)
        cc._disarm()
        s.server.notify_confirmed_commit(s.id, "complete")
    else:
        await call(s, s.candidate.commit, comment, by=s.config)


async def cancel_commit(s: NetconfSession, op: etree._Element) -> None:
    cc: ConfirmedCommits = s.server.confirmed
    pending = cc.pending
    persist_id = text_of(op, "persist-id")
    if pending is None:
        raise RpcError("invalid-value", "no confirmed commit is pending", type="protocol")
    if pending.persist is not None:
        if persist_id != pending.persist:
            raise RpcError("invalid-value", "persist-id does not match", type="protocol",
                           info={"bad-element": "persist-id"})
    elif pending.owner != s.id:
        raise RpcError("in-use", f"the confirmed commit belongs to session {pending.owner}",
                       type="protocol", info={"session-id": str(pending.owner)})
    await cc.roll_back("cancel", s.config)


async def discard_changes(s: NetconfSession, op: etree._Element) -> None:
    """Drops the shared candidate's changes, whoever made them (RFC 6241 8.3.4.2)."""
    check_unlocked(s, "candidate")
    await call(s, s.candidate.discard)


def register(d: Dispatcher) -> None:
    d.register(BASE_NS, "commit", commit, writes=True)
    d.register(BASE_NS, "cancel-commit", cancel_commit, writes=True)
    d.register(BASE_NS, "discard-changes", discard_changes, writes=True)
