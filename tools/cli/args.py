"""Argument types of ``python -m tools.cli``: a value it cannot use is a usage error
(exit 2, one line naming the option), not a traceback from deep inside a command."""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable
from typing import Any

MAX_NAME = 200


def tenant(text: str) -> str:
    """A tenant name: not empty (``--tenant ""`` from an unset shell variable must not
    mean every tenant), printable, at most 200 characters."""
    if not text.strip():
        raise argparse.ArgumentTypeError("a tenant name cannot be empty (leave --tenant out for every tenant)")
    return printable(text, "a tenant name")


def printable(text: str, what: str) -> str:
    if len(text) > MAX_NAME:
        raise argparse.ArgumentTypeError(f"{what} is at most {MAX_NAME} characters")
    if not text.isprintable():
        raise argparse.ArgumentTypeError(f"{what} cannot hold control characters")
    try:
        text.encode()
    except UnicodeEncodeError:
        raise argparse.ArgumentTypeError(f"{what} is not valid text (check the shell's encoding)") from None
    return text


def key_name(text: str) -> str:
    return printable(text, "a key name") if text else text


def number(lo: float, hi: float, *, open_lo: bool = False) -> Callable[[str], float]:
    """A finite number from ``lo`` (excluded with ``open_lo``) to ``hi``: seconds, days."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not math.isfinite(value) or value < lo or (open_lo and value == lo) or value > hi:
            low = f"more than {lo:g}" if open_lo else f"at least {lo:g}"
            raise argparse.ArgumentTypeError(f"must be a number {low} and at most {hi:g}; got {text!r}")
        return value

    return parse


def json_object(text: str) -> Any:
    """A JSON value as the API takes it: no NaN or Infinity (they have no JSON form)."""

    def refuse(constant: str) -> Any:
        raise argparse.ArgumentTypeError(f"{constant} is not JSON; numbers must be finite")

    try:
        return json.loads(text, parse_constant=refuse)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {exc}") from None
