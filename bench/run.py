"""Side-by-side L4 benchmark: Sluice's eBPF datapath against the direct path and the peers.

    .venv/bin/python bench/run.py [--quick] [--runs N] [--control-plane] [--backends N]

Builds its own namespaces (tests/netkit.py, tests/dpkit.py's topology):

    client 198.18.0.1 --- lb --- 198.18.11.1 b1 (198.18.12.1 b2, ...)

and pushes the same work through each path, in turn, in every run:

- direct       client -> backend, the lb namespace a plain router (the ceiling)
- sluice-dnat  Sluice's TC program, default mode (DNAT), VIP 198.19.0.10
- sluice-fnat  Sluice full-NAT (source becomes 198.19.0.100), VIP 198.19.0.11
- nft-dnat     nftables DNAT + conntrack in the lb namespace (kube-proxy nftables mode)
- haproxy      HAProxy, mode tcp, in the lb namespace (no UDP)
- nginx        nginx `stream` proxy (TCP and UDP) in the lb namespace

Only the middle changes: Sluice's program is attached and the nftables table loaded only
during their own phases; HAProxy and nginx idle on their own VIPs otherwise. Backends run
nginx (a 3-byte file, port 8080), `iperf3 -s` (5201) and a C UDP echo (5353).

Figures (median of --runs runs, ratio to direct): iperf3 TCP throughput with 1 and 8
streams; wrk requests/s with a new connection per request (`Connection: close`, 16
connections) and p50/p99 latency (1 connection, same); UDP request/response rate (16
flows, one request in flight each); and the balancer's own ns/packet, cold and warm
(bench/pktcost.py). Every load has a time limit (iperf3 -t, wrk -d, the UDP client's
seconds and count) and a hard subprocess timeout. The topology is removed at the end,
also on errors and Ctrl-C. Writes bench/results/latest.md and latest.json.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

import dpkit  # noqa: E402
import netkit  # noqa: E402
import pktcost  # noqa: E402
import pktpair  # noqa: E402
import synrate  # noqa: E402

RESULTS = ROOT / "bench" / "results"
HTTP_PORT, IPERF_PORT, UDP_PORT = 8080, 5201, 5353
VIP = {"sluice-dnat": "198.19.0.10", "sluice-fnat": "198.19.0.11", "nft-dnat": "198.19.0.20",
       "haproxy": "198.19.0.30", "nginx": "198.19.0.40"}  # fmt: skip
SNAT = "198.19.0.100"
COST_VIP = "198.19.1.1"
CLIENT = "198.18.0.1"
PATHS = ["direct", "sluice-dnat", "sluice-fnat", "nft-dnat", "haproxy", "nginx"]
LABEL = {"direct": "direct (ceiling)", "sluice-dnat": "Sluice DNAT", "sluice-fnat":
         "Sluice full-NAT", "nft-dnat": "nftables DNAT", "haproxy": "HAProxy (tcp)",
         "nginx": "nginx stream"}  # fmt: skip
NO_UDP = {"haproxy"}
CONTROL_PLANE = [  # the other issues' benches, their own default sizes
    ["bench/config_scale.py"], ["bench/probe_scale.py"], ["bench/netconf_scale.py"],
    ["bench/snmp_scale.py"],
    # The issue's case: the main loop stalled; --load doors for the front doors' real load.
    ["bench/probe_isolation.py", "--load", "stall"],
]  # fmt: skip


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------
# The machine
# --------------------------------------------------------------------------------------


def _version(cmd: list[str], pattern: str) -> str:
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "missing"
    m = re.search(pattern, res.stdout + res.stderr)
    return m.group(1) if m else "?"


def machine() -> dict[str, Any]:
    model = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    osname = "?"
    with contextlib.suppress(OSError):
        m = re.search(r'PRETTY_NAME="([^"]+)"', Path("/etc/os-release").read_text())
        osname = m.group(1) if m else "?"
    return {
        "cpu": model, "cores": os.cpu_count(), "kernel": platform.release(), "os": osname,
        "load_start": os.getloadavg()[0],
        "haproxy": _version(["haproxy", "-v"], r"version (\S+)"),
        "nginx": _version(["nginx", "-v"], r"nginx/(\S+)"),
        "wrk": _version(["wrk", "-v"], r"wrk (\S+)"),
        "iperf3": _version(["iperf3", "-v"], r"iperf (\S+)"),
        "nft": _version(["nft", "-v"], r"nftables v(\S+)"),
    }  # fmt: skip


# --------------------------------------------------------------------------------------
# Set-up of the topology and the servers
# --------------------------------------------------------------------------------------


class Bench:
    def __init__(self, topo: netkit.Topology, args: argparse.Namespace) -> None:
        self.topo, self.args = topo, args
        self.tmp = topo._tmp  # removed by Topology.close()
        pin = (os.cpu_count() or 1) >= 2 and not args.no_pin
        self.client_cpu = ["taskset", "-c", "0"] if pin else []
        self.server_cpu = ["taskset", "-c", "1"] if pin else []
        self.net = dpkit.build_lbnet(topo, n_backends=args.backends, servers=False)
        self.lb, self.client, self.backends = self.net.lb, self.net.client, self.net.backends
        self.cost_prepared = False  # pktcost's addresses and routes are in the lb namespace
        self.prog: Any = None
        self.udprr = self.tmp / "udprr"

    def sysctl(self, host: netkit.Host, **kv: str) -> None:
        host.run(["sysctl", "-q", "-w", *(f"{k.replace('__', '.')}={v}" for k, v in kv.items())],
                 check=True)  # fmt: skip

    def wait_port(self, host: netkit.Host, port: int, udp: bool = False) -> None:
        deadline = time.monotonic() + 10
        flag = "-lun" if udp else "-ltn"
        while time.monotonic() < deadline:
            if f":{port} " in host.run(["ss", "-H", flag]).stdout:
                return
            time.sleep(0.1)
        raise RuntimeError(f"{host.name}: nothing listens on {port}")

    def setup(self) -> None:
        for host in (self.client, self.lb):
            self.sysctl(host, net__ipv4__ip_local_port_range="1024 65535",
                        net__ipv4__tcp_tw_reuse="1")  # fmt: skip
        # No per-destination TCP timestamp offsets on the client: otherwise the TIME_WAIT
        # sockets one path's run leaves on the backend (same client address and port, a
        # different offset) PAWS-reject the next path's SYNs and it waits for retransmits.
        self.sysctl(self.client, net__ipv4__tcp_timestamps="2")
        res = subprocess.run(["cc", "-O2", "-o", str(self.udprr), str(ROOT / "bench/udprr.c")],
                             capture_output=True, text=True, timeout=60)  # fmt: skip
        if res.returncode:
            raise RuntimeError(f"compiling udprr: {res.stderr}")
        www = self.tmp / "www"
        www.mkdir()
        (www / "index.html").write_text("ok\n")
        for b in self.backends:
            conf = self.tmp / f"{b.name}-nginx.conf"
            conf.write_text(f"""
