"""A session's role is checked at every change: a user deleted or demoted by a commit loses
write access in the NETCONF and console sessions it already has open."""

from __future__ import annotations

from pathlib import Path

import netconfkit as kit
import pytest
from daemonkit import Daemon
from ncclient.operations.rpc import RPCError

from appliance.config import ConfigService
from appliance.config.errors import AccessDenied
from appliance.config.paths import service_path
from appliance.config.store import Store
from appliance.control.client import RemoteError

USERS = "/sluice:management/user"


def set_role(service: ConfigService, user: str, role: str | None) -> None:
    with service.open_session("admin", "test") as s:
        path = f"{USERS}[name='{user}']"
        if role is None:
            s.edit([{"op": "delete", "path": path}])
        else:
            s.edit([{"op": "merge", "path": path, "value": {"role": role}}])
        s.commit(f"{user} -> {role}")


def service_doc(name: str, vip: str) -> dict:
    return {"name": name, "vip": vip, "port": 80,
            "endpoint": [{"address": "198.18.1.1", "port": 8080}]}


def test_demoted_and_deleted_accounts_lose_write_access(tmp_path: Path) -> None:
    service = ConfigService(Store(tmp_path / "c.db"))
    with service.open_session("admin", "test") as s:
        s.edit([{"op": "merge", "path": "/sluice:management", "value": {"user": [
            {"name": "ops", "role": "read-write"}, {"name": "eve", "role": "read-write"}]}}])
        s.commit("users")
    ops = service.open_session("ops", "netconf", account="ops")
    eve = service.open_session("eve", "netconf", account="eve")
    ops.edit([{"op": "create", "path": service_path("a"), "value": service_doc("a",
                                                                               "198.18.0.1")}])
    ops.commit("allowed")
    set_role(service, "ops", "read-only")
    set_role(service, "eve", None)
    for session, name in ((ops, "b"), (eve, "c")):
        with pytest.raises(AccessDenied):
            session.edit([{"op": "create", "path": service_path(name),
                           "value": service_doc(name, "198.18.0.2")}])
    set_role(service, "ops", "read-write")  # promoted back: allowed again
    ops.edit([{"op": "create", "path": service_path("b"), "value": service_doc("b",
                                                                               "198.18.0.2")}])
    ops.commit("allowed again")
    service.store.close()


def test_an_open_netconf_session_of_a_demoted_user_cannot_edit(tmp_path: Path) -> None:
    h = kit.start(tmp_path)
    try:
        with h.connect("ops") as m:
            m.get_config("running")
            set_role(h.service, "ops", "read-only")
            with pytest.raises(RPCError) as info:
                m.edit_config(
                    f'<config><load-balancer xmlns="{kit.SLUICE_NS}"><service><name>x</name>'
                    "<vip>198.18.0.9</vip><port>80</port></service></load-balancer></config>",
                    target="running")
            assert info.value.tag == "access-denied"
            assert "x" not in h.service.services
            with pytest.raises(RPCError) as info:  # nor take the datastore from others
                m.lock("running")
            assert info.value.tag == "access-denied"
    finally:
        kit.stop(h)


def test_an_open_console_session_of_a_deleted_user_cannot_edit(daemon: Daemon) -> None:
    with daemon.client() as admin:
        admin.call("config.edit", changes=[{"op": "merge", "path": "/sluice:management",
                                            "value": {"user": [{"name": "carol",
                                                                "role": "read-write"}]}}])
        admin.call("config.commit", comment="carol")
        with daemon.client() as console:
            console.call("session.identify", user="carol", interface="console", account=True)
            console.call("lb.add", service=service_doc("a", "198.18.0.1"))
            admin.call("config.edit", changes=[{"op": "delete",
                                                "path": f"{USERS}[name='carol']"}])
            admin.call("config.commit", comment="carol leaves")
            with pytest.raises(RemoteError) as info:
                console.call("lb.add", service=service_doc("b", "198.18.0.2"))
            assert info.value.type == "AccessDenied"
