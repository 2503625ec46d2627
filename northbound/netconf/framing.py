"""RFC 6242 message framing: base:1.0 end-of-message (`]]>]]>`) and base:1.1 chunked.

`Deframer` is fed raw bytes and yields whole messages. It never buffers more than
`max_message` bytes of one message: past that it discards the rest of the message and yields
`TOO_BIG` once the message ends, so the session can answer with rpc-error and carry on.
A broken chunk header cannot be resynchronised; it raises FramingError (the session ends).
"""

from __future__ import annotations

import re
from collections.abc import Iterator

EOM = b"]]>]]>"
DEFAULT_MAX_MESSAGE = 16 * 1024 * 1024
# RFC 6242: chunk-size is 1..4294967295, written without leading zeros.
MAX_CHUNK = 4294967295
_CHUNK_HEADER = re.compile(rb"\n#([1-9][0-9]{0,9})\n")


class FramingError(Exception):
    """The byte stream does not follow the negotiated framing."""


class _TooBig:
    def __repr__(self) -> str:
        return "TOO_BIG"


TOO_BIG = _TooBig()


def encode(message: bytes, chunked: bool) -> bytes:
    if not chunked:
        return message + EOM
    # One chunk per message: chunks exist for streaming, and replies are built whole.
    return b"\n#%d\n%s\n##\n" % (len(message), message) if message else b"\n##\n"


class Deframer:
    def __init__(self, max_message: int = DEFAULT_MAX_MESSAGE) -> None:
        self.max_message = max_message
        self.chunked = False
        self._buf = bytearray()
        self._msg = bytearray()
        self._chunk_left = 0  # bytes of the current chunk still to read (chunked)
        self._oversized = False

    def feed(self, data: bytes) -> Iterator[bytes | _TooBig]:
        self._buf += data
        while True:
            item = self._next_chunked() if self.chunked else self._next_eom()
            if item is None:
                return
            yield item

    # -- base:1.0 ----------------------------------------------------------------------------
    def _next_eom(self) -> bytes | _TooBig | None:
        at = self._buf.find(EOM)
        if at < 0:
            # Keep the tail that could be the start of a delimiter; the rest counts as message.
            keep = len(EOM) - 1
            if len(self._buf) > keep:
                self._append(bytes(self._buf[:-keep]))
                del self._buf[:-keep]
            return None
        self._append(bytes(self._buf[:at]))
        del self._buf[: at + len(EOM)]
        return self._finish()

    # -- base:1.1 ----------------------------------------------------------------------------
    def _next_chunked(self) -> bytes | _TooBig | None:
        while True:
            if self._chunk_left:
                take = min(self._chunk_left, len(self._buf))
                if take == 0:
                    return None
                self._append(bytes(self._buf[:take]))
                del self._buf[:take]
                self._chunk_left -= take
                continue
            if len(self._buf) < 4:
                return None
            if self._buf.startswith(b"\n##\n"):
                del self._buf[:4]
                return self._finish()
            if not self._buf.startswith(b"\n#"):
                raise FramingError("expected a chunk header ('\\n#<size>\\n' or '\\n##\\n')")
            if self._buf[2:3] == b"#":
                return None  # '\n##' then wait for the '\n'
            match = _CHUNK_HEADER.match(self._buf)
            if match is None:
                end = self._buf.find(b"\n", 2)
                if end >= 0 or len(self._buf) > 13:
                    raise FramingError("malformed chunk header")
                return None  # header not complete yet
            size = int(match.group(1))
            if size > MAX_CHUNK:
                raise FramingError("chunk size out of range")
            self._chunk_left = size
            del self._buf[: match.end()]

    # -- common ------------------------------------------------------------------------------
    def _append(self, data: bytes) -> None:
        if self._oversized:
            return
        if len(self._msg) + len(data) > self.max_message:
            self._oversized = True
            self._msg.clear()
            return
        self._msg += data

    def _finish(self) -> bytes | _TooBig:
        if self._oversized:
            self._oversized = False
            return TOO_BIG
        msg = bytes(self._msg)
        self._msg.clear()
        return msg

    def switch_to_chunked(self) -> None:
        """After the hellos, if both sides said base:1.1 (RFC 6242 section 4.1)."""
        self.chunked = True
