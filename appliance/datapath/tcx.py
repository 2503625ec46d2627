"""tcx: attach a SCHED_CLS program ahead of the clsact filters (kernel 6.6+).

The kernel runs an interface's tcx programs before its clsact filters; a tcx program that
returns TCX_NEXT (TC_ACT_UNSPEC) lets the packet go on to them. The QoS program
(bpf/qos.c) is attached here so it sees packets before the balancer (clsact prio 1, 2)
without a change to the balancer's attachment or a call in its hot path.

Attached with BPF_PROG_ATTACH (not a bpf_link): the attachment belongs to the device, like
a clsact filter, and stays when the daemon exits. Ours are recognised by program name
(``sluice_qos*``) and replaced atomically (BPF_F_REPLACE). pyroute2 has no tcx support,
so this calls Debian's libbpf1 through ctypes. BPF calls take an ifindex in the calling
thread's network namespace: for another namespace they run on a short-lived thread that
has entered it.
"""

from __future__ import annotations

import ctypes as ct
import errno
import os
import socket
import threading
from collections.abc import Callable
from typing import TypeVar

BPF_TCX_INGRESS = 46
BPF_TCX_EGRESS = 47
BPF_F_REPLACE = 1 << 2
CLONE_NEWNET = 0x40000000
OURS = b"sluice_qos"
TYPES = {"ingress": BPF_TCX_INGRESS, "egress": BPF_TCX_EGRESS}

T = TypeVar("T")
_lib: ct.CDLL | None = None


class _AttachOpts(ct.Structure):
    # libbpf 1.1 struct bpf_prog_attach_opts (later versions only add fields after these).
    _fields_ = [("sz", ct.c_size_t), ("flags", ct.c_uint32), ("replace_prog_fd", ct.c_int)]


def _libbpf() -> ct.CDLL:
    global _lib
    if _lib is None:
        _lib = ct.CDLL("libbpf.so.1", use_errno=True)
    return _lib


def _in_netns(netns: str | None, fn: Callable[[], T]) -> T:
    if netns is None:
        return fn()
    out: dict[str, object] = {}

    def run() -> None:
        try:
            libc = ct.CDLL("libc.so.6", use_errno=True)
            fd = os.open(f"/run/netns/{netns}", os.O_RDONLY)
            try:
                if libc.setns(fd, CLONE_NEWNET) != 0:
                    raise OSError(ct.get_errno(), f"setns {netns}")
            finally:
                os.close(fd)
            out["value"] = fn()
        except BaseException as exc:  # handed to the caller's thread
            out["error"] = exc

    t = threading.Thread(target=run, name="tcx-netns", daemon=True)
    t.start()
    t.join()
    if "error" in out:
        raise out["error"]  # type: ignore[misc]
    return out["value"]  # type: ignore[return-value]


def prog_fd_by_id(prog_id: int) -> int:
    """A new fd of the loaded BPF program ``prog_id`` (the caller closes it), or -1."""
    return int(_libbpf().bpf_prog_get_fd_by_id(prog_id))


def _check(rc: int, what: str) -> int:
    if rc < 0:
        code = -rc if rc != -1 else ct.get_errno()
        raise OSError(code, f"{what}: {os.strerror(code)}")
    return rc


def _prog_name(fd: int) -> bytes:
    info = ct.create_string_buffer(256)
    size = ct.c_uint32(256)
    if _libbpf().bpf_obj_get_info_by_fd(fd, info, ct.byref(size)) != 0:
        return b""
    return info.raw[64:80].split(b"\0", 1)[0]  # struct bpf_prog_info.name


def _attached(ifindex: int, kind: int) -> list[tuple[int, bytes]]:
    """(program id, name) of the tcx programs on ``ifindex``, in run order."""
    lib = _libbpf()
    ids = (ct.c_uint32 * 64)()
    cnt = ct.c_uint32(64)
    flags = ct.c_uint32(0)
    rc = lib.bpf_prog_query(ifindex, kind, 0, ct.byref(flags), ids, ct.byref(cnt))
    if rc != 0:
        code = ct.get_errno()
        if code in (errno.ENOENT, errno.ENODEV):
            return []
        raise OSError(code, f"tcx query: {os.strerror(code)}")
    out = []
    for pid in ids[: cnt.value]:
        fd = prog_fd_by_id(pid)
        if fd < 0:
            continue
        try:
            out.append((int(pid), _prog_name(fd)))
        finally:
            os.close(fd)
    return out


def _ours(ifindex: int, kind: int) -> int | None:
    """An fd of our program attached on ``ifindex`` (caller closes it), or None."""
    for pid, name in _attached(ifindex, kind):
        if name.startswith(OURS):
            fd = prog_fd_by_id(pid)
            if fd >= 0:
                return fd
    return None


def attach(ifname: str, prog_fd: int, direction: str = "ingress", netns: str | None = None) -> None:
    """Attach ``prog_fd`` (a program named sluice_qos*) to ``ifname``; replace ours if there."""
    kind = TYPES[direction]

    def run() -> None:
        ifindex = socket.if_nametoindex(ifname)
        old = _ours(ifindex, kind)
        opts = _AttachOpts(ct.sizeof(_AttachOpts), 0, 0)
        try:
            if old is not None:
                opts.flags, opts.replace_prog_fd = BPF_F_REPLACE, old
            rc = _libbpf().bpf_prog_attach_opts(prog_fd, ifindex, kind, ct.byref(opts))
            if rc != 0:
                code = ct.get_errno() or -rc
                if old is not None and code == errno.EEXIST:
                    return  # the very program is already there
                raise OSError(code, f"tcx attach {ifname} {direction}: {os.strerror(code)}")
        finally:
            if old is not None:
                os.close(old)

    _in_netns(netns, run)


def detach(ifname: str, direction: str = "ingress", netns: str | None = None) -> bool:
    """Remove our program from ``ifname``'s tcx hook; True if one was removed. Idempotent."""
    kind = TYPES[direction]

    def run() -> bool:
        try:
            ifindex = socket.if_nametoindex(ifname)
        except OSError:
            return False
        removed = False
        while (fd := _ours(ifindex, kind)) is not None:
            try:
                _check(_libbpf().bpf_prog_detach2(fd, ifindex, kind), f"tcx detach {ifname}")
                removed = True
            finally:
                os.close(fd)
        return removed

    return _in_netns(netns, run)


def programs(ifname: str, direction: str = "ingress", netns: str | None = None) -> list[str]:
    """Names of the tcx programs on ``ifname`` (ours and others'), in run order."""
    kind = TYPES[direction]

    def run() -> list[str]:
        try:
            ifindex = socket.if_nametoindex(ifname)
        except OSError:
            return []
        return [name.decode(errors="replace") for _pid, name in _attached(ifindex, kind)]

    return _in_netns(netns, run)
