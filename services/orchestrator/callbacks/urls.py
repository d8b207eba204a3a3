"""Which callback URLs SMVM will call: http(s), no credentials, and outside dev an allow-listed host.

The allow-list keeps a caller from pointing SMVM's callbacks (which carry signed run data) at hosts
inside the cluster (SSRF). Entries are host names, matched exactly, or "*.example.com" for any
sub-domain of example.com.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from smvm.errors import InvalidArgument


def parse_allow_list(text: str) -> tuple[str, ...]:
    return tuple(h.strip().lower() for h in text.split(",") if h.strip())


def host_allowed(host: str, allow_list: tuple[str, ...]) -> bool:
    host = host.lower().rstrip(".")
    for entry in allow_list:
        if entry.startswith("*."):
            if host.endswith(entry[1:]) and host != entry[2:]:
                return True
        elif host == entry:
            return True
    return False


def check_callback_url(field: str, url: str, *, profile: str = "dev", allow_list: tuple[str, ...] = ()) -> str:
    """`url` if SMVM may call it, else InvalidArgument naming `field`; "" passes (no callbacks)."""
    if not url:
        return ""
    if len(url) > 2048:
        raise InvalidArgument(field, "must be at most 2048 characters")
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise InvalidArgument(field, "is not a valid URL") from None
    if parts.scheme not in ("http", "https") or not host:
        raise InvalidArgument(field, "must be an absolute http(s) URL")
    if parts.username or parts.password:
        raise InvalidArgument(field, "must not carry credentials")
    if parts.fragment:
        raise InvalidArgument(field, "must not carry a fragment")
    if profile != "dev" and not host_allowed(host, allow_list):
        raise InvalidArgument(field, f"host {host!r} is not in the callback allow-list", reason="HOST_NOT_ALLOWED")
    return url
