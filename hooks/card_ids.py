"""Card and suggestion ids that prove this service issued them: a keyed MAC inside the uuid.

Feedback names a card only by its `uuid`. To store feedback on cards this service issued, and
nothing else (a free-text "card" such as a patient's name must never reach the database), each id
the service sends carries a MAC made with a key from configuration, so any replica holding the key
can verify an id without a record of every card it issued.

Layout of the 32 hex digits (the uuid's version and variant bits are left as `hooks.cards` set
them, so the id stays a valid UUID):

    digits 0-16   the id as `hooks.cards` derived it (stable per hookInstance and card)
    digits 17-29  HMAC-SHA256(key, digits 0-16 + topic), first 52 bits
    digits 30-31  the card topic code (01 subtype, 02 workup, 03 differentials; order-sign:
                  04 order check, 05 repeat lab)

52 bits make a forged id a one-in-4.5-quadrillion guess per feedback entry. Replicas share the
key (`CALCINOSIS_CARD_ID_KEY`, e.g. from one Kubernetes Secret); without it each process makes a
random key and refuses feedback on cards issued by another process or before a restart.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import uuid
from collections.abc import Iterable

from hooks.models import Card

TOPIC_CODES = {"01": "subtype", "02": "workup", "03": "differentials", "04": "order-check", "05": "repeat-lab"}
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_KEEP, _MAC = 17, 13


class CardIds:
    """Signs the ids of issued cards and verifies the ids that feedback names."""

    def __init__(self, key: str | bytes | None) -> None:
        self.ephemeral = key is None
        if key is None:
            key = secrets.token_bytes(32)
        self._key = key.encode() if isinstance(key, str) else key

    def _mac(self, kept: str, topic: str) -> str:
        return hmac.new(self._key, (kept + topic).encode(), hashlib.sha256).hexdigest()[:_MAC]

    def sign(self, card_uuid: str) -> str:
        """The signed form of an id derived by `hooks.cards` (its topic digits are kept)."""
        digits = uuid.UUID(card_uuid).hex
        kept, topic = digits[:_KEEP], digits[-2:]
        return str(uuid.UUID(kept + self._mac(kept, topic) + topic))

    def topic(self, card_uuid: str) -> str | None:
        """The topic of an id this service issued, or None for any other string."""
        text = card_uuid.strip().lower()
        if not _UUID.match(text):
            return None
        digits = text.replace("-", "")
        kept, mac, topic = digits[:_KEEP], digits[_KEEP : _KEEP + _MAC], digits[-2:]
        if topic not in TOPIC_CODES or not hmac.compare_digest(mac, self._mac(kept, topic)):
            return None
        return TOPIC_CODES[topic]

    def sign_cards(self, cards: Iterable[Card]) -> None:
        """Replace every card and suggestion uuid with its signed form, in place."""
        for card in cards:
            if card.uuid is not None:
                card.uuid = self.sign(card.uuid)
            for suggestion in card.suggestions or ():
                if suggestion.uuid is not None:
                    suggestion.uuid = self.sign(suggestion.uuid)
