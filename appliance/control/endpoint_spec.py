"""The one text form of an endpoint an operator types: ADDR:PORT[:WEIGHT], IPv6 in brackets.

Shared by the CLI (`--endpoints`, `ep set`) and the console's service form.
"""

from __future__ import annotations

import ipaddress
from typing import Any


class EndpointSpecError(ValueError):
    pass


def parse_endpoint(spec: str) -> dict[str, Any]:
    """ADDR:PORT[:WEIGHT], IPv6 in brackets: [2001:db8::1]:80:5."""
    spec = spec.strip()
    if spec.startswith("["):
        end = spec.find("]")
        if end < 0:
            raise EndpointSpecError(f"{spec!r}: missing ']' after the IPv6 address")
        address, rest = spec[1:end], spec[end + 1 :].lstrip(":")
    else:
        address, _, rest = spec.partition(":")
    fields = rest.split(":") if rest else []
    try:
        ipaddress.ip_address(address)
    except ValueError:
        raise EndpointSpecError(f"{spec!r}: {address!r} is not an IP address") from None
    if not fields or not fields[0]:
        raise EndpointSpecError(f"{spec!r}: give ADDRESS:PORT[:WEIGHT]")
    if len(fields) > 2:
        raise EndpointSpecError(f"{spec!r}: too many ':' fields (IPv6 goes in [brackets])")
    endpoint: dict[str, Any] = {"address": address}
    try:
        endpoint["port"] = int(fields[0])
        if len(fields) == 2:
            endpoint["weight"] = int(fields[1])
    except ValueError:
        raise EndpointSpecError(f"{spec!r}: port and weight are numbers") from None
    return endpoint
