"""What every protocol body shares: camelCase aliases, wire times, optional members left out."""

from __future__ import annotations

import json
import posixpath
from datetime import datetime
from typing import Annotated, Any, ClassVar

from pydantic import (
    BaseModel,
    ConfigDict,
    PlainSerializer,
    SerializerFunctionWrapHandler,
    model_serializer,
)
from pydantic.alias_generators import to_camel

from qbox.core.timefmt import to_wire

# A time on the wire: RFC 3339 UTC with six fractional digits (core.timefmt).
WireTime = Annotated[datetime, PlainSerializer(to_wire, return_type=str)]


class Wire(BaseModel):
    """A protocol body. Unknown members are ignored, so either side may be newer.

    ``OMIT_NONE`` names the fields that are absent from the JSON while they are
    None (the protocol's ``"field"?`` members), rather than sent as ``null``.
    """

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    OMIT_NONE: ClassVar[frozenset[str]] = frozenset()

    @model_serializer(mode="wrap")
    def _leave_out_unset(self, handler: SerializerFunctionWrapHandler) -> Any:
        data = handler(self)
        fields = type(self).model_fields
        for name in self.OMIT_NONE:
            for key in (name, fields[name].alias):
                if key is not None and key in data and data[key] is None:
                    del data[key]
        return data

    def wire(self) -> dict[str, Any]:
        """The body as JSON values, camelCase."""
        data: dict[str, Any] = self.model_dump(mode="json", by_alias=True)
        return data


def ndjson_line(body: Wire) -> bytes:
    """One line of an event stream (the agent's json.dumps spacing, which relays keep)."""
    return json.dumps(body.wire(), ensure_ascii=False).encode() + b"\n"


def absolute_path(path: str) -> str:
    """A normalised absolute path (a validator: raises ValueError otherwise)."""
    if not path.startswith("/") or "\0" in path:
        raise ValueError("must be an absolute path")
    return posixpath.normpath(path)
