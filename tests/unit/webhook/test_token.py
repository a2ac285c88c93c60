"""The per-job webhook token: an HMAC of the job id under the stack secret, current or previous."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from falflow.webhook.token import WebhookTokens, job_token, job_webhook_url
from tests.fakes.webhook_events import StaticTokenKeys


def test_a_token_is_the_jobs_own_and_the_keys_own() -> None:
    token = job_token(b"key", "job-1")
    assert len(token) == 43
    assert token.isascii()
    assert "=" not in token
    assert token == job_token(b"key", "job-1")
    assert token != job_token(b"key", "job-2")
    assert token != job_token(b"other key", "job-1")


def test_only_the_current_or_previous_key_matches() -> None:
    keys = StaticTokenKeys(current_key=b"new", previous_key=b"old")
    tokens = WebhookTokens(keys)
    assert tokens.token_for("j") == job_token(b"new", "j")
    assert tokens.matches("j", job_token(b"new", "j"))
    assert tokens.matches("j", job_token(b"old", "j"))
    assert not tokens.matches("j", job_token(b"older", "j"))
    assert not tokens.matches("j", "")
    assert not tokens.matches("j", "ünicode")
    keys.previous_key = None  # never rotated
    assert not tokens.matches("j", job_token(b"old", "j"))


def test_the_webhook_url_carries_the_job_id_and_its_token_and_keeps_its_own_query() -> None:
    url = job_webhook_url("https://api.example/webhooks/fal?stage=prod", "order-1:hero.v2", "tok")
    parts = urlsplit(url)
    assert parts.path == "/webhooks/fal"
    assert parse_qs(parts.query) == {"stage": ["prod"], "job_id": ["order-1:hero.v2"], "token": ["tok"]}
