"""flashwire.service.tokens: what each role may do, in which editions."""

from __future__ import annotations

from flashwire.service.tokens import Token


def _token(role: str, *editions: str) -> Token:
    return Token(
        id="abc",
        name="Amal",
        role=role,
        editions=editions,
        secret_sha256="0" * 64,
        created_at="2026-01-01T00:00:00Z",
    )


def test_token_may_follows_role_and_edition_scope() -> None:
    """Editors post and correct, chiefs and admins also retract, only within their editions ('*' = all)."""
    editor = _token("editor", "en")
    assert editor.may("post", "en") and editor.may("correct", "en")
    assert not editor.may("retract", "en")
    assert not editor.may("post", "ar")

    chief = _token("chief", "en", "es")
    assert all(chief.may(action, e) for action in ("post", "correct", "retract") for e in ("en", "es"))
    assert not chief.may("retract", "ar")

    admin = _token("admin", "*")
    assert all(admin.may(action, e) for action in ("post", "correct", "retract") for e in ("en", "ar", "es"))
    roving_editor = _token("editor", "*")
    assert roving_editor.may("post", "ar") and not roving_editor.may("retract", "ar")

    assert not _token("viewer", "*").may("post", "en")  # unknown role: nothing
    assert not admin.may("delete", "en")  # unknown action: nothing
    assert "secret_sha256" not in editor.record().model_dump()
