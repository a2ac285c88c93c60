"""The collect function: fal usage, pricing, per-job cost, analytics, the model catalogue and
compute instances, into the usage table (current figures) and S3 (JSON-lines snapshots)."""
