"""Building the console's answers (JSON errors, pages, redirects, cookies) and
reading a JSON body."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from aiohttp import web

STATIC = Path(__file__).parent / "static"


def _error(status: int, message: str, **extra: Any) -> web.Response:
    return web.json_response({"error": message, **extra}, status=status)


def _set_cookie(
    response: web.StreamResponse,
    request: web.Request,
    name: str,
    value: str,
    *,
    path: str = "/",
    max_age: int | None = None,
) -> None:
    response.set_cookie(
        name,
        value,
        path=path,
        max_age=max_age,
        httponly=True,
        samesite="Strict",
        secure=request.secure,
    )


def _page(name: str, **values: str) -> str:
    """A static HTML page with {{key}} placeholders replaced by escaped values."""
    text = (STATIC / name).read_text(encoding="utf-8")
    for key, value in values.items():
        text = text.replace("{{" + key + "}}", html.escape(value, quote=True))
    return text


def _redirect(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location})


def _html(text: str, status: int = 200) -> web.Response:
    return web.Response(text=text, status=status, content_type="text/html", charset="utf-8")


async def _json_body(request: web.Request) -> dict[str, Any] | None:
    """The JSON object body ({} when empty), or None when it is not one."""
    if not request.can_read_body:
        return {}
    try:
        body = await request.json()
    except (ValueError, UnicodeDecodeError):
        return None
    return body if isinstance(body, dict) else None
