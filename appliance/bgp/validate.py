"""What the model's types cannot say about /bgp: a neighbour address that cannot be a BGP
peer, and an MD5 key this kernel cannot sign with. Registered with the config service
(ConfigService.add_validator) by the daemon, so a bad /bgp is refused at commit, naming the
field, whether the speaker runs or not."""

from __future__ import annotations

import functools
import ipaddress
import socket
import struct
from typing import Any

from appliance.config.errors import FieldError
from appliance.config.paths import BGP

TCP_MD5SIG = 14  # linux/tcp.h


@functools.cache
def md5_supported() -> bool:
    """Whether this kernel signs TCP segments (CONFIG_TCP_MD5SIG): set a key on a socket."""
    key = b"probe"
    addr = struct.pack("=H2s4s120s", socket.AF_INET, b"\0\0", socket.inet_aton("127.0.0.1"), b"")
    blob = addr + struct.pack("=BBHI", 0, 0, len(key), 0) + key.ljust(80, b"\0")
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, TCP_MD5SIG, blob)
        return True
    except OSError:
        return False


def check(doc: dict[str, Any]) -> list[FieldError]:
    section = doc.get(BGP) or {}
    errors: list[FieldError] = []
    rid = section.get("router-id")
    if rid is not None and ipaddress.ip_address(rid) in (
        ipaddress.ip_address("0.0.0.0"), ipaddress.ip_address("255.255.255.255")
    ):
        errors.append(FieldError(f"/{BGP}/router-id", f"{rid} cannot be a router id"))
    for n in section.get("neighbor") or []:
        path = f"/{BGP}/neighbor[address='{n['address']}']"
        addr = ipaddress.ip_address(n["address"])
        if addr.is_unspecified or addr.is_multicast or addr.is_loopback or (
            addr.version == 4 and addr == ipaddress.ip_address("255.255.255.255")
        ):
            errors.append(FieldError(f"{path}/address",
                                     f"{addr} cannot be a BGP neighbour (unicast only)"))
        elif addr.is_link_local:
            errors.append(FieldError(f"{path}/address", f"{addr} is link-local: a session "
                                     "would need an interface (use a global address)"))
        if n.get("password") and not md5_supported():
            errors.append(FieldError(f"{path}/password", "this kernel cannot sign TCP "
                                     "segments with MD5 (CONFIG_TCP_MD5SIG): no password "
                                     "can be used", "operation-not-supported"))
    return errors
