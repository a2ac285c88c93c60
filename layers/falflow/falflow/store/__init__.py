"""The store function: a recorded completion becomes stored outputs, result.json, a final state
and one event."""
