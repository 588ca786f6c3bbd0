"""Fault injection per operation: error statuses by rate or script, added latency, dropped chunks."""

from __future__ import annotations

import math
import random
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

from airflow_gemini_files.emulator.store import OPERATIONS

#: Statuses a fault may inject (the retryable ones the SDK and our retry policy know).
FAULT_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


@dataclass
class FaultPlan:
    """What to do to the requests of one operation.

    ``sequence`` is consumed one entry per request (0 or 200 = let it through); once it is used up,
    ``rate`` decides (seeded, so runs are repeatable) which of ``statuses`` to answer instead.
    ``drop_mid_chunk`` is the number of upload chunks whose connection is cut half-way through.
    ``retry_delay`` is what an injected 429 asks for (``RetryInfo.retryDelay`` and ``Retry-After``).
    ``retry_after`` (seconds) puts a ``Retry-After`` header on every injected error instead, as a proxy or
    load balancer might (whether the Gemini API itself sends one is unknown).
    """

    rate: float = 0.0
    statuses: tuple[int, ...] = (503,)
    sequence: list[int] = field(default_factory=list)
    latency: float = 0.0
    drop_mid_chunk: int = 0
    retry_delay: float = 0.0
    retry_after: float | None = None
    rng: random.Random = field(default_factory=lambda: random.Random(0))


@dataclass(frozen=True)
class Decision:
    latency: float = 0.0
    status: int | None = None
    drop: bool = False
    retry_delay: float = 0.0
    retry_after: float | None = None


class Faults:
    """The fault plans in force; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._plans: dict[str, FaultPlan] = {}

    def inject(
        self,
        operation: str,
        *,
        rate: float = 0.0,
        statuses: Sequence[int] = (503,),
        sequence: Sequence[int] | None = None,
        latency: float = 0.0,
        drop_mid_chunk: int = 0,
        retry_delay: float = 0.0,
        retry_after: float | None = None,
    ) -> None:
        """Replace the plan for ``operation`` (one of the stats operations, or ``"*"`` for all)."""
        if operation != "*" and operation not in OPERATIONS:
            raise ValueError(
                f"unknown operation {operation!r}; expected one of {', '.join(OPERATIONS)} or '*'"
            )
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"rate must be within [0, 1], got {rate}")
        for status in [*statuses, *(s for s in sequence or () if s not in (0, 200))]:
            if status not in FAULT_STATUSES:
                raise ValueError(f"status {status} cannot be injected; use one of {sorted(FAULT_STATUSES)}")
        if drop_mid_chunk and operation not in ("upload_chunk", "*"):
            raise ValueError("drop_mid_chunk applies to the upload_chunk operation only")
        timings = [("latency", latency), ("retry_delay", retry_delay)]
        if retry_after is not None:
            timings.append(("retry_after", retry_after))
        for name, value in timings:
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
                or value < 0
            ):
                raise ValueError(f"{name} must be a finite number of seconds >= 0, got {value!r}")
        with self._lock:
            self._plans[operation] = FaultPlan(
                rate=rate,
                statuses=tuple(statuses),
                sequence=list(sequence or []),
                latency=latency,
                drop_mid_chunk=drop_mid_chunk,
                retry_delay=retry_delay,
                retry_after=retry_after,
            )

    def clear(self) -> None:
        with self._lock:
            self._plans.clear()

    def decide(self, operation: str) -> Decision:
        """Consume the plan for one request of ``operation``."""
        with self._lock:
            plan = self._plans.get(operation) or self._plans.get("*")
            if plan is None:
                return Decision()
            if operation == "upload_chunk" and plan.drop_mid_chunk > 0:
                plan.drop_mid_chunk -= 1
                return Decision(latency=plan.latency, drop=True)
            status: int | None = None
            if plan.sequence:
                scripted = plan.sequence.pop(0)
                status = None if scripted in (0, 200) else scripted
            elif plan.rate and plan.rng.random() < plan.rate:
                status = plan.rng.choice(plan.statuses)
            return Decision(
                latency=plan.latency,
                status=status,
                retry_delay=plan.retry_delay,
                retry_after=plan.retry_after,
            )
