"""What a section or region is called, per edition language: one table for the desk's topic names.

`GET /api/v1/config` (service/account.py) gives, for each configured topic slug, its display name
in each language of this table (`topic_names`); the desk (web/desk/desk.js) labels its section and
region checkboxes in the desk's language from it. The table covers the default topics
(flashwire/core/settings.py DEFAULT_SECTIONS, DEFAULT_REGIONS) in English, Arabic and Spanish; a
slug it does not know (a deployment may configure any, FLASHWIRE_SECTIONS, FLASHWIRE_REGIONS) is
named by the slug with its dashes as spaces ("us-canada" -> "us canada") in every language.
"""

from __future__ import annotations

__all__ = ["TOPIC_LANGUAGES", "TOPIC_NAMES", "topic_names"]

TOPIC_LANGUAGES: tuple[str, ...] = ("en", "ar", "es")

# slug -> (English, Arabic, Spanish), in TOPIC_LANGUAGES order.
TOPIC_NAMES: dict[str, tuple[str, str, str]] = {
    # sections
    "politics": ("Politics", "سياسة", "Política"),
    "economy": ("Economy", "اقتصاد", "Economía"),
    "sports": ("Sports", "رياضة", "Deportes"),
    "arts-culture": ("Arts & culture", "فنون وثقافة", "Arte y cultura"),
    "health": ("Health", "صحة", "Salud"),
    "technology": ("Technology", "تكنولوجيا", "Tecnología"),
    "environment": ("Environment", "بيئة", "Medio ambiente"),
    "miscellaneous": ("Miscellaneous", "منوعات", "Variedades"),
    # regions
    "africa": ("Africa", "أفريقيا", "África"),
    "asia": ("Asia", "آسيا", "Asia"),
    "asia-pacific": ("Asia-Pacific", "آسيا والمحيط الهادئ", "Asia-Pacífico"),
    "europe": ("Europe", "أوروبا", "Europa"),
    "latin-america": ("Latin America", "أمريكا اللاتينية", "América Latina"),
    "mena": ("Middle East & North Africa", "الشرق الأوسط وشمال أفريقيا", "Oriente Medio y Norte de África"),
    "palestine": ("Palestine", "فلسطين", "Palestina"),
    "us-canada": ("US & Canada", "الولايات المتحدة وكندا", "EE. UU. y Canadá"),
}


def topic_names(slug: str) -> dict[str, str]:
    """`slug`'s display name in each of TOPIC_LANGUAGES, {"en": ..., "ar": ..., "es": ...}; for a
    slug not in TOPIC_NAMES, the slug with dashes as spaces in every language."""
    names = TOPIC_NAMES.get(slug)
    if names is None:
        fallback = slug.replace("-", " ")
        return dict.fromkeys(TOPIC_LANGUAGES, fallback)
    return dict(zip(TOPIC_LANGUAGES, names, strict=True))
