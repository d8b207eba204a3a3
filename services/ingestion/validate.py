"""Field checks for a submitted idea: canonical text, limits and sanity of numbers.

Every failure is an InvalidArgument whose `field` is the dotted path in the request's own shape
("business_idea.title", "idea.metadata.estimated_market_size") and whose message states the rule
without echoing the value (the value may hold personal data, and errors are logged).

The seeds set no limits, so these are ours, chosen to fit a founder's pitch and refuse what can
only be a mistake or abuse: titles 200 characters, descriptions 10-10,000, other free text 1,000,
features 50 of at most 200 characters, market figures at most 1e14 USD/year (about world GDP),
build time 0-120 months, team coverage 0-1.
"""

from __future__ import annotations

import math
import re
import unicodedata

from smvm.errors import InvalidArgument

TITLE_MAX = 200
DESCRIPTION_MIN = 10
DESCRIPTION_MAX = 10_000
SHORT_TEXT_MAX = 1_000
DOMAIN_MAX = 64
SUBMITTER_MAX = 254  # longest valid e-mail address
FEATURE_MAX = 200
FEATURES_MAX_COUNT = 50
MARKET_MAX_USD = 1e14
BUILD_MONTHS_MAX = 120.0
URGENCIES = ("low", "medium", "high", "critical")
CURRENCY_CODE = re.compile(r"[A-Z]{3}")

_KEEP_CONTROLS = {"\n", "\t"}


def _drop_invisible(text: str) -> str:
    """Remove control and format characters (zero-width spaces, BOM, bidi overrides) but keep newlines/tabs."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return "".join(
        ch for ch in text
        if ch in _KEEP_CONTROLS or unicodedata.category(ch) not in ("Cc", "Cf", "Cs", "Co", "Cn")
    )


def clean_line(text: str) -> str:
    """One-line canonical text: NFC, invisible characters removed, whitespace runs -> one space."""
    return unicodedata.normalize("NFC", " ".join(_drop_invisible(text).split()))


def clean_block(text: str) -> str:
    """Multi-line canonical text: each line as clean_line, at most one blank line between paragraphs."""
    lines = [" ".join(line.split()) for line in _drop_invisible(text).splitlines()]
    out: list[str] = []
    for line in lines:
        if line or (out and out[-1]):
            out.append(line)
    return unicodedata.normalize("NFC", "\n".join(out).strip())


def text(field: str, value: str, *, max_len: int, min_len: int = 0, required: bool = False,
         multiline: bool = False) -> str:
    """Cleaned text within [min_len, max_len] characters; empty only when not required."""
    cleaned = clean_block(value) if multiline else clean_line(value)
    if not cleaned:
        if required:
            raise InvalidArgument(field, "is required and must not be blank", reason="REQUIRED")
        return ""
    if len(cleaned) < min_len:
        raise InvalidArgument(field, f"must be at least {min_len} characters", reason="TOO_SHORT")
    if len(cleaned) > max_len:
        raise InvalidArgument(field, f"must be at most {max_len} characters (got {len(cleaned)})", reason="TOO_LONG")
    return cleaned


def number(field: str, value: float, *, low: float, high: float, low_open: bool = False) -> float:
    """A finite number in [low, high] ((low, high] when low_open)."""
    if not math.isfinite(value):
        raise InvalidArgument(field, "must be a finite number", reason="NOT_FINITE")
    if value < low or (low_open and value == low):
        rule = "greater than" if low_open else "at least"
        raise InvalidArgument(field, f"must be {rule} {low:g}", reason="OUT_OF_RANGE")
    if value > high:
        raise InvalidArgument(field, f"must be at most {high:g}", reason="OUT_OF_RANGE")
    return float(value)


def market_figure(field: str, value: float) -> float:
    return number(field, value, low=0.0, high=MARKET_MAX_USD)


def market_consistency(prefix: str, tam: float | None, sam: float | None, som: float | None) -> None:
    """TAM >= SAM >= SOM among the figures given; the smaller figure's field is named."""
    if tam is not None and sam is not None and sam > tam:
        raise InvalidArgument(f"{prefix}.estimated_sam", "must not exceed estimated_tam (SAM <= TAM)",
                              reason="INCONSISTENT_MARKET_SIZE")
    if sam is not None and som is not None and som > sam:
        raise InvalidArgument(f"{prefix}.estimated_som", "must not exceed estimated_sam (SOM <= SAM)",
                              reason="INCONSISTENT_MARKET_SIZE")
    if tam is not None and som is not None and som > tam:
        raise InvalidArgument(f"{prefix}.estimated_som", "must not exceed estimated_tam (SOM <= TAM)",
                              reason="INCONSISTENT_MARKET_SIZE")


def features(field: str, values) -> tuple[list[str], int]:
    """Cleaned features in order, case-insensitive duplicates dropped; returns (features, duplicates)."""
    if len(values) > FEATURES_MAX_COUNT:
        raise InvalidArgument(field, f"must list at most {FEATURES_MAX_COUNT} features", reason="TOO_MANY")
    seen: set[str] = set()
    out: list[str] = []
    for i, value in enumerate(values):
        feature = text(f"{field}[{i}]", value, max_len=FEATURE_MAX, required=True)
        key = feature.casefold()
        if key not in seen:
            seen.add(key)
            out.append(feature)
    return out, len(values) - len(out)


def urgency(field: str, value: str) -> str:
    cleaned = clean_line(value).lower()
    if cleaned and cleaned not in URGENCIES:
        raise InvalidArgument(field, f"must be one of {', '.join(URGENCIES)}", reason="UNKNOWN_VALUE")
    return cleaned


def currency_code(field: str, value: str) -> str:
    code = clean_line(value).upper()
    if not CURRENCY_CODE.fullmatch(code):
        raise InvalidArgument(field, "must be a three-letter ISO 4217 code such as USD", reason="BAD_CURRENCY")
    return code