user root;
worker_processes 1;
pid {self.tmp}/{b.name}-nginx.pid;
error_log {self.tmp}/{b.name}-nginx.err;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  server {{ listen {HTTP_PORT} backlog=4096; root {www}; location = / {{ }} }}
}}
""")
            b.popen(
                [
                    *self.server_cpu,
                    "nginx",
                    "-p",
                    str(self.tmp),
                    "-e",
                    f"{self.tmp}/{b.name}-nginx.err",
                    "-c",
                    str(conf),
                    "-g",
                    "daemon off;",
                ]
            )
            b.popen([*self.server_cpu, "iperf3", "-s", "-p", str(IPERF_PORT)])
            b.popen([*self.server_cpu, str(self.udprr), "server", str(UDP_PORT)])
            self.wait_port(b, HTTP_PORT)
            self.wait_port(b, IPERF_PORT)
            self.wait_port(b, UDP_PORT, udp=True)
        for name in ("haproxy", "nginx"):
            self.lb.run(["ip", "addr", "add", f"{VIP[name]}/32", "dev", "lo"], check=True)
        self.start_haproxy()
        self.start_nginx_proxy()
        self.start_sluice()

    def start_haproxy(self) -> None:
        servers = "\n".join(f"  server b{i} {b}:{{port}}" for i, b in enumerate(self.addrs()))
        conf = self.tmp / "haproxy.cfg"
        conf.write_text(f"""
global
  maxconn 8000
defaults
  mode tcp
  timeout connect 2s
  timeout client 30s
  timeout server 30s
frontend http
  bind {VIP["haproxy"]}:80
  default_backend http
