"""Safe wording of outside services' HTTP failures."""

from __future__ import annotations

from callbridge.core.http_errors import error_detail, public_url


def test_public_url_drops_credentials_and_query() -> None:
    assert public_url("https://user:pw@api.example.com:8443/v1/audio?key=sk-1#x") == (
        "https://api.example.com:8443/v1/audio"
    )
    assert public_url("http://[::1]:9000/v1") == "http://[::1]:9000/v1"


def test_error_detail_takes_the_servers_reason() -> None:
    assert error_detail(b'{"error": {"message": "bad  model\\n x"}}') == ": bad model x"
    assert error_detail(b'{"detail": "nope"}') == ": nope"
    assert error_detail(b"plain text") == ": plain text"
    assert error_detail(b"") == ""
    assert error_detail(b'{"error": [1, 2]}') == ": [1, 2]"
    assert len(error_detail(b"x" * 1000)) == 2 + 160
