"""Boot the appliance disk in a VM: first boot, the first serial login, the console, shutdown.

Opt-in: runs only with SLUICE_VM_TEST=1 (`make vm-test` sets it after `make vm` built the
disk). It boots a whole Debian system and takes minutes, and it needs qemu and the artefacts
of image/build-vm, none of which `make test` prepares; an env switch rather than "the disk
exists" so a stale dist/sluice-vm.raw never turns an ordinary `pytest` run into a boot.

What it proves, from the serial line alone (no NIC, no shell in the guest):
  1. systemd boots the disk and sluice-firstboot prints its banner on the console;
  2. the serial getty runs console-login, which asks for the admin password (typed twice);
  3. `sluice console` draws its dashboard, and the daemon reports its eBPF datapath loaded;
  4. an ACPI power-button press shuts the appliance down cleanly (qemu exits by itself);
then, reading the disk with debugfs (no mount): the admin-password-unset flag is gone, the
first-boot flag and the database exist, admin's hash is in the running and startup config;
  5. a second boot of the same disk opens the console directly (no first-boot step, no
     password prompt) with the datapath loaded, and keeps admin's hash.

Accelerator: KVM when the host has hardware KVM (kvm_intel/kvm_amd). Some nested hosts offer
/dev/kvm from a paravirtual module (kvm_pvm) that cannot run a stock Debian kernel at a usable
speed, so everything else boots under TCG (slower; deadlines scale). SLUICE_VM_ACCEL=kvm|tcg
overrides the choice.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DIST = ROOT / "dist"
RAW = DIST / "sluice-vm.raw"
KERNEL = DIST / "sluice-vm-vmlinuz"
INITRD = DIST / "sluice-vm-initrd.img"
PASSWORD = "vm-test-pw-1"
STATE = "/var/lib/sluice"
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>

pytestmark = [
    pytest.mark.vm,
    pytest.mark.slow,
    pytest.mark.skipif(
        os.environ.get("SLUICE_VM_TEST") != "1",
        reason="boots a VM (minutes): set SLUICE_VM_TEST=1 or run `make vm-test`",
    ),
]

# CSI (colours, cursor moves), OSC (titles) and two-byte escapes: the console's screen is
# searched as plain text.
ANSI = re.compile(rb"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-_]")


def accelerator() -> str:
    """kvm on hardware KVM, else tcg (see the module docstring); SLUICE_VM_ACCEL overrides."""
    chosen = os.environ.get("SLUICE_VM_ACCEL")
    if chosen:
        return chosen
    hw = any(Path("/sys/module", m).exists() for m in ("kvm_intel", "kvm_amd"))
    return "kvm" if hw and os.access("/dev/kvm", os.R_OK | os.W_OK) else "tcg"


class Serial:
    """The guest's serial line: qemu's stdio, read by a thread into one growing buffer.

    `expect` polls that buffer against a deadline (no fixed sleeps); each match moves a
    cursor, so the next `expect` only looks at what came after it.
    """

    def __init__(self, proc: subprocess.Popen[bytes], log: Path) -> None:
        self.proc = proc
        self.buf = bytearray()
        self.cursor = 0
        self.cond = threading.Condition()
        self.log = open(log, "wb")  # noqa: SIM115 (closed in close())
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        while chunk := self.proc.stdout.read1(65536):
            self.log.write(chunk)
            self.log.flush()
            with self.cond:
                self.buf += chunk
                self.cond.notify_all()
        with self.cond:
            self.cond.notify_all()

    def text(self) -> str:
        """Everything so far, escapes stripped (for failure messages)."""
        with self.cond:
            return ANSI.sub(b"", bytes(self.buf)).decode(errors="replace")

    def expect(self, pattern: str, timeout: float) -> str:
        """Wait until `pattern` (regex) appears in the plain text after the cursor."""
        regex = re.compile(pattern.encode())
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                plain = ANSI.sub(b"", bytes(self.buf[self.cursor :]))
                m = regex.search(plain)
                if m:
                    # Advance past the match in raw bytes: find where the match's tail lies.
                    tail = plain[: m.end()]
                    self.cursor += _raw_offset(bytes(self.buf[self.cursor :]), len(tail))
                    return m.group(0).decode(errors="replace")
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self.thread.is_alive()):
                    tail = plain[-3000:].decode(errors="replace")
                    raise AssertionError(f"no {pattern!r} on the serial line in {timeout:.0f} s;"
                                         f" last output:\n{tail}")  # fmt: skip
                self.cond.wait(min(left, 1.0))

    def send(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text.encode())
        self.proc.stdin.flush()

    def close(self) -> None:
        self.thread.join(10)
        self.log.close()


def _raw_offset(raw: bytes, plain_len: int) -> int:
    """The offset in `raw` after which `plain_len` plain (escape-free) bytes have passed."""
    pos = seen = 0
    while pos < len(raw) and seen < plain_len:
        m = ANSI.match(raw, pos)
        if m:
            pos = m.end()
        else:
            pos += 1
            seen += 1
    return pos


def qmp(path: Path, command: str) -> dict[str, object]:
    """One QMP command on qemu's control socket (after the capabilities handshake)."""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect(str(path))
        f = s.makefile("rwb")
        json.loads(f.readline())  # the greeting
        for cmd in ("qmp_capabilities", command):
            f.write(json.dumps({"execute": cmd}).encode() + b"\n")
            f.flush()
            while True:  # skip asynchronous events until the command's answer
                reply = json.loads(f.readline())
                if "return" in reply or "error" in reply:
                    break
        return reply