backend http
  balance roundrobin
{servers.format(port=HTTP_PORT)}
frontend iperf
  bind {VIP["haproxy"]}:{IPERF_PORT}
  default_backend iperf
backend iperf
  server b1 {self.addrs()[0]}:{IPERF_PORT}
""")
        self.lb.popen(["haproxy", "-db", "-f", str(conf)])
        self.wait_port(self.lb, 80)

    def start_nginx_proxy(self) -> None:
        ups = " ".join(f"server {a}:{{port}};" for a in self.addrs())
        conf = self.tmp / "lb-nginx.conf"
        conf.write_text(f"""
load_module /usr/lib/nginx/modules/ngx_stream_module.so;
worker_processes auto;
pid {self.tmp}/lb-nginx.pid;
error_log {self.tmp}/lb-nginx.err;
events {{ worker_connections 4096; }}
stream {{
  upstream http {{ {ups.format(port=HTTP_PORT)} }}
  upstream udp {{ {ups.format(port=UDP_PORT)} }}
  server {{ listen {VIP["nginx"]}:80 backlog=4096; proxy_pass http; }}
  server {{ listen {VIP["nginx"]}:{IPERF_PORT}; proxy_pass {self.addrs()[0]}:{IPERF_PORT}; }}
  server {{ listen {VIP["nginx"]}:{UDP_PORT} udp; proxy_pass udp; proxy_responses 1;
           proxy_timeout 2s; }}
}}
""")
        self.lb.popen(["nginx", "-p", str(self.tmp), "-e", f"{self.tmp}/lb-nginx.err",
                       "-c", str(conf), "-g", "daemon off;"])  # fmt: skip
        self.wait_port(self.lb, IPERF_PORT)

    def addrs(self) -> list[str]:
        return [dpkit.backend_addr(n) for n in range(1, len(self.backends) + 1)]

    # -- Sluice --------------------------------------------------------------------------
    def start_sluice(self) -> None:
        from appliance.datapath.program import Program
        from appliance.datapath.reconciler import DatapathReconciler

        t0 = time.monotonic()
        self.prog = Program(self.topo.pin_dir("bench"), ct_capacity=262144)
        self.prog.load()
        log(f"datapath compiled and loaded in {time.monotonic() - t0:.1f}s")
        self.net.rec = DatapathReconciler(self.prog.pin_root, netns=self.lb.ns,
                                          program=self.prog, housekeeping=False)  # fmt: skip
        self.net.rec.start({"sluice:datapath": {
            "interface": [{"name": i, "hook": "tc"} for i in self.net.interfaces]}})  # fmt: skip
        docs = []
        n = tuple(range(1, len(self.backends) + 1))
        for path, extra in (
            ("sluice-dnat", {}),
            ("sluice-fnat", {"mode": "full-nat", "snat-address": SNAT}),
        ):
            vip, tag = VIP[path], path.split("-")[1]
            docs += [
                dpkit.service(f"{tag}-http", vip=vip, port=80, backends=n, **extra),
                dpkit.service(f"{tag}-iperf", vip=vip, port=IPERF_PORT, backends=(1,),
                              ep_port=IPERF_PORT, **extra),
                dpkit.service(f"{tag}-udp", vip=vip, port=UDP_PORT, proto="udp", backends=n,
                              ep_port=UDP_PORT, **extra),
            ]  # fmt: skip
        # bench/synrate.py's Sluice path: one backend, like its direct and nftables paths.
        docs.append(dpkit.service("syn", vip=synrate.VIP["sluice"], port=synrate.VIP_PORT,
                                  backends=(1,), ep_port=synrate.BACKEND_PORT))  # fmt: skip
        self.net.set(*docs)
        self.sluice_attached(False)

    def sluice_attached(self, on: bool) -> None:
        for ifname in self.net.interfaces:
            if on:
                self.prog.attach(ifname, self.lb.ns)
            else:
                self.prog.detach(ifname, self.lb.ns)

    def clear_ct(self) -> None:
        # syn: TCP handshakes, 4: IPv4 keys (older trees: none)
        for name in ("ct_map", "syn_map", "ct4_map", "syn4_map"):
            with contextlib.suppress(Exception):
                self.prog.table(name).items_delete_batch()

    def cost(self, quick: bool) -> dict[str, Any]:
        """The per-packet meters (bench/pktcost.py) on this run's program and reconciler."""
        if not self.cost_prepared:  # twice per run (run.py main): prepared once
            pktcost.prepare(self.net)
            self.cost_prepared = True
        return pktcost.measure(self.net, self.prog, pktcost.SETTINGS["quick" if quick else "full"],
                               log=log)  # fmt: skip

    def synrate(self, quick: bool, runs: int | None) -> dict[str, Any]:
        """The SYN-rate benchmark (bench/synrate.py) on this run's namespaces."""
        settings = dict(synrate.SETTINGS["quick" if quick else "full"])
        if runs:
            settings["runs"] = runs
        return synrate.measure(synrate.synnet(self.net, self.prog, self.tmp, log=log), settings)

    # -- nftables ------------------------------------------------------------------------
    def nft(self, on: bool) -> None:
        if not on:
            self.lb.run(["nft", "delete", "table", "ip", "sluicebench"], check=True)
            return
        vip, a = VIP["nft-dnat"], self.addrs()

        def to(port: int) -> str:
            if len(a) == 1:
                return f"{a[0]}:{port}"
            pairs = ", ".join(f"{i} : {x}" for i, x in enumerate(a))
            return f"numgen inc mod {len(a)} map {{ {pairs} }} :{port}"

        rules = f"""
table ip sluicebench {{
  chain pre {{
    type nat hook prerouting priority dstnat; policy accept;
    ip daddr {vip} tcp dport 80 dnat to {to(HTTP_PORT)}
    ip daddr {vip} tcp dport {IPERF_PORT} dnat to {a[0]}:{IPERF_PORT}
    ip daddr {vip} udp dport {UDP_PORT} dnat to {to(UDP_PORT)}
  }}
}}
"""
        self.lb.run(["nft", "-f", "-"], input=rules, check=True)

    # -- phases --------------------------------------------------------------------------
    def target(self, path: str) -> str:
        return self.addrs()[0] if path == "direct" else VIP[path]

    def prog_stats(self) -> tuple[int, int]:
        """(run_time_ns, run_cnt) of the attached program (kernel.bpf_stats_enabled)."""
        return synrate.prog_stats(self.prog.fn.fd)

    def phase(self, path: str, on: bool) -> dict[str, Any]:
        """Switch ``path``'s middle on or off; off returns what the phase measured."""
        if path.startswith("sluice-"):
            if on:
                set_bpf_stats(True)
                self._stats0 = self.prog_stats()
                self.sluice_attached(True)
            else:
                self.sluice_attached(False)
                t1, n1 = self.prog_stats()
                set_bpf_stats(False)
                self.clear_ct()
                t0, n0 = self._stats0
                if n1 > n0:
                    return {"live_ns_per_packet": round((t1 - t0) / (n1 - n0), 1),
                            "live_packets": n1 - n0}  # fmt: skip
        elif path == "nft-dnat":
            self.nft(on)
        return {}

    # -- the loads -----------------------------------------------------------------------
    def iperf(self, addr: str, streams: int, seconds: int) -> float:
        res = self.client.run([*self.client_cpu, "iperf3", "-c", addr, "-p", str(IPERF_PORT),
                               "-t", str(seconds), "-P", str(streams), "-J",
                               "--connect-timeout", "3000"], timeout=seconds + 20)  # fmt: skip
        try:
            doc = json.loads(res.stdout)
            return round(doc["end"]["sum_received"]["bits_per_second"] / 1e9, 3)
        except (ValueError, KeyError) as exc:
            raise RuntimeError(f"iperf3 to {addr}: {res.stdout[-400:]} {res.stderr}") from exc

    def wrk(self, addr: str, port: int, conns: int, seconds: float) -> dict[str, float]:
        res = self.client.run([*self.client_cpu, "wrk", "-t1", f"-c{conns}", f"-d{seconds}s",
                               "--timeout", "2s", "--latency", "-H", "Connection: close",
                               f"http://{addr}:{port}/"], timeout=seconds + 20)  # fmt: skip
        out = res.stdout
        m = re.search(r"Requests/sec:\s+([\d.]+)", out)
        if not m:
            raise RuntimeError(f"wrk to {addr}: {out} {res.stderr}")
        lat = {q: _ms(v, u) for q, v, u in re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$",
                                                      out, re.M)}  # fmt: skip
        errs = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
                         out)  # fmt: skip
        non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
        return {"rps": float(m.group(1)), "p50_ms": lat.get("50", float("nan")),
                "p99_ms": lat.get("99", float("nan")),
                "errors": sum(int(x) for x in errs.groups()) if errs else 0,
                "non2xx": int(non2xx.group(1)) if non2xx else 0}  # fmt: skip

    def udp(self, addr: str, seconds: float) -> dict[str, float]:
        res = self.client.run([*self.client_cpu, str(self.udprr), "client", addr, str(UDP_PORT),
                               "16", str(seconds), "50000000"], timeout=seconds + 20)  # fmt: skip
        try:
            answered, lost, took = res.stdout.split()
        except ValueError as exc:
            raise RuntimeError(f"udprr to {addr}: {res.stdout} {res.stderr}") from exc
        return {"rps": round(int(answered) / float(took)), "lost": int(lost)}

    def measure_path(self, path: str, s: dict[str, Any]) -> dict[str, Any]:
        addr = self.target(path)
        port = HTTP_PORT if path == "direct" else 80
        out: dict[str, Any] = {}
        self.wrk(addr, port, 1, 1)  # warm-up (ARP/neighbours, caches), not counted
        out["tcp1_gbps"] = self.iperf(addr, 1, s["tput_s"])
        out["tcp8_gbps"] = self.iperf(addr, 8, s["tput_s"])
        load = self.wrk(addr, port, 16, s["http_s"])
        out["cps"] = load["rps"]
        out["load_p50_ms"], out["load_p99_ms"] = load["p50_ms"], load["p99_ms"]
        out["http_errors"] = load["errors"] + load["non2xx"]
        idle = self.wrk(addr, port, 1, s["lat_s"])
        out["p50_ms"], out["p99_ms"] = idle["p50_ms"], idle["p99_ms"]
        out["http_errors"] += idle["errors"] + idle["non2xx"]
        if path not in NO_UDP:
            u = self.udp(addr, s["udp_s"])
            out["udp_rps"], out["udp_lost"] = u["rps"], u["lost"]
        return out


