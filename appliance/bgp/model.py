"""The /bgp config section as objects, and the routes the speaker is asked to announce."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

DEFAULT_PORT = 179
DEFAULT_HOLD = 90


@dataclass(frozen=True)
class Export:
    """Per-neighbour attributes of what is announced to it."""

    communities: tuple[str, ...] = ()
    med: int | None = None
    as_path_prepend: int = 0
    next_hop_self: bool = True
    next_hop: str | None = None


@dataclass(frozen=True)
class Neighbor:
    address: str
    remote_as: int
    port: int = DEFAULT_PORT
    local_address: str | None = None
    multihop: int | None = None
    password: str | None = None
    hold_time: int = DEFAULT_HOLD
    export: Export = field(default_factory=Export)

    @property
    def version(self) -> int:
        return ipaddress.ip_address(self.address).version


@dataclass(frozen=True)
class SpeakerConfig:
    """What the speaker process needs to run: identity and sessions (not the routes)."""

    local_as: int
    router_id: str
    neighbors: tuple[Neighbor, ...]

    @property
    def active(self) -> bool:
        return bool(self.neighbors)


def parse_section(section: dict[str, Any] | None) -> SpeakerConfig | None:
    """The effective /bgp section (with secrets) → SpeakerConfig; None when BGP is off (no
    neighbour, or no identity)."""
    section = section or {}
    neighbors = section.get("neighbor") or []
    if not neighbors or "local-as" not in section or "router-id" not in section:
        return None
    hold = int(section.get("hold-time", DEFAULT_HOLD))
    out = []
    for n in neighbors:
        exp = n.get("export") or {}
        out.append(Neighbor(
            address=str(ipaddress.ip_address(n["address"])),
            remote_as=int(n["remote-as"]),
            port=int(n.get("port", DEFAULT_PORT)),
            local_address=n.get("local-address"),
            multihop=int(n["multihop"]) if n.get("multihop") is not None else None,
            password=n.get("password"),
            hold_time=int(n.get("hold-time", hold)),
            export=Export(
                communities=tuple(exp.get("community") or ()),
                med=int(exp["med"]) if exp.get("med") is not None else None,
                as_path_prepend=int(exp.get("as-path-prepend", 0)),
                next_hop_self=bool(exp.get("next-hop-self", True)),
                next_hop=exp.get("next-hop"),
            ),
        ))  # fmt: skip
    return SpeakerConfig(int(section["local-as"]), str(section["router-id"]), tuple(out))


@dataclass(frozen=True)
class Route:
    """One prefix as announced to one neighbour: the attributes, rendered by the speaker."""

    prefix: str  # "198.19.0.10/32", "2001:db8:ff::10/128"
    next_hop: str | None = None  # None: the session's own address (next-hop self)
    med: int | None = None
    local_pref: int | None = None
    communities: tuple[str, ...] = ()
    as_path: tuple[int, ...] = ()  # empty: the speaker's default (local-as)
