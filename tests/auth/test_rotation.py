"""Token rotation with an overlap: the mesh's service token (a list, current first, the others
accepted until removed or until the stated end of the overlap) and scoped REST tokens (`rotate`)."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from hypothesis import given, settings as hsettings, strategies as st
from pydantic import ValidationError

from smvm import cli, metrics
from smvm.auth import TokenFile, TokenRegistry
from smvm.channels import ClientSecurity
from smvm.config import Settings
from smvm.errors import InvalidArgument, Unauthenticated

NOW = dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.timezone.utc)
OLD, NEW, STRANGER = "svc-old-" + "o" * 32, "svc-new-" + "n" * 32, "svc-x-" + "x" * 32


def registry_for(clock=lambda: NOW, **settings) -> TokenRegistry:
    registry = TokenRegistry.from_settings(Settings(profile="test", **settings))
    registry.clock = clock
    return registry


def accepted_count(which: str) -> float:
    return metrics.SERVICE_TOKENS_ACCEPTED.labels(which)._value.get()


def test_a_list_sends_its_first_token_and_accepts_all_of_them():
    settings = Settings(profile="test", service_token=f" {NEW} , {OLD} ")
    assert settings.service_tokens() == (NEW, OLD)
    assert ClientSecurity.from_settings(settings).service_token == NEW
    registry = registry_for(service_token=f"{NEW},{OLD}")
    before = accepted_count("current"), accepted_count("other")
    for token in (NEW, OLD):
        principal = registry.authenticate(token)
        assert (principal.name, principal.role) == ("service", "service")
    assert (accepted_count("current"), accepted_count("other")) == (before[0] + 1, before[1] + 1)
    with pytest.raises(Unauthenticated) as err:
        registry.authenticate(STRANGER)
    assert err.value.reason == "INVALID_TOKEN"


def test_the_second_secret_key_adds_accepted_tokens_that_are_never_sent():
    """Step 1 of a rotation: every process still sends OLD and already accepts NEW."""
    settings = Settings(profile="test", service_token=OLD, service_tokens_accepted=NEW)
    assert settings.service_tokens() == (OLD, NEW)
    assert ClientSecurity.from_settings(settings).service_token == OLD
    registry = registry_for(service_token=OLD, service_tokens_accepted=NEW)
    assert registry.authenticate(NEW).role == "service" and registry.authenticate(OLD).role == "service"


def test_a_token_removed_from_the_list_is_refused():
    """Step 3: OLD dropped from the Secret; a caller still sending it is unauthenticated."""
    registry = registry_for(service_token=NEW)
    with pytest.raises(Unauthenticated) as err:
        registry.authenticate(OLD)
    assert err.value.reason == "INVALID_TOKEN"
    assert registry.authenticate(NEW).role == "service"


def test_the_overlap_ends_at_the_stated_time_for_every_token_but_the_current_one():
    clock = {"now": NOW}
    registry = registry_for(lambda: clock["now"], service_token=NEW, service_tokens_accepted=OLD,
                            service_tokens_accepted_until="2026-11-25T13:00:00Z")
    assert registry.authenticate(OLD).role == "service"
    clock["now"] = NOW + dt.timedelta(minutes=59, seconds=59)
    assert registry.authenticate(OLD).role == "service"
    clock["now"] = NOW + dt.timedelta(hours=1)
    with pytest.raises(Unauthenticated) as err:
        registry.authenticate(OLD)
    assert err.value.reason == "SERVICE_TOKEN_RETIRED" and "2026-11-25T13:00:00Z" in err.value.message
    assert registry.authenticate(NEW).role == "service"  # the current token has no end


@pytest.mark.parametrize("overrides, field", [
    ({"service_tokens_accepted_until": "next tuesday"}, "service_tokens_accepted_until"),
    ({"service_tokens_accepted": OLD}, "service_tokens_accepted"),  # accepted ones but nothing to send
])
def test_a_bad_rotation_setting_names_the_field(overrides, field):
    with pytest.raises(ValidationError) as err:
        Settings(profile="test", **overrides)
    assert field in str(err.value)


@hsettings(max_examples=60, deadline=None)
@given(tokens=st.lists(st.text(alphabet="abcdefghijklmnop0123456789-_", min_size=1, max_size=12), min_size=1,
                       max_size=5, unique=True),
       extra=st.lists(st.text(alphabet="qrstuvwxyz", min_size=1, max_size=12), max_size=3, unique=True),
       probe=st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_", min_size=1, max_size=12))
def test_exactly_the_listed_tokens_are_accepted(tokens, extra, probe):
    registry = registry_for(service_token=",".join(tokens), service_tokens_accepted=",".join(extra))
    listed = set(tokens) | set(extra)
    if probe in listed:
        assert registry.authenticate(probe).role == "service"
    else:
        with pytest.raises(Unauthenticated):
            registry.authenticate(probe)


# ---------------------------------------------------------------------------- REST tokens
def test_rotating_a_scoped_token_keeps_the_old_one_for_the_overlap_only(tmp_path):
    tokens = TokenFile(tmp_path / "tokens.yaml")
    old = tokens.create("tb-acme", "submitter", ["acme", "acme-labs"], now=NOW)
    new = tokens.rotate("tb-acme", "tb-acme-2", dt.timedelta(days=7), now=NOW)
    clock = {"now": NOW + dt.timedelta(days=6, hours=23)}
    registry = TokenRegistry(token_file=tokens, clock=lambda: clock["now"])
    successor = registry.authenticate(new)
    assert (successor.name, successor.role, successor.projects) == ("tb-acme-2", "submitter",
                                                                    frozenset({"acme", "acme-labs"}))
    assert registry.authenticate(old).name == "tb-acme"  # both work during the overlap
    clock["now"] = NOW + dt.timedelta(days=7)
    with pytest.raises(Unauthenticated) as err:
        registry.authenticate(old)
    assert err.value.reason == "TOKEN_EXPIRED"
    assert registry.authenticate(new).name == "tb-acme-2"


def test_rotation_never_extends_the_old_token_and_zero_overlap_revokes_it(tmp_path):
    tokens = TokenFile(tmp_path / "tokens.yaml")
    tokens.create("short", "reader", ["acme"], expires_at=NOW + dt.timedelta(hours=2), now=NOW)
    tokens.rotate("short", "short-2", dt.timedelta(days=30), now=NOW)
    assert {r.name: r.expires_at for r in tokens.records()}["short"] == "2026-11-25T14:00:00Z"
    old = tokens.create("leaky", "admin", ["*"], now=NOW)
    tokens.rotate("leaky", "leaky-2", dt.timedelta(0), now=NOW)
    with pytest.raises(Unauthenticated) as err:
        TokenRegistry(token_file=tokens, clock=lambda: NOW).authenticate(old)
    assert err.value.reason == "TOKEN_REVOKED"


@pytest.mark.parametrize("name, new_name, overlap, field", [
    ("missing", "x-2", dt.timedelta(days=1), "name"),
    ("tb-acme", "other", dt.timedelta(days=1), "new_name"),  # taken
    ("tb-acme", "tb-acme-2", dt.timedelta(days=-1), "overlap"),
    ("gone", "gone-2", dt.timedelta(days=1), "name"),  # revoked tokens are not rotated
])
def test_a_bad_rotation_names_the_field_and_leaves_the_file_alone(tmp_path, name, new_name, overlap, field):
    tokens = TokenFile(tmp_path / "tokens.yaml")
    tokens.create("tb-acme", "submitter", ["acme"], now=NOW)
    tokens.create("other", "reader", ["acme"], now=NOW)
    tokens.create("gone", "reader", ["acme"], now=NOW)
    tokens.revoke("gone")
    before = (tmp_path / "tokens.yaml").read_bytes()
    with pytest.raises(InvalidArgument) as err:
        tokens.rotate(name, new_name, overlap, now=NOW)
    assert err.value.field == field
    assert (tmp_path / "tokens.yaml").read_bytes() == before


def test_the_cli_rotates_and_prints_the_new_secret_once(tmp_path, capsys):
    path = tmp_path / "tokens.yaml"
    old = TokenFile(path).create("tb-acme", "submitter", ["acme"])
    assert cli.main(["token", "rotate", "tb-acme", "--new-name", "tb-acme-2", "--overlap", "12h", "--file", str(path)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["name"] == "tb-acme-2" and printed["replaces"] == "tb-acme" and not printed["old_token_revoked"]
    until = dt.datetime.fromisoformat(printed["old_token_accepted_until"].replace("Z", "+00:00"))
    assert dt.timedelta(hours=11, minutes=59) < until - dt.datetime.now(dt.timezone.utc) <= dt.timedelta(hours=12)
    registry = TokenRegistry(token_file=TokenFile(path))
    assert registry.authenticate(printed["token"]).name == "tb-acme-2"
    assert registry.authenticate(old).name == "tb-acme"
    assert printed["token"] not in path.read_text()
