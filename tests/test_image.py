"""The built artefacts: the PyInstaller bundle moves traffic, the image tarball is complete.

The bundle is built once (image/build-bundle, ~40 s) and reused while it is newer than every
source file; likewise the image tarball (image/build-image). Both run the BUILT binary from
an empty environment in a directory outside the repo, so nothing of the venv can leak in.
"""

from __future__ import annotations

import json
import os
import subprocess
import tarfile
import time
from pathlib import Path

import netkit as kit
import pytest
from bgpkit import LB_AS, Bird, wait
from dpkit import HTTP_PORT, VIP4, backend_addr, build_lbnet

ROOT = Path(__file__).resolve().parent.parent
DIST = ROOT / "dist"
BUNDLE = DIST / "sluice"  # -> sluice.d/sluice
TARBALL = DIST / "sluice-rootfs.tar.gz"
BUNDLE_SOURCES = [ROOT / d for d in ("appliance", "northbound", "tui", "bpf")] + [
    ROOT / "image" / "sluice.spec", ROOT / "image" / "sluice_main.py", ROOT / "pyproject.toml",
    ROOT / "image" / "build-bundle",
]  # fmt: skip
IMAGE_SOURCES = [ROOT / "image" / "rootfs", ROOT / "image" / "build-image"]
CLEAN_ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}

pytestmark = pytest.mark.slow


def _newest(paths: list[Path]) -> float:
    newest = 0.0
    for p in paths:
        files = [p] if p.is_file() else [f for f in p.rglob("*") if f.is_file()]
        for f in files:
            if "__pycache__" not in f.parts:
                newest = max(newest, f.lstat().st_mtime)
    return newest


def _fresh(target: Path, sources: list[Path]) -> bool:
    return target.exists() and target.stat().st_mtime > _newest(sources)


@pytest.fixture(scope="session")
def bundle() -> Path:
    exe = DIST / "sluice.d" / "sluice"
    if not _fresh(exe, BUNDLE_SOURCES):
        t0 = time.monotonic()
        res = subprocess.run([ROOT / "image" / "build-bundle"], capture_output=True, text=True,
                             timeout=600)  # fmt: skip
        assert res.returncode == 0, res.stdout + res.stderr
        print(f"bundle built in {time.monotonic() - t0:.0f} s")
    assert os.access(BUNDLE, os.X_OK)
    return BUNDLE


@pytest.fixture(scope="session")
def tarball(bundle: Path) -> Path:
    if not _fresh(TARBALL, [*IMAGE_SOURCES, bundle.resolve()]):
        res = subprocess.run([ROOT / "image" / "build-image"], capture_output=True, text=True,
                             timeout=600)  # fmt: skip
        assert res.returncode == 0, res.stdout + res.stderr
    return TARBALL


def _run(
    bundle: Path, *args: str, env: dict[str, str], cwd: Path, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(bundle), *args], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=60, input=input)  # fmt: skip


