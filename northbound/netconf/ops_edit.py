"""edit-config, copy-config, delete-config, validate.

NETCONF's candidate is one config-service session shared by every NETCONF session (RFC
6241 8.3: edits made in one session are seen and committed by the others); running is
edited through each NETCONF session's own config session, whose locks are that session's.
Edits are all-or-nothing in the service, so
stop-on-error and rollback-on-error both leave the target untouched on any error;
continue-on-error applies each change alone and reports the ones that failed.

test-then-set (the default once :validate:1.1 is advertised) must not change the candidate
when the result is invalid. The service has no candidate checkpoint, so the check runs on
a scratch session that replays this session's pending changes plus the new ones; only
when that validates are the changes applied to the real candidate.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lxml import etree

from appliance.config import DATASTORES, ConfigError, Session
from appliance.config.paths import module_of, service_path
from northbound.netconf.errors import RpcError, RpcErrors, from_config_error
from northbound.netconf.rpc import Dispatcher, call, check_unlocked, datastore, text_of
from northbound.netconf.xmlutil import BASE_NS, child, elements, local

if TYPE_CHECKING:
    from northbound.netconf.session import NetconfSession

TEST_OPTIONS = ("test-then-set", "set", "test-only")
ERROR_OPTIONS = ("stop-on-error", "continue-on-error", "rollback-on-error")


def _replay(session: Session) -> list[dict[str, Any]]:
    """Changes that rebuild `session`'s candidate on top of running."""
    pending = session.pending_diff()
    changes: list[dict[str, Any]] = []
    for name, item in pending["services"].items():
        path = service_path(name)
        if item["new"] is None:
            changes.append({"op": "remove", "path": path})
        else:
            changes.append({"op": "replace", "path": path, "value": item["new"]})
    for name, item in pending["sections"].items():
        if name == "load-balancer":
            continue  # holds only the service list, replayed above
        path = f"/sluice:{name}"
        if item["new"] is None:
            changes.append({"op": "remove", "path": path})
        else:
            changes.append({"op": "replace", "path": path, "value": item["new"]})
    return changes


def _check_on_scratch(session: Session, base: list[dict[str, Any]],
                      changes: list[dict[str, Any]]) -> None:
    scratch = session.service.open_session(session.user, "netconf-validate")
    try:
        scratch.edit(base)
        scratch.edit(changes)
        scratch.validate()
    finally:
        scratch.close()


def _apply(session: Session, changes: list[dict[str, Any]], error_option: str) -> list[ConfigError]:
    if error_option != "continue-on-error":
        session.edit(changes)
        return []
    failed = []
    for change in changes:
        try:
            session.edit([change])
        except ConfigError as exc:
            failed.append(exc)
    return failed


def edit_candidate(session: Session, changes: list[dict[str, Any]], test: str,
                   error_option: str) -> list[ConfigError]:
    """Runs on the config worker: validate (unless test-option=set), then apply."""
    if test in ("test-then-set", "test-only"):
        _check_on_scratch(session, _replay(session), changes)
    if test == "test-only":
        return []
    return _apply(session, changes, error_option)


def edit_running(session: Session, changes: list[dict[str, Any]], test: str,
                 error_option: str) -> list[ConfigError]:
    """:writable-running through this session (its locks count), as one commit."""
    if session.has_changes():
        raise ConfigError(
            "this session's candidate has uncommitted changes; commit or discard-changes "
            "before editing running directly")
    if test == "test-only":
        _check_on_scratch(session, [], changes)
        return []
    try:
        failed = _apply(session, changes, error_option)
        session.commit("netconf edit-config running")
    except ConfigError:
        session.discard()
        raise
    return failed


def _check_lock(s: NetconfSession, target: str) -> None:
    """Another session's lock on the target is in-use; so is one on the candidate when the
    target is running (the commit an edit of running makes would be refused by it)."""
    check_unlocked(s, *((target, "candidate") if target == "running" else (target,)))


async def edit_config(s: NetconfSession, op: etree._Element) -> None:
    target = datastore(op, "target", ("candidate", "running"))
    assert isinstance(target, str)
    default_op = text_of(op, "default-operation", "merge") or "merge"
    test = text_of(op, "test-option", "test-then-set") or "test-then-set"
    error_option = text_of(op, "error-option", "stop-on-error") or "stop-on-error"
    if test not in TEST_OPTIONS:
        raise RpcError("invalid-value", f"test-option {test} is not one of {TEST_OPTIONS}",
                       type="protocol", info={"bad-element": "test-option"})
    if error_option not in ERROR_OPTIONS:
        raise RpcError("invalid-value", f"error-option {error_option} is not one of "
                       f"{ERROR_OPTIONS}", type="protocol", info={"bad-element": "error-option"})
    config = child(op, "config")
    if config is None:
        if child(op, "url") is not None:
            raise RpcError("operation-not-supported", "the :url capability is not supported",
                           type="protocol", info={"bad-element": "url"})
        raise RpcError("missing-element", "edit-config needs <config>", type="protocol",
                       info={"bad-element": "config"})
    changes = await s.server.offload(s.server.translator.changes, config, default_op)
    _check_lock(s, target)
    await check_access(s, changes, target)
    if target == "candidate":
        failed = await call(s, edit_candidate, s.candidate, changes, test, error_option)
    else:
        failed = await call(s, edit_running, s.config, changes, test, error_option)
    if failed:
        errors: list[RpcError] = []
        for exc in failed:
            errors.extend(from_config_error(exc))
        raise RpcErrors(errors)


