"""The completion path: fal's verified webhook (or the reconciler) → the completion intake →
the outputs queue → the store (outputs copied into S3, result.json, final state, one event)."""
