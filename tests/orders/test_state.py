"""The order state machine, driven by random event sequences and checked against the rules of decisions §9."""

from __future__ import annotations

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from kernel.errors import InvalidState
from orders.state import ORDER_STATUSES, TERMINAL, TRANSITIONS, transition

EVENTS = sorted(TRANSITIONS)
BEFORE_EN_ROUTE = {"created", "dispatching", "offered", "assigned", "unfulfilled"}


def expected(status: str, event: str) -> str | None:
    """The rules as the decisions write them, independently of the table."""
    if status in ("confirmed", "cancelled"):
        return None
    rules = {
        "cancel": "cancelled" if status in BEFORE_EN_ROUTE else None,
        "accept": "assigned" if status == "offered" else None,
        "depart": "en_route" if status == "assigned" else None,
        "check_in": "in_service" if status in ("assigned", "en_route") else None,
        "check_out": "completed" if status == "in_service" else None,
        "confirm": "confirmed" if status == "completed" else None,
        "withdraw": "dispatching" if status in ("assigned", "en_route") else None,
        "dispatch": "dispatching" if status in ("created", "unfulfilled") else None,
        "offer": "offered" if status in ("created", "dispatching", "offered", "unfulfilled") else None,
        "redispatch": "dispatching" if status == "offered" else None,
        "await_batch": "created" if status == "offered" else None,
        "to_dispatcher": "unfulfilled" if status in ("created", "dispatching", "offered") else None,
    }
    return rules[event]


class OrderLife(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.status = "created"
        self.path = ["created"]

    @rule(event=st.sampled_from(EVENTS))
    def apply(self, event: str) -> None:
        want = expected(self.status, event)
        try:
            got = transition(self.status, event)
        except InvalidState as exc:
            assert want is None, f"{event} from {self.status} refused, expected {want}"
            assert exc.status == 409 and exc.code == "invalid_state"
            return
        assert got == want, f"{event} from {self.status} gave {got}, expected {want}"
        self.status = got
        self.path.append(got)

    @invariant()
    def status_is_known(self) -> None:
        assert self.status in ORDER_STATUSES

    @invariant()
    def terminal_states_are_final(self) -> None:
        for earlier in self.path[:-1]:
            assert earlier not in TERMINAL

    @invariant()
    def confirmed_only_after_service(self) -> None:
        if self.status == "confirmed":
            assert "in_service" in self.path and "completed" in self.path


TestOrderLife = OrderLife.TestCase


def test_every_status_is_reachable_from_created() -> None:
    seen, frontier = {"created"}, ["created"]
    while frontier:
        status = frontier.pop()
        for table in TRANSITIONS.values():
            target = table.get(status)  # type: ignore[call-overload]
            if target and target not in seen:
                seen.add(target)
                frontier.append(target)
    assert seen == set(ORDER_STATUSES)
