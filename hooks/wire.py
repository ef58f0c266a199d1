"""Decoding a CDS Hooks request body: the prefetch restricted to the elements the service reads.

The prefetch is nearly all of a request's bytes. Its resources are decoded with
`fhir_mapping.wire.ResourceElements`, which skips what the mapping never reads (see that module
for why and for how the result is kept identical to a full decode). The other members of the
request are decoded in full; members the spec does not define are dropped here, as `HookRequest`
would ignore them anyway. Whatever the restricted decode rejects is decoded again in full with
`orjson`, so errors are reported as before: invalid JSON, too deep a nesting, a prefetch value
that is not a resource (`fhir_mapping.wire` lists the two harmless differences).
"""

from __future__ import annotations

from typing import Any, TypedDict

import msgspec

from fhir_mapping.wire import ResourceElements, decode_restricted


class HookRequestElements(TypedDict, total=False):
    """The members of a CDS Hooks 2.0.1 request (`hooks.models.HookRequest`)."""

    hook: Any
    hookInstance: Any
    fhirServer: Any
    fhirAuthorization: Any
    context: Any
    prefetch: dict[str, ResourceElements | None] | None
    extension: Any


_HOOK_REQUEST = msgspec.json.Decoder(HookRequestElements)


def decode_hook_request(body: bytes | bytearray) -> Any:
    """The request body as JSON with a restricted prefetch; raises `orjson.JSONDecodeError` for a
    body that is not JSON. A JSON value that is not an object comes back as it is."""
    return decode_restricted(_HOOK_REQUEST, body)
