"""The JSON face of the gRPC messages: the proto's field names, enums by short name.

`json_format` does the heavy lifting; on top of it enum values lose their type prefix
(RUN_STATE_RUNNING -> "RUNNING", RECOMMENDATION_GO -> "GO"), 64-bit integers stay numbers, fields
without presence are always printed (a progress of 0 is still a progress), and RunStatus.state is
shown as `status`, the name the integration guide and TractionBuild's gate check use.
"""

from __future__ import annotations

import collections
import json
import re
from typing import Any

from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor
from google.protobuf.message import Message

from smvm.errors import InvalidArgument

# (message full name, proto field name) -> JSON name.
RENAMED_FIELDS = {("smvm.v1.RunStatus", "state"): "status"}


def _snake_upper(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).upper()


def enum_short_name(enum: EnumDescriptor, value_name: str) -> str:
    """RUN_STATE_RUNNING of enum RunState -> RUNNING (values without the prefix stay as they are)."""
    prefix = _snake_upper(enum.name) + "_"
    return value_name[len(prefix):] if value_name.startswith(prefix) else value_name


def _is_well_known(descriptor: Descriptor) -> bool:
    return descriptor.full_name.startswith("google.protobuf.")


def _shorten_enum(enum: EnumDescriptor, value: Any) -> Any:
    return enum_short_name(enum, value) if isinstance(value, str) else value


def _rewrite(descriptor: Descriptor, data: dict) -> dict:
    for field in descriptor.fields:
        if field.name not in data:
            continue
        value = data[field.name]
        message = field.message_type
        if message is not None and message.GetOptions().map_entry:
            inner = message.fields_by_name["value"]
            data[field.name] = {k: _rewrite_value(inner, v) for k, v in value.items()}
        elif field.is_repeated:
            data[field.name] = [_rewrite_value(field, v) for v in value]
        else:
            data[field.name] = _rewrite_value(field, value)
    for (full_name, proto_name), json_name in RENAMED_FIELDS.items():
        if descriptor.full_name == full_name and proto_name in data:
            data = {json_name if k == proto_name else k: v for k, v in data.items()}
    return data


def _rewrite_value(field: FieldDescriptor, value: Any) -> Any:
    if field.enum_type is not None:
        return _shorten_enum(field.enum_type, value)
    if field.message_type is not None and not _is_well_known(field.message_type) and isinstance(value, dict):
        return _rewrite(field.message_type, value)
    return value


def message_to_json(message: Message) -> dict[str, Any]:
    """The JSON object the gateway answers with for `message`."""
    data = json_format.MessageToDict(
        message,
        preserving_proto_field_name=True,
        always_print_fields_with_no_presence=True,
        unquote_int64_if_possible=True,
    )
    return _rewrite(message.DESCRIPTOR, data)


class JsonBodies:
    """The JSON body (bytes, as Starlette's JSONResponse renders it) of messages, memoised by content.

    A run's status is polled many times between changes; its conversion (MessageToDict, the enum and
    name rewrite, json.dumps) cost more than the rest of the gateway's work for the request. The key
    is the message's deterministic serialization, so equal content gives the same body and any
    change gives a new one: the memo can never answer with an older state.
    """

    def __init__(self, size: int = 1024):
        self._size = size
        self._bodies: collections.OrderedDict[tuple[str, bytes], bytes] = collections.OrderedDict()

    def __call__(self, message: Message) -> bytes:
        key = (message.DESCRIPTOR.full_name, message.SerializeToString(deterministic=True))
        body = self._bodies.get(key)
        if body is not None:
            self._bodies.move_to_end(key)
            return body
        body = json.dumps(message_to_json(message), ensure_ascii=False, allow_nan=False, indent=None,
                          separators=(",", ":")).encode("utf-8")
        self._bodies[key] = body
        while len(self._bodies) > self._size:
            self._bodies.popitem(last=False)
        return body

    def __len__(self) -> int:
        return len(self._bodies)


_PARSE_ERROR_AT = re.compile(r" at [A-Za-z0-9_]+\.([A-Za-z0-9_\[\]]+(?:\.[A-Za-z0-9_\[\]]+)*)\.*\Z")


def json_to_message(data: dict[str, Any], message: Message) -> Message:
    """Fill `message` from a validated body (proto field names; enums are not used in requests).

    What the schema lets through but protobuf cannot hold (an unpaired UTF-16 surrogate, say) is an
    InvalidArgument naming the field json_format reports.
    """
    try:
        return json_format.ParseDict(data, message)
    except json_format.ParseError as exc:
        text = str(exc)
        found = _PARSE_ERROR_AT.search(text)
        raise InvalidArgument(found.group(1) if found else "body", text) from None
