"""Bad requests reach the client as HTTP 400 with segcft's message, not as a bare 500."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from fastapi import HTTPException

from segcft.utils import InputError


@contextlib.contextmanager
def input_errors_as_http() -> Iterator[None]:
    """Re-raise segcft's :class:`InputError` (it names the bad file, field or value) as HTTP 400."""
    try:
        yield
    except InputError as e:
        raise HTTPException(status_code=400, detail=str(e)) from e
