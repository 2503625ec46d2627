"""The OpenAPI 3 document of the /netlox/v1 part of the HTTP door (served at PATH).

Describes what Sluice accepts and answers, which is loxilb's wire format; fields loxilb
has and Sluice refuses (non-zero block, host, egress...) are in it, with the refusal as a
400 answer, so a client learns of them from the document too.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from appliance import __version__

PATH = "/netlox/v1/openapi.json"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": schema}}}


def _answers(ok: dict[str, Any] | None = None, *codes: int) -> dict[str, Any]:
    out: dict[str, Any] = {"200": {"description": "done", **_json(ok or _ref("Success"))}}
    for code in (400, 401, 403, 404, 409, 503, *codes):
        out[str(code)] = {"description": "refused", **_json(_ref("Error"))}
    return out


def _op(summary: str, ok: dict[str, Any] | None = None, body: str | None = None,
        params: list[dict[str, Any]] | None = None) -> dict[str, Any]:  # fmt: skip
    op: dict[str, Any] = {"summary": summary, "responses": _answers(ok)}
    if body:
        op["requestBody"] = {"required": True, **_json(_ref(body))}
    if params:
        op["parameters"] = params
    return op


def _path(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": schema}


def _query(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema}


STR = {"type": "string"}
INT = {"type": "integer"}
BOOL = {"type": "boolean"}
PORT = {"type": "integer", "minimum": 0, "maximum": 65535}
PROTO = {"type": "string", "enum": ["tcp", "udp", "sctp", "icmp"]}

SCHEMAS: dict[str, Any] = {
    "Success": {"type": "object", "properties": {"result": {"type": "string"}},
                "required": ["result"]},
    "Error": {"type": "object", "required": ["code", "message", "result"],
              "description": "A refusal: code is the HTTP status; result (what kube-loxilb "
                             "reports) and message say what is wrong and name the field.",
              "properties": {"code": INT, "message": STR, "result": STR}},
    "ServiceArguments": {
        "type": "object", "required": ["externalIP"],
        "properties": {
            "externalIP": STR, "privateIP": STR, "port": PORT, "portMax": PORT,
            "protocol": PROTO,
            "sel": {"type": "integer", "description": "0 rr, 1 hash, 2 weighted "
                    "(loxilb's priority), 3 persist, 4 least-connections; 5, 6 refused"},
            "mode": {"type": "integer", "description": "0 DNAT, 1 one-arm, 2 full-NAT "
                     "(one-arm without privateIP), 3 DSR; 4, 5 refused"},
            "bgp": BOOL, "monitor": BOOL, "inactiveTimeOut": INT, "block": INT,
            "managed": BOOL, "probetype": STR, "probeport": PORT, "probereq": STR,
            "proberesp": STR, "probeTimeout": INT, "probeRetries": INT, "security": INT,
            "name": STR, "oper": {"type": "integer", "description": "0 add, 1 attach, "
                                  "2 detach endpoints"},
            "host": STR, "proxyprotocolv2": BOOL, "egress": BOOL, "snat": BOOL,
        },
    },
    "Endpoint": {"type": "object", "required": ["endpointIP"],
                 "properties": {"endpointIP": STR, "targetPort": PORT,
                                "weight": {"type": "integer", "minimum": 0, "maximum": 255},
                                "state": STR, "counter": STR}},
    "LoadBalancer": {
        "type": "object", "required": ["serviceArguments"],
        "properties": {
            "serviceArguments": _ref("ServiceArguments"),
            "secondaryIPs": {"type": "array", "nullable": True,
                             "items": {"type": "object",
                                       "properties": {"secondaryIP": STR}}},
            "allowedSources": {"type": "array", "nullable": True,
                               "items": {"type": "object", "properties": {"prefix": STR}}},
            "endpoints": {"type": "array", "nullable": True, "items": _ref("Endpoint")},
        },
    },
    "LoadBalancerList": {"type": "object", "properties": {
        "lbAttr": {"type": "array", "items": _ref("LoadBalancer")}}},
    "CIState": {"type": "object", "required": ["state"],
                "properties": {"instance": STR, "state": STR, "vip": STR}},
    "CIStateList": {"type": "object", "properties": {
        "Attr": {"type": "array", "items": {"type": "object"}}}},
    "BGPGlobal": {"type": "object", "properties": {
        "localAs": INT, "routerId": STR, "setNextHopSelf": BOOL, "listenPort": PORT}},
    "BGPNeighbor": {"type": "object", "required": ["ipAddress", "remoteAs"],
                    "properties": {"ipAddress": STR, "remoteAs": INT, "remotePort": PORT,
                                   "setMultiHop": BOOL}},
    "Any": {"type": "object"},
}  # fmt: skip


@cache
def document() -> dict[str, Any]:
    lb = "/netlox/v1/config/loadbalancer"
    ip = _path("ip", STR)
    port = _path("port", PORT)
    proto = _path("proto", PROTO)
    delete_q = [_query("bgp", BOOL), _query("block", INT)]
    paths = {
        "/netlox/v1": {"get": _op("liveness")},
        lb: {"post": _op("create a rule, or attach/detach endpoints (oper)",
                         body="LoadBalancer")},
        f"{lb}/all": {"get": _op("list the rules made through this API",
                                 ok=_ref("LoadBalancerList")),
                      "delete": _op("delete every rule made through this API")},
        lb + "/externalipaddress/{ip}/port/{port}/protocol/{proto}": {
            "delete": _op("delete a rule by its key", params=[ip, port, proto, *delete_q])},
        lb + "/externalipaddress/{ip}/port/{port}/portmax/{portmax}/protocol/{proto}": {
            "delete": _op("delete a port-range rule by its key",
                          params=[ip, port, _path("portmax", PORT), proto, *delete_q])},
        lb + "/name/{name}": {"delete": _op("delete the rules of that name",
                                            params=[_path("name", STR)])},
        "/netlox/v1/config/cistate": {"post": _op("set an HA instance's state (stored)",
                                                  body="CIState")},
        "/netlox/v1/config/cistate/all": {"get": _op("HA instance states",
                                                     ok=_ref("CIStateList"))},
        "/netlox/v1/config/bgp/global": {"post": _op("BGP global settings (stored)",
                                                     body="BGPGlobal")},
        "/netlox/v1/config/bgp/global/all": {"get": _op("BGP global settings",
                                                        ok=_ref("Any"))},
        "/netlox/v1/config/bgp/neigh": {"post": _op("add a BGP neighbour (stored)",
                                                    body="BGPNeighbor")},
        "/netlox/v1/config/bgp/neigh/{ip}": {"delete": _op(
            "delete a BGP neighbour", params=[ip, _query("remoteAs", INT)])},
        "/netlox/v1/config/bgp/neigh/all": {"get": _op("BGP neighbours", ok=_ref("Any"))},
        "/netlox/v1/config/firewall": {"post": _op("refused: no firewall rules yet",
                                                   body="Any")},
        "/netlox/v1/config/firewall/all": {"get": _op("firewall rules (none)",
                                                      ok=_ref("Any"))},
        "/netlox/v1/config/conntrack/all": {"get": _op("sessions (first 10,000)",
                                                       ok=_ref("Any"))},
        "/netlox/v1/config/endpoint/all": {"get": _op("endpoint health", ok=_ref("Any"))},
        "/netlox/v1/version": {"get": _op("version", ok=_ref("Any"))},
    }
    return {
        "openapi": "3.0.3",
        "info": {"title": "Sluice: loxilb-compatible REST API", "version": __version__,
                 "description": "The part of loxilb's /netlox/v1 API kube-loxilb uses."},
        "paths": paths,
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {"basic": {"type": "http", "scheme": "basic"},
                                "token": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"basic": []}, {"token": []}],
    }
