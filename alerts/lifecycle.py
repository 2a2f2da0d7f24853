"""The incident lifecycle: which action moves which state where (CONTRACT section 3)."""

from __future__ import annotations

from citybrain.exceptions import IllegalTransition

#: action -> {from state: to state}
TRANSITIONS: dict[str, dict[str, str]] = {
    "acknowledge": {"new": "acknowledged", "escalated": "acknowledged"},
    "dispatch": {"new": "dispatched", "acknowledged": "dispatched", "escalated": "dispatched",
                 "dispatched": "dispatched", "on_scene": "on_scene"},
    "arrive": {"dispatched": "on_scene"},
    "resolve": {"acknowledged": "resolved", "dispatched": "resolved", "on_scene": "resolved", "escalated": "resolved"},
    "close": {"resolved": "closed", "false_alarm": "closed"},
    "false_alarm": {"new": "false_alarm", "acknowledged": "false_alarm", "escalated": "false_alarm",
                    "dispatched": "false_alarm"},
    "escalate": {"new": "escalated"},
    "merge": {s: "merged" for s in ("new", "acknowledged", "escalated")},
    "reopen": {"resolved": "new"},
}
OPERATOR_ACTIONS = ("acknowledge", "dispatch", "resolve", "close", "false_alarm")


def next_state(state: str, action: str) -> str:
    table = TRANSITIONS.get(action)
    if table is None:
        raise IllegalTransition(f"unknown action {action!r}; one of {', '.join(OPERATOR_ACTIONS)}")
    if state not in table:
        allowed = ", ".join(sorted(table))
        raise IllegalTransition(f"cannot {action.replace('_', ' ')} an incident that is {state} (allowed from: {allowed})")
    return table[state]
