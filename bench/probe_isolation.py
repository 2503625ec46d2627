"""Probe isolation: 10,000 TCP probes every second while the daemon's main loop is busy.

The prober runs as the daemon runs it (appliance/health.py: HealthWiring; by default here
in thread mode, the prober on its own thread and loop, as SLUICE_PROBER=thread; with
--prober-process in process mode, the daemon's default), in a network namespace "lb"; 80
listeners (8 addresses x 10
ports, 198.18.0.10-17) accept and close in a child process in namespace "be", on the
other core where there is one. Meanwhile the "main loop" (an asyncio loop on a thread in
"lb", the one HealthWiring was started from and relays events to) is kept busy with a
synthetic load shaped like the front doors' worst requests (--load):

- stall: the loop blocks (time.sleep) for --stall s out of every --period s, as a costly
  request that waits or runs in C without the GIL (libyang, a slow disk) does;
- cpu: the loop runs pure-Python work back to back, yielding to the loop only between
  chunks (--chunk ms), as an XPath filter walking 10,000 service dicts in Python, or an
  SNMP walk being encoded, does; this holds the GIL, which the prober thread shares;
- mixed: both, alternating every --period s;
- doors: the real front doors on the main loop, over a real config service holding the
  same 10,000 endpoints: the SNMP agent answering snmpbulkwalk of the endpoint table in a
  loop, and the NETCONF server answering ncclient's get-config with an XPath filter and
  whole get-config in a loop (both clients are processes in "lb");
- none: an idle main loop (the baseline).

After a warm-up (the jittered first round), it measures for --seconds: probe lateness
(dispatch time minus due time, % of the interval: p50, p99, max), probes/s, endpoints that
went down (flaps: every listener is alive, so any down is false), the main loop's own
lateness (how busy it really was) and the process's CPU.

    .venv/bin/python bench/probe_isolation.py [--endpoints 10000] [--seconds 30]
        [--load stall|cpu|mixed|doors|none] [--prober-process | --on-main-loop] [--pin]
        [--switch-interval MS]

--prober-process runs it as the daemon does with SLUICE_PROBER=process (HealthWiring in
process mode: a `sluice probe-worker` child, its results applied on a reader thread; the
row's CPU is then this process's, and worker_cpu_pct in the JSON the worker's);
--on-main-loop runs the prober on the main loop instead (the old design) for comparison;
--pin puts the whole process on one core (default: the listeners get the last core, the
process is left to the OS as the daemon is); --switch-interval sets Python's GIL switch
interval (default 5 ms) to see what it buys under the cpu load.
Prints a Markdown row and writes bench/results/probe_isolation-<load>.json. Every loop is
bounded; the namespaces and the listener child are removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import netkit  # noqa: E402
from probe_scale import listen_forever  # noqa: E402
from probe_scale import services as scale_services  # noqa: E402
from probekit import NsLoop  # noqa: E402

from appliance.events import EventBus  # noqa: E402
from appliance.health import HealthWiring  # noqa: E402
from appliance.probes import Prober  # noqa: E402

LISTEN_ADDRS = [f"198.18.0.{10 + i}" for i in range(8)]


def services(n: int) -> dict[str, dict[str, Any]]:
    """probe_scale's effective-shaped services, on this bench's namespace addresses."""
    return scale_services(n, LISTEN_ADDRS)


class StaticConfig:
    """What HealthWiring reads from the config service: the services, and a subscription
    (no commits during the bench)."""

    def __init__(self, services: dict[str, dict[str, Any]]) -> None:
        self.services_effective = services

    def subscribe(self, fn: Any) -> None:
        pass


class Recorder:
    """Stands in for the datapath reconciler: counts health updates (a down is a flap)."""

    def __init__(self) -> None:
        self.downs = 0
        self.ups = 0

    def set_endpoint_health(self, service: str, address: str, port: int, up: bool) -> None:
        if up:
            self.ups += 1
        else:
            self.downs += 1


class OnMainLoop:
    """The old design, for comparison: the prober on the main loop."""

    def __init__(self, rec: Recorder, bus: EventBus) -> None:
        self.prober = Prober(bus, on_change=rec.set_endpoint_health)

    async def start(self, config: StaticConfig) -> None:
        self.prober.sync(config.services_effective)
        await self.prober.start()

    async def stop(self) -> None:
        await self.prober.stop()


# -- the main loop's load ------------------------------------------------------------------
def python_filter(docs: list[dict[str, Any]], deadline: float) -> int:
    """Pure-Python work shaped like an XPath filter over the config: walk service dicts,
    test leaves, build result dicts, until `deadline` (perf_counter)."""
    hits = 0
    while time.perf_counter() < deadline:
        for doc in docs:
            for ep in doc["endpoint"]:
                if ep["port"] % 7 == 3 and ep["address"].endswith("1"):
                    hits += len({"name": doc["name"], **ep})
    return hits


async def load(kind: str, stop: asyncio.Event, args: argparse.Namespace) -> dict[str, float]:
    """Keep this (main) loop busy in the chosen shape; return how busy it was."""
    loop = asyncio.get_running_loop()
    docs = list(services(args.endpoints).values())[:5]  # small chunks of real-shaped docs
    busy = blocked = 0.0
    start = loop.time()
    while not stop.is_set():
        phase = int((loop.time() - start) // args.period)
        shape = kind if kind != "mixed" else ("stall" if phase % 2 else "cpu")
        if shape == "stall" and (loop.time() - start) % args.period < 0.05:
            t = time.perf_counter()
            time.sleep(args.stall)  # the whole loop blocked, the GIL released
            blocked += time.perf_counter() - t
        elif shape == "cpu":
            t = time.perf_counter()
            python_filter(docs, t + args.chunk / 1000)
            busy += time.perf_counter() - t
        await asyncio.sleep(0 if shape == "cpu" else 0.01)
    return {"blocked_s": round(blocked, 1), "python_busy_s": round(busy, 1)}


async def loop_lag(stop: asyncio.Event, out: list[float], period: float = 0.05) -> None:
    while not stop.is_set():
        t0 = time.perf_counter()
        await asyncio.sleep(period)
        out.append(time.perf_counter() - t0 - period)


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else 0.0


def runqueue_wait(tid: int) -> float:
    """Seconds thread `tid` spent runnable but waiting for a CPU (/proc schedstat): lateness
    with a high wait is another process's doing, on a shared machine."""
    try:
        return int(Path(f"/proc/{tid}/task/{tid}/schedstat").read_text().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return float("nan")


def cpu_seconds() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


COMMUNITY = "bench-ro"
EP_TABLE = "1.3.6.1.4.1.32473.1.3"
NC_USER, NC_PASSWORD = "bench", "bench-pass-1"

NCCLIENT_LOOP = """
import sys, time
from ncclient import manager
port, password, seconds = int(sys.argv[1]), sys.argv[2], float(sys.argv[3])
xpath = "/sluice:load-balancer/service[endpoint/port='20003']/name"
ns = {"sluice": "urn:sluice:yang:sluice"}
end, n = time.monotonic() + seconds, 0
with manager.connect(host="127.0.0.1", port=port, username="bench", password=password,
                     hostkey_verify=False, look_for_keys=False, allow_agent=False,
                     timeout=120) as m:
    while time.monotonic() < end:
        m.get_config("running", filter=("xpath", (ns, xpath)))
        m.get_config("running")
        n += 2
print(n)
"""

SNMP_LOOP = """
end=$(( $(date +%s) + {seconds} )); n=0
while [ $(date +%s) -lt $end ]; do
  snmpbulkwalk -v2c -c {community} -t 10 -r 0 -Cr50 -On -Oq 127.0.0.1:{port} {table} >/dev/null
  n=$((n+1))
done
echo $n
"""


def real_services(n: int) -> list[dict[str, Any]]:
    """The same endpoints as services(), as config: a VIP and port per service."""
    out = []
    for i, svc in enumerate(services(n).values()):
        out.append({
            "name": svc["name"], "vip": f"198.19.{i // 250}.{i % 250 + 1}", "port": 80,
            "health-probe": svc["health-probe"],
            "endpoint": [{"address": e["address"], "port": e["port"]} for e in svc["endpoint"]],
        })  # fmt: skip
    return out


class Doors:
    """The SNMP agent and the NETCONF server on this (main) loop, over a real config
    service, and their clients (processes in namespace "lb")."""

    def __init__(self, tmp: Path, args: argparse.Namespace, lb: Any) -> None:
        from appliance.config import ConfigService
        from appliance.config.passwords import hash_password
        from appliance.config.store import Store

        self.tmp, self.args, self.lb = tmp, args, lb
        self.config = ConfigService(Store(tmp / "config.db"))
        self.snmp_port = 16100
        user = {"name": NC_USER, "password-hash": hash_password(NC_PASSWORD, ln=4, r=8, p=1),
                "role": "read-only"}  # fmt: skip
        snmp = {"enabled": True, "port": self.snmp_port, "listen-address": ["127.0.0.1"],
                "community": [{"name": "ro", "secret": COMMUNITY}]}  # fmt: skip
        with self.config.open_session("bench", "bench") as s:
            s.edit([
                {"op": "merge", "path": "/sluice:management", "value": {"user": [user]}},
                {"op": "merge", "path": "/sluice:snmp", "value": snmp},
                {"op": "merge", "path": "/sluice:load-balancer",
                 "value": {"service": real_services(args.endpoints)}},
            ])  # fmt: skip
            s.commit("bench")
        self.clients: list[Any] = []
        self.started: list[Any] = []

    async def start(self, state: dict[str, Any], bus: EventBus) -> None:
        from concurrent.futures import ThreadPoolExecutor

        from northbound.netconf import NetconfServer
        from northbound.snmp import SnmpAgent

        self.agent = SnmpAgent(self.config, state, bus)
        await self.agent.start()
        self.netconf = NetconfServer(
            self.config, self.tmp / "state", host="127.0.0.1", port=0, event_bus=bus,
            worker=ThreadPoolExecutor(1), state=state,
        )  # fmt: skip
        await self.netconf.start()

    def start_clients(self, seconds: float) -> None:
        nc = [sys.executable, "-c", NCCLIENT_LOOP, str(self.netconf.port), NC_PASSWORD,
              str(seconds)]  # fmt: skip
        walk = SNMP_LOOP.format(seconds=int(seconds), community=COMMUNITY,
                                port=self.snmp_port, table=EP_TABLE)  # fmt: skip
        for cmd in (nc, ["sh", "-c", walk]):
            self.clients.append(self.lb.popen(cmd, stdout=subprocess.PIPE, text=True))

    def client_counts(self) -> dict[str, Any]:
        out = {}
        for name, proc in zip(("netconf_requests", "snmp_walks"), self.clients, strict=True):
            try:
                text, _ = proc.communicate(timeout=120)
                out[name] = int(text.strip().splitlines()[-1])
            except Exception as exc:  # a client that failed: say so, the figures stand
                out[name] = f"failed: {exc!r}"
        return out

    async def close(self) -> None:
        for proc in self.clients:
            if proc.poll() is None:
                proc.kill()
        await self.netconf.close()
        await self.agent.close()
        self.config.store.close()


def process_cpu_seconds(pid: int | None) -> float:
    """User + system CPU of another process (the probe worker), from /proc/<pid>/stat."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    rec = Recorder()
    bus = EventBus()
    flaps: list[dict[str, Any]] = []
    bus.subscribe(lambda e: flaps.append(e) if e.get("new") not in ("up",) else None)
    doors: Doors | None = None
    state: dict[str, Any] = {}
    if args.load == "doors":
        doors = Doors(args.tmp, args, args.lb)
        config: Any = doors.config
    else:
        config = StaticConfig(services(args.endpoints))
    wiring: Any
    if args.prober_process:
        # As the daemon runs it with SLUICE_PROBER=process: a `sluice probe-worker` child.
        wiring = HealthWiring(rec, state, bus, mode="process")
    elif args.on_main_loop:
        wiring = OnMainLoop(rec, bus)
    else:
        wiring = HealthWiring(rec, state, bus)
    await wiring.start(config)
    if doors is not None:
        await doors.start(state, bus)
    prober: Prober = wiring.prober
    # The thread that runs the probes: the prober's own, or this (main) loop's.
    if args.prober_process:
        tid = wiring.prober.pid  # the worker's main thread, the one its loop runs on
    elif args.on_main_loop:
        tid = threading.get_native_id()
    else:
        tid = wiring.thread.native_id
    try:
        # Warm-up: the jittered first round and a bit, on an idle loop.
        deadline = time.monotonic() + 30
        while prober.dispatched < args.endpoints * 1.5 and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        prober.reset_lag()
        downs0 = rec.downs
        dispatched0, cpu0, t0 = prober.dispatched, cpu_seconds(), time.perf_counter()
        wait0 = runqueue_wait(tid)
        worker_cpu0 = process_cpu_seconds(tid) if args.prober_process else 0.0
        stop = asyncio.Event()
        lags: list[float] = []
        lag_task = asyncio.create_task(loop_lag(stop, lags))
        if doors is not None:
            doors.start_clients(args.seconds)
            load_task = None
        else:
            load_task = asyncio.create_task(load(args.load, stop, args))
        await asyncio.sleep(args.seconds)  # the load itself delays this: measured below
        stop.set()
        shape = await load_task if load_task is not None else {}
        await lag_task
        wall = time.perf_counter() - t0
        cpu = cpu_seconds() - cpu0
        waited = runqueue_wait(tid) - wait0
        if args.prober_process:
            shape = {**shape,
                     "worker_cpu_pct": round((process_cpu_seconds(tid) - worker_cpu0) / wall * 100,
                                             1)}  # fmt: skip
        probes = prober.dispatched - dispatched0
        lag = prober.lag_stats()
        # Events reach this loop's bus after it runs again: give the relay a moment.
        await asyncio.sleep(0.5)
        if doors is not None:
            shape = {**shape, **await asyncio.to_thread(doors.client_counts)}
        states: dict[str, int] = {}
        for svc in config.services_effective.values():
            for ep in svc["endpoint"]:
                st = prober.endpoint_state(svc["name"], ep["address"], ep["port"]) or {}
                states[st.get("health", "?")] = states.get(st.get("health", "?"), 0) + 1
    finally:
        if doors is not None:
            await doors.close()
        await wiring.stop()
    design = "own thread"
    if args.on_main_loop:
        design = "main loop (old)"
    elif args.prober_process:
        design = "own process"  # cpu_pct: the daemon side only; worker_cpu_pct: the worker
    return {
        "design": design,
        "load": args.load,
        "endpoints": args.endpoints,
        "seconds": round(wall, 1),
        "probes_per_s": round(probes / wall),
        "expected_probes_per_s": args.endpoints,
        "lag_p50_pct": round(lag["p50"] * 100, 2),
        "lag_p99_pct": round(lag["p99"] * 100, 2),
        "lag_max_pct": round(lag["max"] * 100, 2),
        "went_down": rec.downs - downs0,
        "not_up_events": len(flaps),
        "states": states,
        "main_loop_lag_p99_s": round(pct(lags, 0.99), 3),
        "main_loop_lag_max_s": round(max(lags, default=0.0), 3),
        **shape,
        "cpu_pct": round(cpu / wall * 100, 1),
        "prober_runqueue_wait_pct": round(waited / wall * 100, 1),
        "switch_interval_ms": sys.getswitchinterval() * 1000,
        "pinned": args.pin,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoints", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--load", choices=["stall", "cpu", "mixed", "doors", "none"],
                        default="mixed")  # fmt: skip
    parser.add_argument("--stall", type=float, default=5.0, help="seconds blocked per stall")
    parser.add_argument("--period", type=float, default=10.0, help="seconds between stalls")
    parser.add_argument("--chunk", type=float, default=200.0, help="ms of Python per chunk")
    parser.add_argument("--on-main-loop", action="store_true", help="the old design")
    parser.add_argument("--prober-process", action="store_true",
                        help="the prober in a worker process of its own, as the daemon runs "
                        "it with SLUICE_PROBER=process")  # fmt: skip
    parser.add_argument("--pin", action="store_true",
                        help="pin this process (main loop and prober) to one core")  # fmt: skip
    parser.add_argument("--switch-interval", type=float, default=None,
                        help="sys.setswitchinterval in ms (Python's default: 5)")  # fmt: skip
    parser.add_argument("--listen", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.listen is not None:
        listen_forever(args.seconds, args.listen)
        return 0
    netkit.require_netns()
    cpus = sorted(os.sched_getaffinity(0))
    with netkit.Topology() as topo:
        lb, be = topo.host("lb"), topo.host("be")
        link = topo.link(lb, be, ["198.18.0.1/24"], [f"{a}/24" for a in LISTEN_ADDRS])
        del link
        listener = be.popen(
            [sys.executable, __file__, "--seconds", str(args.seconds + 90), "--listen",
             *LISTEN_ADDRS],
            stdout=subprocess.PIPE,
        )  # fmt: skip
        assert listener.stdout is not None
        if listener.stdout.readline().strip() != b"READY":
            raise RuntimeError("listener did not start")
        if args.switch_interval is not None:
            sys.setswitchinterval(args.switch_interval / 1000)
        if len(cpus) > 1:
            # The listeners get a core of their own, as in bench/probe_scale.py. The daemon's
            # threads are not pinned in production, and two threads of one process on two
            # cores is where the GIL costs most (a thread that gives it up for a syscall
            # loses it to the other); --pin puts both on one core instead.
            os.sched_setaffinity(listener.pid, {cpus[-1]})
            if args.pin:
                os.sched_setaffinity(0, {cpus[0]})
        args.lb = lb
        with tempfile.TemporaryDirectory() as tmp, NsLoop(lb) as main_loop:
            args.tmp = Path(tmp)
            result = main_loop.run(measure(args), timeout=args.seconds + 300)
    python = sys.version.split()[0]
    result["machine"] = f"{platform.machine()} {os.cpu_count()} cpu, Python {python}"
    result["load_average"] = [round(x, 2) for x in os.getloadavg()]
    result["time"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    print("| design | load | probes/s | lag p50 | lag p99 | lag max | went down "
          "| main loop lag max | CPU | prober waiting for CPU |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|")
    print(
        f"| {result['design']} | {result['load']} | {result['probes_per_s']} "
        f"| {result['lag_p50_pct']}% | {result['lag_p99_pct']}% | {result['lag_max_pct']}% "
        f"| {result['went_down']} | {result['main_loop_lag_max_s']} s | {result['cpu_pct']}% "
        f"| {result['prober_runqueue_wait_pct']}% |"
    )
    suffix = "-old" if args.on_main_loop else "-process" if args.prober_process else ""
    out = ROOT / "bench" / "results" / f"probe_isolation-{args.load}{suffix}.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
