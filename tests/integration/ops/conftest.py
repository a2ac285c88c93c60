"""The real submit handler (tests/integration/submit/conftest.py) for the commands that drive one:
`falflow batch …` runs batches through it."""

from tests.integration.submit.conftest import submit, submit_env, submit_fal

__all__ = ["submit", "submit_env", "submit_fal"]