async def check_access(s: NetconfSession, changes: list[dict[str, Any]], target: str) -> None:
    """NACM write access for every node the changes write (on the config worker: telling
    a create from an update reads the target)."""
    reader = s.candidate if target == "candidate" else s.config

    def exists(path: str) -> bool:
        try:
            reader.get(path, target)
        except ConfigError:
            return False
        return True

    await s.server.call(s.server.nacm.check_write, s.user, changes, exists)


def _replace_all(s: NetconfSession, config: etree._Element) -> list[dict[str, Any]]:
    """Changes that make a datastore exactly the inline <config>.

    Each top-level node the config names is replaced, the others removed. Not one "replace
    everything with nothing" first: that would be an explicit delete of every secret, and a
    get-config backup (which never carries secrets) would restore users without passwords.
    """
    present = {local(el) for el in elements(config)}
    removed = [{"op": "remove", "path": f"/{module_of(name)}:{name}"}
               for name in s.server.config_service.schema.top_level if name not in present]
    return [*removed, *s.server.translator.changes(config, "replace")]


async def copy_config(s: NetconfSession, op: etree._Element) -> None:
    source = datastore(op, "source", DATASTORES, allow_config=True)
    target = datastore(op, "target", DATASTORES)
    if source == target:
        raise RpcError("invalid-value", "source and target are the same datastore",
                       type="protocol", info={"bad-element": "target"})
    cfg = s.config
    if target == "startup":
        if source != "running":
            raise RpcError("operation-not-supported", "startup can only be copied from running",
                           type="protocol", info={"bad-element": "source"})
        await call(s, cfg.copy_running_to_startup)
        return
    if target == "candidate" and source == "running":
        _check_lock(s, "candidate")
        await call(s, s.candidate.discard)
        return
    if target == "running" and source == "candidate":
        _check_lock(s, "running")
        await call(s, s.candidate.commit, "netconf copy-config candidate to running", by=cfg)
        return
    if source == "startup":
        # Startup's own secrets, not running's: startup is copied whole, exactly.
        _check_lock(s, target)
        if target == "candidate":
            await call(s, _startup_to_candidate, s.candidate)
        else:
            await call(s, cfg.copy_startup_to_running, "netconf copy-config startup to running")
        return
    # From an inline <config>: replace the whole target.
    assert not isinstance(source, str)
    changes = await s.server.offload(_replace_all, s, source)
    _check_lock(s, target)
    await check_access(s, changes, target)
    if target == "candidate":
        await call(s, _replace_candidate, s.candidate, changes)
    else:
        await call(s, edit_running, cfg, changes, "test-then-set", "rollback-on-error")


def _startup_to_candidate(session: Session) -> None:
    _check_startup(session)
    session.load_startup()


def _check_startup(session: Session) -> None:
    scratch = session.service.open_session(session.user, "netconf-validate")
    try:
        scratch.load_startup()
        scratch.validate()
    finally:
        scratch.close()


def _replace_candidate(session: Session, changes: list[dict[str, Any]]) -> None:
    _check_on_scratch(session, [], changes)
    session.discard()
    session.edit(changes)


async def delete_config(s: NetconfSession, op: etree._Element) -> None:
    target = datastore(op, "target", ("startup",))
    assert target == "startup"
    await call(s, s.config.delete_startup)


async def validate(s: NetconfSession, op: etree._Element) -> None:
    source = datastore(op, "source", ("candidate", "running", "startup"), allow_config=True)
    if source == "running":
        return  # running only ever holds validated configuration
    if source == "candidate":
        await call(s, s.candidate.validate)
        return
    if source == "startup":
        await call(s, _check_startup, s.config)
        return
    assert not isinstance(source, str)
    changes = await s.server.offload(_replace_all, s, source)
    await call(s, _check_on_scratch, s.config, [], changes)


def register(d: Dispatcher) -> None:
    d.register(BASE_NS, "edit-config", edit_config, writes=True)
    d.register(BASE_NS, "copy-config", copy_config, writes=True)
    d.register(BASE_NS, "delete-config", delete_config, writes=True)
    d.register(BASE_NS, "validate", validate)