def test_bundle_version_from_empty_environment(bundle: Path, tmp_path: Path) -> None:
    res = _run(bundle, "--version", env=CLEAN_ENV, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().startswith("sluice ")


@pytest.mark.datapath
def test_bundle_daemon_moves_traffic(bundle: Path, netkit: kit.Topology, tmp_path: Path) -> None:
    net = build_lbnet(netkit, n_backends=2)
    env = {**CLEAN_ENV, "SLUICE_DB": str(tmp_path / "sluice.db"),
           "SLUICE_SOCKET": str(tmp_path / "sluice.sock"),
           "SLUICE_PIN_DIR": str(netkit.pin_dir("bundle")),
           # The probe worker is the bundle binary itself (`sluice probe-worker`).
           "SLUICE_PROBER": "process"}  # fmt: skip
    log = tmp_path / "daemon.log"
    with open(log, "wb") as out:
        # nsenter --net (not `ip netns exec`, which remounts /sys and hides bpffs).
        daemon = subprocess.Popen(
            ["nsenter", f"--net=/run/netns/{net.lb.ns}", str(bundle), "run", "--datapath", "on"],
            env=env, cwd=tmp_path, stdout=out, stderr=out,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 60  # bcc compiles the datapath at start (~2-5 s)
        while _run(bundle, "status", env=env, cwd=tmp_path).returncode != 0:
            assert daemon.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        doc = tmp_path / "ifaces.json"
        interfaces = [{"name": i} for i in net.interfaces]
        doc.write_text(json.dumps({"datapath": {"interface": interfaces}}))
        res = _run(bundle, "apply", "-f", str(doc), env=env, cwd=tmp_path)
        assert res.returncode == 0, res.stderr
        eps = f"{backend_addr(1)}:{HTTP_PORT},{backend_addr(2)}:{HTTP_PORT}"
        res = _run(bundle, "lb", "add", "web", "--vip", VIP4, "--port", "80", "--endpoints", eps,
                   env=env, cwd=tmp_path)  # fmt: skip
        assert res.returncode == 0, res.stderr
        assert sorted(net.get(VIP4) for _ in range(4)) == ["b1", "b1", "b2", "b2"]
        res = _run(bundle, "lb", "list", "-o", "json", env=env, cwd=tmp_path)
        (svc,) = json.loads(res.stdout)
        assert svc["name"] == "web"
        # Endpoint health comes from the probe worker: it started from the bundle.
        deadline = time.monotonic() + 20
        while True:
            res = _run(bundle, "ep", "list", "-o", "json", env=env, cwd=tmp_path)
            if res.returncode == 0 and all(
                r["state"].get("health") == "up" for r in json.loads(res.stdout)
            ):
                break
            assert time.monotonic() < deadline, (res.stdout, log.read_text())
            time.sleep(0.2)
        # BGP: the bundle starts ExaBGP (`sluice bgp-speaker`) and its API bridge; a BIRD
        # router in the client's namespace learns the vip from it.
        bird = Bird(net.client, {"lb": ("198.18.0.254", LB_AS)}, router_id="198.18.0.1")
        doc.write_text(json.dumps({"bgp": {"local-as": LB_AS, "router-id": "198.18.0.254",
                                           "neighbor": [{"address": "198.18.0.1",
                                                         "remote-as": 65000}]}}))  # fmt: skip
        res = _run(bundle, "apply", "-f", str(doc), env=env, cwd=tmp_path)
        assert res.returncode == 0, res.stderr
        wait(lambda: bird.route(f"{VIP4}/32"), 30, "the vip announced by the bundle's speaker")
        res = _run(bundle, "bgp", "status", "-o", "json", env=env, cwd=tmp_path)
        assert json.loads(res.stdout)["neighbor"][0]["session-state"] == "established"
        # The password CLI hashes locally and commits only the hash.
        res = _run(bundle, "passwd", "admin", "--role", "read-write", "--stdin", env=env,
                   cwd=tmp_path, input="first-boot-pw\n")  # fmt: skip
        assert res.returncode == 0, res.stderr
    finally:
        daemon.terminate()
        code = daemon.wait(20)
    assert code == 0, log.read_text()
    text = log.read_text()
    assert "probe worker started" in text and "probe worker exited" not in text, text
    assert "bgp speaker started" in text and "bgp speaker exited" not in text, text
    res = subprocess.run(
        ["nsenter", f"--net=/run/netns/{net.lb.ns}", str(bundle), "run", "--cleanup"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr


def test_image_tarball_contents(tarball: Path) -> None:
    with tarfile.open(tarball) as tar:
        members = {m.name.removeprefix("./"): m for m in tar.getmembers()}
    expected = [
        "usr/bin/sluice", "usr/lib/sluice/sluice",
        "usr/lib/sluice/_internal/bpf/lb.c", "usr/lib/sluice/_internal/bpf/lib/maps.h",
        "usr/lib/sluice/_internal/appliance/yang/sluice.yang",
        "usr/lib/sluice/_internal/libbcc.so.0", "usr/lib/sluice/_internal/libyang.so.2",
        "usr/lib/systemd/system/sluice.service", "usr/lib/systemd/system/sluice-setup.service",
        "usr/lib/systemd/system/sluice-firstboot.service",
        "etc/systemd/system/multi-user.target.wants/sluice.service",
        "etc/systemd/system/getty.target.wants/serial-getty@ttyS0.service",
        "etc/systemd/system/serial-getty@ttyS0.service.d/sluice-console.conf",
        "etc/sluice/default-config.yaml", "usr/share/snmp/mibs/SLUICE-LB-MIB.txt",
        "usr/libexec/sluice/setup", "usr/libexec/sluice/firstboot",
        "usr/libexec/sluice/console-login",
    ]  # fmt: skip
    missing = [p for p in expected if p not in members]
    assert not missing, missing
    assert members["usr/bin/sluice"].linkname == "../lib/sluice/sluice"
    for script in ("setup", "firstboot", "console-login"):
        assert members[f"usr/libexec/sluice/{script}"].mode & 0o111
    assert all(m.uid == 0 and m.gid == 0 for m in members.values())
    # Never a /lib or /bin entry: on a merged-/usr root tar would replace those symlinks.
    assert not [n for n in members if n.split("/")[0] in ("lib", "bin", "sbin", "lib64")]
    if any(Path("/usr/src").glob("linux-headers-*-amd64")):
        assert any(n.startswith("usr/src/linux-headers-") and n.endswith("-common")
                   for n in members)  # fmt: skip
    unit = ROOT / "image" / "rootfs" / "usr" / "lib" / "systemd" / "system" / "sluice.service"
    assert "Restart=on-failure" in unit.read_text()
