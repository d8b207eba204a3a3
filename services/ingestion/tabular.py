"""CSV, JSON and JSONL bytes -> numbered records (dicts), or InvalidArgument for a file that cannot be read.

Every adapter reads through here, so the three formats mean the same thing:
- CSV: a header row (delimiter ',', ';' or tab, whichever the header uses most), then one record
  per row; row numbers are 1-based data rows (header excluded).
- JSON: an array of objects, or an object with one array under "rows" / "records" / "data"; row =
  1-based index in that array.
- JSONL: one object per non-blank line; row = 1-based line number.
Anything that is not a well-formed file of objects is refused as a whole (never half-read): a CSV row
with more cells than the header, a JSONL line that is not an object, bytes that are not UTF-8.
"""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from smvm.errors import InvalidArgument

FORMATS = ("csv", "json", "jsonl")
MAX_BYTES = 8 * 1024 * 1024
MAX_ROWS = 100_000
_EXTENSIONS = {".csv": "csv", ".json": "json", ".jsonl": "jsonl", ".ndjson": "jsonl"}
_JSON_CONTAINERS = ("rows", "records", "data")
CSV_DELIMITERS = (",", ";", "\t")

Record = tuple[int, dict[str, Any]]


def format_of(fmt: str, source_name: str) -> str:
    """The declared format, else the one the file name's extension says; InvalidArgument on `format`."""
    declared = fmt.strip().lower()
    if declared:
        if declared not in FORMATS:
            raise InvalidArgument("format", f"must be one of {', '.join(FORMATS)}", reason="UNKNOWN_VALUE")
        return declared
    name = source_name.strip().lower()
    for ext, found in _EXTENSIONS.items():
        if name.endswith(ext):
            return found
    raise InvalidArgument("format", f"is required when the file name has no {', '.join(_EXTENSIONS)} extension",
                          reason="REQUIRED")


def _key(name: Any) -> str:
    return str(name).strip().lower().replace(" ", "_").replace("-", "_")


def _normalise_keys(obj: dict[str, Any]) -> dict[str, Any]:
    return {_key(k): v for k, v in obj.items()}


def read_records(content: bytes, fmt: str) -> list[Record]:
    """Numbered records with lower_snake_case keys; InvalidArgument on `content` for an unreadable file."""
    if len(content) > MAX_BYTES:
        raise InvalidArgument("content", f"must be at most {MAX_BYTES} bytes", reason="TOO_LARGE")
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidArgument("content", f"is not UTF-8 text (byte {exc.start})", reason="BAD_ENCODING") from None
    if fmt == "csv":
        records = _csv(text)
    elif fmt == "json":
        records = _json(text)
    elif fmt == "jsonl":
        records = _jsonl(text)
    else:  # format_of() has already refused it
        raise InvalidArgument("format", f"must be one of {', '.join(FORMATS)}", reason="UNKNOWN_VALUE")
    if not records:
        raise InvalidArgument("content", "holds no data rows", reason="EMPTY")
    if len(records) > MAX_ROWS:
        raise InvalidArgument("content", f"must hold at most {MAX_ROWS} rows (got {len(records)})", reason="TOO_MANY")
    return records


def _delimiter(text: str) -> str:
    """',' unless the header line holds more ';' or tabs (European exports use ';'). Judged on the
    header alone: data cells may hold separators (a feature list 'a; b'), column names do not."""
    header = text.lstrip("\n").split("\n", 1)[0]
    counts = {d: header.count(d) for d in CSV_DELIMITERS}
    return max(CSV_DELIMITERS, key=lambda d: (counts[d], d == ","))


def _csv(text: str) -> list[Record]:
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=_delimiter(text))
    try:
        rows = list(reader)
    except csv.Error as exc:
        raise InvalidArgument("content", f"is not valid CSV: {exc}", reason="BAD_CSV") from None
    rows = [r for r in rows if any(cell.strip() for cell in r)]
    if not rows:
        return []
    header = [_key(h) for h in rows[0]]
    if any(not h for h in header):
        raise InvalidArgument("content", "CSV header has an empty column name", reason="BAD_CSV")
    if len(set(header)) != len(header):
        raise InvalidArgument("content", "CSV header repeats a column name", reason="BAD_CSV")
    out: list[Record] = []
    for i, row in enumerate(rows[1:], start=1):
        if len(row) > len(header):
            raise InvalidArgument("content", f"CSV row {i} has {len(row)} cells, the header {len(header)}",
                                  reason="BAD_CSV")
        out.append((i, {h: (row[j].strip() if j < len(row) else "") for j, h in enumerate(header)}))
    return out


def _json(text: str) -> list[Record]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidArgument("content", f"is not valid JSON (line {exc.lineno}, column {exc.colno})",
                              reason="BAD_JSON") from None
    except RecursionError:
        raise InvalidArgument("content", "nests too deeply to be a table", reason="BAD_JSON") from None
    if isinstance(data, dict):
        found = [k for k in _JSON_CONTAINERS if isinstance(data.get(k), list)]
        if not found:
            raise InvalidArgument("content", f"JSON object must hold an array under one of {', '.join(_JSON_CONTAINERS)}",
                                  reason="BAD_JSON")
        data = data[found[0]]
    if not isinstance(data, list):
        raise InvalidArgument("content", "JSON must be an array of objects", reason="BAD_JSON")
    out: list[Record] = []
    for i, item in enumerate(data, start=1):
        if not isinstance(item, dict):
            raise InvalidArgument("content", f"JSON record {i} is not an object", reason="BAD_JSON")
        out.append((i, _normalise_keys(item)))
    return out


def _jsonl(text: str) -> list[Record]:
    out: list[Record] = []
    for i, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except (json.JSONDecodeError, RecursionError):
            raise InvalidArgument("content", f"JSONL line {i} is not valid JSON", reason="BAD_JSONL") from None
        if not isinstance(item, dict):
            raise InvalidArgument("content", f"JSONL line {i} is not an object", reason="BAD_JSONL")
        out.append((i, _normalise_keys(item)))
    return out
