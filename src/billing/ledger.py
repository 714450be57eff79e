"""The quota ledger's rules: how a price splits, and the balanced postings of every movement. Pure, no I/O.

Accounts (debit positive), one of each per programme or entitlement:

- `program_funding:P`     the programme's funding, `-budget` (the contra of the opening posting)
- `program_available:P`   budget neither reserved nor used: `budget - reserved - used`, never below zero
- `entitlement_reserved:E` quota held for open orders of entitlement E (equals `entitlements.reserved_fen`)
- `entitlement_used:E`     quota captured for billable visits (equals `entitlements.used_fen`)

Movements: `fund` (available ← funding), `reserve` (reserved ← available), `release`/`exclude` (available ←
reserved), `capture` (used ← reserved, the unneeded rest back to available; or used ← available directly when the
reservation had been released before the visit became billable). Every posting's legs sum to zero; amounts are
integer fen. Co-pay is the elder's money and never enters this ledger; it is recorded on reservations and captures.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

Account = Literal["program_funding", "program_available", "entitlement_reserved", "entitlement_used"]
PostingKind = Literal["fund", "reserve", "release", "exclude", "capture"]
AccountKey = tuple[str, uuid.UUID]


@dataclass(frozen=True)
class Leg:
    account: Account
    account_id: uuid.UUID
    amount_fen: int


@dataclass(frozen=True)
class Posting:
    kind: PostingKind
    key: str
    program_id: uuid.UUID
    order_id: uuid.UUID | None
    legs: tuple[Leg, ...]

    @property
    def balanced(self) -> bool:
        return sum(leg.amount_fen for leg in self.legs) == 0

    @property
    def empty(self) -> bool:
        return not self.legs


@dataclass(frozen=True)
class Split:
    """A price divided between the programme (quota) and the elder (co-pay)."""

    price_fen: int
    quota_fen: int
    copay_fen: int


def posting_key(kind: PostingKind, ref: uuid.UUID) -> str:
    """The idempotency key of a posting: one posting per (order, kind), one `fund` per programme."""
    return f"{kind}:{ref}"


def copay_for(price_fen: int, copay_percent: int) -> int:
    """`ceil(price × copay_percent / 100)` in integers: the elder's share is rounded up, never the programme's."""
    if price_fen < 0 or not 0 <= copay_percent <= 100:
        raise ValueError("price must be >= 0 and copay_percent within 0..100")
    return -(-price_fen * copay_percent // 100)


def split_price(price_fen: int, copay_percent: int, *, entitlement_remaining: int, budget_remaining: int) -> Split:
    """The quota part is the price less the co-pay, capped by what remains of the entitlement and of the budget;
    whatever the caps cut off is co-pay too."""
    wanted = price_fen - copay_for(price_fen, copay_percent)
    quota = max(0, min(wanted, entitlement_remaining, budget_remaining))
    return Split(price_fen=price_fen, quota_fen=quota, copay_fen=price_fen - quota)


def capture_split(actual_price_fen: int, copay_percent: int, *, reserved_fen: int,
                  entitlement_remaining: int = 0, budget_remaining: int = 0) -> Split:
    """The split at capture for the units actually delivered: the co-pay percent applied to the actual price, the
    quota part never more than was reserved plus what may newly be drawn (the remaining entitlement and budget, for
    a reservation released before the visit became billable); any excess is co-pay."""
    wanted = actual_price_fen - copay_for(actual_price_fen, copay_percent)
    extra = max(0, min(entitlement_remaining, budget_remaining))
    quota = max(0, min(wanted, reserved_fen + extra))
    return Split(price_fen=actual_price_fen, quota_fen=quota, copay_fen=actual_price_fen - quota)


def _legs(*legs: Leg) -> tuple[Leg, ...]:
    return tuple(leg for leg in legs if leg.amount_fen != 0)


def fund(program_id: uuid.UUID, budget_fen: int) -> Posting:
    return Posting("fund", posting_key("fund", program_id), program_id, None, _legs(
        Leg("program_available", program_id, budget_fen),
        Leg("program_funding", program_id, -budget_fen),
    ))


def reserve(order_id: uuid.UUID, program_id: uuid.UUID, entitlement_id: uuid.UUID, amount_fen: int) -> Posting:
    if amount_fen < 0:
        raise ValueError("a reservation is not negative")
    return Posting("reserve", posting_key("reserve", order_id), program_id, order_id, _legs(
        Leg("entitlement_reserved", entitlement_id, amount_fen),
        Leg("program_available", program_id, -amount_fen),
    ))


def release(order_id: uuid.UUID, program_id: uuid.UUID, entitlement_id: uuid.UUID, amount_fen: int,
            kind: Literal["release", "exclude"] = "release") -> Posting:
    """Give a reservation back to the entitlement and the budget (cancellation, unserved window, exclusion)."""
    if amount_fen < 0:
        raise ValueError("a release is not negative")
    return Posting(kind, posting_key(kind, order_id), program_id, order_id, _legs(
        Leg("entitlement_reserved", entitlement_id, -amount_fen),
        Leg("program_available", program_id, amount_fen),
    ))


def capture(order_id: uuid.UUID, program_id: uuid.UUID, entitlement_id: uuid.UUID, *, reserved_fen: int,
            captured_fen: int) -> Posting:
    """Consume `captured_fen` of a reservation of `reserved_fen`: the rest goes back to the budget; with more
    captured than reserved (a released reservation drawn again) the difference comes from the budget."""
    if reserved_fen < 0 or captured_fen < 0:
        raise ValueError("amounts are not negative")
    return Posting("capture", posting_key("capture", order_id), program_id, order_id, _legs(
        Leg("entitlement_reserved", entitlement_id, -reserved_fen),
        Leg("entitlement_used", entitlement_id, captured_fen),
        Leg("program_available", program_id, reserved_fen - captured_fen),
    ))


def apply(balances: Mapping[AccountKey, int], postings: Iterable[Posting]) -> dict[AccountKey, int]:
    """Balances after the postings (a reference for tests and for `verify`)."""
    out = dict(balances)
    for posting in postings:
        if not posting.balanced:
            raise ValueError(f"unbalanced posting {posting.key}")
        for leg in posting.legs:
            key = (leg.account, leg.account_id)
            out[key] = out.get(key, 0) + leg.amount_fen
    return out


def overdrawn(balances: Mapping[AccountKey, int]) -> list[AccountKey]:
    """Accounts below zero that never may be: available budget, reserved and used quota."""
    return sorted((key for key, value in balances.items() if key[0] != "program_funding" and value < 0),
                  key=lambda k: (k[0], str(k[1])))
