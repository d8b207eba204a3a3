"""The token registry and file: hashed storage, roles, scope, expiry, revocation, reload, the CLI."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from smvm import cli
from smvm.auth import (
    ROLE_ACTIONS,
    TokenFile,
    TokenRegistry,
    hash_token,
)
from smvm.config import Settings
from smvm.errors import InvalidArgument, Unauthenticated

NOW = dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.timezone.utc)


def test_a_created_token_is_stored_only_as_its_hash_and_authenticates_with_its_scope(tmp_path):
    tokens = TokenFile(tmp_path / "tokens.yaml")
    secret = tokens.create("tb-acme", "submitter", ["acme", "acme-labs"], now=NOW)
    text = (tmp_path / "tokens.yaml").read_text()
    assert secret not in text and hash_token(secret) in text
    assert oct((tmp_path / "tokens.yaml").stat().st_mode & 0o777) == "0o600"
    principal = TokenRegistry(token_file=tokens).authenticate(secret)
    assert (principal.name, principal.role) == ("tb-acme", "submitter")
    assert principal.sees("acme") and principal.sees("acme-labs") and not principal.sees("globex")
    assert principal.allows("runs.submit") and not principal.allows("audit.read")


def test_expiry_and_revocation_are_honoured_with_their_reasons(tmp_path):
    tokens = TokenFile(tmp_path / "tokens.yaml")
    secret = tokens.create("short", "reader", ["acme"], expires_at=NOW + dt.timedelta(hours=1), now=NOW)
    clock = {"now": NOW}
    registry = TokenRegistry(token_file=tokens, clock=lambda: clock["now"])
    assert registry.authenticate(secret).name == "short"
    clock["now"] = NOW + dt.timedelta(hours=1)
    with pytest.raises(Unauthenticated) as err:
        registry.authenticate(secret)
    assert err.value.reason == "TOKEN_EXPIRED"
    other = tokens.create("other", "reader", ["acme"], now=NOW)
    tokens.revoke("other")  # the registry re-reads the changed file
    with pytest.raises(Unauthenticated) as err:
        registry.authenticate(other)
    assert err.value.reason == "TOKEN_REVOKED"
    for bad in ("", "smvm_not-a-token"):
        with pytest.raises(Unauthenticated) as err:
            registry.authenticate(bad)
        assert err.value.reason == ("MISSING_TOKEN" if not bad else "INVALID_TOKEN")


def test_legacy_tokens_are_admins_of_every_project_and_the_service_token_is_the_mesh():
    registry = TokenRegistry.from_settings(Settings(profile="dev", api_tokens="ops-1", service_token="mesh-secret"))
    for legacy in ("ops-1", "dev-admin-token"):
        principal = registry.authenticate(legacy)
        assert principal.role == "admin" and principal.all_projects and principal.name.startswith("api-token:")
    service = registry.authenticate("mesh-secret")
    assert service.role == "service" and service.allows("rpc.internal") and not service.allows("runs.read")
    test_profile = TokenRegistry.from_settings(Settings(profile="test", api_tokens=""))
    with pytest.raises(Unauthenticated):
        test_profile.authenticate("dev-admin-token")  # only the dev profile accepts it


def test_every_role_has_exactly_its_rights():
    assert ROLE_ACTIONS["reader"] == {"runs.read", "runs.list"}
    assert ROLE_ACTIONS["submitter"] == {"runs.read", "runs.list", "runs.submit", "runs.complete", "runs.finalize"}
    assert ROLE_ACTIONS["service"] == {"rpc.internal"}
    assert ROLE_ACTIONS["admin"] == ROLE_ACTIONS["submitter"] | {"audit.read", "rpc.internal"}


@pytest.mark.parametrize("entry,field", [
    ({"name": "", "sha256": "a" * 64, "role": "reader", "projects": ["p"]}, "tokens[0].name"),
    ({"name": "x", "sha256": "not-hex", "role": "reader", "projects": ["p"]}, "tokens[0].sha256"),
    ({"name": "x", "sha256": "a" * 64, "role": "root", "projects": ["p"]}, "tokens[0].role"),
    ({"name": "x", "sha256": "a" * 64, "role": "reader", "projects": []}, "tokens[0].projects"),
    ({"name": "x", "sha256": "a" * 64, "role": "reader", "projects": "p"}, "tokens[0].projects"),
    ({"name": "x", "sha256": "a" * 64, "role": "reader", "projects": ["p"], "expires_at": "soon"}, "tokens[0].expires_at"),
])
def test_a_broken_token_file_names_the_field(tmp_path, entry, field):
    path = tmp_path / "tokens.json"
    path.write_text(json.dumps({"tokens": [entry]}))
    with pytest.raises(InvalidArgument) as err:
        TokenFile(path).records()
    assert err.value.field == field


def test_duplicate_names_are_refused(tmp_path):
    tokens = TokenFile(tmp_path / "tokens.yaml")
    tokens.create("same", "reader", ["p"])
    with pytest.raises(InvalidArgument) as err:
        tokens.create("same", "admin", ["*"])
    assert err.value.field == "name"
    assert [r.name for r in tokens.records()] == ["same"]  # nothing stored was harmed


def test_the_cli_creates_lists_and_revokes(tmp_path, capsys):
    path = str(tmp_path / "tokens.yaml")
    assert cli.main(["token", "create", "tb-acme", "--role", "reader", "--project", "acme", "--expires-in", "30d",
                     "--file", path]) == 0
    created = json.loads(capsys.readouterr().out)
    assert created["token"].startswith("smvm_") and created["projects"] == ["acme"]
    principal = TokenRegistry(token_file=TokenFile(path)).authenticate(created["token"])
    assert principal.role == "reader"
    assert cli.main(["token", "list", "--file", path]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [t["name"] for t in listed] == ["tb-acme"] and "sha256" not in listed[0] and not listed[0]["revoked"]
    assert cli.main(["token", "revoke", "tb-acme", "--file", path]) == 0
    capsys.readouterr()
    with pytest.raises(Unauthenticated):
        TokenRegistry(token_file=TokenFile(path)).authenticate(created["token"])
    with pytest.raises(SystemExit) as err:
        cli.main(["token", "create", "x", "--role", "reader", "--expires-in", "soon", "--file", path])
    assert "expires_in" in str(err.value)


def test_a_broken_token_file_fails_the_start_not_the_first_request(tmp_path):
    path = tmp_path / "tokens.yaml"
    path.write_text("tokens:\n  - {name: x, sha256: abc, role: reader, projects: [p]}\n")
    with pytest.raises(InvalidArgument) as err:
        TokenRegistry.from_settings(Settings(profile="test", tokens_file=str(path)))
    assert err.value.field == "tokens[0].sha256"


def test_a_token_file_broken_while_running_fails_closed(tmp_path):
    from smvm.errors import Unavailable

    tokens = TokenFile(tmp_path / "tokens.yaml")
    secret = tokens.create("tb", "reader", ["p"])
    registry = TokenRegistry(token_file=tokens)
    assert registry.authenticate(secret).name == "tb"
    (tmp_path / "tokens.yaml").write_text("tokens: [ {broken")
    with pytest.raises(Unavailable) as err:
        registry.authenticate(secret)
    assert err.value.reason == "TOKEN_FILE_UNREADABLE"
