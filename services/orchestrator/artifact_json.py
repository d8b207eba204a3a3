"""The run directory's JSON artifacts, spelled exactly as before, in a fraction of the time.

A default run's simulation.result.json holds 1,000 samples of 92 numbers each (2.9 M characters):
`json_format.MessageToDict` converts every number through its per-field Python code and
`json.dumps(indent=2)` encodes it in pure Python (the C encoder has no indentation), together about
180 ms of the run's critical path on an idle 2-core machine. The two functions here produce the same
objects and the same text:

- `message_dict(m)` is `MessageToDict(m, preserving_proto_field_name=True)`: repeated fields of plain
  number messages (doubles, integers, bools: the samples) are converted here, with the same rules
  (int64 as a string, NaN and infinities as "NaN" / "Infinity" / "-Infinity"); everything else is
  left to json_format. Keys keep json_format's order (field number).
- `dumps(obj)` is `json.dumps(obj, indent=2, default=str)`: a list of floats is joined in C
  (`float.__repr__`, json's own spelling), everything else follows json's encoder rule for rule.

tests/orchestrator/test_artifact_json.py holds both to their references, byte for byte.
"""

from __future__ import annotations

import math
from json.encoder import encode_basestring_ascii
from typing import Any

from google.protobuf import descriptor, json_format

_INDENT = "  "
_float_repr = float.__repr__
_int_repr = int.__repr__

_CPP = descriptor.FieldDescriptor
_SAME = (_CPP.CPPTYPE_INT32, _CPP.CPPTYPE_UINT32)  # json_format writes these as they are
_AS_TEXT = (_CPP.CPPTYPE_INT64, _CPP.CPPTYPE_UINT64)  # ... and these as strings


# ------------------------------------------------------------------ protobuf -> dict
def message_dict(message) -> dict[str, Any]:
    """`json_format.MessageToDict(message, preserving_proto_field_name=True)`, faster for repeated
    fields of plain number messages."""
    plain = [field for field, _ in message.ListFields() if _repeated_plain(field)]
    if not plain:
        return json_format.MessageToDict(message, preserving_proto_field_name=True)
    rest = type(message)()
    rest.CopyFrom(message)
    for field in plain:
        rest.ClearField(field.name)
    out = json_format.MessageToDict(rest, preserving_proto_field_name=True)
    for field in plain:
        out[field.name] = [_plain_dict(item) for item in getattr(message, field.name)]
    number = {field.name: field.number for field in message.DESCRIPTOR.fields}
    return dict(sorted(out.items(), key=lambda item: number[item[0]]))


def _repeated_plain(field) -> bool:
    """A repeated message field whose messages hold only numbers and bools (no maps, no nesting)."""
    if not field.is_repeated or field.cpp_type != _CPP.CPPTYPE_MESSAGE or field.message_type.GetOptions().map_entry:
        return False
    return all(_plain(f) for f in field.message_type.fields) and not field.message_type.full_name.startswith("google.protobuf.")


def _plain(field) -> bool:
    return field.cpp_type in (_CPP.CPPTYPE_DOUBLE, _CPP.CPPTYPE_BOOL, *_SAME, *_AS_TEXT) and not field.is_extension


def _plain_dict(message) -> dict[str, Any]:
    out = {}
    for field, value in message.ListFields():
        if field.is_repeated:
            out[field.name] = _doubles(value) if field.cpp_type == _CPP.CPPTYPE_DOUBLE else [_scalar(field, v) for v in value]
        else:
            out[field.name] = _scalar(field, value)
    return out


def _doubles(values) -> list:
    out = list(values)
    if not all(map(math.isfinite, out)):
        out = [_double(v) for v in out]
    return out


def _double(value: float):
    if math.isinf(value):
        return "-Infinity" if value < 0.0 else "Infinity"
    if math.isnan(value):
        return "NaN"
    return value


def _scalar(field, value):
    cpp = field.cpp_type
    if cpp == _CPP.CPPTYPE_DOUBLE:
        return _double(value)
    if cpp == _CPP.CPPTYPE_BOOL:
        return bool(value)
    if cpp in _AS_TEXT:
        return str(value)
    return value


# ------------------------------------------------------------------ dict -> JSON text
def dumps(obj: Any) -> str:
    """`json.dumps(obj, indent=2, default=str)`, the same text (objects must not contain themselves)."""
    return _encode(obj, 0)


def _floatstr(value: float) -> str:
    if value != value:
        return "NaN"
    if value == math.inf:
        return "Infinity"
    if value == -math.inf:
        return "-Infinity"
    return _float_repr(value)


def _encode(o: Any, level: int) -> str:
    if isinstance(o, str):
        return encode_basestring_ascii(o)
    if o is None:
        return "null"
    if o is True:
        return "true"
    if o is False:
        return "false"
    if isinstance(o, int):
        return _int_repr(o)
    if isinstance(o, float):
        return _floatstr(o)
    if isinstance(o, (list, tuple)):
        return _encode_list(o, level)
    if isinstance(o, dict):
        return _encode_dict(o, level)
    return _encode(str(o), level)  # json.dumps(default=str)


def _encode_list(items, level: int) -> str:
    if not items:
        return "[]"
    inner = "\n" + _INDENT * (level + 1)
    separator = "," + inner
    try:  # a list of floats (and float subclasses), json's own float.__repr__, joined in C
        body = separator.join(map(_float_repr, items))
    except TypeError:
        body = separator.join([_encode(item, level + 1) for item in items])
    else:
        if "n" in body:  # 'nan' or 'inf': no finite float's repr has an n
            body = separator.join(map(_floatstr, items))
    return "[" + inner + body + "\n" + _INDENT * level + "]"


def _encode_dict(items: dict, level: int) -> str:
    if not items:
        return "{}"
    inner = "\n" + _INDENT * (level + 1)
    parts = []
    for key, value in items.items():
        if isinstance(key, str):
            pass
        elif isinstance(key, float):
            key = _floatstr(key)
        elif key is True:
            key = "true"
        elif key is False:
            key = "false"
        elif key is None:
            key = "null"
        elif isinstance(key, int):
            key = _int_repr(key)
        else:
            raise TypeError(f"keys must be str, int, float, bool or None, not {key.__class__.__name__}")
        parts.append(encode_basestring_ascii(key) + ": " + _encode(value, level + 1))
    return "{" + inner + ("," + inner).join(parts) + "\n" + _INDENT * level + "}"
