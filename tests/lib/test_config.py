import pytest
from pydantic import ValidationError

from smvm.config import Settings


def test_defaults_follow_the_port_plan(monkeypatch):
    monkeypatch.delenv("SMVM_PROFILE", raising=False)
    s = Settings()
    assert s.addr("orchestrator").endswith(":50050")
    assert s.addr("simulation").endswith(":50054")
    assert s.addr("gateway").endswith(":8080")


def test_environment_overrides_the_profile_file(monkeypatch, tmp_path):
    monkeypatch.setenv("SMVM_PROFILE", "test")
    assert Settings().stage_timeout_s == 30  # from configs/test.yaml
    monkeypatch.setenv("SMVM_STAGE_TIMEOUT_S", "7.5")
    monkeypatch.setenv("SMVM_RUNS_DIR", str(tmp_path))
    s = Settings()
    assert s.stage_timeout_s == 7.5 and s.runs_dir == tmp_path


def test_dev_token_only_in_dev(monkeypatch):
    monkeypatch.setenv("SMVM_PROFILE", "dev")
    monkeypatch.setenv("SMVM_API_TOKENS", "a, b")
    assert Settings().accepted_tokens() == {"a", "b", "dev-admin-token"}
    monkeypatch.setenv("SMVM_PROFILE", "ci")
    monkeypatch.delenv("SMVM_API_TOKENS")
    assert "dev-admin-token" not in Settings().accepted_tokens()


def test_unknown_profile_is_refused():
    with pytest.raises(ValidationError):
        Settings(profile="staging")


def test_a_breaker_that_opens_after_the_retries_run_out_is_refused():
    with pytest.raises(ValidationError, match="webhook_breaker_threshold"):
        Settings(webhook_breaker_threshold=6, webhook_max_retries=5)
    assert Settings(webhook_breaker_threshold=5, webhook_max_retries=5).webhook_breaker_threshold == 5


def test_child_environment_round_trips(monkeypatch):
    s = Settings(runs_dir="/tmp/r", stage_timeout_s=3.0)
    for key, value in s.env_for_children().items():
        monkeypatch.setenv(key, value)
    assert Settings() == s


def test_status_cache_size_is_on_off_or_a_count_and_a_zero_staleness_bound_turns_it_off():
    assert Settings(status_cache="on").status_cache_size() == 10_000
    assert Settings(status_cache=" OFF ").status_cache_size() == 0
    assert Settings(status_cache="0").status_cache_size() == 0
    assert Settings(status_cache="500").status_cache_size() == 500
    assert Settings(status_cache="on", status_cache_staleness_ms=0).status_cache_size() == 0
    for bad in ("yes", "-1", "1e3"):
        with pytest.raises(ValidationError, match="status_cache"):
            Settings(status_cache=bad)


def test_the_callback_barrier_must_fit_in_the_delivery_lease():
    # A claimed callback waits the staleness bound before it is sent: past its lease another
    # dispatcher would send it too.
    with pytest.raises(ValidationError, match="status_cache_staleness_ms"):
        Settings(status_cache_staleness_ms=1000, webhook_lease_s=1.0)
    assert Settings(status_cache_staleness_ms=1000, webhook_lease_s=1.5).status_cache_staleness_ms == 1000
