"""What an edition is called, in its own language: one table for every place that shows it.

`GET /api/v1/config` (service/account.py) gives each edition's `name`, which the desk lists;
the feeds (service/feeds.py) title each edition "Flashwire — <breaking>", in the edition's
language. An edition the table does not know (a deployment may configure any BCP 47 code,
FLASHWIRE_EDITIONS) is shown by its code and titled in English, never refused.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["EDITION_NAMES", "EditionName", "edition_name"]


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
