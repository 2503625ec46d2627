"""loxilb's REST API, the part kube-loxilb uses (/netlox/v1), over the config service.

Every write is one commit, made on the daemon's config worker thread by a config session of
the calling user (so roles, history and notifications are the same as for any other door),
with a comment naming the API and the client's rule name. Reads take the running config
(replaced whole on commit, so a reference is consistent) and the state snapshot (endpoint
health and counters) and build the answer off the event loop.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
from collections.abc import Callable
from typing import Any

from aiohttp import web
from lxml import etree

from appliance import __version__
from appliance.config import ConfigError
from appliance.config.errors import (
    AccessDenied,
    ConflictError,
    LockedError,
    NotFoundError,
    ValidationError,
)
from appliance.config.paths import service_path
from appliance.doors import DoorContext
from appliance.snapshot import for_providers
from northbound.http import loxilb_fw
from northbound.http import loxilb_settings as settings
from northbound.http.auth import Caller
from northbound.http.loxilb_model import (
    OPER_ADD,
    OPER_ATTACH,
    endpoint_key,
    ip,
    protocol,
    service_name,
    to_rule,
    to_service,
)
from northbound.http.wire import JSON, SUCCESS, ApiError, read_body, respond
from northbound.netconf.errors import RpcError
from northbound.netconf.nacm import Nacm
from northbound.netconf.schema_index import SchemaIndex
from northbound.netconf.xmlutil import BASE_NS

log = logging.getLogger(__name__)

BASE = "/netlox/v1"
CONNTRACK_LIMIT = 10_000
OPERS = {0: "add", 1: "attach endpoints to", 2: "detach endpoints from"}


def config_error(exc: ConfigError) -> ApiError:
    """A refused commit in loxilb's envelope, the first field error's path in the message."""
    first = exc.errors[0] if exc.errors else None
    message = str(first) if first is not None and first.path else str(exc)
    if isinstance(exc, AccessDenied):
        return ApiError(403, message, "forbidden")
    if isinstance(exc, NotFoundError):
        return ApiError(404, message, "not found")
    if isinstance(exc, LockedError):
        return ApiError(503, f"configuration locked: {exc}", "not ready")
    if isinstance(exc, ConflictError):
        return ApiError(503, message, "not ready")
    if isinstance(exc, ValidationError):
        return ApiError(400, message, "invalid")
    return ApiError(400, message, "invalid")


def _is_api_rule(svc: dict[str, Any] | None) -> bool:
    return svc is not None and "loxilb-rule" in svc


class LoxilbApi:
    def __init__(self, ctx: DoorContext) -> None:
        self.service = ctx.service
        self.worker = ctx.worker
        self.state = ctx.state
        # NACM's write rules bind this API's users as they bind NETCONF's.
        self.nacm = Nacm(ctx.service, SchemaIndex(ctx.service.schema).namespaces)

    def routes(self) -> list[web.RouteDef]:
        b = BASE
        lb = f"{b}/config/loadbalancer"
        return [
            web.get(b, self.alive), web.get(b + "/", self.alive),
            web.post(lb, self.lb_create),
            web.get(f"{lb}/all", self.lb_list),
            web.delete(f"{lb}/all", self.lb_delete_all),
            web.delete(lb + "/externalipaddress/{ip}/port/{port}/protocol/{proto}",
                       self.lb_delete),
            web.delete(lb + "/externalipaddress/{ip}/port/{port}/portmax/{portmax}"
                       "/protocol/{proto}", self.lb_delete),
            web.delete(lb + "/name/{name}", self.lb_delete_name),
            web.post(f"{b}/config/cistate", self.cistate_set),
            web.get(f"{b}/config/cistate/all", self.cistate_get),
            web.post(f"{b}/config/bgp/global", self.bgp_global_set),
            web.get(f"{b}/config/bgp/global/all", self.bgp_global_get),
            web.post(f"{b}/config/bgp/neigh", self.bgp_neigh_add),
            web.delete(b + "/config/bgp/neigh/{ip}", self.bgp_neigh_delete),
            web.get(f"{b}/config/bgp/neigh/all", self.bgp_neigh_list),
            web.post(f"{b}/config/firewall", self.firewall_add),
            web.delete(f"{b}/config/firewall", self.firewall_delete),
            web.get(f"{b}/config/firewall/all", self.firewall_list),
            web.get(f"{b}/config/conntrack/all", self.conntrack),
            web.get(f"{b}/config/endpoint/all", self.endpoints),
            web.get(f"{b}/version", self.version),
        ]  # fmt: skip

    # -- plumbing --------------------------------------------------------------------------
    async def _on_worker(self, fn: Callable[..., Any], *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.worker, lambda: fn(*args))

    def _commit(self, caller: Caller, changes: list[dict[str, Any]], comment: str) -> None:
        """On the config worker: one session, one edit, one commit, attributed to the user."""
        session = self.service.open_session(caller.user, "http", read_only=caller.read_only,
                                            account=caller.user)
        try:
            self.nacm.check_write(caller.user, changes)
            session.edit(changes)
            session.commit(comment=comment)
        except RpcError as exc:  # NACM
            raise ApiError(403, exc.message, "forbidden") from None
        except ConfigError as exc:
            raise config_error(exc) from None
        finally:
            session.close()

    async def _write(self, request: web.Request, fn: Callable[..., None], *args: Any
                     ) -> web.Response:  # fmt: skip
        await self._on_worker(fn, request["caller"], *args)
        return respond(SUCCESS)

    def _snapshot(self) -> Any:
        if "endpoint" not in self.state and "snapshot" not in self.state:
            return None
        return for_providers(self.state, config_service=self.service).current()

    def _section(self, name: str = "loxilb") -> dict[str, Any] | None:
        return (self.service.sections or {}).get(name)

    def _visible(self, request: web.Request) -> Callable[[list[dict[str, Any]]],
                                                        list[dict[str, Any]]]:
        """NACM for this API's reads, per service: a service whose entry a read rule hides
        from the caller is left out of lists (a filter to run off the loop)."""
        user = request["caller"].user
        if self.nacm.reads_unrestricted(user):
            return lambda services: services

        def visible(services: list[dict[str, Any]]) -> list[dict[str, Any]]:
            ns = self.nacm.namespace_of.get("sluice", "")
            data = etree.Element(f"{{{BASE_NS}}}data")
            lb = etree.SubElement(data, f"{{{ns}}}load-balancer")
            for svc in services:
                etree.SubElement(etree.SubElement(lb, f"{{{ns}}}service"),
                                 f"{{{ns}}}name").text = str(svc["name"])
            self.nacm.filter_read(user, data)
            kept = set(data.xpath("//s:service/s:name/text()", namespaces={"s": ns}))
            return [s for s in services if s["name"] in kept]

        return visible

    # -- liveness, version -----------------------------------------------------------------
    async def alive(self, request: web.Request) -> web.Response:
        return respond(SUCCESS)

    async def version(self, request: web.Request) -> web.Response:
        return respond({"version": f"sluice-{__version__}", "buildInfo": "sluice"})

    # -- load-balancer rules ---------------------------------------------------------------
    async def lb_create(self, request: web.Request) -> web.Response:
        body = await read_body(request)
        name, doc, oper = to_service(body)
        return await self._write(request, self._lb_create, name, doc, oper)

    def _lb_create(self, caller: Caller, name: str, doc: dict[str, Any], oper: int) -> None:
        existing = self.service.services.get(name)
        rule = doc["loxilb-rule"]["name"]
        where = f"{doc['vip']} {doc['protocol']}/{doc.get('port', 0)}"
        if existing is not None and not _is_api_rule(existing):
            raise ApiError(409, f"{where} is service {name}, not made through this API",
                           "conflict")
        if oper == OPER_ADD:
            if existing is not None and to_rule(existing) == to_rule(doc):
                raise ApiError(409, f"lb rule {where} already exists", "lbrule-exists")
            new = doc
        elif existing is None:
            raise ApiError(404, f"lb rule {where} not found", "not found")
        else:
            new = {**existing}
            have = {endpoint_key(e): e for e in existing.get("endpoint", [])}
            if oper == OPER_ATTACH:
                for ep in doc["endpoint"]:
                    have[endpoint_key(ep)] = ep
            else:
                for ep in doc["endpoint"]:
                    have.pop(endpoint_key(ep), None)
            new["endpoint"] = list(have.values())
            rule = existing["loxilb-rule"].get("name", rule)
        self._commit(caller, [{"op": "replace", "path": service_path(name), "value": new}],
                     f"loxilb API: {OPERS[oper]} rule {rule!r} ({where})")

    async def lb_list(self, request: web.Request) -> web.Response:
        snap = self._snapshot()
        services = self.service.services_effective

        visible = self._visible(request)

        def build() -> bytes:
            ep_state = snap.endpoint if snap is not None else None
            rules = [to_rule(s, ep_state) for s in visible(list(services.values()))
                     if _is_api_rule(s)]
            return json.dumps({"lbAttr": rules}).encode()

        body = await asyncio.to_thread(build)
        return web.Response(body=body, content_type=JSON)

    async def lb_delete(self, request: web.Request) -> web.Response:
        m = request.match_info
        vip = ip(m["ip"], "externalipaddress")
        proto = protocol(m["proto"])
        try:
            port = int(m["port"])
        except ValueError:
            raise ApiError(400, f"port: not a number: {m['port']!r}", "malformed") from None
        if not 0 <= port <= 65535:
            raise ApiError(400, f"port: must be in 0..65535, not {port}", "malformed")
        name = service_name(vip, proto, port)
        return await self._write(request, self._lb_delete, [name], f"{vip} {proto}/{port}")

    def _lb_delete(self, caller: Caller, names: list[str], what: str) -> None:
        found = [n for n in names if _is_api_rule(self.service.services.get(n))]
        if not found:
            raise ApiError(404, f"lb rule {what} not found", "not found")
        rules = ", ".join(repr(self.service.services[n]["loxilb-rule"].get("name", n))
                          for n in found[:5])
        more = f" and {len(found) - 5} more" if len(found) > 5 else ""
        self._commit(caller, [{"op": "delete", "path": service_path(n)} for n in found],
                     f"loxilb API: delete rule {rules}{more} ({what})")

    async def lb_delete_name(self, request: web.Request) -> web.Response:
        rule = request.match_info["name"]
        names = [n for n, s in list(self.service.services.items())
                 if _is_api_rule(s) and s["loxilb-rule"].get("name") == rule]
        return await self._write(request, self._lb_delete, names, f"name {rule!r}")

    async def lb_delete_all(self, request: web.Request) -> web.Response:
        names = [n for n, s in list(self.service.services.items()) if _is_api_rule(s)]
        if not names:
            return respond(SUCCESS)
        return await self._write(request, self._lb_delete, names, "all")

    # -- cistate, BGP (stored in /sluice:loxilb) ---------------------------------------------
    def _set(self, caller: Caller, path: str, value: dict[str, Any], comment: str) -> None:
        self._commit(caller, [{"op": "merge", "path": path, "value": value}], comment)

    async def _ha(self) -> dict[str, Any] | None:
        provider = self.state.get("ha")
        return await asyncio.to_thread(provider) if provider is not None else None

    async def cistate_set(self, request: web.Request) -> web.Response:
        path, entry = settings.cistate_change(await read_body(request))
        action = settings.cistate_action(await self._ha(), entry["instance"], entry["state"])
        if action is None:  # not an instance the appliance's HA runs: stored
            return await self._write(request, self._set, path, entry,
                                     f"loxilb API: cistate {entry['instance']} {entry['state']}")
        if action == "takeover":
            command = self.state["ha-command"]
            caller = request["caller"]
            log.warning("loxilb API: HA takeover", extra={"instance": entry["instance"],
                                                          "user": caller.user})
            try:
                await asyncio.to_thread(command, "takeover", entry["instance"])
            except (ValueError, LookupError) as exc:
                raise ApiError(503, f"HA takeover of {entry['instance']}: {exc}",
                               "not ready") from None
        return respond(SUCCESS)

    async def cistate_get(self, request: web.Request) -> web.Response:
        return respond(settings.cistate_list(self._section(), await self._ha()))

    async def bgp_global_set(self, request: web.Request) -> web.Response:
        path, entry = settings.bgp_global_change(await read_body(request))
        return await self._write(request, self._set, path, entry, "loxilb API: bgp global")

    async def bgp_global_get(self, request: web.Request) -> web.Response:
        return respond(settings.bgp_global_list(self._section("bgp")))

    async def bgp_neigh_add(self, request: web.Request) -> web.Response:
        path, entry = settings.bgp_neighbor_change(await read_body(request))
        return await self._write(request, self._neigh_add, path, entry)

    def _neigh_add(self, caller: Caller, path: str, entry: dict[str, Any]) -> None:
        current = settings.bgp_neighbor_list(self._section("bgp"))["bgpNeiAttr"]
        for n in current:
            if n["ipAddress"] == entry["address"] and n["remoteAs"] == entry["remote-as"]:
                raise ApiError(409, f"bgp neighbor {entry['address']} already exists",
                               "exists")
        self._set(caller, path, entry, f"loxilb API: bgp neighbor {entry['address']}")

    async def bgp_neigh_delete(self, request: web.Request) -> web.Response:
        address = ip(request.match_info["ip"], "ip")
        return await self._write(request, self._neigh_delete, address)

    def _neigh_delete(self, caller: Caller, address: str) -> None:
        if not settings.neighbor_exists(self._section("bgp"), address):
            raise settings.not_found(f"bgp neighbor {address}")
        self._commit(caller, [{"op": "delete", "path": settings.neighbor_path(address)}],
                     f"loxilb API: delete bgp neighbor {address}")

    async def bgp_neigh_list(self, request: web.Request) -> web.Response:
        detail = self.state.get("bgp")
        sessions = None
        if detail is not None:
            try:
                sessions = (await asyncio.to_thread(detail)).get("neighbor")
            except Exception:  # the speaker's state is a nicety here: the config still lists
                log.exception("bgp state unreadable")
        return respond(settings.bgp_neighbor_list(self._section("bgp"), sessions))

    # -- firewall and egress SNAT (northbound/http/loxilb_fw.py maps the JSON) ---------------
    async def firewall_add(self, request: web.Request) -> web.Response:
        table, rule = loxilb_fw.to_rule(await read_body(request))
        path = f"/sluice:{table}/rule[name='{rule['name']}']"
        return await self._write(request, self._commit_fw, path, rule, "add")

    async def firewall_delete(self, request: web.Request) -> web.Response:
        name = loxilb_fw.rule_name(loxilb_fw.normalise(dict(request.query)))
        return await self._write(request, self._commit_fw, name, None, "delete")

    def _commit_fw(self, caller: Caller, what: str, rule: dict[str, Any] | None, op: str
                   ) -> None:  # fmt: skip
        if rule is None:  # delete: `what` is the rule name, in whichever table has it
            paths = [f"/sluice:{t}/rule[name='{what}']" for t in ("firewall", "snat")
                     if any(r["name"] == what for r in (self._section(t) or {}).get("rule", []))]
            if not paths:
                raise ApiError(404, "firewall rule not found", "not found")
            self._commit(caller, [{"op": "delete", "path": paths[0]}],
                         f"loxilb API: delete firewall rule {what}")
            return
        self._commit(caller, [{"op": "replace", "path": what, "value": rule}],
                     f"loxilb API: {op} firewall rule {rule['name']}")

    async def firewall_list(self, request: web.Request) -> web.Response:
        provider = self.state.get("firewall")
        state = (await asyncio.to_thread(provider)) if provider is not None else {}
        hits = {(r["table"], r["name"]): f"{r['packets']}:{r['bytes']}"
                for r in (state or {}).get("rules", [])}  # fmt: skip
        out = [loxilb_fw.from_rule(t, r, hits.get((t, r["name"]), ""))
               for t in ("firewall", "snat") for r in (self._section(t) or {}).get("rule", [])
               if r["name"].startswith(loxilb_fw.PREFIX)]  # fmt: skip
        return respond({"fwAttr": out})

    # -- operational reads -----------------------------------------------------------------
    async def conntrack(self, request: web.Request) -> web.Response:
        provider = self.state.get("conntrack")
        if provider is None:
            return respond({"ctAttr": []})

        visible = self._visible(request)

        def build() -> bytes:
            rows = provider(None, limit=CONNTRACK_LIMIT)
            if not self.nacm.reads_unrestricted(request["caller"].user):
                names = {s["name"] for s in visible(list(self.service.services.values()))}
                rows = [r for r in rows if r.get("service") in names]
            return json.dumps({"ctAttr": [_ct_row(r) for r in rows]}).encode()

        body = await asyncio.to_thread(build)
        return web.Response(body=body, content_type=JSON)

    async def endpoints(self, request: web.Request) -> web.Response:
        snap = self._snapshot()
        services = self.service.services_effective

        visible = self._visible(request)

        def build() -> bytes:
            out = []
            for svc in visible(list(services.values())):
                probe = svc.get("health-probe") or {}
                for ep in svc.get("endpoint", []):
                    st = snap.endpoint(svc["name"], ep["address"], ep["port"]) if snap else {}
                    health = (st or {}).get("health", "unknown")
                    out.append({
                        "hostName": ep["address"], "name": svc["name"],
                        "probeType": probe.get("type", "none"),
                        "probePort": int(probe.get("port", ep["port"])),
                        "probeReq": probe.get("request", ""),
                        "probeResp": probe.get("expected-response", ""),
                        "probeDuration": int(probe.get("interval", 10)),
                        "inactiveReTries": int(probe.get("retries", 2)),
                        "minDelay": "", "avgDelay": "", "maxDelay": "",
                        "currState": "ok" if health == "up" else
                                     ("nok" if health in ("down", "degraded") else health),
                    })  # fmt: skip
            return json.dumps({"Attr": out}).encode()

        body = await asyncio.to_thread(build)
        return web.Response(body=body, content_type=JSON)


def _split(text: str) -> tuple[str, int]:
    """"198.18.0.1:4242" / "[2001:db8::1]:80" / "198.18.0.1" → (address, port)."""
    if text.startswith("["):
        host, _, port = text[1:].partition("]:")
        return host, int(port or 0)
    try:
        ipaddress.ip_address(text)
        return text, 0
    except ValueError:
        host, _, port = text.rpartition(":")
        return host, int(port or 0)


def _ct_row(r: dict[str, Any]) -> dict[str, Any]:
    client, cport = _split(str(r.get("client", "")))
    vip, vport = _split(str(r.get("vip", "")))
    return {
        "destinationIP": vip, "sourceIP": client, "destinationPort": vport,
        "sourcePort": cport, "protocol": r.get("protocol", ""),
        "conntrackState": r.get("state", ""), "conntrackAct": f"dnat:{r.get('endpoint', '')}",
        "packets": sum(r.get("packets", [0])), "bytes": sum(r.get("bytes", [0])),
        "servName": r.get("service", ""),
    }  # fmt: skip
