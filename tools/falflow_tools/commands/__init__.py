"""The click layer of the operator commands, the local stack and the demo: parse, call, print."""
