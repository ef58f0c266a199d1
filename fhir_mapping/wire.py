"""Decoding FHIR JSON down to the elements the service reads.

A heavy chart is megabytes of JSON of which the mapping reads a small part: `meta`, narrative
`text`, `category`, `encounter`, `identifier`, `performer`, extensions and the like are never
looked at. Decoding all of it into Python objects was the largest single cost of a request (and
fed the garbage collector hundreds of thousands of containers), so resources are decoded with
msgspec against a TypedDict that names only the elements read: msgspec still checks that the whole
document is well-formed JSON, but skips the unread elements without building them.

The result is plain dicts and lists, the same values `orjson.loads` would give for the elements
kept. Anything the restricted decode rejects (a shape it does not expect, a nesting too deep)
falls back to a full `orjson.loads`, so a malformed document meets the checks it met before. Two
differences remain, both where orjson is stricter than JSON's grammar and both harmless:
- an integer beyond 64 bits in a kept element stays an `int` (orjson makes it a float, or refuses
  it past the float range); the mapping treats a number it cannot use as missing;
- a number beyond the float range (`1e999`) in an element that is not kept is skipped, where
  orjson refuses the whole document.

`RESOURCE_ELEMENTS` is checked by a test against the keys `fhir_mapping.mapping` reads, and the
service's answers are checked to be identical with and without this decoding.
"""

from __future__ import annotations

from typing import Any, TypedDict

import msgspec
import orjson

from fhir_mapping.pipeline import USED_ELEMENTS

#: Elements read outside `USED_ELEMENTS`: identity, the Patient's sex and birth date, a
#: Medication's code (resolved from references), the legacy `patient` subject, and the Bundle and
#: OperationOutcome elements the prefetch resolution and the FHIR client read.
STRUCTURAL_ELEMENTS = frozenset(
    {"resourceType", "id", "patient", "gender", "birthDate", "code", "type", "total", "link", "issue"}
    | {"ingredient", "class", "serviceType"}
)
"""... and for order-sign, a Medication's `ingredient` items and an Encounter's `class`, `type` and
`serviceType` (`fhir_mapping.orders`)."""

RESOURCE_ELEMENTS: frozenset[str] = STRUCTURAL_ELEMENTS.union(*USED_ELEMENTS.values())
"""Every element of a resource that is kept, besides a Bundle's entries (typed below)."""

#: A Bundle entry's own elements. Entries are decoded with the resource elements too, because an
#: entry without `resource` is read as a resource itself (`fhir_mapping.mapping.bundle_resources`).
ENTRY_ELEMENTS = frozenset({"fullUrl", "resource", "search"})


_KeywordElements = TypedDict("_KeywordElements", {"class": Any}, total=False)
"""Elements whose names are Python keywords, which only the functional syntax can declare."""


class ResourceElements(_KeywordElements, TypedDict, total=False):
    """A FHIR resource restricted to `RESOURCE_ELEMENTS` (msgspec decodes it into a plain dict).

    Written out rather than built from `RESOURCE_ELEMENTS` so that type checkers see it; a test
    keeps the two equal. A Bundle's entries and their resources (nested Bundles too) are decoded
    with the same restriction.
    """

    resourceType: Any
    id: Any
    ingredient: Any
    serviceType: Any
    patient: Any
    gender: Any
    birthDate: Any
    type: Any
    total: Any
    link: Any
    issue: Any
    entry: list[ResourceElements]
    fullUrl: Any
    resource: ResourceElements
    search: Any
    status: Any
    code: Any
    subject: Any
    effectiveDateTime: Any
    effectivePeriod: Any
    effectiveInstant: Any
    issued: Any
    valueQuantity: Any
    valueString: Any
    valueCodeableConcept: Any
    valueInteger: Any
    dataAbsentReason: Any
    referenceRange: Any
    interpretation: Any
    component: Any
    clinicalStatus: Any
    verificationStatus: Any
    onsetDateTime: Any
    onsetPeriod: Any
    recordedDate: Any
    abatementDateTime: Any
    abatementPeriod: Any
    bodySite: Any
    intent: Any
    medicationCodeableConcept: Any
    medicationReference: Any
    contained: Any
    authoredOn: Any
    dosageInstruction: Any
    dispenseRequest: Any
    dateAsserted: Any
    dosage: Any
    performedDateTime: Any
    performedPeriod: Any


_RESOURCE = msgspec.json.Decoder(ResourceElements)


def decode_restricted(decoder: msgspec.json.Decoder[Any], data: bytes | bytearray) -> Any:
    """`data` decoded with a restricting msgspec `decoder`, or in full by `orjson.loads` where
    the decoder rejects it; raises `orjson.JSONDecodeError` for what is not JSON.

    msgspec does not check the UTF-8 of strings it skips, so a body that is not ASCII is checked
    here first (Python's codec; cheap next to decoding): a request that is not UTF-8 is refused
    as before, whichever element the bad bytes are in.
    """
    if not data.isascii():
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            return orjson.loads(data)  # raises, with orjson's own message
    try:
        return decoder.decode(data)
    except (msgspec.MsgspecError, RecursionError):
        return orjson.loads(data)


def decode_resource(data: bytes | bytearray) -> Any:
    """A FHIR resource (or Bundle) from JSON, keeping only the elements the service reads.

    Raises `orjson.JSONDecodeError` for what is not JSON, as `orjson.loads` does; a JSON value
    that is not an object comes back as it is, for the caller to reject.
    """
    return decode_restricted(_RESOURCE, data)
