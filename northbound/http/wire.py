"""JSON on the wire as kube-loxilb's Go client wants it.

Its reads are decoded only when Content-Type is exactly ``application/json`` (aiohttp's
``json_response`` appends ``; charset=utf-8``, which it refuses); its JSON keys match
case-insensitively (Go's decoder), so a body is read with its keys lower-cased; its writes
count as done only on 200 with ``{"result":"Success"}``; errors come in loxilb's envelope
``{"code":N,"message":"...","result":"..."}`` with the HTTP status N. kube-loxilb reports a
refused write by the envelope's ``result`` (its client makes the error from that field, and
takes a create whose error contains "exist" as done), so ``result`` carries the whole
message naming the field, as loxilb's own errors do, not a short reason.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

JSON = "application/json"
SUCCESS = {"result": "Success"}
# A body larger than this is refused before it is parsed (a 10,000-rule list is a read).
MAX_BODY = 1024 * 1024


class ApiError(Exception):
    """A refused request: HTTP status ``code``, a message naming the field, a short reason
    (for logs and tests; the wire carries the message)."""

    def __init__(self, code: int, message: str, reason: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason or message

    def envelope(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "result": self.message}


def respond(data: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=json.dumps(data).encode(), content_type=JSON)


def error_response(exc: ApiError) -> web.Response:
    return respond(exc.envelope(), exc.code)


def fold_keys(value: Any) -> Any:
    """The value with every object key lower-cased (Go matches keys case-insensitively)."""
    if isinstance(value, dict):
        return {str(k).lower(): fold_keys(v) for k, v in value.items()}
    if isinstance(value, list):
        return [fold_keys(v) for v in value]
    return value


async def read_body(request: web.Request) -> dict[str, Any]:
    """The request's JSON object with folded keys; {} for an empty body."""
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise ApiError(400, f"body larger than {MAX_BODY} bytes", "malformed")
    raw = await request.content.read(MAX_BODY + 1)
    if len(raw) > MAX_BODY:
        raise ApiError(400, f"body larger than {MAX_BODY} bytes", "malformed")
    if not raw.strip():
        return {}
    try:
        value = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"body is not JSON: {exc}", "malformed") from None
    if not isinstance(value, dict):
        raise ApiError(400, "body must be a JSON object", "malformed")
    return fold_keys(value)
