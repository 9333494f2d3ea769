"""Fair shares of admission between customers: the policy and the counts it decides on.

Pure: standard library only, time is a float of seconds on the caller's timeline.

Every admitted order holds a *place* (waiting or in fulfilment) for its customer
until it ends. The places (`Admission.places`: the slots, or the queue where orders
may wait) are shared max-min fairly among the customers that compete for them: those
holding places and those that asked within the last `window_s` seconds (the
`max_customers` most recent). A customer that asks for one more place gets it only
if, with every competitor wanting one place more than it holds, water-filling the
places up to what it holds still leaves it one more. So:

- a customer alone gets every place (and the usual `503` once they are all taken);
- a customer holding nothing is never over its share (only the capacity refuses it);
- a flooding customer stops short of the last places while others are active, so a
  customer within its share is admitted as places free.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class FairLimits:
    window_s: float = 10.0  # a customer competes this long after it last asked
    max_customers: int = 1000  # recently active customers remembered (the oldest forgotten)
    top_n: int = 5  # most-refused customers counted in `top_refused`


@dataclass(frozen=True, slots=True)
class OverShare:
    """A customer over its fair share: refuse its new order (`429`)."""

    held: int  # places the customer holds now
    share: int  # places its fair share comes to while the others compete
    places: int
    competing: int  # customers competing, this one included

    @property
    def reason(self) -> str:
        return (
            f"this customer holds {self.held} of {self.places} places while "
            f"{self.competing} customers compete for them; its fair share is {self.share}"
        )


def within_share(held: int, others: Iterable[int], places: int) -> bool:
    """Whether one more place for a customer holding `held` fits its max-min fair share.

    `others`: what each competitor wants (the places it holds, plus one if it is active).
    Water-filled up to `held` places each, the competitors must leave it a place more:
    so a customer reaches its equal share, and goes one past it only with a place that
    nobody else wants (first come, first served).
    """
    needed = held + 1
    for wants in others:
        needed += wants if wants < held else held
        if needed > places:
            return False
    return needed <= places


def fair_share(others: Iterable[int], places: int) -> int:
    """The most places a customer may hold (`within_share`), its competitors' wants given."""
    wants = list(others)
    low, high = 1, max(1, places)  # one place is always within a share
    while low < high:
        mid = (low + high + 1) // 2
        if within_share(mid - 1, wants, places):
            low = mid
        else:
            high = mid - 1
    return low


