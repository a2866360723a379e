"""API keys: ``Authorization: Bearer <key>`` checked against every configured key in constant time."""

from __future__ import annotations

import hmac

from fastapi import Request

from functionary.errors import AuthenticationError

__all__ = ["check_auth"]


def check_auth(request: Request, keys: tuple[str, ...]) -> None:
    if not keys:
        return
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip().encode()
    ok = False
    for key in keys:  # compare against every key: the time taken tells nothing
        ok |= hmac.compare_digest(token, key.encode())
    if scheme.lower() != "bearer" or not ok:
        raise AuthenticationError(
            "Incorrect API key provided. Send it as 'Authorization: Bearer <key>'."
        )