def debugfs(disk: Path, request: str) -> str:
    """One debugfs request on the (stopped) guest's disk: read-only, nothing mounted."""
    res = subprocess.run(["debugfs", "-R", request, str(disk)], capture_output=True, text=True,
                         errors="replace", timeout=60)  # fmt: skip
    assert res.returncode == 0, res.stderr
    return res.stdout + res.stderr


def _die_with_parent() -> None:
    """In the qemu child: the kernel kills it when pytest dies, even by SIGKILL (no finally)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG)")


@contextlib.contextmanager
def boot(disk: Path, workdir: Path, name: str) -> Iterator[tuple[Serial, Path, float]]:
    """Boot `disk` in qemu: (serial line, QMP socket, deadline scale). Always killed."""
    qemu = shutil.which("qemu-system-x86_64")
    assert qemu, "qemu-system-x86_64 missing: run `scripts/setup --vm`"
    accel = accelerator()
    # Deadlines: a TCG guest runs the same boot several times slower than KVM.
    scale = 1.0 if accel == "kvm" else 5.0
    qmp_sock = workdir / f"qmp-{name}.sock"
    cmd = [
        qemu, "-accel", accel, "-m", "2048", "-smp", "2",
        "-display", "none", "-vga", "none", "-monitor", "none", "-serial", "stdio",
        "-qmp", f"unix:{qmp_sock},server=on,wait=off",
        # No NIC: the test needs none, and nothing may reach the host's networks.
        "-nic", "none", "-no-reboot",
        "-kernel", str(KERNEL), "-initrd", str(INITRD),
        "-drive", f"file={disk},format=raw,if=virtio",
        "-append", "root=/dev/vda rw console=ttyS0 panic=-1",
    ]  # fmt: skip
    print(f"booting ({name}) with {accel}: {' '.join(cmd)}")
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)  # fmt: skip
    serial = Serial(proc, workdir / f"serial-{name}.log")
    try:
        yield serial, qmp_sock, scale
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(30)
        serial.close()


def power_off(serial: Serial, qmp_sock: Path, scale: float) -> None:
    """The ACPI power button (logind powers off); -no-reboot makes qemu exit."""
    reply = qmp(qmp_sock, "system_powerdown")
    assert "return" in reply, reply
    try:
        serial.proc.wait(120 * scale)
    except subprocess.TimeoutExpired:
        pytest.fail("the guest did not power off after the power button:\n" + serial.text()[-3000:])


@pytest.fixture
def disk(tmp_path: Path) -> Path:
    """A copy of the built disk (dist/ stays at first boot)."""
    for p in (RAW, KERNEL, INITRD):
        assert p.exists(), f"{p} missing: run `make vm` (image/build-vm) first"
    copy = tmp_path / "disk.raw"
    subprocess.run(["cp", "--sparse=always", str(RAW), str(copy)], check=True, timeout=300)
    return copy


@pytest.mark.timeout(1800)
def test_first_boot_first_serial_login_and_second_boot(disk: Path, tmp_path: Path) -> None:
    with boot(disk, tmp_path, "first") as (serial, qmp_sock, scale):
        first_boot(serial, qmp_sock, scale)
    password_hash = check_disk(disk)
    # Second boot: no first-boot set-up, no password step, the console opens directly and
    # the datapath loads again (the saved config and the password are kept: checked above).
    with boot(disk, tmp_path, "second") as (serial, qmp_sock, scale):
        t0 = time.monotonic()
        serial.expect(r"Welcome to Debian GNU/Linux 12", 120 * scale)
        serial.expect(r"Recent events", 400 * scale)
        serial.expect(r"datapath loaded · attached", 180 * scale)
        seen = serial.text()
        assert "First login" not in seen and "has no password yet" not in seen, seen[-3000:]
        print(f"second boot: console with the datapath at {time.monotonic() - t0:.0f} s")
        power_off(serial, qmp_sock, scale)
    assert check_disk(disk) == password_hash


def first_boot(serial: Serial, qmp_sock: Path, scale: float) -> None:
    t0 = time.monotonic()
    marks: dict[str, float] = {}

    def step(name: str, pattern: str, timeout: float) -> str:
        found = serial.expect(pattern, timeout * scale)
        marks[name] = time.monotonic() - t0
        return found

    step("kernel", r"Linux version 6\.", 60)
    step("systemd", r"Welcome to Debian GNU/Linux 12", 60)
    # The first-boot banner (image/rootfs/usr/libexec/sluice/firstboot), on the console.
    step("firstboot", r"user 'admin' has no password yet", 240)
    # console-login, on the first login, before the console.
    step("login", r"First login: set the password of 'admin'", 120)
    step("prompt1", r"new password: ", 60)
    serial.send(PASSWORD + "\r")
    step("prompt2", r"again: ", 30)
    serial.send(PASSWORD + "\r")
    step("passwd", r"password of admin set \(commit \d+\)", 60)
    # The console: the dashboard's section titles are drawn only by `sluice console`.
    step("console", r"Recent events", 120)
    # The health panel shows the daemon's datapath status; loaded = bcc compiled lb.c against
    # the carried headers in the guest and the program is in the kernel.
    step("datapath", r"datapath loaded · attached", 180)
    print("seconds from qemu start: " + ", ".join(f"{k} {v:.0f}" for k, v in marks.items()))

    power_off(serial, qmp_sock, scale)
    print(f"powered off at {time.monotonic() - t0:.0f} s")


def check_disk(disk: Path) -> str:
    """After a clean poweroff, read without mounting: first boot done, password kept.
    Returns admin's password hash."""
    listing = debugfs(disk, f"ls -l {STATE}")
    assert "admin-password-unset" not in listing, listing
    assert ".firstboot-done" in listing, listing
    assert re.search(r"\ssluice\.db\s*$", listing, re.M), listing
    # A clean stop checkpoints SQLite's WAL into the database file and removes the -wal file.
    assert "sluice.db-wal" not in listing, listing
    copy = disk.parent / "sluice.db"
    copy.unlink(missing_ok=True)
    debugfs(disk, f"dump {STATE}/sluice.db {copy}")
    admin = admin_entries(copy)
    # The password was committed (running) and saved with the first-boot config (startup).
    assert admin["running"].get("password-hash", "").startswith("$scrypt$"), admin
    assert admin["startup"].get("password-hash") == admin["running"]["password-hash"], admin
    assert admin["running"]["role"] == "read-write", admin
    return str(admin["running"]["password-hash"])


def admin_entries(db: Path) -> dict[str, dict[str, object]]:
    """The admin user's entry in the running and the startup config of a copied database."""
    # immutable: a read of a file copy, no -shm/-wal to create beside it.
    conn = sqlite3.connect(f"file:{db}?immutable=1", uri=True)
    try:
        running = conn.execute(
            "SELECT doc FROM item WHERE kind = 'section' AND key = 'management' AND until IS NULL"
        ).fetchone()
        startup = conn.execute(
            "SELECT doc FROM startup WHERE kind = 'section' AND key = 'management'"
        ).fetchone()
    finally:
        conn.close()
    found: dict[str, dict[str, object]] = {}
    for name, row in (("running", running), ("startup", startup)):
        assert row, f"no management section in the {name} config"
        users = {u["name"]: u for u in json.loads(row[0]).get("user", [])}
        assert "admin" in users, f"no admin in the {name} config: {row[0]}"
        found[name] = users["admin"]
    return found