class FairShare:
    """Places held per customer, who asked recently, and the decision for one more place.

    Owned by `Admission`: `check` before a place is taken, `took` when it is, `settled`
    when its order is stored (or not), `gave_back` when a stored order is cancelled or
    ends. `rebuild` adopts the store's count (a count gone wrong heals there).
    `on_outcome` hears every check's outcome: `alone`, `within_share` or `over_share`.
    """

    def __init__(
        self,
        limits: FairLimits | None = None,
        *,
        on_outcome: Callable[[str], None] | None = None,
    ) -> None:
        self.limits = limits or FairLimits()
        self.held: dict[str, int] = {}  # places per customer: stored and unsettled orders
        self._total_held = 0  # the sum of `held`
        self.unsettled: Counter[str] = Counter()  # places taken, order not yet stored
        self.changes = 0  # bumped on every change, so a stale rebuild is dropped
        self._on_outcome = on_outcome
        self._seen: OrderedDict[str, float] = OrderedDict()  # customer -> last asked, oldest first
        self.refused: Counter[str] = Counter()  # over-share refusals per recent customer
        self.refusals = 0  # over-share refusals since start

    def _forget_old(self, now: float) -> None:
        horizon = now - self.limits.window_s
        seen = self._seen
        while seen:
            customer, at = next(iter(seen.items()))
            if at >= horizon and len(seen) <= self.limits.max_customers:
                break
            seen.popitem(last=False)
            self.refused.pop(customer, None)

    def competitors(
        self, customer: str, now: float, freed: Mapping[str, int] | None = None
    ) -> dict[str, int]:
        """What each other competing customer wants: its places, plus one if it asked lately.

        `freed`: places per customer counted as free already (see `check`)."""
        self._forget_old(now)
        if freed:
            wants = {c: n - freed.get(c, 0) for c, n in self.held.items() if n > freed.get(c, 0)}
        else:
            wants = dict(self.held)
        for other in self._seen:
            wants[other] = wants.get(other, 0) + 1
        wants.pop(customer, None)
        return wants

    def check(
        self,
        customer: str,
        now: float,
        places: int,
        freed: Callable[[], Mapping[str, int]] | None = None,
    ) -> OverShare | None:
        """Note that `customer` asks now; an `OverShare` if one more place is over its share.

        `freed` gives the places per customer that count as free already though their
        orders have not ended yet (an order past its planned end, only recording its end:
        admission counts its slot as free, so its place is too). Asked only when the
        places held could be over a share.
        """
        outcome, over = self.judge(customer, now, places, freed)
        self.observe(outcome)
        return over

    def judge(
        self,
        customer: str,
        now: float,
        places: int,
        freed: Callable[[], Mapping[str, int]] | None = None,
    ) -> tuple[str, OverShare | None]:
        """`check` without telling `on_outcome`: the outcome goes back with the answer,
        for a caller that tells it (`observe`) only if the order is refused."""
        seen = self._seen
        seen[customer] = now
        seen.move_to_end(customer)
        self._forget_old(now)
        held_by = self.held
        held = held_by.get(customer, 0)
        other_holders = len(held_by) - (customer in held_by)
        others_seen = len(seen) - (customer in seen)
        if not other_holders and not others_seen:
            return "alone", None
        # What the others want in all: their places, plus one each for those that asked.
        others_want = self._total_held - held + others_seen
        if held == 0 or held + 1 + others_want <= places:
            # Nothing to share out: every competitor can have what it wants and this one
            # a place more (`within_share` is true), found without looking at each.
            return "within_share", None
        gone = freed() if freed is not None else None
        if gone:
            held = max(0, held - gone.get(customer, 0))
        others = self.competitors(customer, now, gone)
        if within_share(held, others.values(), places):
            return "within_share", None
        self.refusals += 1
        self.refused[customer] += 1
        return "over_share", OverShare(
            held=held,
            share=fair_share(others.values(), places),
            places=places,
            competing=len(others) + 1,
        )

    def observe(self, outcome: str) -> None:
        if self._on_outcome is not None:
            self._on_outcome(outcome)

    def took(self, customer: str) -> None:
        """`customer` takes a place for a new order (not stored yet)."""
        self.held[customer] = self.held.get(customer, 0) + 1
        self._total_held += 1
        self.unsettled[customer] += 1
        self.changes += 1

    def settled(self, customer: str, *, kept: bool) -> None:
        """The new order was stored (`kept`: its place stays held) or not (given back)."""
        left = self.unsettled[customer] - 1
        if left > 0:
            self.unsettled[customer] = left
        else:
            del self.unsettled[customer]
        if not kept:
            self.gave_back(customer)
        self.changes += 1

    def gave_back(self, customer: str) -> None:
        """One of `customer`'s places is free: its order ended, was cancelled or not stored."""
        held = self.held.get(customer, 0) - 1
        if held > 0:
            self.held[customer] = held
            self._total_held -= 1
        elif self.held.pop(customer, None) is not None:
            self._total_held -= 1
        self.changes += 1

    def rebuild(self, stored: Mapping[str, int], *, read_at_change: int | None = None) -> None:
        """Adopt the store's places per customer (its queued and processing orders).

        Places taken for orders not yet stored are added. `read_at_change` is `changes`
        when the count was read; if anything changed here since, the count may be stale
        and is dropped (the next one will do).
        """
        if read_at_change is not None and read_at_change != self.changes:
            return
        counts = Counter({c: n for c, n in stored.items() if n > 0})
        counts.update(self.unsettled)
        self.held = dict(counts)
        self._total_held = sum(self.held.values())
        self.changes += 1

    def competing(self, now: float) -> int:
        """Customers competing now: holding places or asked within the window."""
        self._forget_old(now)
        return len(self.held.keys() | self._seen.keys())

    def top_refused(self) -> list[int]:
        """Over-share refusals of the most refused recent customers, most first."""
        return [n for _, n in self.refused.most_common(self.limits.top_n)]
