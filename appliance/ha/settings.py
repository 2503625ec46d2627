"""The `ha` config section, read into plain objects, and the rules the model cannot state.

`HaSettings.from_section(section)` takes the effective `/sluice:ha` section (libyang JSON,
defaults filled in). `check(doc)` is a config-service validator: each problem is a
FieldError naming the leaf, so a bad HA config is refused at commit with the running config
and the datapath untouched.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

from appliance.config.errors import FieldError

HA = "sluice:ha"
HA_PATH = "/sluice:ha"


@dataclass(frozen=True)
class Instance:
    name: str
    vrid: int
    priority: int
    interface: str
    peers: tuple[str, ...]
    vips: tuple[str, ...]
    advert_ms: int = 1000
    preempt: bool = False
    source: str | None = None
    return_interface: str | None = None
    return_addresses: tuple[str, ...] = ()

    @property
    def v6(self) -> bool:
        return ":" in self.vips[0]


@dataclass(frozen=True)
class SyncSettings:
    address: str | None = None
    port: int = 7788
    peers: tuple[str, ...] = ()
    key: str | None = None  # hex
    snat_ports: tuple[int, int] | None = None  # this node's full-NAT source ports


@dataclass(frozen=True)
class HaSettings:
    instances: tuple[Instance, ...] = ()
    witness: str | None = None
    witness_interval_ms: int = 500
    witness_misses: int = 3
    sync: SyncSettings = field(default_factory=SyncSettings)

    @property
    def enabled(self) -> bool:
        return bool(self.instances)

    @classmethod
    def from_section(cls, section: dict[str, Any] | None) -> HaSettings:
        section = section or {}
        instances = tuple(
            Instance(
                name=i["name"],
                vrid=int(i["virtual-router-id"]),
                priority=int(i.get("priority", 100)),
                interface=i["interface"],
                peers=tuple(i.get("peer", ())),
                vips=tuple(i.get("vip", ())),
                advert_ms=int(i.get("advert-interval", 1000)),
                preempt=i.get("preempt") in (True, "true"),
                source=i.get("source-address"),
                return_interface=i.get("return-interface"),
                return_addresses=tuple(i.get("return-address", ())),
            )
            for i in section.get("instance", [])
        )
        sync = section.get("sync") or {}
        return cls(
            instances=instances,
            witness=section.get("witness"),
            witness_interval_ms=int(section.get("witness-interval", 500)),
            witness_misses=int(section.get("witness-misses", 3)),
            sync=SyncSettings(
                address=sync.get("address"),
                port=int(sync.get("port", 7788)),
                peers=tuple(sync.get("peer", ())),
                key=sync.get("key"),
                snat_ports=_snat_ports(sync.get("snat-ports")),
            ),
        )

    def vips_of(self, instance: str) -> tuple[str, ...]:
        return next((i.vips for i in self.instances if i.name == instance), ())


def _snat_ports(section: dict[str, Any] | None) -> tuple[int, int] | None:
    section = section or {}
    if "first" not in section and "last" not in section:
        return None
    return int(section.get("first", 1024)), int(section.get("last", 65535))


def _norm(address: str) -> str:
    return str(ipaddress.ip_address(address))


def _instance_path(name: str) -> str:
    return f"{HA_PATH}/instance[name='{name}']"


def check(doc: dict[str, Any]) -> list[FieldError]:
    """What is wrong with the `ha` section of the whole effective config `doc`."""
    section = doc.get(HA) or {}
    errors: list[FieldError] = []
    seen_vrid: dict[tuple[str, int, bool], str] = {}
    vip_owner: dict[str, str] = {}
    for inst in section.get("instance", []):
        name = inst["name"]
        path = _instance_path(name)
        vips = [_norm(v) for v in inst.get("vip", [])]
        families = {":" in v for v in vips}
        if len(families) > 1:
            errors.append(FieldError(f"{path}/vip",
                                     "all vips of an instance must be of one address family "
                                     "(use one instance per family)"))  # fmt: skip
        v6 = ":" in vips[0] if vips else False
        for leaf, values in (("peer", inst.get("peer", [])),
                             ("return-address", inst.get("return-address", [])),
                             ("source-address", [inst["source-address"]]
                              if inst.get("source-address") else [])):  # fmt: skip
            for value in values:
                if (":" in value) != v6:
                    errors.append(FieldError(f"{path}/{leaf}",
                                             f"{value} is not of the vips' address family"))
        for leaf, addresses in (("vip", vips),
                                ("return-address",
                                 [_norm(a) for a in inst.get("return-address", [])])):
            for address in addresses:
                owner = vip_owner.setdefault(address, name)
                if owner != name:
                    errors.append(FieldError(f"{path}/{leaf}",
                                             f"{address} is already in instance {owner}"))
        # One VRRP router per (link, vrid, family); both families may share an id.
        vrid_key = (inst["interface"], int(inst["virtual-router-id"]), v6)
        other = seen_vrid.setdefault(vrid_key, name)
        if other != name:
            errors.append(FieldError(f"{path}/virtual-router-id",
                                     f"virtual-router-id {vrid_key[1]} on {vrid_key[0]} is "
                                     f"already used by instance {other}"))  # fmt: skip
        if int(inst.get("advert-interval", 1000)) % 10:
            errors.append(FieldError(f"{path}/advert-interval",
                                     "advert-interval must be a multiple of 10 ms "
                                     "(VRRPv3 counts centiseconds)"))  # fmt: skip
    sync = section.get("sync") or {}
    if sync.get("address") and not sync.get("key"):
        errors.append(FieldError(f"{HA_PATH}/sync/key",
                                 "a sync key is required when the sync address is set"))
    ports = _snat_ports(sync.get("snat-ports"))
    if ports is not None and ports[0] > ports[1]:
        errors.append(FieldError(f"{HA_PATH}/sync/snat-ports/last",
                                 "snat-ports last must not be below first"))
    if sync.get("key") and len(sync["key"]) % 2:
        errors.append(FieldError(f"{HA_PATH}/sync/key",
                                 "the sync key must be an even number of hex digits"))
    return errors
