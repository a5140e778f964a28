"""What every subcommand shares: user errors as one line and a non-zero exit, seeding."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import TypeVar

import typer

from segcft.utils import InputError

F = TypeVar("F", bound=Callable)


def user_errors(func: F) -> F:
    """Report :class:`InputError` as one ``error:`` line on stderr and exit with status 2."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except InputError as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(2) from e

    return wrapper  # type: ignore[return-value]


def parse_overrides(pairs: list[str]) -> dict:
    """``KEY=VALUE`` config overrides; VALUE is read as JSON when it parses, else kept as text."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InputError(f"override {pair!r} is not KEY=VALUE")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out
