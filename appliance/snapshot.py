"""The operational-state snapshot: what the doors read instead of calling state providers.

The state providers (the datapath reconciler's ``state_providers()`` plus the prober's
endpoint wrapper: ``service``, ``endpoint``, ``datapath``, ...) take the datapath lock, walk
maps and make netlink calls. Called from the event loop they stall every door, and the
netlink one fails outright there (pyroute2 runs its own asyncio loop: "This event loop is
already running"). So one thread calls them, at a fixed period, and publishes an immutable
`State`; readers take ``snapshot.current()``: one attribute read, no lock, no walk, no
netlink.

    snap = Snapshot(state, config_service=service, period=1.0)
    snap.start()
    ...
    snap.current().service("web")  # a read-only mapping, {} when nothing is known
    ...
    snap.stop()

The refresh never takes more than ``max_duty`` of a core (a quarter by default): after a
refresh that took ``d`` seconds the thread waits at least ``d * (1 / max_duty - 1)`` before
the next one, whatever the period. With the real datapath a refresh of 10,000 services and
20,000 endpoints takes ~0.5 s (one provider call each), so there it is every ~2 s.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from appliance import netlink

log = logging.getLogger(__name__)

EMPTY: Mapping[str, Any] = MappingProxyType({})
EndpointKey = tuple[str, str, int]
# (service name, [(address, port), ...]) for every configured service.
Keys = Iterable[tuple[str, Iterable[tuple[str, int]]]]
LinksFn = Callable[[], list[dict[str, Any]]]


def read_links() -> list[dict[str, Any]]:
    """Every link of this process's network namespace, with its speed (netlink, ethtool)."""
    found: list[dict[str, Any]] = list(netlink.links())
    for link in found:
        link["speed-mbps"] = netlink.link_speed_mbps(str(link["name"]))
    return found


def _frozen(value: Any) -> Mapping[str, Any]:
    return MappingProxyType(dict(value)) if isinstance(value, dict) else EMPTY


def _reuse(previous: Mapping[str, Any] | None, value: dict[str, Any]) -> Mapping[str, Any]:
    # An unchanged entry keeps its old (already long-lived) mapping: at 10,000 services a
    # fresh mapping per entry per second set off full garbage collections, which stall the
    # event loop. The provider's dict is copied, so a provider changing it later is not seen.
    if previous is not None and previous == value:
        return previous
    return MappingProxyType(dict(value))


@dataclass(frozen=True)
class State:
    """One consistent reading of every provider. Never changed once published."""

    taken: float = 0.0  # time.monotonic() when the refresh finished; 0: never refreshed
    services: Mapping[str, Mapping[str, Any]] = field(default_factory=lambda: EMPTY)
    endpoints: Mapping[EndpointKey, Mapping[str, Any]] = field(default_factory=lambda: EMPTY)
    datapath: Mapping[str, Any] = field(default_factory=lambda: EMPTY)
    # Every link of the daemon's network namespace by name (appliance.netlink.links() plus
    # "speed-mbps"): the management port as well as the datapath's interfaces.
    interfaces: Mapping[str, Mapping[str, Any]] = field(default_factory=lambda: EMPTY)
    errors: Mapping[str, str] = field(default_factory=lambda: EMPTY)
    # The config service's commit id the keys were read at (None: no config service), so a
    # reader can tell that a commit since has added services this state knows nothing of.
    commit_id: int | None = None
    # Policer colors and mirror counters by name (the ``qos`` provider): {"policer": {name:
    # {green|yellow|red: {packets, bytes}}}, "mirror": {name: {packets, ...}}}.
    qos: Mapping[str, Any] = field(default_factory=lambda: EMPTY)
    # The HA door's state (the ``ha`` provider: roles, witness, sync channels and lag).
    ha: Mapping[str, Any] = field(default_factory=lambda: EMPTY)

    def service(self, name: str) -> Mapping[str, Any]:
        return self.services.get(name, EMPTY)

    def endpoint(self, service: str, address: str, port: int) -> Mapping[str, Any]:
        return self.endpoints.get((service, address, int(port)), EMPTY)

    @property
    def conntrack_entries(self) -> int | None:
        """Entries in ct_map (both directions of every flow), None when unknown.

        The datapath status reports it per map as ``maps.ct_map.entries``; a provider may
        also say ``conntrack-entries`` directly.
        """
        dp = self.datapath
        ct = (dp.get("maps") or {}).get("ct_map") if isinstance(dp.get("maps"), Mapping) else None
        value = ct.get("entries") if isinstance(ct, Mapping) else dp.get("conntrack-entries")
        try:
            return None if value is None else max(int(value), 0)
        except (TypeError, ValueError):
            return None


