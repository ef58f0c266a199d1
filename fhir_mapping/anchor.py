"""The day a test Bundle's dates are written against, as the Bundle records it in `meta.tag`.

Scenario Bundles (the sandbox patients, exported test charts) write every date relative to one
anchor day and record that day in a tag, so that a tool can assess them as of that day (the
preview page, knowledge-diff) or move their dates to today before loading them (the sandbox
loader). Reading the tag is part of the runtime because the preview page reads any folder of such
Bundles; writing and shifting them is tooling (`calcinosis_tools`, not shipped in the wheel).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from typing import Any

#: `Bundle.meta.tag` system whose code is the anchor day of the file.
ANCHOR_TAG_SYSTEM = "urn:calcinosis-cds:sandbox-anchor"


def bundle_anchor(bundle: Mapping[str, Any]) -> date | None:
    """The anchor day a Bundle records in `meta.tag` (None when it records none or not as a day).

    After the sandbox loader shifts a Bundle's dates the tag names the new day, since the tag code
    is itself a date."""
    meta = bundle.get("meta")
    tags = meta.get("tag") if isinstance(meta, Mapping) else None
    for tag in tags if isinstance(tags, list) else []:
        if isinstance(tag, Mapping) and tag.get("system") == ANCHOR_TAG_SYSTEM and isinstance(tag.get("code"), str):
            try:
                return date.fromisoformat(tag["code"])
            except ValueError:
                return None
    return None
