"""Token buckets: the pure decision, then 429s with Retry-After through the API."""

from __future__ import annotations

from pathlib import Path

from qbox.server.services.ratelimit import RateLimiter, TokenBucket
from tests.unit.server.conftest import make_harness


def test_bucket_allows_a_burst_then_refills_at_its_rate() -> None:
    bucket = TokenBucket(rate=2.0, burst=3.0, tokens=3.0, updated=0.0)
    assert [bucket.take(0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take(0.0) == 0.5  # one token comes back after 0.5 s
    assert bucket.take(0.5) == 0.0
    assert bucket.take(10.0) == 0.0 and bucket.tokens == 2.0  # capped at the burst


def test_limiter_keys_are_independent_and_zero_rate_disables() -> None:
    now = [0.0]
    limiter = RateLimiter(rate=1.0, burst=1.0, clock=lambda: now[0])
    assert limiter.check("a") == 0.0 and limiter.check("a") > 0
    assert limiter.check("b") == 0.0
    off = RateLimiter(rate=0.0, burst=0.0)
    assert all(off.check("a") == 0.0 for _ in range(100))


def test_requests_over_the_limit_get_429_with_retry_after(tmp_path: Path, database: str | None) -> None:
    gen = make_harness(tmp_path, database=database, rate_limit_requests_per_second=0.01, rate_limit_request_burst=3)
    h = next(gen)
    codes = [h.client.get("/v1/sandboxes", headers=h.auth()).status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    r = h.client.get("/v1/sandboxes", headers=h.auth())
    assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
    body = r.json()["error"]
    assert body["code"] == "rate_limited" and body["details"]["retryAfterSeconds"] >= 1
    gen.close()


def test_spawns_have_their_own_bucket_and_429s_are_audited(tmp_path: Path, database: str | None) -> None:
    gen = make_harness(tmp_path, database=database, rate_limit_spawns_per_second=0.01, rate_limit_spawn_burst=1)
    h = next(gen)
    ok = h.client.post("/v1/sandboxes", json={"templateId": "tpl_python"}, headers=h.auth())
    limited = h.client.post("/v1/sandboxes", json={"templateId": "tpl_python"}, headers=h.auth())
    assert (ok.status_code, limited.status_code) == (201, 429)
    assert h.client.get("/v1/sandboxes", headers=h.auth()).status_code == 200  # other requests still fine
    log = h.client.get("/v1/audit", params={"action": "sandbox.create"}, headers=h.auth()).json()["data"]
    assert [e["outcome"] for e in log] == [429, 201]
    gen.close()


def test_failed_authentication_is_limited_per_source_address(tmp_path: Path, database: str | None) -> None:
    gen = make_harness(tmp_path, database=database, rate_limit_auth_failures_per_minute=1,
                       rate_limit_auth_failure_burst=2)
    h = next(gen)
    bad = {"Authorization": "Bearer qbox_guess"}
    codes = [h.client.get("/v1/sandboxes", headers=bad).status_code for _ in range(3)]
    assert codes == [401, 401, 429]
    assert h.client.get("/v1/sandboxes", headers=h.auth()).status_code == 200  # valid keys unaffected
    gen.close()


def test_no_host_is_503_transient_with_retry_after(tmp_path: Path, database: str | None) -> None:
    gen = make_harness(tmp_path, database=database)
    h = next(gen)
    h.client.app.state.services.ctx.agents.clients.clear()  # type: ignore[attr-defined]
    r = h.client.post("/v1/sandboxes", json={"templateId": "tpl_python"}, headers=h.auth())
    assert r.status_code == 503
    err = r.json()["error"]
    assert err["code"] == "host_no_capacity" and err["details"]["transient"] is True
    assert int(r.headers["retry-after"]) >= 1
    gen.close()
