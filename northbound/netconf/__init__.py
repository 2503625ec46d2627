"""NETCONF over SSH (RFC 6241/6242) for Sluice: a thin adapter over appliance.config.

Modules: framing (RFC 6242), session (hello, RPC loop), rpc (dispatch), ops_* (one group of
operations each), edit/output (XML <-> libyang JSON), auth (users, throttling), monitoring
(RFC 6022, get-schema), notifications (RFC 5277/6470), server (asyncssh, NetconfServer).
"""

from northbound.netconf.server import NetconfServer

__all__ = ["NetconfServer"]
