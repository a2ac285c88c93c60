"""Batches: a JSONL manifest of job lines fanned out into jobs, tallied, and answered with
``results.jsonl``, ``errors.jsonl`` and ``manifest.json``
(docs/adr/0031-a-batch-is-a-manifest-fanned-out-into-jobs.md)."""