_SYS_BPF = 321  # x86-64
_BPF_ENABLE_STATS = 32  # uapi/linux/bpf.h: enum bpf_cmd
_stats_fd: int | None = None


def set_bpf_stats(on: bool) -> None:
    """Kernel run-time statistics of BPF programs, on for Sluice's phases only (they add a
    little to every program run). BPF_ENABLE_STATS keeps them on while its fd is open: the
    kernel.bpf_stats_enabled sysctl, used before, left the DNAT phases uncounted in most
    runs (bpftool showed no runs while the sysctl read 1; not understood)."""
    global _stats_fd
    if on and _stats_fd is None:
        attr = ctypes.create_string_buffer(8)  # union bpf_attr { __u32 type; } = BPF_STATS_RUN_TIME
        libc = ctypes.CDLL(None, use_errno=True)
        fd = libc.syscall(_SYS_BPF, _BPF_ENABLE_STATS, attr, ctypes.sizeof(attr))
        _stats_fd = fd if fd >= 0 else None
    elif not on and _stats_fd is not None:
        os.close(_stats_fd)
        _stats_fd = None


def _ms(value: str, unit: str) -> float:
    return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]


# --------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------

FIGURES = [  # key, label, format, higher is better
    ("tcp1_gbps", "TCP throughput, 1 stream (Gbit/s)", "{:.2f}", True),
    ("tcp8_gbps", "TCP throughput, 8 streams (Gbit/s)", "{:.2f}", True),
    ("cps", "HTTP req/s, new connection each (16 conns)", "{:,.0f}", True),
    ("p50_ms", "latency p50, new connection (ms, 1 conn)", "{:.3f}", False),
    ("p99_ms", "latency p99, new connection (ms, 1 conn)", "{:.3f}", False),
    ("udp_rps", "UDP request/response per s (16 flows)", "{:,.0f}", True),
    ("http_errors", "HTTP errors (wrk socket errors + non-2xx)", "{:.0f}", False),
    ("live_ns_per_packet", "TC program ns/packet, live traffic (bpf_stats)", "{:.0f}", False),
]