class Snapshot:
    """Refreshes a `State` from ``providers`` in its own thread every ``period`` seconds.

    Which services and endpoints to ask about comes from, in this order: the config
    service's running effective services, the keys given with `track()`, or the
    ``stats`` provider's rows. ``datapath_period``: the datapath status walks every map
    (conntrack included) and asks netlink for each interface, so it is read less often.
    """

    def __init__(
        self,
        providers: Mapping[str, Callable[..., Any]],
        *,
        config_service: Any = None,
        period: float = 1.0,
        datapath_period: float = 5.0,
        max_duty: float = 0.25,
        links: LinksFn | None = read_links,
    ) -> None:
        # Kept by reference: providers the daemon registers later (the prober's endpoint
        # wrapper) are seen at the next refresh.
        self.providers = providers
        self.config_service = config_service
        self.period = period
        self.datapath_period = datapath_period
        self.max_duty = min(max(max_duty, 0.01), 1.0)
        # Read here, in the snapshot's thread: pyroute2 runs an asyncio loop of its own and
        # fails on the daemon's ("This event loop is already running").
        self.links = links
        self._state = State()
        self._tracked: Callable[[], Keys] | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._datapath_at = -float("inf")
        self._failed: set[str] = set()
        self._key_objects: dict[EndpointKey, EndpointKey] = {}
        self.refreshes = 0

    # -- readers (any thread, the event loop included) -----------------------------------
    def current(self) -> State:
        """The latest published state: an attribute read, never a wait."""
        return self._state

    def poke(self) -> None:
        """Ask for a refresh now (an event says the last reading is stale)."""
        self._wake.set()

    def track(self, keys: Callable[[], Keys]) -> None:
        """Where the service/endpoint keys come from when there is no config service."""
        self._tracked = keys
        self.poke()

    def wait_fresh(self, after: float, timeout: float) -> State:
        """From a worker thread only: the first state taken after ``after`` (monotonic),
        or the current one once ``timeout`` has passed."""
        deadline = time.monotonic() + timeout
        while self._state.taken <= after and time.monotonic() < deadline:
            self.poke()
            time.sleep(0.01)
        return self._state

    # -- life cycle ------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(
            target=_run, args=(weakref.ref(self), self._stop, self._wake),
            name="state-snapshot", daemon=True,
        )
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # -- the refresh (the snapshot thread; tests call it directly) ---------------------------
    def refresh(self) -> State:
        errors: dict[str, str] = {}
        services: dict[str, Mapping[str, Any]] = {}
        endpoints: dict[EndpointKey, Mapping[str, Any]] = {}
        service_fn = self.providers.get("service")
        endpoint_fn = self.providers.get("endpoint")
        commit_id = getattr(self.config_service, "commit_id", None)
        old = self._state
        # The same key tuples from one refresh to the next (see `_reuse`).
        keys: dict[EndpointKey, EndpointKey] = {}
        for name, eps in self._keys(errors):
            if service_fn is not None:
                value = self._call("service", service_fn, errors, name)
                if value:
                    services[name] = _reuse(old.services.get(name), value)
            if endpoint_fn is None:
                continue
            for address, port in eps:
                value = self._call("endpoint", endpoint_fn, errors, name, address, port)
                if value:
                    key = (name, address, int(port))
                    key = keys.setdefault(key, self._key_objects.get(key, key))
                    endpoints[key] = _reuse(old.endpoints.get(key), value)
        datapath, interfaces = old.datapath, old.interfaces
        now = time.monotonic()
        if now - self._datapath_at >= self.datapath_period or old.taken == 0:
            self._datapath_at = now
            fn = self.providers.get("datapath")
            datapath = _frozen(self._call("datapath", fn, errors)) if fn else EMPTY
        elif "datapath" in old.errors:
            errors["datapath"] = old.errors["datapath"]  # still the latest word on it
        interfaces = self._interfaces(old.interfaces, errors)
        qos_fn = self.providers.get("qos")  # a few reads per policer: every refresh
        qos = _frozen(self._call("qos", qos_fn, errors)) if qos_fn else EMPTY
        ha_fn = self.providers.get("ha")  # in memory, one ring-drop counter read
        ha = _frozen(self._call("ha", ha_fn, errors)) if ha_fn else EMPTY
        state = State(time.monotonic(), MappingProxyType(services), MappingProxyType(endpoints),
                      datapath, interfaces, MappingProxyType(errors), commit_id, qos, ha)
        self._state = state  # one assignment: a reader sees the old state or the new one
        self._key_objects = keys
        self.refreshes += 1
        return state

    def _keys(self, errors: dict[str, str]) -> Keys:
        """Lazily, so no key lives longer than its provider call: 40,000 tuples alive for a
        whole refresh were promoted to the oldest generation and set off full collections."""
        svc = self.config_service
        try:
            if svc is not None and hasattr(svc, "services_effective"):
                # The config service replaces an item's dict on commit and never edits one
                # in place: a shallow copy of the values under its mutex is a consistent set.
                mutex = getattr(svc, "_mutex", None)
                if mutex is not None:
                    with mutex:
                        items = list(svc.services_effective.values())
                else:
                    items = list(svc.services_effective.values())
                return ((s["name"], ((e["address"], int(e["port"]))
                                     for e in s.get("endpoint", ()))) for s in items)
            if self._tracked is not None:
                return self._tracked()
            stats = self.providers.get("stats")
            if stats is not None:
                return _keys_from_stats(stats())
        except Exception as exc:  # a config read must not end the thread
            errors["keys"] = str(exc)
            self._log_once("keys", exc)
        return []

    def _call(self, kind: str, fn: Callable[..., Any], errors: dict[str, str],
              *args: Any) -> Any:
        try:
            value = fn(*args)
        except Exception as exc:  # a failing provider reads as "nothing known"
            errors[kind] = str(exc)
            self._log_once(kind, exc)
            return None
        self._failed.discard(kind)
        return value if isinstance(value, dict) else None

    def _log_once(self, kind: str, exc: Exception) -> None:
        if kind not in self._failed:  # once per failing provider, not once per second
            self._failed.add(kind)
            log.warning("state provider failed", extra={"provider": kind, "error": str(exc)})

    def _interfaces(
        self, old: Mapping[str, Mapping[str, Any]], errors: dict[str, str]
    ) -> Mapping[str, Mapping[str, Any]]:
        """Every link of the namespace, by name (one netlink dump: cheap at any period)."""
        if self.links is None:
            return EMPTY
        try:
            found = self.links()
        except Exception as exc:  # keep the last reading rather than show no interfaces
            errors["links"] = str(exc)
            self._log_once("links", exc)
            return old
        self._failed.discard("links")
        return MappingProxyType(
            {str(link["name"]): _reuse(old.get(str(link["name"])), link) for link in found}
        )


