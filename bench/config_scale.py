"""Control-plane scale: commit, edit and list at 10,000 services × 8 endpoints.

Runs a real `sluice run` (datapath off: this measures the config spine, not the kernel) on a
temporary database and drives it through the control socket and the CLI, as a user would.

    .venv/bin/python bench/config_scale.py [--services 10000] [--endpoints 8] [--runs 3]

Prints a Markdown table (median of the runs) and writes bench/results/config_scale.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from daemonkit import SLUICE, Daemon
from scale_config import services

from appliance.config.paths import service_path


def one_run(n: int, endpoints: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        daemon = Daemon(Path(tmp))
        daemon.start()
        try:
            with daemon.client() as client:
                doc = {"load-balancer": {"service": services(n, endpoints)}}
                t0 = time.perf_counter()
                client.call("config.apply", config=doc)
                commit_all = time.perf_counter() - t0

                edits = []
                for k in range(20):  # one-service edit + commit, 20 times, take the median
                    change = {
                        "op": "merge",
                        "path": f"{service_path(f'svc{k * 7}')}/endpoint"
                        f"[address='198.19.0.{k * 7 % 250 + 1}'][port='8080']",
                        "value": {"weight": 2 + k},
                    }
                    t0 = time.perf_counter()
                    client.call("config.edit", changes=[change])
                    client.call("config.commit")
                    edits.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            out = subprocess.run(
                [*SLUICE, "lb", "list", "-o", "json"],
                env={**os.environ, **daemon.env},
                capture_output=True,
                check=True,
            )
            list_json = time.perf_counter() - t0
            assert len(json.loads(out.stdout)) == n
            t0 = time.perf_counter()
            daemon.stop()
            daemon.start()
            restart = time.perf_counter() - t0
        finally:
            daemon.stop()
    return {
        "commit_all_s": commit_all,
        "one_edit_commit_ms": statistics.median(edits) * 1000,
        "lb_list_json_s": list_json,
        "restart_s": restart,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=10_000)
    parser.add_argument("--endpoints", type=int, default=8)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    runs = [one_run(args.services, args.endpoints) for _ in range(args.runs)]
    median = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    scale = f"{args.services} services × {args.endpoints} endpoints"
    rows = [
        ("commit all services in one apply", f"{median['commit_all_s']:.2f} s", "< 5 s"),
        ("one-service edit + commit", f"{median['one_edit_commit_ms']:.1f} ms", "< 50 ms"),
        ("`sluice lb list -o json`", f"{median['lb_list_json_s']:.2f} s", "< 2 s"),
        ("daemon restart (load + validate)", f"{median['restart_s']:.2f} s", "—"),
    ]
    print(f"Config scale, {scale}, median of {args.runs} runs, {machine}\n")
    print("| operation | measured | aim |\n|---|---|---|")
    for row in rows:
        print(f"| {' | '.join(row)} |")
    out = Path(__file__).resolve().parent / "results" / "config_scale.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"scale": scale, "machine": machine, "runs": runs,
                               "median": median}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