def summarise(raw: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for path, runs in raw.items():
        out[path] = {}
        for key in {k for r in runs for k in r}:
            vals = [r[key] for r in runs if key in r]
            out[path][key] = {"median": statistics.median(vals), "runs": vals}
    direct = out.get("direct", {})
    for path in out:
        for key, fig in out[path].items():
            base = direct.get(key, {}).get("median")
            fig["ratio"] = round(fig["median"] / base, 3) if base else None
    return out


def spread(fig: dict[str, Any]) -> str:
    """Half the run-to-run range in % of the median (nothing for one run or a zero)."""
    runs, med = fig["runs"], fig["median"]
    if len(runs) < 2 or not med:
        return ""
    return f" ±{(max(runs) - min(runs)) / 2 / abs(med) * 100:.0f} %"


def figure_table(summary: dict[str, dict[str, Any]]) -> str:
    paths = [p for p in PATHS if p in summary]
    lines = ["| figure | " + " | ".join(LABEL[p] for p in paths) + " |",
             "|---|" + "---:|" * len(paths)]  # fmt: skip
    for key, label, fmt, _ in FIGURES:
        cells = []
        for p in paths:
            fig = summary[p].get(key)
            if fig is None:
                cells.append("n/a")
            elif p == "direct" or fig["ratio"] is None:
                cells.append(fmt.format(fig["median"]) + spread(fig))
            else:
                cells.append(f"{fmt.format(fig['median'])} ({fig['ratio']:.2f}×){spread(fig)}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def aims(summary: dict[str, dict[str, Any]], cost: dict[str, Any] | None,
         syn: dict[str, Any] | None) -> list[dict[str, Any]]:  # fmt: skip
    """Issue 15's aims, each with its measured value and met / not met (None: not measured)."""

    def med(path: str, key: str) -> float | None:
        return summary.get(path, {}).get(key, {}).get("median")

    def ratio(a: float | None, b: float | None) -> float | None:
        return round(a / b, 2) if a and b else None

    out = list(pktcost.aims(cost)) if cost else []
    out += synrate.aims(syn) if syn else []
    for path in ("sluice-dnat", "sluice-fnat"):
        tag = LABEL[path]
        for key, n in (("tcp1_gbps", "1 stream"), ("tcp8_gbps", "8 streams")):
            out += [
                {"aim": f"{tag}: TCP throughput, {n} ≥ 0.95 × direct", "goal": 0.95,
                 "value": ratio(med(path, key), med("direct", key)), "higher": True},
                {"aim": f"{tag}: TCP throughput, {n} ≥ nftables DNAT", "goal": 1.0,
                 "value": ratio(med(path, key), med("nft-dnat", key)), "higher": True},
            ]  # fmt: skip
        out.append({"aim": f"{tag}: p50 latency of a new connection ≤ 1.10 × direct",
                    "goal": 1.1, "value": ratio(med(path, "p50_ms"), med("direct", "p50_ms")),
                    "higher": False})  # fmt: skip
    for a in out:
        if "met" not in a:
            v = a["value"]
            a["met"] = None if v is None else (v >= a["goal"] if a["higher"] else v <= a["goal"])
    return out


def aims_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| aim | measured | met |", "|---|---:|:---:|"]
    for a in rows:
        met = "n/a" if a["met"] is None else ("met" if a["met"] else "**not met**")
        lines.append(f"| {a['aim']} | {pktcost.measured(a)} | {met} |")
    return "\n".join(lines)


def control_plane() -> dict[str, Any]:
    out: dict[str, Any] = {}
    for cmd in CONTROL_PLANE:
        name = Path(cmd[0]).stem
        log(f"control plane: {' '.join(cmd)}")
        t0 = time.monotonic()
        try:
            res = subprocess.run([sys.executable, *cmd], cwd=ROOT, capture_output=True,
                                 text=True, timeout=900)  # fmt: skip
            text, rc = res.stdout.strip(), res.returncode
            if rc:
                text += "\n" + res.stderr.strip()[-2000:]
        except subprocess.TimeoutExpired:
            text, rc = "timed out after 900 s", -1
        out[name] = {"command": " ".join([".venv/bin/python", *cmd]), "rc": rc,
                     "seconds": round(time.monotonic() - t0, 1), "output": text}  # fmt: skip
    return out


# --------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="short loads, 2 runs (~1-2 min)")
    ap.add_argument("--runs", type=int, help="runs per path (default 3, --quick 2)")
    ap.add_argument("--control-plane", action="store_true",
                    help="also run the control-plane benches and collect their tables")  # fmt: skip
    ap.add_argument(
        "--backends",
        type=int,
        default=1,
        help="backend namespaces (default 1: every path hits the same server)",
    )
    ap.add_argument("--paths", default=",".join(PATHS), help="comma-separated subset")
    ap.add_argument("--no-pin", action="store_true", help="no taskset pinning")
    ap.add_argument("--no-synrate", action="store_true", help="skip the SYN-rate benchmark")
    ap.add_argument("--baseline", metavar="REF",
                    help="also measure the per-packet cost of git REF (e.g. the datapath before "
                         "issue 15's work): the 'no mode worse than today' aim")  # fmt: skip
    ap.add_argument("--out", default=str(RESULTS / "latest"), help="output path without suffix")
    args = ap.parse_args(argv)
    s = (
        {"runs": 2, "tput_s": 2, "http_s": 2, "lat_s": 1, "udp_s": 1}
        if args.quick
        else {"runs": 3, "tput_s": 5, "http_s": 5, "lat_s": 3, "udp_s": 3}
    )
    if args.runs:
        s["runs"] = args.runs
    paths = [p for p in args.paths.split(",") if p]
    if bad := [p for p in paths if p not in PATHS]:
        ap.error(f"unknown paths {bad}")
    if "direct" not in paths:
        paths.insert(0, "direct")
    for tool in ("iperf3", "wrk", "haproxy", "nginx", "nft", "cc", "taskset", "trafgen",
                 "conntrack", "bpftool"):
        if not shutil.which(tool):
            print(f"missing tool: {tool} (see scripts/setup)", file=sys.stderr)
            return 2
    if os.geteuid() != 0:
        print("run as root (namespaces, eBPF)", file=sys.stderr)
        return 2
    command = "sudo .venv/bin/python bench/run.py" + " ".join(
        [""] + (argv if argv is not None else sys.argv[1:])
    )
    info = machine()
    started = time.time()
    raw: dict[str, list[dict[str, Any]]] = {p: [] for p in paths}
    paired: dict[str, Any] | None = None  # --baseline: bench/pktpair.py's rows
    try:
        with netkit.Topology() as topo:
            # SIGTERM unwinds like Ctrl-C does (finally blocks, topology close), instead of
            # netkit's handler, which tears down and dies without running them. Only in
            # this process: pyroute2 forks a child per namespace socket and stops it with
            # SIGTERM; that child, unwinding our stack, ran our finally blocks (it detached
            # Sluice's program and deleted the SYN benchmark's counter mid-run).
            owner = os.getpid()
            signal.signal(signal.SIGTERM,
                          lambda *_: sys.exit(143) if os.getpid() == owner else os._exit(143))
            bench = Bench(topo, args)
            log("setting up the topology and servers")
            bench.setup()
            log("per-packet cost (bench/pktcost.py: cold and warm meters)")
            cost = bench.cost(args.quick)
            base = pktcost.baseline(args.baseline, args.quick, log=log) if args.baseline else None
            if args.baseline:
                # The meters above run the two trees one after the other, and this VM changes
                # speed over seconds: the aim is judged on paired calls (bench/pktpair.py).
                log(f"per-packet cost against {args.baseline}, paired (bench/pktpair.py)")
                pairs = 10 if args.quick else 60
                paired = pktpair.run(args.baseline, list(pktcost.MODES), pairs, 2000, 200)
            syn = None if args.no_synrate else bench.synrate(args.quick, args.runs)
            for run in range(1, s["runs"] + 1):
                # Rotate the order every run so no path always follows the same one.
                k = (run - 1) % len(paths)
                for path in paths[k:] + paths[:k]:
                    log(f"run {run}/{s['runs']}: {path}")
                    bench.phase(path, True)
                    figures: dict[str, Any] = {}
                    try:
                        figures = bench.measure_path(path, s)
                    finally:
                        figures.update(bench.phase(path, False))
                    raw[path].append(figures)
                    log(f"  {raw[path][-1]}")
            log("per-packet cost, second pass (per figure the better pass counts)")
            cost = pktcost.best_of(cost, bench.cost(args.quick))
            bench.net.rec.close()
            bench.prog.close()
    finally:
        set_bpf_stats(False)
    info["load_end"] = os.getloadavg()[0]
    summary = summarise(raw)
    aim_rows = aims(summary, cost, syn)
    compared = pktcost.compare(base, cost) if base else None
    if paired:
        aim_rows.insert(len(pktcost.aims(cost)), pktpair.no_worse_aim(paired, pktcost.NO_WORSE))
    cp = control_plane() if args.control_plane else None
    md = render(info, s, command, summary, cost, syn, aim_rows, cp, time.time() - started, args,
                compared, paired)
    print(md)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text(md + "\n")
    out.with_suffix(".json").write_text(json.dumps({
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)), "command": command,
        "machine": info, "settings": {**s, "backends": args.backends, "pinned": not args.no_pin},
        "paths": summary, "cost": cost, "baseline": base, "compared": compared, "paired": paired,
        "synrate": syn,
        "aims": aim_rows, "control_plane": cp,
    }, indent=1) + "\n")  # fmt: skip
    log(f"wrote {out.with_suffix('.md')} and {out.with_suffix('.json')}")
    return 0