def _keys_from_stats(rows: Any) -> list[tuple[str, list[tuple[str, int]]]]:
    """The reconciler's ``stats()`` rows: one per service, then one per "address:port"."""
    keys: dict[str, list[tuple[str, int]]] = {}
    for row in rows or []:
        name = row.get("service")
        if not isinstance(name, str):
            continue
        eps = keys.setdefault(name, [])
        endpoint = row.get("endpoint")
        if isinstance(endpoint, str) and ":" in endpoint:
            address, _, port = endpoint.rpartition(":")
            eps.append((address.strip("[]"), int(port)))
    return list(keys.items())


def _run(ref: weakref.ref[Snapshot], stop: threading.Event, wake: threading.Event) -> None:
    # Holds the snapshot only weakly between rounds: one built lazily for a door that is
    # never stopped (see `for_providers`) ends with its last user instead of leaking.
    while not stop.is_set():
        snap = ref()
        if snap is None:
            return
        started = time.monotonic()
        try:
            snap.refresh()
        except Exception:
            log.exception("state snapshot refresh failed")
        took = time.monotonic() - started
        rest = took * (1 / snap.max_duty - 1)
        left = snap.period - took - rest
        del snap
        # The rest is due even when poked: an event storm must not turn the duty cycle
        # into a busy loop. After it, a poke (or the period) starts the next refresh.
        if stop.wait(rest):
            return
        if left > 0:
            wake.wait(left)
        wake.clear()


_LAZY_KEY = "snapshot"
_lazy_lock = threading.Lock()


def for_providers(
    providers: Any, *, config_service: Any = None, period: float = 1.0
) -> Snapshot:
    """The snapshot doors read: ``providers`` itself if it is one, the one stored in the
    providers dict under "snapshot" (the daemon's), or else one built around the raw
    providers, started, and stored there so every door shares it."""
    if isinstance(providers, Snapshot):
        return providers
    if not isinstance(providers, dict):
        providers = dict(providers or {})
    with _lazy_lock:
        snap = providers.get(_LAZY_KEY)
        if not isinstance(snap, Snapshot):
            snap = Snapshot(providers, config_service=config_service, period=period)
            providers[_LAZY_KEY] = snap
            snap.start()
        elif snap.config_service is None and config_service is not None:
            snap.config_service = config_service
            snap.poke()
    return snap
