"""The health state machine of one endpoint, free of I/O and clocks (times are passed in).

    up --fail--> degraded --fail x retries--> down --success x rise, hold-down over--> up
    degraded --success--> up          (it never went down: no rise needed)
    any --admin disabled/drain--> admin-disabled --enabled--> the initial state

Degraded still takes flows: only down and admin-disabled take the endpoint out.
"""

from __future__ import annotations

from dataclasses import dataclass

from appliance.probes.settings import Timing

UP, DEGRADED, DOWN, ADMIN_DISABLED = "up", "degraded", "down", "admin-disabled"
SERVING = frozenset({UP, DEGRADED})


@dataclass(slots=True)
class Health:
    state: str
    last_change: float  # wall-clock time.time() of the last state change
    last_error: str = ""
    rtt_us: int | None = None
    fails: int = 0  # consecutive failed probes
    successes: int = 0  # consecutive successful probes
    down_since: float = 0.0  # monotonic time the endpoint went down (hold-down)
    probes: int = 0

    def record(
        self,
        ok: bool,
        rtt_us: int | None,
        error: str,
        timing: Timing,
        mono: float,
        wall: float,
    ) -> tuple[str, str] | None:
        """Count one probe result; return (old, new) when the state changed, else None."""
        self.probes += 1
        old = self.state
        if ok:
            self.fails = 0
            self.successes += 1
            if rtt_us is not None:
                self.rtt_us = rtt_us
            if self.state == DEGRADED or (
                self.state == DOWN
                and self.successes >= timing.rise
                and mono - self.down_since >= timing.hold_down
            ):
                self.state = UP
        else:
            self.successes = 0
            self.fails += 1
            self.last_error = error
            if self.state in SERVING:
                if self.fails >= timing.retries:
                    self.state = DOWN
                    self.down_since = mono
                else:
                    self.state = DEGRADED
        if self.state == old:
            return None
        self.last_change = wall
        return old, self.state

    def set_state(self, state: str, mono: float, wall: float) -> tuple[str, str] | None:
        """Force a state (admin changes, probe type none); counters restart."""
        self.fails = self.successes = 0
        if state == self.state:
            return None
        old, self.state, self.last_change = self.state, state, wall
        if state == DOWN:
            self.down_since = mono
        return old, state
