"""API keys on the real serving database (SQLite and PostgreSQL), and `xgbops keys`."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from tests.cli_runner import run_xgbops
from xgbops.database import create_engine_for, migrate
from xgbops.keys import KeyStore, UnknownKey, parse_key, parse_scopes
from xgbops.tables import api_keys


def _secret(text):
    return text[len("xgb_") + 12 + 1 :]  # the secret itself may hold underscores


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path):
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'keys.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    migrate(url)
    engine = create_engine_for(url)
    yield KeyStore(engine)
    engine.dispose()


def test_a_key_is_shown_once_stored_hashed_and_verified(store):
    key, text = store.create("ci pipeline", ["predict"])
    secret = _secret(text)
    assert parse_key(text) == (key.id, secret)
    assert store.verify(text) == key
    with store.engine.connect() as connection:
        row = connection.execute(select(api_keys)).mappings().one()
    assert secret not in str(dict(row)) and row["secret_sha256"] != secret
    assert row["scopes"] == "predict"


def test_every_wrong_key_verifies_to_nobody(store):
    key, text = store.create("someone", ["read"])
    other_secret = ("B" if text[-1] == "A" else "A") * 43
    assert store.verify(f"xgb_{key.id}_{other_secret}") is None  # right id, wrong secret
    assert store.verify(f"xgb_{'0' * 12}_{other_secret}") is None  # unknown id
    assert store.verify(text + "x") is None  # malformed
    assert store.verify("") is None


def test_revoked_keys_stop_verifying_and_stay_listed(store):
    old, old_text = store.create("old", ["predict", "read"])
    new, new_text = store.create("new", ["admin"])
    revoked = store.revoke(old.id)
    assert revoked.revoked_at is not None and not revoked.active
    assert store.revoke(old.id).revoked_at == revoked.revoked_at  # idempotent
    assert store.verify(old_text) is None
    assert store.verify(new_text) == new
    listed = store.list()
    assert [k.id for k in listed] == [new.id, old.id]  # newest first
    assert listed[0].scopes == {"predict", "read", "admin"}  # admin implies the others
    with pytest.raises(UnknownKey):
        store.revoke("f" * 12)


@pytest.mark.parametrize(
    ("name", "scopes", "reason"),
    [
        ("x", ["write"], "unknown scope 'write'"),
        ("x", [], "at least one scope"),
        ("  ", ["read"], "needs a name"),
    ],
)
def test_a_key_needs_a_name_and_known_scopes(store, name, scopes, reason):
    with pytest.raises(ValueError, match=reason):
        store.create(name, scopes)
    assert store.list() == []


def test_scopes_are_checked_and_admin_implies_every_scope():
    assert parse_scopes(["read"]) == {"read"}
    assert parse_scopes(["admin"]) == {"predict", "read", "admin"}
    with pytest.raises(ValueError, match="choose from predict, read, admin"):
        parse_scopes(["root"])


def test_the_keys_command_creates_lists_and_revokes(monkeypatch, capsys, project, tmp_path):
    database = tmp_path / "serving.db"  # a database no API has migrated yet
    monkeypatch.setenv("XGBOPS_DATABASE_URL", f"sqlite:///{database}")
    status, out, err = run_xgbops(
        monkeypatch, capsys, "keys", "create", "--name", "grafana", "--scope", "read", cwd=project
    )
    assert status == 0, err
    text = out.strip()
    key_id = parse_key(text)[0]
    assert "shown only now" in err and key_id in err and text not in err

    status, out, _ = run_xgbops(monkeypatch, capsys, "keys", "list", cwd=project)
    assert status == 0 and key_id in out and "grafana" in out and "active" in out
    assert _secret(text) not in out  # the secret is never shown again

    status, out, _ = run_xgbops(monkeypatch, capsys, "keys", "revoke", key_id, cwd=project)
    assert status == 0 and "revoked" in out
    status, out, _ = run_xgbops(monkeypatch, capsys, "keys", "list", cwd=project)
    assert "revoked 20" in out

    status, _, err = run_xgbops(monkeypatch, capsys, "keys", "revoke", "nope", cwd=project)
    assert status == 2 and "no key has the id 'nope'" in err
    status, _, err = run_xgbops(
        monkeypatch, capsys, "keys", "create", "--name", "x", "--scope", "all", cwd=project
    )
    assert status == 2 and "unknown scope 'all'" in err
