"""HTTP door test kit: users and tokens, a door on a free port, raw requests as
kube-loxilb's Go client writes them (header order, Content-Type on every request)."""

from __future__ import annotations

import datetime
import http.client
import json
import socket
import ssl
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import netkit
from daemonkit import Daemon

from appliance.config.passwords import hash_password, token_hash

RW_TOKEN = "rw-token-0123456789abcdef0123456789abcdef"
RO_TOKEN = "ro-token-0123456789abcdef0123456789abcdef"
PASSWORD = "correct horse battery"
GO_HEADERS = ("User-Agent: Go-http-client/1.1",)


def free_port(host: str = "127.0.0.1") -> int:
    """A free TCP port of this worker's block (netkit.free_port)."""
    return netkit.free_port("tcp", host)


def users() -> list[dict[str, Any]]:
    """kube (read-write, token and password) and viewer (read-only, token and password)."""
    pw = hash_password(PASSWORD)
    return [
        {"name": "kube", "role": "read-write", "api-token-hash": token_hash(RW_TOKEN),
         "password-hash": pw},
        {"name": "viewer", "role": "read-only", "api-token-hash": token_hash(RO_TOKEN),
         "password-hash": pw},
    ]  # fmt: skip


def http_section(port: int, address: str = "127.0.0.1", tls: tuple[str, str] | None = None
                 ) -> dict[str, Any]:  # fmt: skip
    section: dict[str, Any] = {"enabled": True, "port": port, "address": [address]}
    if tls is None:
        section["plain-http"] = True
    else:
        section["tls"] = {"certificate": tls[0], "key": tls[1]}
    return section


def self_signed(host: str = "127.0.0.1") -> tuple[str, str]:
    """(certificate PEM, key PEM) for `host`, made with cryptography (asyncssh's)."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sluice-test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address(host))]), critical=False)
            .sign(key, hashes.SHA256()))  # fmt: skip
    return (cert.public_bytes(serialization.Encoding.PEM).decode(),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()).decode())  # fmt: skip


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def go_request(host: str, port: int, method: str, path: str, body: bytes | None = None,
               token: str | None = RW_TOKEN, timeout: float = 10.0) -> Reply:  # fmt: skip
    """One request exactly as kube-loxilb's client sends it: Content-Type on every method,
    the bare token as Authorization, a body on DELETE too; HTTP/1.1, connection closed."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}", *GO_HEADERS]
    if body is not None:
        lines.append(f"Content-Length: {len(body)}")
    if token is not None:
        lines.append(f"Authorization: {token}")
    lines += ["Content-Type: application/json", "Accept-Encoding: gzip", "Connection: close"]
    raw = ("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b"")
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(raw)
        resp = http.client.HTTPResponse(s)
        resp.begin()
        data = resp.read()
        return Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, data)


def https_request(host: str, port: int, method: str, path: str, body: bytes | None = None,
                  headers: dict[str, str] | None = None) -> Reply:  # fmt: skip
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    conn = http.client.HTTPSConnection(host, port, context=ctx, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
    finally:
        conn.close()


def wait_listening(host: str, port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection((host, port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s")


@contextmanager
def http_daemon(state_dir: Path, host: str = "127.0.0.1") -> Iterator[tuple[Daemon, int]]:
    """A daemon with the test users and its HTTP door on a free port of ``host`` (plain HTTP);
    stopped on exit."""
    port = free_port(host)
    d = Daemon(state_dir)
    d.start()
    try:
        d.apply({"management": {"user": users(), "http": http_section(port, host)}})
        wait_listening(host, port)
        yield d, port
    finally:
        d.stop()


def wait_closed(host: str, port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection((host, port), timeout=1).close()
        except OSError:
            return
        time.sleep(0.05)
    raise TimeoutError(f"{host}:{port} still listening after {timeout}s")


def kube_create_body(vip: str, port: int, endpoints: list[tuple[str, int]], name: str,
                     mode: int = 2, sel: int = 0, monitor: bool = True) -> bytes:  # fmt: skip
    """A create body byte for byte as kube-loxilb's json.Marshal writes it (field order of
    its structs, no spaces, capitalised BGP/Monitor)."""
    eps = ",".join(
        f'{{"endpointIP":"{a}","targetPort":{p},"weight":1,"state":"","counter":""}}'
        for a, p in endpoints)
    mon = "true" if monitor else "false"
    return (
        f'{{"serviceArguments":{{"externalIP":"{vip}","privateIP":"","port":{port},'
        f'"protocol":"tcp","sel":{sel},"mode":{mode},"BGP":true,"Monitor":{mon},'
        '"inactiveTimeOut":1800,"block":0,"managed":true,"probetype":"","probeport":0,'
        f'"probereq":"","proberesp":"","name":"{name}"}},"secondaryIPs":[],'
        f'"allowedSources":[],"endpoints":[{eps}]}}'
    ).encode()
