"""What an edition is called, in its own language: one table for every place that shows it.

`GET /api/v1/config` (service/account.py) gives each edition's `name`, which the desk lists;
the feeds (service/feeds.py) title each edition "Flashwire — <breaking>", in the edition's
language, and label each line's urgency in it (`urgency_label`). An edition the table does not
know (a deployment may configure any BCP 47 code, FLASHWIRE_EDITIONS) is shown by its code and
titled and labelled in English, never refused.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["EDITION_NAMES", "URGENCY_LABELS", "EditionName", "edition_name", "urgency_label"]


@dataclass(frozen=True, slots=True)
class EditionName:
    """An edition's `name` (its language, as its readers write it) and `breaking`, the phrase its
    newsroom heads breaking news with (the feed's title)."""

    name: str
    breaking: str


EDITION_NAMES: dict[str, EditionName] = {
    "en": EditionName(name="English", breaking="Breaking news"),
    "ar": EditionName(name="العربية", breaking="عاجل"),
    "es": EditionName(name="Español", breaking="Última hora"),
    "fr": EditionName(name="Français", breaking="Dernière minute"),
    "de": EditionName(name="Deutsch", breaking="Eilmeldung"),
}


def edition_name(edition: str) -> EditionName:
    """The names of `edition`; for an edition not in the table, its code and the English phrase."""
    known = EDITION_NAMES.get(edition)
    return known if known is not None else EditionName(name=edition, breaking=EDITION_NAMES["en"].breaking)


# Each urgency (flashwire.core.models.Urgency) as the edition's newsroom names it: Arabic as the
# widget shows it (web/ticker.js), the others as wire agencies name their priorities (AFP "Flash",
# "Urgent"; dpa "Blitz", "Eilmeldung").
URGENCY_LABELS: dict[str, dict[str, str]] = {
    "en": {"flash": "Flash", "urgent": "Urgent", "routine": "Routine"},
    "ar": {"flash": "عاجل جدًا", "urgent": "عاجل", "routine": "عادي"},
    "es": {"flash": "Flash", "urgent": "Urgente", "routine": "Normal"},
    "fr": {"flash": "Flash", "urgent": "Urgent", "routine": "Normal"},
    "de": {"flash": "Blitz", "urgent": "Eilmeldung", "routine": "Normal"},
}


def urgency_label(edition: str, urgency: str) -> str:
    """`urgency` ("flash", "urgent", "routine") in the edition's language, or in English for an
    edition not in the table; an urgency no table knows is returned as it is."""
    return URGENCY_LABELS.get(edition, URGENCY_LABELS["en"]).get(urgency, urgency)
