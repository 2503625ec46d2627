"""Tiny servers and clients that the netns test kit runs inside a namespace.

Run as a script (``python netkit_servers.py <command> ...``) under ``ip netns exec``; the kit
in ``netkit.py`` never imports it. Servers print one ``READY`` line on stdout once they are
bound (and listening, for TCP), so the kit can wait for readiness without sleeping; their
logs go to stderr. Clients read the request from stdin and write the answer to stdout, so
binary data passes through unchanged.

Addresses: ``::`` (the default) is a dual-stack socket (IPV6_V6ONLY=0) that answers both
IPv4 and IPv6; an IPv4 address gives an IPv4-only socket.
"""

from __future__ import annotations

import argparse
import http.server
import ipaddress
import socket
import socketserver
import sys
from typing import Any

# A listen backlog big enough for bursts of short connections (capped by somaxconn).
BACKLOG = 1024


def _family(addr: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ipaddress.ip_address(addr).version == 6 else socket.AF_INET


def _ready() -> None:
    # The kit blocks on this line: print it only once the socket can take traffic.
    sys.stdout.write("READY\n")
    sys.stdout.flush()


class _DualStackMixin:
    """Bind an AF_INET6 socket with IPV6_V6ONLY off, so one server answers v4 and v6."""

    address_family: socket.AddressFamily
    socket: socket.socket

    def server_bind(self) -> None:
        if self.address_family == socket.AF_INET6:
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()  # type: ignore[misc]


def _make_server_class(base: type, addr: str) -> type:
    class Server(_DualStackMixin, base):  # type: ignore[misc, valid-type]
        address_family = _family(addr)
        allow_reuse_address = True
        daemon_threads = True
        request_queue_size = BACKLOG

    return Server


def serve_http(addr: str, port: int, body: str) -> None:
    payload = body.encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        # HTTP/1.0: one request per connection, the server closes. Simple and fast enough
        # for many short connections through a load balancer.
        protocol_version = "HTTP/1.0"

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            # One stderr line per request slows bursts down and fills the log: stay quiet.
            pass

    server_cls = _make_server_class(http.server.ThreadingHTTPServer, addr)
    with server_cls((addr, port), Handler) as srv:
        _ready()
        srv.serve_forever()


def serve_tcp_echo(addr: str, port: int) -> None:
    class Handler(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            # Echo every chunk until the client half-closes.
            while chunk := self.request.recv(65536):
                self.request.sendall(chunk)

    server_cls = _make_server_class(socketserver.ThreadingTCPServer, addr)
    with server_cls((addr, port), Handler) as srv:
        _ready()
        srv.serve_forever()


def serve_udp_echo(addr: str, port: int) -> None:
    sock = socket.socket(_family(addr), socket.SOCK_DGRAM)
    if sock.family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    sock.bind((addr, port))
    _ready()
    while True:
        data, peer = sock.recvfrom(65535)
        sock.sendto(data, peer)


def udp_client(addr: str, port: int, timeout: float) -> int:
    data = sys.stdin.buffer.read()
    with socket.socket(_family(addr), socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        # connect() so only the server's answer is accepted and ICMP errors surface.
        sock.connect((addr, port))
        sock.send(data)
        try:
            answer = sock.recv(65535)
        except (TimeoutError, ConnectionRefusedError) as exc:
            print(f"udp {addr} {port}: {exc!r}", file=sys.stderr)
            return 1
    sys.stdout.buffer.write(answer)
    return 0


def tcp_client(addr: str, port: int, timeout: float) -> int:
    data = sys.stdin.buffer.read()
    chunks: list[bytes] = []
    try:
        with socket.create_connection((addr, port), timeout=timeout) as sock:
            sock.sendall(data)
            # Half-close so an echo server sees EOF and closes after echoing everything.
            sock.shutdown(socket.SHUT_WR)
            while chunk := sock.recv(65536):
                chunks.append(chunk)
    except OSError as exc:
        print(f"tcp {addr} {port}: {exc!r}", file=sys.stderr)
        return 1
    sys.stdout.buffer.write(b"".join(chunks))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    http_p = sub.add_parser("http")
    http_p.add_argument("--body", required=True)
    for name in ("http", "tcp-echo", "udp-echo"):
        p = http_p if name == "http" else sub.add_parser(name)
        p.add_argument("--addr", default="::")
        p.add_argument("--port", type=int, required=True)
    for name in ("udp-client", "tcp-client"):
        p = sub.add_parser(name)
        p.add_argument("--addr", required=True)
        p.add_argument("--port", type=int, required=True)
        p.add_argument("--timeout", type=float, default=2.0)
    args = parser.parse_args(argv)

    if args.command == "http":
        serve_http(args.addr, args.port, args.body)
    elif args.command == "tcp-echo":
        serve_tcp_echo(args.addr, args.port)
    elif args.command == "udp-echo":
        serve_udp_echo(args.addr, args.port)
    elif args.command == "udp-client":
        return udp_client(args.addr, args.port, args.timeout)
    elif args.command == "tcp-client":
        return tcp_client(args.addr, args.port, args.timeout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
