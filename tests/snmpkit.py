"""Helpers for the SNMP agent tests and bench: an asyncio loop in a thread, net-snmp runners,
USM key localization done independently of pysnmp, and a fake state provider."""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import netkit

from northbound.snmp import MIB_DIR

# Standard MIB modules (SNMPv2-SMI, INET-ADDRESS-MIB, IF-MIB...) are not in Debian main;
# where a machine has them, names resolve, otherwise tests read numeric OIDs.
STD_MIB_DIRS = [
    d
    for d in (
        "/usr/share/snmp/mibs/ietf",
        "/usr/share/snmp/mibs/iana",
        "/usr/share/snmp/mibs",
        "/var/lib/snmp/mibs/ietf",
        "/usr/share/mibs/ietf",
    )
    if Path(d).is_dir()
]
# Last on the path: stand-ins for the few standard modules SLUICE-LB-MIB imports, so the
# tools load it (and snmptable finds its tables) where the real ones are missing.
STAND_IN_MIBS = Path(__file__).resolve().parent / "mibs"
MIB_PATH = ":".join([str(MIB_DIR), *STD_MIB_DIRS, str(STAND_IN_MIBS)])
ENGINE_ID = "80007ed90573756963652d7465737401"  # enterprise 32473, format 5 (octets)


def have_std_mibs() -> bool:
    return any((Path(d) / f"{m}.txt").exists() for d in STD_MIB_DIRS for m in ("INET-ADDRESS-MIB",))


def have_tools(*names: str) -> bool:
    return all(shutil.which(n) or Path("/usr/sbin", n).exists() for n in names)


def free_udp_port(family: int = socket.AF_INET) -> int:
    """A free UDP port of this worker's block (netkit.free_port)."""
    return netkit.free_port("udp", "127.0.0.1" if family == socket.AF_INET else "::1")


def master_key(passphrase: str, hash_name: str = "sha256") -> str:
    """RFC 3414 A.2 password-to-key (Ku, before localization), in hex."""
    pw = passphrase.encode()
    return hashlib.new(hash_name, (pw * (1048576 // len(pw) + 1))[:1048576]).hexdigest()


def localized_key(passphrase: str, engine_id_hex: str, hash_name: str = "sha256") -> str:
    """RFC 3414 A.2 password-to-key then localization, as a manager would compute it."""
    pw = passphrase.encode()
    buf = (pw * (1048576 // len(pw) + 1))[:1048576]
    ku = hashlib.new(hash_name, buf).digest()
    engine_id = bytes.fromhex(engine_id_hex)
    return hashlib.new(hash_name, ku + engine_id + ku).hexdigest()


class LoopThread:
    """An asyncio loop in a daemon thread, standing in for the daemon's loop."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, Any], timeout: float = 30.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call(self, fn: Any, *args: Any) -> None:
        self.loop.call_soon_threadsafe(fn, *args)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


class FakeState:
    """State providers backed by dicts the test changes."""

    def __init__(self) -> None:
        self.services: dict[str, dict[str, Any]] = {}
        self.endpoints: dict[tuple[str, str, int], dict[str, Any]] = {}
        # The shape of the real provider (DatapathReconciler.status): no "conntrack-entries"
        # key; the table's fill is under maps.ct_map (both directions of every flow).
        self.datapath_state: dict[str, Any] = {
            "enabled": True,
            "loaded": True,
            "interfaces": {"lo": ["sluice_lb"]},
            "maps": {"ct_map": {"entries": 7, "capacity": 1048576}},
        }

    def service(self, name: str) -> dict[str, Any]:
        return self.services.get(name, {})

    def endpoint(self, service: str, address: str, port: int) -> dict[str, Any]:
        return self.endpoints.get((service, address, int(port)), {})

    def datapath(self) -> dict[str, Any]:
        return self.datapath_state

    def providers(self) -> dict[str, Any]:
        return {"service": self.service, "endpoint": self.endpoint, "datapath": self.datapath}


def snmp(tool: str, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """Run a net-snmp tool with the project MIB loadable; -On keeps OIDs numeric."""
    mibs = "SNMPv2-MIB:IF-MIB:SLUICE-LB-MIB" if have_std_mibs() else "SLUICE-LB-MIB"
    cmd = [tool, "-M", MIB_PATH, "-m", mibs, *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def parse_walk(text: str) -> dict[str, str]:
    """`-On -Oq` output ("OID value" per line) as {oid without leading dot: value}."""
    out = {}
    for line in text.splitlines():
        if not line.startswith("."):
            continue
        oid, _, value = line.partition(" ")
        out[oid[1:]] = value.strip().strip('"')
    return out


def v3_args(user: str, auth: str, priv: str) -> list[str]:
    return [
        "-v3",
        "-l",
        "authPriv",
        "-u",
        user,
        "-a",
        "SHA-256",
        "-A",
        auth,
        "-x",
        "AES",
        "-X",
        priv,
    ]


def string_index(text: str) -> str:
    return ".".join(str(x) for x in (len(text), *text.encode()))


class TrapReceiver:
    """net-snmp's snmptrapd on 127.0.0.1 with `conf` (snmptrapd.conf lines), logging each
    notification on one line ("TRAP <PDU kind, version, security>|<varbinds>") to a file."""

    def __init__(self, tmp: Path, conf: str) -> None:
        self.port = free_udp_port()
        path = tmp / "snmptrapd.conf"
        path.write_text(conf + "disableAuthorization no\n")
        self.out = tmp / "traps.log"
        self.handle = self.out.open("w")
        persist = tmp / "persist"
        persist.mkdir(exist_ok=True)
        mibs = "SLUICE-LB-MIB" if not have_std_mibs() else "SNMPv2-MIB:SLUICE-LB-MIB"
        self.proc = subprocess.Popen(
            ["/usr/sbin/snmptrapd", "-f", "-Lo", "-C", "-c", str(path), "-M", MIB_PATH,
             "-m", mibs, "-On", "-F", "TRAP %P|%v\\n", f"udp:127.0.0.1:{self.port}"],
            stdout=self.handle,
            stderr=subprocess.STDOUT,
            env={"SNMP_PERSISTENT_DIR": str(persist), "PATH": "/usr/bin:/bin"},
        )  # fmt: skip
        self.wait_for("NET-SNMP version", timeout=5)

    def text(self) -> str:
        return self.out.read_text()

    def wait_for(self, needle: str, count: int = 1, timeout: float = 10.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.text()
            if text.count(needle) >= count:
                return text
            time.sleep(0.05)
        raise AssertionError(f"{needle!r} x{count} not received; snmptrapd said:\n{self.text()}")

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self.handle.close()
