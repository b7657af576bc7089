"""The local API server's replacements for two chalice helpers
(``tools.devstack.chalice_shortcuts``) answer exactly as chalice's do."""

from __future__ import annotations

import chalice.app
import pytest
from chalice.app import CaseInsensitiveMapping

from tools.devstack import chalice_shortcuts

MATCH = chalice.app._matches_content_type
BINARY = list(chalice.app.Chalice(app_name="t").api.binary_types)
TYPES = [["application/json"], BINARY, ["*/*"], ["Application/JSON", "text/plain"], []]
HEADERS = [
    "application/json",
    "Application/JSON; charset=utf-8",
    "text/plain",
    "*/*",
    "image/png, application/json;q=0.9",
    "application/octet-stream",
    "",
    "a;b,c",
]


@pytest.mark.parametrize("header", HEADERS)
@pytest.mark.parametrize("types", TYPES)
def test_remembered_matches_are_chalices(header: str, types: list[str]) -> None:
    remembered = chalice_shortcuts.remembering(MATCH)
    for _ in range(2):
        assert remembered(header, types) is MATCH(header, types)


def test_the_memory_is_bounded() -> None:
    calls: list[str] = []

    def match(content_type: str, valid: list[str]) -> bool:
        calls.append(content_type)
        return content_type == "a"

    remembered = chalice_shortcuts.remembering(match)
    for i in range(chalice_shortcuts._REMEMBERED + 10):
        assert remembered(str(i), ["x"]) is False
    assert remembered("a", ["x"]) is True and remembered("a", ["x"]) is True
    assert calls.count("a") == 1


def test_header_lookups_answer_as_mapping_get() -> None:
    headers = CaseInsensitiveMapping({"Content-Type": "application/json", "X-API-Key": "k", "Empty": ""})
    for name in ["content-type", "CONTENT-TYPE", "x-api-key", "empty", "missing"]:
        assert chalice_shortcuts._mapping_get(headers, name) == headers.get(name)
        assert chalice_shortcuts._mapping_get(headers, name, "d") == headers.get(name, "d")
    with pytest.raises(AttributeError):
        chalice_shortcuts._mapping_get(headers, None)  # type: ignore[arg-type]  # as Mapping.get: no .lower()


def test_install_replaces_both_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(chalice.app, "_matches_content_type", MATCH)
    monkeypatch.setattr(CaseInsensitiveMapping, "get", CaseInsensitiveMapping.get)
    chalice_shortcuts.install()
    installed = chalice.app._matches_content_type
    chalice_shortcuts.install()
    assert chalice.app._matches_content_type is installed is not MATCH
    assert CaseInsensitiveMapping({"A": 1}).get("a") == 1
