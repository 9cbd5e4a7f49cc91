"""Console session cookies: sealed with the master key, refused when altered, sealed
under another key, or expired; and the `[console]` settings are validated."""

from __future__ import annotations

import base64
import json
import os
import uuid
from datetime import timedelta

import pytest

from dispatcher.clock import FakeClock
from dispatcher.config import load_config
from dispatcher.console.session import csrf_ok, new_session, seal, unseal
from dispatcher.errors import ConfigError
from dispatcher.secretbox import SecretBox


def test_a_sealed_session_opens_until_it_expires() -> None:
    box, clock = SecretBox(os.urandom(32)), FakeClock()
    session = new_session("dk_secret-key", uuid.uuid4(), clock.now() + timedelta(hours=2))
    value = seal(box, session)
    assert "dk_secret-key" not in value
    assert unseal(box, value, clock.now()) == session
    clock.advance(2 * 3600 - 1)
    assert unseal(box, value, clock.now()) == session
    clock.advance(1)
    assert unseal(box, value, clock.now()) is None


def test_an_altered_or_foreign_cookie_is_no_session() -> None:
    box, clock = SecretBox(os.urandom(32)), FakeClock()
    value = seal(box, new_session("dk_k", uuid.uuid4(), clock.now() + timedelta(hours=1)))
    flipped = value[:20] + ("A" if value[20] != "A" else "B") + value[21:]
    assert unseal(box, flipped, clock.now()) is None
    assert unseal(SecretBox(os.urandom(32)), value, clock.now()) is None
    for junk in ("", "not base64!", "AAAA"):
        assert unseal(box, junk, clock.now()) is None


def test_a_cookie_naming_no_server_session_is_no_session() -> None:
    """Sealed before sessions were recorded on the server: nothing to check it against."""
    box, clock = SecretBox(os.urandom(32)), FakeClock()
    session = new_session("dk_k", uuid.uuid4(), clock.now() + timedelta(hours=1))
    assert unseal(box, seal(box, session), clock.now()) == session
    for sid in (None, "not-a-uuid"):
        fields = {"k": "dk_k", "c": session.csrf, "e": session.expires_ms, "t": None}
        if sid is not None:
            fields["s"] = sid
        blob = box.encrypt(json.dumps(fields), b"dispatcher console session v1")
        assert unseal(box, base64.urlsafe_b64encode(blob).decode(), clock.now()) is None


def test_csrf_tokens_compare_exactly() -> None:
    assert csrf_ok("abc", "abc")
    assert not csrf_ok("abc", "abd") and not csrf_ok("abc", None) and not csrf_ok("", "")


@pytest.mark.parametrize(("key", "value"), [
    ("ACCENT_COLOR", '"red; } body { display: none"'),
    ("LOGO_URL", '"javascript:alert(1)"'),
    ("LOGO_URL", '"https://x.example/a\\" onerror=\\"x"'),
    ("TITLE", '""'),
    ("SESSION_HOURS", "0"),
])
def test_console_settings_are_validated(key: str, value: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(environ={f"DISPATCHER_CONSOLE__{key}": value})
    assert err.value.field == f"console.{key.lower()}"