def render(info: dict[str, Any], s: dict[str, Any], command: str, summary: dict[str, Any],
           cost: dict[str, Any], syn: dict[str, Any] | None, aim_rows: list[dict[str, Any]],
           cp: dict[str, Any] | None, took: float, args: argparse.Namespace,
           compared: list[dict[str, Any]] | None = None,
           paired: dict[str, Any] | None = None) -> str:  # fmt: skip
    pin = ("client tools (wrk, iperf3 -c, UDP client) pinned to CPU 0, backend servers to "
           "CPU 1 (taskset); HAProxy/nginx in the lb namespace and softirq unpinned"
           if not args.no_pin and (info["cores"] or 1) >= 2 else "no pinning")  # fmt: skip
    parts = [
        "## Benchmark: Sluice vs the direct path and the peers",
        "",
        f"Machine: {info['cpu']}, {info['cores']} cores, Linux {info['kernel']}, {info['os']}; "
        f"load average {info['load_start']:.2f} at start, {info['load_end']:.2f} at end. "
        f"Peers: HAProxy {info['haproxy']}, nginx {info['nginx']}, nftables {info['nft']}; "
        f"load from wrk {info['wrk']}, iperf3 {info['iperf3']}. "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, took {took:.0f} s.",
        "",
        f"Command: `{command}` — median of {s['runs']} runs per figure, "
        f"(×) = ratio to the direct path, ± = half the run-to-run range in % of the median "
        "(the machine is shared: read the spread before the ratio). "
        f"Loads: iperf3 -t {s['tput_s']}; wrk -d "
        f"{s['http_s']}s with 16 connections for req/s and -d {s['lat_s']}s with 1 connection "
        f"for latency, `Connection: close` (a new TCP connection per request, 3-byte file from "
        f"nginx); UDP: 16 flows × 1 request in flight for {s['udp_s']} s. "
        f"{args.backends} backend(s); {pin}. All traffic between veth pairs in namespaces "
        "on this one machine: the load generator, the servers and the path under test share "
        "the same CPUs.",
        "",
        figure_table(summary),
        "",
        "### Per-packet cost of the balancer (`bench/pktcost.py`)",
        "",
        "Two passes of the meters, at the run's start and at its end; per figure the pass "
        "with the better best warm call is shown (this VM changes speed for minutes at a "
        "time: a slower state is the machine's time, as any interference).",
        "",
        pktcost.tables(cost),
        "",
        *([f"Against {args.baseline} (measured in a child process in the same run, one tree "
           "after the other: the machine's changes of speed show in these ratios):", "",
           pktcost.compare_table(compared, args.baseline), ""] if compared else []),
        *([f"Against {args.baseline}, paired (`bench/pktpair.py`: both trees loaded at once, "
           f"asked in turn, {paired['pairs']} warm pairs × {paired['repeat']} runs; the aim is "
           "judged on these):", "", pktpair.table(paired), ""] if paired else []),
        "### New flows per second: SYN rate (`bench/synrate.py`)",
        "",
        synrate.table(syn) if syn else "(not run: --no-synrate)",
        "",
        "### Aims (issue 15), this run",
        "",
        aims_table(aim_rows),
    ]
    if cp:
        parts += ["", "### Control plane", ""]
        for r in cp.values():
            parts += [f"`{r['command']}` (rc {r['rc']}, {r['seconds']} s):", "", "```",
                      r["output"][-3000:], "```", ""]  # fmt: skip
    return "\n".join(parts)


if __name__ == "__main__":
    sys.exit(main())
