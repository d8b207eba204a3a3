"""PII detection and masking for free text, before anything is stored or logged.

Detectors run in a fixed order on the progressively masked text (placeholders hold no digits or
'@', so a later detector never re-matches an earlier mask): e-mail, IBAN (mod-97 checked), payment
card (13-19 digits, Luhn checked), national id (US SSN, UK NINO), phone, street address, person
name. Findings keep the kind, the field and a count - never the matched value.

Trade-offs, stated rather than hidden: a phone number must look like one (a leading '+', a
parenthesised area code or at least two separators) so market figures such as "1500000000" or
"1.500.000" are not masked; digit runs that fail Luhn / mod-97 are not cards / IBANs; person names
are found only after an honorific or a cue phrase ("my name is", "contact", "regards,"), since
no language model is used.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Iterable

PLACEHOLDERS: dict[str, str] = {
    "email": "[EMAIL]",
    "iban": "[IBAN]",
    "card_number": "[CARD]",
    "national_id": "[NATIONAL_ID]",
    "phone": "[PHONE]",
    "street_address": "[ADDRESS]",
    "person_name": "[NAME]",
}
KINDS = tuple(PLACEHOLDERS)


def luhn_valid(digits: str) -> bool:
    """Luhn mod-10 check of a digit string (what card numbers satisfy and random runs mostly don't)."""
    if not digits.isdigit() or not digits:
        return False
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def iban_valid(iban: str) -> bool:
    """ISO 13616 check: move the first four characters to the end, letters -> 10..35, mod 97 == 1."""
    s = iban.replace(" ", "").upper()
    if not (15 <= len(s) <= 34) or not s.isascii() or not s.isalnum():
        return False
    rearranged = s[4:] + s[:4]
    return int("".join(str(int(c, 36)) for c in rearranged)) % 97 == 1


_EMAIL = re.compile(r"(?<![\w.+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?\b", re.IGNORECASE)
# A maximal run of digit groups joined by single spaces or dashes; cards are looked for inside it.
_DIGIT_RUN = re.compile(r"(?<!\w)(?<!\d[.,])\d+(?:[ -]\d+)*(?!\w|[.,]\d)")
_SSN = re.compile(r"(?<![\w-])(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}(?![\w-])")
_NINO = re.compile(r"\b(?!BG|GB|KN|NK|NT|TN|ZZ)[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z] ?\d{2} ?\d{2} ?\d{2} ?[A-D]\b")
_PHONE = re.compile(r"(?<![\w+.,/-])(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,5}\)[ .-]?)?\d{1,12}(?:[ .-]\d{1,8}){0,5}(?![\w]|[.,/-]\d)")
_YEAR_OR_DATE = re.compile(r"(?:19|20)\d\d(?:[ .-](?:19|20)\d\d)*|(?:19|20)\d\d[.-]\d{1,2}[.-]\d{1,2}|\d{1,2}[.-]\d{1,2}[.-](?:19|20)\d\d")
_STREET_SUFFIX = (
    r"(?:Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Lane|Ln|Drive|Dr|Court|Ct|Way|Place|Pl|Terrace|"
    r"Square|Sq|Parkway|Pkwy|Highway|Hwy|Close|Crescent)"
)
_STREET_EN = re.compile(
    r"\b\d{1,5}[A-Za-z]?,? (?:[A-Z][\w'-]*\.? ){1,4}" + _STREET_SUFFIX
    + r"\b\.?(?:,? (?:Apt|Apartment|Suite|Unit|#) ?[\w-]+)?"
)
_STREET_EU = re.compile(
    r"\b[A-ZÄÖÜ][\wäöüß-]*(?:straße|strasse|str\.|weg|gasse|platz|allee|laan|straat|gade|gatan|vej)"
    r" \d{1,4}[a-z]?\b"
)
_NAME_WORD = r"[A-Z][a-z'’-]+(?:-[A-Z][a-z'’]+)?"
_NAME_AFTER_HONORIFIC = re.compile(
    r"\b(?:Mr|Mrs|Ms|Miss|Mx|Dr|Prof|Sir|Madam)\.? (" + _NAME_WORD + r"(?: " + _NAME_WORD + r"){0,2})"
)
_NAME_AFTER_CUE = re.compile(
    r"(?:\b(?:[Mm]y name is|[Nn]ame:|[Cc]ontact(?: person)?:|[Ss]igned,|[Rr]egards,|[Ss]incerely,|[Cc]heers,) ?)"
    r"(" + _NAME_WORD + r"(?: " + _NAME_WORD + r"){0,2})"
)
# Weaker cues ("contact Jane Doe", "founded by Jane Doe") need a first and a last name.
_FULL_NAME_AFTER_CUE = re.compile(
    r"(?:\b(?:[Cc]ontact|[Ff]ounded by|[Ss]ubmitted by|[Ww]ritten by|[Cc]reated by|[Aa]sk for) )"
    r"(" + _NAME_WORD + r"(?: " + _NAME_WORD + r"){1,2})"
)


@dataclass(frozen=True)
class MaskResult:
    text: str
    counts: dict[str, int]  # kind -> number of masked spans


def _digits(s: str) -> str:
    return "".join(c for c in s if c.isdigit())


def _is_phone(candidate: str) -> bool:
    digits = _digits(candidate)
    if not 7 <= len(digits) <= 15:
        return False
    if _YEAR_OR_DATE.fullmatch(candidate):
        return False
    has_plus, has_parens = candidate.startswith("+"), "(" in candidate
    groups = re.split(r"[ .-]+", candidate.replace("(", "").replace(")", "").lstrip("+"))
    if not (has_plus or has_parens):
        if len(groups) < 3:
            return False
        # 1.500.000 / 12 000 000: a number written with thousands separators, not a phone.
        if 1 <= len(groups[0]) <= 3 and all(len(g) == 3 for g in groups[1:]):
            return False
    return True


def _sub(pattern: re.Pattern, text: str, kind: str, keep: Callable[[re.Match], bool] | None = None,
         group: int = 0) -> tuple[str, int]:
    """Replace matches (or one group of them) that `keep` accepts with the kind's placeholder."""
    count = 0

    def repl(m: re.Match) -> str:
        nonlocal count
        if keep is not None and not keep(m):
            return m.group(0)
        count += 1
        if group == 0:
            return PLACEHOLDERS[kind]
        start, end = m.span(group)
        whole_start = m.start(0)
        s = m.group(0)
        return s[: start - whole_start] + PLACEHOLDERS[kind] + s[end - whole_start:]

    return pattern.sub(repl, text), count


def _mask_cards(text: str) -> tuple[str, int]:
    """Mask card numbers inside digit runs: the longest group-aligned window of 13-19 digits that
    passes Luhn, left to right ("ref 1 4111 1111 1111 1111" masks the last four groups)."""
    count = 0

    def repl(m: re.Match) -> str:
        nonlocal count
        parts = re.split(r"([ -])", m.group(0))  # digits, sep, digits, ...
        groups, seps = parts[0::2], parts[1::2]
        out, i = [], 0
        while i < len(groups):
            best = None
            for j in range(i + 1, len(groups) + 1):
                digits = "".join(groups[i:j])
                if len(digits) > 19:
                    break
                if len(digits) >= 13 and digits.strip("0") and luhn_valid(digits):
                    best = j
            if best is None:
                out.append(groups[i])
                i += 1
            else:
                out.append(PLACEHOLDERS["card_number"])
                count += 1
                i = best
            if i < len(groups):
                out.append(seps[i - 1])
        return "".join(out)

    return _DIGIT_RUN.sub(repl, text), count


def _pattern(kind: str, pattern: re.Pattern, keep: Callable[[re.Match], bool] | None = None, group: int = 0):
    return kind, lambda text: _sub(pattern, text, kind, keep, group)


# In this order (see the module docstring): each sees the text with earlier kinds already masked.
_DETECTORS: tuple[tuple[str, Callable[[str], tuple[str, int]]], ...] = (
    _pattern("email", _EMAIL),
    _pattern("iban", _IBAN, lambda m: iban_valid(m.group(0))),
    ("card_number", _mask_cards),
    _pattern("national_id", _SSN),
    _pattern("national_id", _NINO),
    _pattern("phone", _PHONE, lambda m: _is_phone(m.group(0))),
    _pattern("street_address", _STREET_EN),
    _pattern("street_address", _STREET_EU),
    _pattern("person_name", _NAME_AFTER_HONORIFIC, group=1),
    _pattern("person_name", _NAME_AFTER_CUE, group=1),
    _pattern("person_name", _FULL_NAME_AFTER_CUE, group=1),
)


def mask(text: str) -> MaskResult:
    """The text with every detected PII span replaced by its placeholder, and counts per kind."""
    counts: Counter[str] = Counter()
    for kind, detector in _DETECTORS:
        text, n = detector(text)
        if n:
            counts[kind] += n
    return MaskResult(text, {k: counts[k] for k in KINDS if counts[k]})


def detect(text: str) -> dict[str, int]:
    """Counts per kind of the PII in `text` (same detectors as `mask`)."""
    return mask(text).counts


def mask_fields(fields: Iterable[tuple[str, str]]) -> tuple[dict[str, str], list[tuple[str, str, int]]]:
    """Mask each (field, text); return masked texts by field and (field, kind, count) findings, sorted."""
    masked: dict[str, str] = {}
    findings: list[tuple[str, str, int]] = []
    for field, text in fields:
        result = mask(text)
        masked[field] = result.text
        findings.extend((field, kind, n) for kind, n in result.counts.items())
    return masked, sorted(findings)
