"""The order state machine (decisions §9), in one table. Pure: no I/O; every transition in the service goes
through `transition()`, so an illegal one is a 409 `invalid_state` wherever it is attempted."""

from __future__ import annotations

from typing import Literal, get_args

from kernel.errors import InvalidState

OrderStatus = Literal[
    "created", "dispatching", "offered", "assigned", "en_route", "in_service", "completed", "confirmed",
    "cancelled", "unfulfilled",
]
ORDER_STATUSES: tuple[OrderStatus, ...] = get_args(OrderStatus)

# event → {from-status: to-status}
TRANSITIONS: dict[str, dict[OrderStatus, OrderStatus]] = {
    # the one-by-one loop starts (asap and near-term orders); scheduled orders wait in `created` for the batch
    "dispatch": {"created": "dispatching", "unfulfilled": "dispatching"},
    # an offer went out (loop, urgent broadcast, batch assigner or a dispatcher's assignment)
    "offer": {"created": "offered", "dispatching": "offered", "offered": "offered", "unfulfilled": "offered"},
    # every pending offer ended without an accept and the loop goes on / the batch will try again
    "redispatch": {"offered": "dispatching"},
    "await_batch": {"offered": "created"},
    # nobody accepted, a dispatcher-assigned offer was declined, or a hotline call-back
    "to_dispatcher": {"created": "unfulfilled", "dispatching": "unfulfilled", "offered": "unfulfilled"},
    "accept": {"offered": "assigned"},
    # a caregiver withdrew before check-in, or a dispatcher reassigns before en_route
    "withdraw": {"assigned": "dispatching", "en_route": "dispatching"},
    "depart": {"assigned": "en_route"},
    "check_in": {"en_route": "in_service", "assigned": "in_service"},
    "check_out": {"in_service": "completed"},
    "confirm": {"completed": "confirmed"},
    "cancel": {s: "cancelled" for s in ("created", "dispatching", "offered", "assigned", "unfulfilled")},
}

# Why an order waits in the dispatcher's queue (`unfulfilled`): the `to_dispatcher` event's reason text says it for
# people, and `queue_reason` gives the code for machines. The texts are made only here.
QueueReason = Literal["nobody_in_reach", "nobody_accepted", "assigned_caregiver_declined",
                      "assigned_caregiver_expired", "hotline_callback", "other"]
NOBODY_IN_REACH = "no qualified caregiver in reach"
NOBODY_LEFT = "no qualified caregiver left"
HOTLINE_CALLBACK_REASON = "hotline call-back"
_QUEUE_REASONS: dict[str, QueueReason] = {
    NOBODY_IN_REACH: "nobody_in_reach", NOBODY_LEFT: "nobody_accepted",
    HOTLINE_CALLBACK_REASON: "hotline_callback",
    "assigned caregiver declined": "assigned_caregiver_declined",
    "assigned caregiver expired": "assigned_caregiver_expired",
}


def manual_offer_ended(offer_status: str) -> str:
    """The queue reason text when the caregiver a dispatcher chose declines or lets the offer expire."""
    return f"assigned caregiver {offer_status}"


def queue_reason(text: str | None) -> QueueReason:
    return _QUEUE_REASONS.get(text or "", "other")


TERMINAL: frozenset[OrderStatus] = frozenset({"confirmed", "cancelled"})
OPEN_FOR_ASSIGNMENT: frozenset[OrderStatus] = frozenset({"created", "dispatching", "offered", "unfulfilled"})


def transition(status: str, event: str) -> OrderStatus:
    """The status after `event`, or InvalidState (409) when the current status does not allow it."""
    try:
        table = TRANSITIONS[event]
    except KeyError:
        raise ValueError(f"unknown order event {event!r}") from None
    target: OrderStatus | None = table.get(status)  # type: ignore[call-overload]
    if target is None:
        raise InvalidState(f"cannot {event.replace('_', ' ')} an order that is {status}",
                           details={"status": status, "event": event})
    return target


def allowed_events(status: str) -> list[str]:
    return sorted(event for event, table in TRANSITIONS.items() if status in table)
