"""RESTCONF (RFC 8040) on the Sluice YANG model: {+restconf} is /restconf.

- `/restconf/data[/<resource>]`: GET/HEAD (query `content`, `depth`, `fields`,
  `with-defaults`), POST (create a child), PUT (create or replace) — both with `insert` and
  `point` for an entry of an ordered-by-user list (the endpoint list) —, PATCH (plain
  merge, or YANG Patch, RFC 8072, with `insert` and `move`; a refused patch reports each
  error under the edit it belongs to), DELETE; JSON (RFC 7951) and XML both ways; `ETag`
  (the running datastore's commit id) and `Last-Modified` on every answer, `If-Match` /
  `If-None-Match` honoured (a write whose If-Match no longer matches is refused with 412,
  checked on the config worker right before the commit, so no commit slips in between);
- `/restconf/operations` (the module defines no RPCs: empty), `/restconf/yang-library-
  version`, `/.well-known/host-meta`, `ietf-restconf-monitoring:restconf-state` (the
  NETCONF stream) and `ietf-yang-library:` data;
- errors as `ietf-restconf:errors`, each with the error-path of the node concerned.

Every write is one config session and one commit on the config worker, attributed to the
user (the same role checks as NETCONF); reads take running from the config service and
state from the snapshot (northbound.netconf.state), and print off the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import json
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from aiohttp import web
from lxml import etree

from appliance.config import ConfigError
from appliance.config.errors import NotFoundError
from appliance.doors import DoorContext
from northbound.http import restconf_codec as codec
from northbound.http.auth import Caller
from northbound.http.restconf_events import EventStreams
from northbound.http.restconf_paths import (
    CONTAINER,
    LEAF_LIST,
    LIST,
    PathProblem,
    SchemaNode,
    Target,
    parse,
    schema_tree,
)
from northbound.netconf.errors import RpcError
from northbound.netconf.nacm import Nacm
from northbound.netconf.ops_read import WITH_DEFAULTS
from northbound.netconf.output import TAG, TRIM, element_xml, json_to_xml, tag_defaults_json
from northbound.netconf.schema_index import SchemaIndex
from northbound.netconf.state import state_source
from northbound.netconf.xmlutil import BASE_NS

log = logging.getLogger(__name__)

ROOT = "/restconf"
YANG_LIBRARY_VERSION = "2019-01-04"
YANG_PATCH_TYPE = "application/yang-patch+json"
PATCH_STATUS = "ietf-yang-patch:yang-patch-status"
QUERY = ("content", "depth", "fields", "with-defaults")
WRITE_QUERY = {"POST": ("insert", "point"), "PUT": ("insert", "point")}
WHERE = ("first", "last", "before", "after")
STATUS_OF_TAG = {
    "invalid-value": 400, "too-big": 413, "missing-attribute": 400, "bad-attribute": 400,
    "unknown-attribute": 400, "bad-element": 400, "unknown-element": 400,
    "unknown-namespace": 400, "access-denied": 403, "lock-denied": 409,
    "resource-denied": 409, "in-use": 409, "data-exists": 409, "data-missing": 404,
    "operation-not-supported": 405, "operation-failed": 400, "malformed-message": 400,
}  # fmt: skip


class RestconfError(Exception):
    def __init__(self, status: int, tag: str, message: str, path: str = "",
                 app_tag: str | None = None, errors: list[dict[str, Any]] | None = None
                 ) -> None:  # fmt: skip
        super().__init__(message)
        self.status = status
        self.errors = errors or [_error(tag, message, path, app_tag)]


def _error(tag: str, message: str, path: str = "", app_tag: str | None = None,
           etype: str = "application") -> dict[str, Any]:  # fmt: skip
    err: dict[str, Any] = {"error-type": etype, "error-tag": tag}
    if app_tag:
        err["error-app-tag"] = app_tag
    if path:
        err["error-path"] = path
    err["error-message"] = message
    return err


def from_config_error(exc: ConfigError) -> RestconfError:
    errors = [_error(e.tag, e.message, e.path, getattr(e, "app_tag", None))
              for e in exc.errors] or [_error(exc.tag, str(exc))]  # fmt: skip
    status = STATUS_OF_TAG.get(errors[0]["error-tag"], 400)
    return RestconfError(status, "", "", errors=errors)


def wants_xml(request: web.Request) -> bool:
    accept = request.headers.get("Accept", "")
    return ("xml" in accept) and "json" not in accept.split("xml")[0]


def error_response(request: web.Request, status: int, errors: list[dict[str, Any]]
                   ) -> web.Response:  # fmt: skip
    fmt = "xml" if wants_xml(request) else "json"
    ctype = codec.XML_TYPE if fmt == "xml" else codec.JSON_TYPE
    return web.Response(status=status, body=codec.error_body(errors, fmt), headers={
        "Content-Type": ctype})


class Restconf:
    def __init__(self, ctx: DoorContext) -> None:
        self.service = ctx.service
        self.worker = ctx.worker
        self.top = schema_tree(ctx.service.schema.module)
        self.printer = codec.Printer(ctx.service.schema)
        self.index = SchemaIndex(ctx.service.schema)  # NETCONF's: defaults, namespaces
        # RFC 8040 3: NACM applies to RESTCONF as to NETCONF (the same rules and checks).
        self.nacm = Nacm(ctx.service, self.index.namespaces)
        self.state = state_source(ctx.service, ctx.state)
        self.events = EventStreams(ctx)
        self.events.nacm = self.nacm
        self._modified: tuple[int | None, str] = (None, "")

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/.well-known/host-meta", self.host_meta),
            web.get(ROOT, self.root), web.get(ROOT + "/", self.root),
            web.get(ROOT + "/yang-library-version", self.library_version),
            web.get(ROOT + "/operations", self.operations),
            web.route("*", ROOT + "/data{tail:(/.*)?}", self.data),
            web.get(ROOT + "/streams/{name}", self.events.stream),
            web.get(ROOT + "/streams/{name}/{encoding}", self.events.stream),
        ]  # fmt: skip

    async def start(self) -> None:
        await self.events.start()

    async def close(self) -> None:
        await self.events.close()

    # -- plumbing --------------------------------------------------------------------------
    async def _on_worker(self, fn: Callable[..., Any], *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.worker, lambda: fn(*args))

    def etag(self) -> str:
        return f'"{self.service.commit_id or 0}"'

    def _last_modified(self) -> str:
        """HTTP date of the last commit (worker thread: the history is an SQLite read)."""
        cid = self.service.commit_id
        if self._modified[0] != cid:
            when = datetime.now()
            last = self.service.history(1) if cid else []
            if last:
                with contextlib.suppress(ValueError):
                    when = datetime.fromisoformat(str(last[0]["at"]).replace("Z", "+00:00"))
            self._modified = (cid, email.utils.format_datetime(when.astimezone(), usegmt=False))
        return self._modified[1]

    def _headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        return {"ETag": self.etag(), "Last-Modified": self._modified[1], **(extra or {})}

    def _respond(self, request: web.Request, status: int, body: bytes = b"",
                 fmt: str = "json", extra: dict[str, str] | None = None) -> web.Response:
        headers = self._headers(extra)
        if body:
            headers["Content-Type"] = codec.XML_TYPE if fmt == "xml" else codec.JSON_TYPE
        return web.Response(status=status, body=body if request.method != "HEAD" else None,
                            headers=headers)

    # -- discovery -------------------------------------------------------------------------
    async def host_meta(self, request: web.Request) -> web.Response:
        xrd = ("<XRD xmlns='http://docs.oasis-open.org/ns/xri/xrd-1.0'>"
               f"<Link rel='restconf' href='{ROOT}'/></XRD>")
        return web.Response(body=xrd.encode(), headers={"Content-Type": "application/xrd+xml"})

    async def root(self, request: web.Request) -> web.Response:
        if wants_xml(request):
            body = (f'<restconf xmlns="{codec.RESTCONF_NS}"><data/><operations/>'
                    f"<yang-library-version>{YANG_LIBRARY_VERSION}</yang-library-version>"
                    "</restconf>").encode()
            return web.Response(body=body, headers={"Content-Type": codec.XML_TYPE})
        body = {"ietf-restconf:restconf": {"data": {}, "operations": {},
                                           "yang-library-version": YANG_LIBRARY_VERSION}}
        return web.Response(body=json.dumps(body).encode(),
                            headers={"Content-Type": codec.JSON_TYPE})

    async def library_version(self, request: web.Request) -> web.Response:
        if wants_xml(request):
            body = (f'<yang-library-version xmlns="{codec.RESTCONF_NS}">'
                    f"{YANG_LIBRARY_VERSION}</yang-library-version>").encode()
            return web.Response(body=body, headers={"Content-Type": codec.XML_TYPE})
        body = {"ietf-restconf:yang-library-version": YANG_LIBRARY_VERSION}
        return web.Response(body=json.dumps(body).encode(),
                            headers={"Content-Type": codec.JSON_TYPE})

    async def operations(self, request: web.Request) -> web.Response:
        # The sluice module defines no RPCs or actions (NETCONF's own operations are not
        # RESTCONF operations).
        if wants_xml(request):
            body = f'<operations xmlns="{codec.RESTCONF_NS}"/>'.encode()
            return web.Response(body=body, headers={"Content-Type": codec.XML_TYPE})
        return web.Response(body=b'{"ietf-restconf:operations": {}}',
                            headers={"Content-Type": codec.JSON_TYPE})

    def _monitoring(self, request: web.Request) -> dict[str, Any]:
        scheme = "https" if request.secure else "http"
        caps = ["urn:ietf:params:restconf:capability:defaults:1.0?basic-mode=explicit",
                "urn:ietf:params:restconf:capability:depth:1.0",
                "urn:ietf:params:restconf:capability:fields:1.0",
                "urn:ietf:params:restconf:capability:replay:1.0",
                "urn:ietf:params:restconf:capability:with-defaults:1.0",
                "urn:ietf:params:restconf:capability:yang-patch:1.0"]
        return {"ietf-restconf-monitoring:restconf-state": {
            "capabilities": {"capability": caps},
            "streams": {"stream": [
                self.events.describe(f"{scheme}://{request.host}{ROOT}")]}}}  # fmt: skip

    def _yang_library(self) -> bytes:
        with self.printer._lock:
            data = self.service.schema.ctx.get_yanglib_data()
            try:
                return data.print_mem("json", with_siblings=True, pretty=False).encode()
            finally:
                data.free()

    # -- /restconf/data ----------------------------------------------------------------------
    async def data(self, request: web.Request) -> web.StreamResponse:
        try:
            raw = request.rel_url.raw_path[len(ROOT) + len("/data"):]
            if raw.strip("/").startswith("ietf-restconf-monitoring:"):
                return await self._special(request, self._monitoring(request))
            if raw.strip("/").startswith("ietf-yang-library:"):
                if request.method not in ("GET", "HEAD"):
                    raise RestconfError(405, "operation-not-supported", "read-only data")
                body = await asyncio.to_thread(self._yang_library)
                return web.Response(body=body, headers={"Content-Type": codec.JSON_TYPE})
            try:
                target = parse(raw, self.top)
            except PathProblem as exc:
                raise RestconfError(exc.status, exc.tag, str(exc), request.path) from None
            handler = {"GET": self._get, "HEAD": self._get, "POST": self._post,
                       "PUT": self._put, "PATCH": self._patch, "DELETE": self._delete,
                       "OPTIONS": self._options}.get(request.method)  # fmt: skip
            if handler is None:
                raise RestconfError(405, "operation-not-supported",
                                    f"{request.method} is not supported on a data resource")
            if request.method not in ("GET", "HEAD", "OPTIONS"):
                unknown = set(request.query) - set(WRITE_QUERY.get(request.method, ()))
                if unknown:
                    raise RestconfError(400, "invalid-value", "query parameters "
                                        f"{', '.join(sorted(unknown))} are not supported on "
                                        f"{request.method}")
            return await handler(request, target)
        except RestconfError as exc:
            return error_response(request, exc.status, exc.errors)
        except codec.BodyProblem as exc:
            return error_response(request, 400, [_error(exc.tag, str(exc), request.path)])

    async def _options(self, request: web.Request, target: Target) -> web.Response:
        node = target.node
        methods = "GET, HEAD, OPTIONS"
        if node is None or node.config:
            methods += ", POST, PUT, PATCH, DELETE"
        return web.Response(status=200, headers={
            "Allow": methods,
            "Accept-Patch": f"{codec.JSON_TYPE}, {codec.XML_TYPE}, {YANG_PATCH_TYPE}"})

    async def _special(self, request: web.Request, doc: dict[str, Any]) -> web.Response:
        if request.method not in ("GET", "HEAD"):
            raise RestconfError(405, "operation-not-supported", "read-only data")
        return web.Response(body=json.dumps(doc).encode(),
                            headers={"Content-Type": codec.JSON_TYPE})

    def _query(self, request: web.Request) -> dict[str, Any]:
        q = request.query
        unknown = set(q) - set(QUERY)
        if unknown:
            raise RestconfError(400, "invalid-value",
                                f"unknown query parameter(s): {', '.join(sorted(unknown))}")
        for name in q:
            if len(q.getall(name)) > 1:
                raise RestconfError(400, "invalid-value", f"{name} given more than once")
        out: dict[str, Any] = {"content": q.get("content", "all"), "depth": None,
                               "fields": None, "with-defaults": q.get("with-defaults", "")}
        if out["content"] not in ("config", "nonconfig", "all"):
            raise RestconfError(400, "invalid-value", "content must be config, nonconfig or all")
        depth = q.get("depth", "unbounded")
        if depth != "unbounded":
            if not depth.isdigit() or not 1 <= int(depth) <= 65535:
                raise RestconfError(400, "invalid-value",
                                    "depth must be 'unbounded' or 1..65535")
            out["depth"] = int(depth)
        if "fields" in q:
            out["fields"] = codec.parse_fields(q["fields"])
        wd = out["with-defaults"] or "explicit"
        if wd not in WITH_DEFAULTS:
            raise RestconfError(400, "invalid-value", f"with-defaults {wd!r} is not supported "
                                f"({', '.join(WITH_DEFAULTS)})")
        out["with-defaults"] = wd
        return out

    def _read_config(self, target: Target, effective: bool) -> Any:
        """Worker thread: running at the target (secrets left out), with Last-Modified."""
        self._last_modified()
        session = self.service.open_session("restconf", "http", read_only=True)
        try:
            if not target.steps:
                return self.service.running_doc(effective=effective)
            return session.get(target.data_path(), "running", effective=effective)
        finally:
            session.close()

    async def _get(self, request: web.Request, target: Target) -> web.Response:
        q = self._query(request)
        node = target.node
        if node is not None and node.kind in (LIST, LEAF_LIST) and not target.is_entry:
            raise RestconfError(400, "invalid-value", f"{node.name} is a list: name an entry "
                                f"({node.name}=...) or read its parent", request.path)
        etag = self.etag()
        inm = request.headers.get("If-None-Match")
        if inm is not None and (inm.strip() == "*" or etag in [t.strip() for t in
                                                               inm.split(",")]):
            await self._on_worker(self._last_modified)
            return web.Response(status=304, headers=self._headers())
        # RFC 6243 modes as NETCONF reads them: defaults filled in or not, and how a
        # leaf at its default is shown (trim: left out, report-all-tagged: annotated).
        effective, marker = WITH_DEFAULTS[q["with-defaults"]]
        value: Any = None
        found = False
        if q["content"] in ("config", "all") and (node is None or node.config):
            try:
                value = await self._on_worker(self._read_config, target, effective)
                found = True
            except NotFoundError:
                pass
            except ConfigError as exc:
                raise from_config_error(exc) from None
        else:
            await self._on_worker(self._last_modified)
        if q["content"] in ("nonconfig", "all"):
            state = await asyncio.to_thread(self._state_at, target)
            if state is not None:
                value = _merge(value, state, node, self.top) if found else state
                found = True
            if q["content"] == "nonconfig" and value is not None:
                value = _only_state(value, node, self.top)
        if not found:
            raise RestconfError(404, "invalid-value", "no such resource", request.path)
        fmt = "xml" if wants_xml(request) else "json"
        user = request["caller"].user

        def render() -> bytes:
            v = codec.drop_secrets(value)
            if not self.nacm.reads_unrestricted(user):
                v = self._nacm_filter(user, target, v)
                if v is None:
                    raise RestconfError(404, "invalid-value", "no such resource", request.path)
            if q["fields"] is not None:
                if node is None:
                    v = {k: codec.select_fields(c, self.top.get(k.rpartition(":")[2]),
                                                q["fields"].get(k.rpartition(":")[2], {}))
                         for k, c in v.items() if k.rpartition(":")[2] in q["fields"]}
                else:
                    v = codec.select_fields(v, node, q["fields"])
            if q["depth"] is not None:
                v = (codec.prune_datastore_depth(v, self.top, q["depth"]) if node is None
                     else codec.prune_depth(v, node, q["depth"]))
            if marker == TAG:
                return self._tagged(target, v, fmt)
            return self.printer.render(target, v, fmt, trim=(marker == TRIM))

        body = await asyncio.to_thread(render)
        return self._respond(request, 200, body, fmt)

    def _nacm_filter(self, user: str, target: Target, value: Any) -> Any:
        """`value` (the target's) without the nodes NACM keeps `user` from reading: through
        the XML NETCONF's filter works on, and back (None: nothing of it is readable)."""
        doc = value if not target.steps else codec.wrap(target, value)
        data = etree.Element(f"{{{BASE_NS}}}data", nsmap={None: BASE_NS})
        json_to_xml(data, doc, self.index.top, self.index.top_ns)
        self.nacm.filter_read(user, data)
        inner = "".join(etree.tostring(c).decode() for c in data)
        if not inner:
            return {} if not target.steps else None
        filtered = self.printer.xml_to_json(inner)  # what NACM left is the model's own XML
        if not target.steps:
            return filtered
        try:
            return codec.unwrap(target, filtered)
        except codec.BodyProblem:
            return None

    def _tagged(self, target: Target, value: Any, fmt: str) -> bytes:
        """with-defaults=report-all-tagged (RFC 8040 4.8.9): leaves at their schema default
        carry wd:default="true" in XML and the ietf-netconf-with-defaults:default
        annotation in JSON — NETCONF's rule and XML writer (northbound.netconf.output)."""
        idx = self.index
        if not target.steps:
            if fmt == "json":
                return json.dumps({"ietf-restconf:data": tag_defaults_json(value, idx.top)}
                                  ).encode()  # fmt: skip
            data = etree.Element(f"{{{codec.RESTCONF_NS}}}data",
                                 nsmap={None: codec.RESTCONF_NS})
            json_to_xml(data, value, idx.top, idx.top_ns, defaults=TAG)
            return etree.tostring(data)
        node = idx.top[target.steps[0][0].name]
        for step, _ in target.steps[1:]:
            node = node.children[step.name]
        if fmt == "json":
            return json.dumps(tag_defaults_json(codec.member(target, value),
                                                {node.name: node})).encode()
        return element_xml(node.name, value, node, idx.top_ns[target.steps[0][0].name],
                           TAG).encode()

    def _state_at(self, target: Target) -> Any:
        # Providers may report more than the model has (programming status...): only
        # what the model defines is shown.
        doc = _modelled(self.state(), None, self.top)
        if not target.steps:
            return doc or None
        try:
            return codec.unwrap(target, _select_entries(doc, target))
        except codec.BodyProblem:
            return None

    # -- writes ------------------------------------------------------------------------------
    async def _body(self, request: web.Request, target: Target) -> tuple[str, Any]:
        """(child/target name, value) of the request body, JSON or XML, under `target`."""
        ctype = request.headers.get("Content-Type", "").split(";")[0].strip().lower()
        body = await request.read()
        if ctype in (codec.JSON_TYPE, "application/json"):
            return codec.json_value(body)
        if ctype in (codec.XML_TYPE, "application/xml", "text/xml"):
            return await asyncio.to_thread(self.printer.xml_value, target, body)
        raise RestconfError(415, "invalid-value", f"Content-Type {ctype or '(none)'} is not "
                            f"supported ({codec.JSON_TYPE}, {codec.XML_TYPE}"
                            f"{', ' + YANG_PATCH_TYPE if request.method == 'PATCH' else ''})")

    def _precondition(self, request: web.Request) -> str | None:
        return request.headers.get("If-Match")

    def _commit(self, caller: Caller, changes: list[dict[str, Any]], comment: str,
                if_match: str | None, probe: str | None = None) -> bool:
        """Worker thread. Returns whether `probe` (a data path) existed before the commit."""
        if if_match is not None:
            tags = [t.strip() for t in if_match.split(",")]
            if "*" not in tags and self.etag() not in tags:
                raise RestconfError(412, "operation-failed", "the datastore changed since "
                                    f"ETag {if_match} (now {self.etag()})")
        session = self.service.open_session(caller.user, "http", read_only=caller.read_only,
                                            account=caller.user)
        try:
            existed = False
            if probe is not None:
                try:
                    session.get(probe)
                    existed = True
                except NotFoundError:
                    existed = False
            self._check_write(caller, session, changes)
            session.edit(changes)
            session.commit(comment=comment)
            self._last_modified()
            return existed
        except ConfigError as exc:
            raise from_config_error(exc) from None
        finally:
            session.close()

    def _check_write(self, caller: Caller, session: Any, changes: list[dict[str, Any]]
                     ) -> None:  # fmt: skip
        """NACM (worker thread): access-denied naming the node a rule keeps `caller` from
        writing."""

        def exists(path: str) -> bool:
            try:
                session.get(path)
                return True
            except NotFoundError:
                return False

        try:
            self.nacm.check_write(caller.user, changes, exists)
        except RpcError as exc:
            raise RestconfError(403, "access-denied", exc.message,
                                next((c["path"] for c in changes
                                      if exc.info.get("bad-element", "") in c["path"]),
                                     "")) from None

    def _check_writable(self, request: web.Request, target: Target) -> None:
        node = target.node
        if node is not None and not node.config:
            raise RestconfError(405, "operation-not-supported",
                                f"{node.name} is state data, not configuration", request.path)

    async def _post(self, request: web.Request, target: Target) -> web.Response:
        self._check_writable(request, target)
        name, value = await self._body(request, target)
        children = target.children() if target.steps else self.top
        node = children.get(name)
        if node is None:
            raise RestconfError(400, "unknown-element", f"{name} is not a child of this "
                                "resource", request.path)
        if node.kind == LIST:
            if isinstance(value, list):
                if len(value) != 1:
                    raise RestconfError(400, "invalid-value", f"POST creates one {name}")
                value = value[0]
            if not isinstance(value, dict):
                raise RestconfError(400, "invalid-value", f"{name} must be an object")
            missing = [k for k in node.keys if k not in value]
            if missing:
                raise RestconfError(400, "invalid-value",
                                    f"{name} needs its key(s) {', '.join(missing)}")
            child = target.child(node, tuple(str(value[k]) for k in node.keys))
        elif node.kind == LEAF_LIST:
            raise RestconfError(400, "invalid-value", "POST of a leaf-list value is not "
                                "supported: PUT or PATCH the list instead")
        else:
            child = target.child(node, ())
        change = {"op": "create", "path": child.data_path(), "value": value,
                  **self._placement(request, child)}
        await self._on_worker(self._commit, request["caller"], [change],
                              f"restconf POST {child.uri()}", self._precondition(request))
        location = f"{request.scheme}://{request.host}{ROOT}/data/{child.uri()}"
        return self._respond(request, 201, extra={"Location": location})

    async def _put(self, request: web.Request, target: Target) -> web.Response:
        self._check_writable(request, target)
        node = target.node
        if node is not None and node.kind in (LIST, LEAF_LIST) and not target.is_entry:
            raise RestconfError(400, "invalid-value", f"name one {node.name} entry to PUT")
        if node is None:
            self._placement(request, target)  # refuses insert/point on the datastore
            value = await self._datastore_body(request)
            changes = [{"op": "replace", "path": "/", "value": value}]
            probe = None
        else:
            value = await self._resource_body(request, target, "PUT replaces")
            if node.kind == LIST:
                keys = target.steps[-1][1]
                if not isinstance(value, dict) or [str(value.get(k)) for k in node.keys] != \
                        list(keys):
                    raise RestconfError(400, "invalid-value", "the body's key values differ "
                                        "from the URI's", request.path)
            changes = [{"op": "replace", "path": target.data_path(), "value": value,
                        **self._placement(request, target)}]
            probe = target.data_path()
        existed = await self._on_worker(self._commit, request["caller"], changes,
                                        f"restconf PUT {target.uri() or '/'}",
                                        self._precondition(request), probe)
        return self._respond(request, 204 if existed or probe is None else 201)

    def _placement(self, request: web.Request, entry: Target) -> dict[str, str]:
        """RFC 8040 4.8.5/4.8.6: the `insert` and `point` query parameters of a POST or PUT
        that makes `entry`, as the config service's change members ({} when not given).
        `point` is a resource identifier (like the URI's path after {+restconf}/data) of a
        sibling entry; that it is one, and exists, the config service checks."""
        q = request.query
        for name in ("insert", "point"):
            if len(q.getall(name, [])) > 1:
                raise RestconfError(400, "invalid-value", f"{name} given more than once")
        insert = q.get("insert")
        point = self._raw_query_value(request, "point")
        if insert is None and point is None:
            return {}
        node = entry.node
        if insert is not None and insert not in WHERE:
            raise RestconfError(400, "invalid-value", f"insert={insert!r} must be one of "
                                f"{', '.join(WHERE)}", entry.data_path())
        if node is None or node.kind not in (LIST, LEAF_LIST) or not node.ordered:
            what = node.name if node is not None else "the datastore"
            raise RestconfError(400, "invalid-value", "insert and point apply to an entry of "
                                f"an ordered-by-user list (in this model: endpoint), not "
                                f"{what}", entry.data_path())
        if point is not None and insert not in ("before", "after"):
            raise RestconfError(400, "invalid-value", "point is only used with insert=before "
                                "or insert=after", entry.data_path())
        if point is None and insert in ("before", "after"):
            raise RestconfError(400, "invalid-value", f"insert={insert} needs point (the "
                                "sibling entry's resource identifier)", entry.data_path())
        out = {"insert": str(insert)}
        if point is not None:
            raw = point.removeprefix(ROOT + "/data")
            try:
                out["point"] = parse(raw, self.top).data_path()
            except PathProblem as exc:
                raise RestconfError(400, "invalid-value", f"point: {exc}",
                                    entry.data_path()) from None
        return out

    @staticmethod
    def _raw_query_value(request: web.Request, name: str) -> str | None:
        """A query parameter still percent-encoded (a resource identifier is decoded per
        segment, so an encoded '/' or ',' inside a key stays data)."""
        for pair in request.rel_url.raw_query_string.split("&"):
            key, eq, value = pair.partition("=")
            if key == name:
                return value if eq else ""
        return None

    async def _resource_body(self, request: web.Request, target: Target, verb: str) -> Any:
        """The body's value for the one resource the URI names (PUT and PATCH).

        RFC 8040 4.5/4.6: the body holds exactly the target resource, so its top name must be
        the target's and a list or leaf-list body carries exactly one entry."""
        node = target.node
        assert node is not None
        name, value = await self._body(request, Target(target.steps[:-1], target.module))
        if name != node.name:
            raise RestconfError(400, "invalid-value", f"the body holds {name}, the URI "
                                f"names {node.name}", request.path)
        if node.kind in (LIST, LEAF_LIST) and isinstance(value, list):
            if len(value) != 1:
                raise RestconfError(400, "invalid-value", f"{verb} one {name}")
            value = value[0]
        return value

    async def _datastore_body(self, request: web.Request) -> dict[str, Any]:
        ctype = request.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if ctype in (codec.XML_TYPE, "application/xml", "text/xml"):
            body = await request.read()
            return await asyncio.to_thread(self.printer.xml_datastore, body)
        if ctype not in (codec.JSON_TYPE, "application/json"):
            raise RestconfError(415, "invalid-value", "the datastore takes "
                                f"{codec.JSON_TYPE} or {codec.XML_TYPE}")
        try:
            doc = json.loads(await request.read())
        except ValueError as exc:
            raise RestconfError(400, "malformed-message", f"body is not JSON: {exc}") from None
        inner = doc.get("ietf-restconf:data") if isinstance(doc, dict) else None
        if not isinstance(inner, dict):
            raise RestconfError(400, "invalid-value", "the body must be "
                                '{"ietf-restconf:data": {...}}')
        return inner

    async def _patch(self, request: web.Request, target: Target) -> web.Response:
        self._check_writable(request, target)
        ctype = request.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if ctype == YANG_PATCH_TYPE:
            return await self._yang_patch(request, target)
        node = target.node
        if node is None:
            value = await self._datastore_body(request)
            changes = [{"op": "merge", "path": f"/{target.module}:{k.rpartition(':')[2]}",
                        "value": v} for k, v in value.items()]
        else:
            value = await self._resource_body(request, target, "PATCH merges")
            changes = [{"op": "merge", "path": target.data_path(), "value": value}]
            # RFC 8040 4.6.1: PATCH must not create the target resource.
            existed = await self._on_worker(self._exists, target.data_path())
            if not existed:
                raise RestconfError(404, "data-missing", "no such resource", request.path)
        await self._on_worker(self._commit, request["caller"], changes,
                              f"restconf PATCH {target.uri() or '/'}",
                              self._precondition(request))
        return self._respond(request, 204)

    def _exists(self, path: str) -> bool:
        session = self.service.open_session("restconf", "http", read_only=True)
        try:
            session.get(path)
            return True
        except NotFoundError:
            return False
        finally:
            session.close()

    async def _delete(self, request: web.Request, target: Target) -> web.Response:
        self._check_writable(request, target)
        if not target.steps:
            raise RestconfError(405, "operation-not-supported", "the datastore itself cannot "
                                "be deleted")
        change = {"op": "delete", "path": target.data_path()}
        await self._on_worker(self._commit, request["caller"], [change],
                              f"restconf DELETE {target.uri()}", self._precondition(request))
        return self._respond(request, 204)

    # -- YANG Patch (RFC 8072) ---------------------------------------------------------------
    async def _yang_patch(self, request: web.Request, target: Target) -> web.Response:
        try:
            doc = json.loads(await request.read())
            patch = doc["ietf-yang-patch:yang-patch"]
            patch_id = str(patch["patch-id"])
            edits = patch["edit"]
            if not isinstance(edits, list) or not edits:
                raise TypeError("edit must be a non-empty list")
        except (ValueError, KeyError, TypeError) as exc:
            raise RestconfError(400, "malformed-message",
                                f"not a yang-patch document: {exc}") from None
        changes = []
        edit_paths: list[tuple[str, str]] = []  # (edit-id, data path), for error reports
        base = target.uri()
        for i, edit in enumerate(edits):
            if not isinstance(edit, dict):
                raise RestconfError(400, "malformed-message", f"edit {i + 1} is not an object")
            eid = str(edit.get("edit-id", i + 1))
            try:
                change = self._patch_edit(edit, eid, base)
            except RestconfError as exc:
                return _patch_status(patch_id, exc.status, [], {eid: exc.errors})
            changes.append(change)
            edit_paths.append((eid, change["path"]))
        try:
            await self._on_worker(self._commit, request["caller"], changes,
                                  f"restconf YANG Patch {patch_id}", self._precondition(request))
        except RestconfError as exc:
            return _patch_status(patch_id, exc.status, *_blame(exc.errors, edit_paths))
        status = {PATCH_STATUS: {"patch-id": patch_id, "ok": [None]}}
        return self._respond(request, 200, json.dumps(status).encode())

    def _patch_edit(self, edit: dict[str, Any], eid: str, base: str) -> dict[str, Any]:
        """One YANG Patch edit as a config service change. `insert` creates an entry of an
        ordered-by-user list where `where`/`point` say; `move` moves an existing one (RFC
        8072 2.5); `point` is relative to the patch's target resource, like `target`."""
        op = edit.get("operation")
        if op not in PATCH_OPS:
            raise RestconfError(400, "invalid-value", f"edit {eid}: operation {op!r} is not "
                                f"supported ({', '.join(PATCH_OPS)})")
        rel = str(edit.get("target", "")).strip("/")
        try:
            sub = parse("/".join(p for p in (base, rel) if p), self.top)
        except PathProblem as exc:
            raise RestconfError(400, exc.tag, f"edit {eid}: target: {exc}") from None
        here = sub.data_path()
        change: dict[str, Any] = {"op": PATCH_OPS[op], "path": here}
        if op in ("create", "merge", "replace", "insert"):
            value = edit.get("value")
            if not isinstance(value, dict) or len(value) != 1:
                raise RestconfError(400, "invalid-value",
                                    f"edit {eid}: value must hold one member", here)
            (_, inner), = value.items()
            if sub.is_entry and isinstance(inner, list):
                if len(inner) != 1:
                    raise RestconfError(400, "invalid-value",
                                        f"edit {eid}: one entry per edit", here)
                inner = inner[0]
            change["value"] = inner
        if op not in ("insert", "move"):
            extra = [k for k in ("where", "point") if k in edit]
            if extra:
                raise RestconfError(400, "invalid-value", f"edit {eid}: {' and '.join(extra)} "
                                    f"only go with insert and move, not {op}", here)
            return change
        node = sub.node
        if node is None or node.kind != LIST or not node.ordered or not sub.is_entry:
            raise RestconfError(400, "invalid-value", f"edit {eid}: {op} places an entry of "
                                "an ordered-by-user list (in this model: endpoint)", here)
        where = edit.get("where", "last")
        if where not in WHERE:
            raise RestconfError(400, "invalid-value", f"edit {eid}: where={where!r} must be "
                                f"one of {', '.join(WHERE)}", here)
        change["insert"] = where
        point = edit.get("point")
        if (point is None) != (where in ("first", "last")):
            raise RestconfError(400, "invalid-value", f"edit {eid}: point goes with where="
                                "before or after, and only with them", here)
        if point is not None:
            try:
                change["point"] = parse("/".join(
                    p for p in (base, str(point).strip("/")) if p), self.top).data_path()
            except PathProblem as exc:
                raise RestconfError(400, exc.tag, f"edit {eid}: point: {exc}", here) from None
        return change


PATCH_OPS = {"create": "create", "delete": "delete", "insert": "create", "merge": "merge",
             "move": "move", "remove": "remove", "replace": "replace"}


def _blame(errors: list[dict[str, Any]], edit_paths: list[tuple[str, str]]
           ) -> tuple[list[dict[str, Any]], dict[str, list[dict[str, Any]]]]:  # fmt: skip
    """Split a refused patch's errors into (global errors, {edit-id: errors}): an error
    belongs to the edit whose target holds its error-path (the deepest such target)."""
    global_errors: list[dict[str, Any]] = []
    per_edit: dict[str, list[dict[str, Any]]] = {}
    for err in errors:
        path = _normal_path(str(err.get("error-path", "")))
        owners = [(len(p), eid) for eid, p in edit_paths
                  if path and (path == _normal_path(p) or path.startswith(_normal_path(p) + "/")
                               or path.startswith(_normal_path(p) + "["))]
        if owners:
            per_edit.setdefault(max(owners)[1], []).append(err)
        else:
            global_errors.append(err)
    return global_errors, per_edit


def _normal_path(path: str) -> str:
    return path.replace('"', "'")


def _patch_status(patch_id: str, status: int, global_errors: list[dict[str, Any]],
                  per_edit: dict[str, list[dict[str, Any]]]) -> web.Response:
    """RFC 8072 2.3: the yang-patch-status of a refused patch: global errors and/or each
    failed edit's errors under edit-status."""
    body: dict[str, Any] = {"patch-id": patch_id}
    if global_errors:
        body["errors"] = {"error": global_errors}
    if per_edit:
        body["edit-status"] = {"edit": [{"edit-id": eid, "errors": {"error": errs}}
                                        for eid, errs in per_edit.items()]}
    return web.Response(status=status, body=json.dumps({PATCH_STATUS: body}).encode(),
                        headers={"Content-Type": codec.JSON_TYPE})


def _select_entries(doc: dict[str, Any], target: Target) -> dict[str, Any]:
    """The state document cut down to the target's ancestors' own entries (for unwrap)."""
    node_doc: Any = doc
    out: dict[str, Any] = {}
    cursor = out
    for i, (node, values) in enumerate(target.steps):
        name = f"{target.module}:{node.name}" if i == 0 else node.name
        if not isinstance(node_doc, dict) or name not in node_doc:
            return {}
        node_doc = node_doc[name]
        if node.kind == LIST and values:
            match = [e for e in node_doc if [str(e.get(k)) for k in node.keys] == list(values)]
            if not match:
                return {}
            node_doc = match[0]
            if i == len(target.steps) - 1:
                cursor[name] = [node_doc]
            else:
                nxt: dict[str, Any] = {}
                cursor[name] = [nxt]
                cursor = nxt
        else:
            if i == len(target.steps) - 1:
                cursor[name] = node_doc
            else:
                nxt = {}
                cursor[name] = nxt
                cursor = nxt
    return out


def _merge(cfg: Any, st: Any, node: SchemaNode | None, top: dict[str, SchemaNode]) -> Any:
    """Config and state of the same node, lists merged by their keys."""
    if isinstance(cfg, dict) and isinstance(st, dict):
        out = dict(cfg)
        for k, v in st.items():
            local = k.rpartition(":")[2]
            child = (node.children if node is not None else top).get(local)
            out[k] = _merge(out[k], v, child, top) if k in out else v
        return out
    if isinstance(cfg, list) and isinstance(st, list) and node is not None and node.keys:
        def key(e: Any) -> tuple[str, ...]:
            return tuple(str(e.get(k)) for k in node.keys) if isinstance(e, dict) else ()
        index = {key(e): i for i, e in enumerate(cfg)}
        out_list = list(cfg)
        for e in st:
            i = index.get(key(e))
            if i is None:
                out_list.append(e)
            else:
                out_list[i] = _merge(out_list[i], e, node, top)
        return out_list
    return cfg if cfg is not None else st


def _modelled(value: Any, node: SchemaNode | None, top: dict[str, SchemaNode]) -> Any:
    """`value` without the members the model does not define."""
    if isinstance(value, list):
        return [_modelled(v, node, top) for v in value]
    if not isinstance(value, dict) or (node is not None and not node.children):
        return value
    out = {}
    for k, v in value.items():
        child = (node.children if node is not None else top).get(k.rpartition(":")[2])
        if child is not None:
            out[k] = _modelled(v, child, top)
    return out


def _only_state(value: Any, node: SchemaNode | None, top: dict[str, SchemaNode]) -> Any:
    """Keep state nodes (and the keys that place them)."""
    if node is not None and not node.config:
        return value
    if isinstance(value, list):
        return [_only_state(v, node, top) for v in value]
    if not isinstance(value, dict):
        return value
    out = {}
    for k, v in value.items():
        local = k.rpartition(":")[2]
        child = (node.children if node is not None else top).get(local)
        if node is not None and local in node.keys:
            out[k] = v
        elif child is not None and (not child.config or child.kind in (CONTAINER, LIST)):
            kept = _only_state(v, child, top)
            if child.config is False or kept not in ({}, [], None):
                out[k] = kept
    return out
