"""XPath filters evaluated under a time budget, in a child process that can be killed.

libxml2 evaluates an XPath in C with no way to stop it part-way: a filter such as
``//*[count(//*[count(//*)>0])>0]`` is O(N^3) and ran for minutes. In a thread it cannot be
abandoned (it only releases the GIL, and burns a core until done). So the evaluation runs
in a forked child, which shares the reply tree copy-on-write (nothing is serialised), and
sends back only the positions of the selected nodes in document order; past the budget the
parent kills it and the request gets an rpc-error. The daemon's own threads are not touched:
the child runs nothing but lxml and leaves with os._exit().
"""

from __future__ import annotations

import contextlib
import copy
import ctypes
import os
import select
import signal
import struct
import threading
import time
from array import array

from lxml import etree

# Wall-clock budget of one filter evaluation, and how many may run at once (each is a
# process using up to a core: two keep a 2-core appliance serving everything else).
DEFAULT_BUDGET = 1.0
MAX_CONCURRENT = 2
_slots = threading.BoundedSemaphore(MAX_CONCURRENT)

_OK, _NOT_NODES, _EVAL_ERROR = 0, 1, 2
_HEAD = struct.Struct("=BI")  # status, then a count (of indexes, or of message bytes)
PR_SET_PDEATHSIG = 1


class BudgetExceeded(Exception):
    """The evaluation did not finish within its budget (it was killed)."""


class Busy(Exception):
    """Every evaluation slot is taken."""


class NotNodes(Exception):
    """The expression evaluated to a number, string or boolean, not a node-set."""


class EvalError(Exception):
    """libxml2 refused the expression while evaluating it (unknown function, prefix...)."""


def select_nodes(tops: list[etree._Element], xpath: etree.XPath,
                 budget: float = DEFAULT_BUDGET) -> list[list[etree._Element]]:
    """For each of `tops`, evaluated as a document of its own, the element nodes `xpath`
    selects (attribute and text results stand for their element), in document order.

    Blocking: call it from a worker thread. Raises BudgetExceeded, Busy, NotNodes,
    EvalError.
    """
    if not tops:
        return []
    deadline = time.monotonic() + budget
    # No waiting for a slot: a waiting request would hold a worker thread that other
    # sessions' replies (and SSH logins) need; the client can retry.
    if not _slots.acquire(blocking=False):
        raise Busy(f"{MAX_CONCURRENT} xpath filters are being evaluated already")
    try:
        raw = _run_child(tops, xpath, deadline)
    finally:
        _slots.release()
    decoded = _decode(raw)
    if len(decoded) != len(tops):  # the child died part-way (out of memory, killed)
        raise EvalError("the evaluation ended without an answer")
    out = []
    for top, idxs in zip(tops, decoded, strict=True):
        nodes = list(top.iter())  # the same order as the child's copy of `top`
        out.append([nodes[i] for i in idxs])
    return out


def _run_child(tops: list[etree._Element], xpath: etree.XPath, deadline: float) -> bytes:
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        os.close(rfd)
        _child(tops, xpath, wfd)
    os.close(wfd)
    chunks: list[bytes] = []
    try:
        poller = select.poll()
        poller.register(rfd, select.POLLIN | select.POLLHUP)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BudgetExceeded("the filter ran out of time")
            if not poller.poll(left * 1000):
                continue
            chunk = os.read(rfd, 1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(rfd)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)  # done or not, it has nothing more to do
        os.waitpid(pid, 0)
    return b"".join(chunks)


def _child(tops: list[etree._Element], xpath: etree.XPath, wfd: int) -> None:
    code = 1
    try:
        _detach_from_daemon()
        parts = []
        for top in tops:
            tree = etree.ElementTree(copy.deepcopy(top))
            try:
                result = xpath(tree)
            except etree.XPathEvalError as exc:
                msg = str(exc).encode()
                _write_all(wfd, _HEAD.pack(_EVAL_ERROR, len(msg)) + msg)
                os._exit(0)
            if not isinstance(result, list):
                _write_all(wfd, _HEAD.pack(_NOT_NODES, 0))
                os._exit(0)
            parts.append(_indexes(tree.getroot(), result))
        for idxs in parts:
            _write_all(wfd, _HEAD.pack(_OK, len(idxs)) + idxs.tobytes())
        code = 0
    finally:
        os._exit(code)


def _detach_from_daemon() -> None:
    # A SIGTERM meant for the daemon must not run the daemon's handlers here (asyncio's
    # wakeup fd is the parent's), and the child must not outlive a killed daemon.
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        with contextlib.suppress(Exception):
            signal.signal(sig, signal.SIG_DFL)
    with contextlib.suppress(Exception):
        signal.set_wakeup_fd(-1)
    with contextlib.suppress(Exception):
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def _indexes(root: etree._Element, result: list[object]) -> array[int]:
    position = {el: i for i, el in enumerate(root.iter())}
    picked: set[int] = set()
    for item in result:
        node = item if isinstance(item, etree._Element) else getattr(item, "getparent", None)
        if node is not None and not isinstance(node, etree._Element):
            node = node()  # an attribute or text result: its element
        if isinstance(node, etree._Element) and isinstance(node.tag, str):
            i = position.get(node)
            if i is not None:
                picked.add(i)
    return array("i", sorted(picked))


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _decode(raw: bytes) -> list[list[int]]:
    out: list[list[int]] = []
    pos = 0
    while pos < len(raw):
        status, n = _HEAD.unpack_from(raw, pos)
        pos += _HEAD.size
        if status == _EVAL_ERROR:
            raise EvalError(raw[pos:pos + n].decode(errors="replace"))
        if status == _NOT_NODES:
            raise NotNodes()
        idxs = array("i")
        idxs.frombytes(raw[pos:pos + 4 * n])
        pos += 4 * n
        out.append(idxs.tolist())
    return out
