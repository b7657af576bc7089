"""The operator CLI refuses values it cannot use as usage errors (exit 2, one line),
before any connection: a review found tracebacks (NaN, inf, 1e12 days), an empty
--tenant that paused a type for every tenant, and an API key or database password
echoed in an error."""

from __future__ import annotations

import pytest

from tools.cli import main as cli


@pytest.mark.parametrize(
    "argv",
    [
        ["pause", "noop", "--tenant", ""],
        ["resume", "noop", "--tenant", "   "],
        ["paused", "--tenant", "a\x1b[31mb"],
        ["keys", "create", "--tenant", "acme", "--expires-in-days", "nan"],
        ["keys", "create", "--tenant", "acme", "--expires-in-days", "1e12"],
        ["keys", "create", "--tenant", "acme", "--expires-in-days", "0"],
        ["keys", "create", "--tenant", "acme", "--expires-in-days", "-5"],
        ["keys", "create", "--tenant", "acme", "--rate-limit", "inf"],
        ["keys", "create", "--tenant", "acme", "--name", "n" * 201],
        ["keys", "create", "--tenant", "ac\x01me"],
        ["tenants", "set", "", "--weight", "2"],
        ["submit", "noop", "--payload", '{"x": NaN}'],
        ["submit", "noop", "--delay", "inf"],
        ["tail", "--interval", "-1"],
        ["tail", "--since", "nan"],
        ["tail", "--duration", "0"],
    ],
)
def test_a_value_the_cli_cannot_use_is_a_usage_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(argv)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "error: argument" in err and "Traceback" not in err


@pytest.mark.parametrize("key", ["secret-key-0123456789\r", "secret-key-0123456789\n", "sécret-key-0123456789"])
def test_an_api_key_no_http_header_can_carry_is_refused_without_echoing_it(
    key: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TASKLANE_API_KEY", key)
    assert cli.main(["stats", "--api-url", "http://127.0.0.1:9"]) == 2
    assert "key-0123456789" not in capsys.readouterr().err


def test_a_malformed_database_url_is_refused_without_echoing_the_password(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TASKLANE_DATABASE_URL", "postgresql://postgres:S3cret PW@127.0.0.1:9/x")
    assert cli.main(["keys", "list"]) == 2
    err = capsys.readouterr().err
    assert "not a valid connection URL" in err and "S3cret" not in err
