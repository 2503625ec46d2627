"""BGP test kit: a BIRD 2 router in a namespace (Debian's `bird2`, installed by
scripts/setup) peering with appliances, and ways to read what it learnt.

    router 198.18.7.1, 2001:db8:7::1 --- lb1 198.18.7.2, 2001:db8:7::2    (AS 65000 / 65001)
    router 198.18.8.1, 2001:db8:8::1 --- lb2 198.18.8.2, 2001:db8:8::2

BIRD installs what it learns into the router namespace's kernel table (ECMP: `merge paths`),
so `ip route` there shows one next hop per appliance announcing a vip.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import netkit as kit
import pytest
from waiting import wait_for as wait  # re-exported: the bgp tests import it from here

ROUTER_AS, LB_AS = 65000, 65001


def router_addr(n: int, version: int = 4) -> str:
    return f"198.18.{6 + n}.1" if version == 4 else f"2001:db8:{6 + n}::1"


def lb_addr(n: int, version: int = 4) -> str:
    return f"198.18.{6 + n}.2" if version == 4 else f"2001:db8:{6 + n}::2"


def require_bird() -> None:
    if not shutil.which("bird") or not shutil.which("birdc"):
        pytest.skip("needs BIRD 2 (Debian bird2; scripts/setup installs it)")


def appliance_peers(*ns: int) -> dict[str, tuple[str, int]]:
    """BIRD's sessions to appliances n...: lbN (IPv4) and lbNv6."""
    out: dict[str, tuple[str, int]] = {}
    for n in ns:
        out[f"lb{n}"] = (lb_addr(n), LB_AS)
        out[f"lb{n}v6"] = (lb_addr(n, 6), LB_AS)
    return out


def bgp_section(n: int, **neighbor_extra: Any) -> dict[str, Any]:
    """Appliance n's /bgp: one IPv4 and one IPv6 session to the router."""
    return {
        "local-as": LB_AS, "router-id": lb_addr(n),
        "neighbor": [
            {"address": router_addr(n), "remote-as": ROUTER_AS, **neighbor_extra},
            {"address": router_addr(n, 6), "remote-as": ROUTER_AS, **neighbor_extra},
        ],
    }  # fmt: skip


class Bird:
    """BIRD in `host`: one IPv4 or IPv6 session per peer (name -> (address, AS)), everything
    learnt exported to the namespace's kernel table (ECMP: `merge paths`)."""

    def __init__(self, host: kit.Host, peers: dict[str, tuple[str, int]],
                 router_id: str = "198.18.7.1", password: str | None = None) -> None:  # fmt: skip
        self.host = host
        tmp = host.topo.new_log("bird").with_suffix("")
        tmp.mkdir()
        self.ctl = tmp / "bird.ctl"
        conf = tmp / "bird.conf"
        secret = f'password "{password}";' if password else ""
        sessions = "\n".join(
            f"protocol bgp {name} {{ local as {ROUTER_AS}; neighbor {addr} as {asn}; {secret} "
            f"hold time 9; {'ipv6' if ':' in addr else 'ipv4'} {{ import all; export none; }}; }}"
            for name, (addr, asn) in peers.items()
        )
        conf.write_text(
            f"router id {router_id};\n"
            "protocol device { scan time 1; }\n"
            "protocol kernel { ipv4 { import none; export all; }; merge paths on; }\n"
            "protocol kernel { ipv6 { import none; export all; }; merge paths on; }\n"
            f"{sessions}\n"
        )
        res = host.run(["bird", "-p", "-c", str(conf)])
        assert res.returncode == 0, res.stderr + res.stdout
        self.proc = host.popen(["bird", "-f", "-c", str(conf), "-s", str(self.ctl)])
        wait(lambda: self.ctl.exists(), 10, "bird's control socket")

    def birdc(self, *args: str) -> str:
        res = self.host.run(["birdc", "-s", str(self.ctl), *args])
        assert res.returncode == 0, res.stderr + res.stdout
        return res.stdout

    def sessions(self) -> dict[str, str]:
        """protocol name -> BGP state (Established, Active, Connect, ...)."""
        out = {}
        for line in self.birdc("show", "protocols").splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[1] == "BGP":
                out[parts[0]] = parts[-1]
        return out

    def route(self, prefix: str) -> str:
        """`birdc show route all PREFIX`: empty when BIRD has no route for it."""
        res = self.host.run(["birdc", "-s", str(self.ctl), "show", "route", "for", prefix, "all"])
        if "Network not found" in res.stdout:
            return ""
        assert res.returncode == 0, res.stderr + res.stdout
        return res.stdout if prefix.split("/")[0] in res.stdout else ""

    def next_hops(self, vip: str) -> list[str]:
        """The router kernel's next hops for vip (ECMP: several)."""
        version = "-6" if ":" in vip else "-4"
        res = self.host.run(["ip", version, "-j", "route", "show", vip])
        routes = json.loads(res.stdout or "[]")
        hops: list[str] = []
        for r in routes:
            if r.get("dst") not in (vip, f"{vip}/32", f"{vip}/128"):
                continue
            if "nexthops" in r:
                hops += [h["gateway"] for h in r["nexthops"]]
            elif "gateway" in r:
                hops.append(r["gateway"])
        return sorted(hops)




