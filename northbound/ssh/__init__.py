"""SSH for every SSH door (NETCONF, the console): users, logins, throttling, the host key.

Users are /sluice:management/user entries, read afresh at every login, so a user added,
removed, re-keyed or demoted by a commit counts for the next login (and, through the config
service's role check, for the next operation of a session already open).

- `users`: the users, password and key checks, the bounded password pool;
- `throttle`: failed-login back-off per address, IPv6 /64 and user;
- `hostkey`: the one host key, written atomically;
- `listen`: where a door listens, and its listener for the door's Binding;
- `logins`: the asyncssh server object per connection, and the limits.
"""

from northbound.ssh.hostkey import HOST_KEY_FILE, load_or_create_host_key
from northbound.ssh.listen import Acceptor, describe, listen_spec
from northbound.ssh.logins import Limits, Logins, LoginServer
from northbound.ssh.throttle import Backoff, Throttle
from northbound.ssh.users import (
    PasswordChecker,
    User,
    check_password,
    key_matches,
    lookup_user,
    password_checker,
    users_from_config,
)

__all__ = [
    "HOST_KEY_FILE",
    "Acceptor",
    "Backoff",
    "Limits",
    "LoginServer",
    "Logins",
    "PasswordChecker",
    "Throttle",
    "User",
    "check_password",
    "describe",
    "key_matches",
    "listen_spec",
    "load_or_create_host_key",
    "lookup_user",
    "password_checker",
    "users_from_config",
]
