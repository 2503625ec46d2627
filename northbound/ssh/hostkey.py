"""The appliance's one SSH host key: NETCONF and the console show the same fingerprint."""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from pathlib import Path

import asyncssh

log = logging.getLogger(__name__)


# One host key for the appliance: NETCONF and the SSH console show the same fingerprint.
HOST_KEY_FILE = "ssh_host_ed25519_key"


def load_or_create_host_key(state_dir: Path) -> asyncssh.SSHKey:
    """The appliance's SSH host key, generated on first use and kept in `state_dir`.

    Written atomically (a temporary file, fsync, rename): a crash while writing leaves
    either no key or the whole key, never an empty file. A file that is not a key (left
    by an older release that wrote in place) is set aside and replaced, so both doors
    come up rather than failing for good.
    """
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / HOST_KEY_FILE
    if path.exists():
        try:
            return asyncssh.read_private_key(str(path))
        except (asyncssh.KeyImportError, OSError, ValueError) as exc:
            broken = path.with_name(f"{HOST_KEY_FILE}.broken")
            os.replace(path, broken)
            log.error("ssh host key unreadable; generating a new one",
                      extra={"path": str(path), "moved_to": str(broken), "error": str(exc)})
    key = asyncssh.generate_private_key("ssh-ed25519")
    # mkstemp creates the file 0600: the key is never readable by others, not even briefly.
    fd, tmp = tempfile.mkstemp(prefix=f".{HOST_KEY_FILE}.", dir=state_dir)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(key.export_private_key())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(state_dir)
    log.info("ssh host key generated", extra={"path": str(path)})
    return key


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
