"""Whole-map walks and bulk deletes in batches (BPF_MAP_LOOKUP_BATCH / BPF_MAP_DELETE_BATCH).

Walking a map with bcc's ``items()`` costs one get_next_key and one lookup syscall per
entry, each through ctypes, and builds a ctypes object per key and value: a 1M-flow
conntrack table (2M entries) takes tens of seconds. The batch commands (kernel >= 5.6, hash,
LRU hash and array maps) return thousands of entries per syscall.

Why not bcc's own ``items_lookup_batch()`` (bcc 0.26, bcc/table.py):
- it allocates key and value arrays of ``max_entries`` for every walk (168 MiB per walk of a
  1M-entry conntrack table, zeroed), and yields views into them;
- it passes the *same* c_uint32 as the batch cursor and the count, so a walk that needs
  a second syscall resumes from a garbage cursor. With a ``max_entries``-sized buffer that
  only happens when the kernel's map holds more than bcc believes (a pinned map reused
  with another size: bcc reports the source's number), and then the walk is silently cut
  short or resumes at a wrong bucket;
- ``items_delete_batch(keys)`` raises a bare Exception and drops the count of keys deleted
  before the failure, although the kernel reports it (see ``delete``).
So this module drives libbcc's thin wrappers (``bpf_lookup_batch``, ``bpf_delete_batch``)
itself, with a fixed-size buffer, and hands out *copies* (bytes), never the reused buffer.

Callers decode the bytes with ``unpacker`` (struct formats checked against the ctypes
layouts bcc parsed from bpf/lib/structs.h), which is several times cheaper per entry than
ctypes attribute access.
"""

from __future__ import annotations

import ctypes as ct
import errno
import os
import struct
from collections.abc import Iterator
from typing import Any

BATCH = 8192  # entries per syscall: 1.6 MB of buffers for conntrack (40 B key, 160 B value)
ENOTSUPP = 524  # the kernel-internal "operation not supported" some map types return
# Errors that mean "no batch commands here" (kernel < 5.6: EINVAL for an unknown command;
# a map type without them: ENOTSUPP/EOPNOTSUPP): fall back to per-entry syscalls.
UNSUPPORTED = {errno.EINVAL, errno.EOPNOTSUPP, ENOTSUPP, errno.ENOSYS}
BPF_EXIST = 2

Chunk = tuple[bytes, bytes, int]  # keys, values (packed back to back), count


def _lib() -> Any:
    from bcc.libbcc import lib  # bcc is only imported where a Program was loaded

    return lib


def _lookup_batch(fd: int, cursor_in: Any, cursor_out: Any, keys: Any, values: Any,
                  count: Any) -> int:  # fmt: skip
    """One BPF_MAP_LOOKUP_BATCH; 0 or an errno (tests replace this to force the fallback)."""
    if _lib().bpf_lookup_batch(fd, cursor_in, cursor_out, keys, values, count) == 0:
        return 0
    return ct.get_errno() or errno.EIO


def _delete_batch(fd: int, keys: Any, count: Any) -> int:
    """One BPF_MAP_DELETE_BATCH; 0 or an errno (tests replace this to force the fallback)."""
    if _lib().bpf_delete_batch(fd, keys, count) == 0:
        return 0
    return ct.get_errno() or errno.EIO


def walk(table: Any, batch: int = BATCH) -> Iterator[Chunk]:
    """Every entry of ``table``, a chunk at a time, as copied bytes (not for per-CPU maps:
    their values are one slot per possible CPU, which ``table.Leaf`` does not describe).

    Deleting entries while walking is safe: the batch cursor is a bucket index (hash maps)
    or the last key (arrays), not an element; the fallback walk is a snapshot taken before
    the first chunk is handed out (get_next_key restarts from the first key when the key it
    is given has gone, so deleting under it would revisit entries).
    """
    fd = table.map_fd
    ks, vs = ct.sizeof(table.Key), ct.sizeof(table.Leaf)
    keys, values = (table.Key * batch)(), (table.Leaf * batch)()
    # Two cursors: the kernel reads one and writes the other (bcc aliases them; see above).
    # u32 fits both kinds: a hash map's cursor is a u32 bucket index, an array's its u32 key.
    cur_in, cur_out, count = ct.c_uint32(0), ct.c_uint32(0), ct.c_uint32(0)
    first = True
    while True:
        count.value = batch
        err = _lookup_batch(fd, None if first else ct.byref(cur_in), ct.byref(cur_out),
                            keys, values, ct.byref(count))  # fmt: skip
        if err and err != errno.ENOENT:
            if first and err in UNSUPPORTED:
                yield from _walk_items(table, batch)
                return
            if err == errno.ENOSPC and count.value == 0:
                # One hash bucket holds more than the buffer (never with a sane hash);
                # the kernel never splits a bucket, so retry the same cursor bigger.
                batch *= 2
                keys, values = (table.Key * batch)(), (table.Leaf * batch)()
                continue
            raise OSError(err, f"BPF_MAP_LOOKUP_BATCH: {os.strerror(err)}")
        n = count.value
        if n:
            yield (ct.string_at(ct.addressof(keys), n * ks),
                   ct.string_at(ct.addressof(values), n * vs), n)  # fmt: skip
        if err == errno.ENOENT or n == 0:
            return  # ENOENT: the walk reached the end (with the last entries, if any)
        cur_in.value = cur_out.value
        first = False