def require_frr() -> None:
    if not (shutil.which("vtysh") and Path(FRR_BGPD).exists()):
        pytest.skip("needs FRR (Debian frr; scripts/setup installs it, not started)")


FRR_BGPD = "/usr/lib/frr/bgpd"


class Frr:
    """FRR's bgpd in `host` (foreground, no zebra: it keeps routes in its BGP table, which
    vtysh reads), peering with appliances (name -> (address, AS)) as the README's example
    configures it: no policy required for eBGP, up to 4 equal paths (ECMP)."""

    def __init__(self, host: kit.Host, peers: dict[str, tuple[str, int]],
                 router_id: str = "198.18.7.1") -> None:  # fmt: skip
        self.host = host
        self.dir = host.topo.new_log("frr").with_suffix("")
        self.dir.mkdir()
        self.dir.chmod(0o755)
        v6 = [a for a, _ in peers.values() if ":" in a]
        lines = [f"router bgp {ROUTER_AS}", f" bgp router-id {router_id}",
                 " no bgp ebgp-requires-policy", " timers bgp 3 9"]  # fmt: skip
        lines += [f" neighbor {a} remote-as {asn}" for a, asn in peers.values()]
        lines += [" address-family ipv4 unicast", "  maximum-paths 4"]
        lines += [f"  no neighbor {a} activate" for a in v6]
        lines += [" exit-address-family", " address-family ipv6 unicast", "  maximum-paths 4"]
        lines += [f"  neighbor {a} activate" for a in v6]
        lines += [" exit-address-family"]
        conf = self.dir / "bgpd.conf"
        conf.write_text("\n".join(lines) + "\n")
        (self.dir / "vtysh.conf").write_text("username root nopassword\n")
        self.proc = host.popen([FRR_BGPD, "-S", "-Z", "-f", str(conf), "-i",
                                str(self.dir / "bgpd.pid"), "--vty_socket", str(self.dir),
                                "-A", "127.0.0.1"])  # fmt: skip
        wait(lambda: (self.dir / "bgpd.vty").exists(), 20, "bgpd's vty socket")

    def vtysh(self, command: str) -> Any:
        res = self.host.run(["vtysh", "--config_dir", str(self.dir), "--vty_socket",
                             str(self.dir), "-d", "bgpd", "-c", command])  # fmt: skip
        assert res.returncode == 0, res.stderr + res.stdout
        return json.loads(res.stdout or "{}")

    def sessions(self) -> dict[str, str]:
        """neighbour address -> state (Established, Active, Connect, ...)."""
        out: dict[str, str] = {}
        for family in self.vtysh("show bgp summary json").values():
            for address, peer in (family.get("peers") or {}).items():
                out[address] = peer.get("state", "?")
        return out

    def paths(self, prefix: str) -> list[dict[str, Any]]:
        """The BGP table's paths for prefix: [{"next-hop", "med", "best", "multipath"}]."""
        family = "ipv6" if ":" in prefix else "ipv4"
        data = self.vtysh(f"show bgp {family} unicast {prefix} json")
        out = []
        for p in data.get("paths", []):
            hops = [h.get("ip") for h in p.get("nexthops", [])]
            out.append({"next-hop": hops[0] if hops else None, "med": p.get("metric"),
                        "best": bool((p.get("bestpath") or {}).get("overall")),
                        "multipath": bool(p.get("multipath"))})  # fmt: skip
        return sorted(out, key=lambda p: str(p["next-hop"]))
