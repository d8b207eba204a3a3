"""Pydantic models derived from the proto messages, so the REST schema cannot drift from gRPC.

Request models validate a JSON body before it becomes a message: types, int ranges, finite
numbers, no unknown fields; a failure names the dotted field. Whether a field is *required* is the
orchestrator's business (it raises INVALID_ARGUMENT naming the field), so every field is optional
here. Response models only document what `jsonview.message_to_json` emits (for the OpenAPI
document); responses are not re-validated at run time.
"""

from __future__ import annotations

import datetime as _dt
from typing import Annotated, Any, Literal, Optional

from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor
from pydantic import BaseModel, ConfigDict, Field, create_model

from services.gateway.jsonview import RENAMED_FIELDS, enum_short_name

_INT_RANGES = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}
_FLOATS = (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT)

# Well-known types and how they look in JSON.
_WELL_KNOWN: dict[str, Any] = {
    "google.protobuf.Struct": dict[str, Any],
    "google.protobuf.Value": Any,
    "google.protobuf.ListValue": list[Any],
    "google.protobuf.Timestamp": _dt.datetime,
    "google.protobuf.Duration": str,
}


class _Builder:
    def __init__(self, direction: Literal["request", "response"]):
        self.direction = direction
        self.cache: dict[str, type[BaseModel]] = {}

    def model(self, descriptor: Descriptor, *, exclude: tuple[str, ...] = (), name: str | None = None) -> type[BaseModel]:
        key = name or descriptor.full_name
        if key in self.cache:
            return self.cache[key]
        fields: dict[str, Any] = {}
        for field in descriptor.fields:
            if field.name in exclude:
                continue
            json_name = RENAMED_FIELDS.get((descriptor.full_name, field.name), field.name)
            fields[json_name] = (Optional[self._type(field)], None)
        suffix = "" if self.direction == "request" else "View"
        config = ConfigDict(extra="forbid" if self.direction == "request" else "allow", title=(name or descriptor.name) + suffix)
        model = create_model((name or descriptor.name) + suffix, __config__=config, **fields)
        self.cache[key] = model
        return model

    def _type(self, field: FieldDescriptor) -> Any:
        message = field.message_type
        if message is not None and message.GetOptions().map_entry:
            return dict[str, self._scalar(message.fields_by_name["value"])]
        scalar = self._scalar(field)
        return list[scalar] if field.is_repeated else scalar

    def _scalar(self, field: FieldDescriptor) -> Any:
        if field.message_type is not None:
            known = _WELL_KNOWN.get(field.message_type.full_name)
            if known is not None:
                return known
            return self.model(field.message_type)
        if field.enum_type is not None:
            return _enum_literal(field.enum_type)
        if field.type in _INT_RANGES:
            low, high = _INT_RANGES[field.type]
            return Annotated[int, Field(ge=low, le=high, strict=False)]
        if field.type in _FLOATS:
            return Annotated[float, Field(allow_inf_nan=self.direction == "response")]
        if field.type == FieldDescriptor.TYPE_BOOL:
            return bool
        if field.type == FieldDescriptor.TYPE_BYTES:
            return str  # base64 in JSON
        return str


def _enum_literal(enum: EnumDescriptor) -> Any:
    return Literal[tuple(enum_short_name(enum, v.name) for v in enum.values)]  # type: ignore[misc]


_requests = _Builder("request")
_responses = _Builder("response")


def request_model(descriptor: Descriptor, *, exclude: tuple[str, ...] = (), name: str | None = None) -> type[BaseModel]:
    """A strict body model for `descriptor` (fields in `exclude` come from the path instead)."""
    return _requests.model(descriptor, exclude=exclude, name=name)


def response_model(descriptor: Descriptor) -> type[BaseModel]:
    """A documentation model of the JSON view of `descriptor`."""
    return _responses.model(descriptor)