def _walk_items(table: Any, batch: int) -> Iterator[Chunk]:
    """The same chunks from bcc's per-entry iteration (no batch commands: kernel < 5.6)."""
    if type(table).__name__ == "Array":
        # An array's keys never go: no snapshot needed, and a caller that stops early
        # (the endpoint gauges: 524,288 slots) reads only what it needs.
        yield from _chunks(table.iteritems(), batch)
        return
    yield from list(_chunks(table.iteritems(), batch))


def _chunks(items: Any, batch: int) -> Iterator[Chunk]:
    ks: list[bytes] = []
    vs: list[bytes] = []
    for k, v in items:  # bcc's iteritems tolerates entries vanishing between key and lookup
        ks.append(bytes(k))
        vs.append(bytes(v))
        if len(ks) == batch:
            yield b"".join(ks), b"".join(vs), len(ks)
            ks, vs = [], []
    if ks:
        yield b"".join(ks), b"".join(vs), len(ks)


def delete(table: Any, keys: bytes) -> int:
    """Delete the packed ``keys`` (missing ones are skipped); returns how many went."""
    ks = ct.sizeof(table.Key)
    n = len(keys) // ks
    if n == 0:
        return 0
    arr = (table.Key * n).from_buffer_copy(keys)
    fd, done, deleted = table.map_fd, 0, 0
    count = ct.c_uint32(0)
    while done < n:
        count.value = n - done
        err = _delete_batch(fd, ct.byref(arr, done * ks), ct.byref(count))
        if err in UNSUPPORTED:
            # Per key from here. ``count`` means nothing: libbpf copies back the count it
            # sent when the kernel rejects the command outright.
            lib = _lib()
            for i in range(done, n):
                deleted += lib.bpf_delete_elem(fd, ct.byref(arr, i * ks)) == 0
            break
        deleted += count.value
        done += count.value
        if not err:
            break
        if err != errno.ENOENT:
            raise OSError(err, f"BPF_MAP_DELETE_BATCH: {os.strerror(err)}")
        # The kernel stops at the first missing key (the datapath or the LRU removed it
        # since we read it) and reports how many it deleted before it: skip that one.
        done += 1
    return deleted


def update_existing(table: Any, keys: Any, values: Any) -> int:
    """Overwrite entries that still exist (BPF_EXIST: a key deleted meanwhile stays gone).

    One syscall per entry: the batch update of libbcc passes no element flags, so it would
    re-create deleted keys. Callers write only what changed, which is little.
    """
    lib, fd, n = _lib(), table.map_fd, 0
    ks, vs = ct.sizeof(table.Key), ct.sizeof(table.Leaf)
    for i in range(len(keys)):
        n += lib.bpf_update_elem(fd, ct.byref(keys, i * ks), ct.byref(values, i * vs),
                                 BPF_EXIST) == 0  # fmt: skip
    return n


def count(table: Any) -> int:
    return sum(n for _, _, n in walk(table))


# -- decoding ------------------------------------------------------------------------------
def offsets(ctype: Any, prefix: str = "") -> dict[str, tuple[int, int]]:
    """name -> (offset, size) of every field of a ctypes struct, nested ones as ``a.b``."""
    out: dict[str, tuple[int, int]] = {}
    for name, ftype, *_ in ctype._fields_:
        field = getattr(ctype, name)
        out[prefix + name] = (field.offset, field.size)
        if isinstance(ftype, type) and issubclass(ftype, ct.Structure):
            for sub, (off, size) in offsets(ftype).items():
                out[f"{prefix}{name}.{sub}"] = (field.offset + off, size)
    return out


def unpacker(ctype: Any, fields: list[tuple[str, str]]) -> struct.Struct:
    """A ``struct.Struct`` reading the named fields (in offset order) of one ``ctype``.

    The formats are written by hand where they are used (readable), and checked here
    against the layout bcc parsed from the C headers, so a changed struct fails loudly
    instead of reading the wrong bytes.
    """
    layout = offsets(ctype)
    fmt, pos = "=", 0
    for name, code in fields:
        off, size = layout[name]
        if off < pos or struct.calcsize("=" + code) != size:
            raise RuntimeError(f"{ctype.__name__}.{name}: format {code!r} does not match")
        fmt += f"{off - pos}x" * (off > pos) + code
        pos = off + size
    fmt += f"{ct.sizeof(ctype) - pos}x" * (ct.sizeof(ctype) > pos)
    return struct.Struct(fmt)
