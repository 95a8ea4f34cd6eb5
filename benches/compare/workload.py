# Imported by run.py (python3 benches/compare/run.py); tested by python3 benches/compare/test_workload.py
"""The orders of each scenario, and the bookkeeping that turns what the closer saw into metrics.

Pure functions only: no sockets, no clocks. `plan_*` build the workload (who is created when,
with which payment window, who pays when); `tally` checks that every order is accounted for
exactly once and computes the metrics. `tally` raises `BookkeepingError` rather than report
numbers that do not add up.
"""

import random
from dataclasses import dataclass, field


@dataclass
class Plan:
    """One scenario's orders, all times relative to the start of the run (seconds)."""

    create_at: list  # when order i is created
    window: list  # its payment window: deadline = creation + window
    pay_at: list  # when it is paid, or None if it stays unpaid
    event: tuple = None  # ("outage" | "crash", at_s, for_s) or None

    @property
    def n(self):
        return len(self.create_at)


def plan_steady(n, duration_s, window_min_s, window_max_s, paid_fraction, seed, event=None):
    """`n` orders created at a steady rate over `duration_s`, windows uniform in
    [window_min_s, window_max_s], a `paid_fraction` of them paid at a uniform moment before
    their deadline."""
    rng = random.Random(seed)
    create_at = [i * duration_s / n for i in range(n)]
    window = [rng.uniform(window_min_s, window_max_s) for _ in range(n)]
    pay_at = [c + rng.uniform(0, w) if rng.random() < paid_fraction else None
              for c, w in zip(create_at, window)]
    return Plan(create_at, window, pay_at, event)


def plan_flash(n, lead_s, seed):
    """`n` orders created as fast as possible from t=0, all due in the one second starting at
    `lead_s`; nobody pays. The driver stamps each deadline as lead_s + window - create time."""
    rng = random.Random(seed)
    return Plan([0.0] * n, [lead_s + rng.random() for _ in range(n)], [None] * n)


class BookkeepingError(AssertionError):
    """The run's records do not add up: a bug in the harness, never a result to publish."""


@dataclass
class Tally:
    created: int
    unpaid: int  # created and not paid (payment refused or never attempted)
    closed: int  # unpaid orders closed (first close)
    paid: int  # paid and never closed
    lost: int  # unpaid and never closed
    wrong: int  # paid (payment accepted) and closed anyway
    twice: int  # orders closed more than once
    early: int  # closes more than 5 ms before the deadline
    within_1s: float  # % of unpaid orders closed at most 1 s after their deadline
    p50: float
    p99: float
    max: float
    lateness: list = field(repr=False, default_factory=list)  # sorted, seconds, closed unpaid


def percentile(sorted_values, q):
    """Nearest-rank percentile of an ascending list (q in 0..100); None if empty."""
    if not sorted_values:
        return None
    k = max(0, min(len(sorted_values) - 1, -(-len(sorted_values) * q // 100) - 1))
    return sorted_values[int(k)]


def tally(deadline, paid, closes):
    """deadline: {id: unix s} for every created order; paid: set of ids whose payment was
    accepted; closes: list of (id, unix s) in the order the closer saw them."""
    first = {}
    twice = set()
    for oid, t in closes:
        if oid not in deadline:
            raise BookkeepingError(f"closer reported order {oid!r}, which was never created")
        if oid in first:
            twice.add(oid)
        else:
            first[oid] = t
    if not paid <= deadline.keys():
        raise BookkeepingError(f"{len(paid - deadline.keys())} paid orders were never created")
    wrong = first.keys() & paid
    closed = first.keys() - paid
    paid_only = paid - first.keys()
    lost = deadline.keys() - first.keys() - paid
    if len(closed) + len(wrong) + len(paid_only) + len(lost) != len(deadline):
        raise BookkeepingError(
            f"created {len(deadline)} != closed {len(closed)} + wrong {len(wrong)} "
            f"+ paid {len(paid_only)} + lost {len(lost)}")
    if closed & lost or closed & paid_only or lost & paid_only:
        raise BookkeepingError("an order is in two of closed/paid/lost")
    lateness = sorted(first[i] - deadline[i] for i in closed)
    unpaid = len(deadline) - len(paid)
    on_time = sum(1 for x in lateness if x <= 1.0)
    return Tally(
        created=len(deadline), unpaid=unpaid, closed=len(closed), paid=len(paid_only),
        lost=len(lost), wrong=len(wrong), twice=len(twice),
        early=sum(1 for x in lateness if x < -0.005),
        within_1s=100.0 * on_time / unpaid if unpaid else 100.0,
        p50=percentile(lateness, 50), p99=percentile(lateness, 99),
        max=lateness[-1] if lateness else None, lateness=lateness)
