"""The few words a push notification carries besides the line: its title, and the notice that
replaces a withdrawn alert, in the edition's language (the line's own text is already in it).

An edition without an entry here gets the English words; add a language by adding its row.
"""

from __future__ import annotations

from typing import TypedDict


class Words(TypedDict):
    flash: str
    urgent: str
    routine: str
    correction: str
    withdrawn: str
    withdrawn_text: str


WORDS: dict[str, Words] = {
    "en": {
        "flash": "Breaking",
        "urgent": "Urgent",
        "routine": "News",
        "correction": "Correction",
        "withdrawn": "Withdrawn",
        "withdrawn_text": "This alert was withdrawn.",
    },
    "ar": {
        "flash": "عاجل",
        "urgent": "هام",
        "routine": "خبر",
        "correction": "تصحيح",
        "withdrawn": "سُحب",
        "withdrawn_text": "سُحب هذا التنبيه.",
    },
    "es": {
        "flash": "Última hora",
        "urgent": "Urgente",
        "routine": "Noticia",
        "correction": "Corrección",
        "withdrawn": "Retirada",
        "withdrawn_text": "Esta alerta fue retirada.",
    },
}


def words_for(language: str) -> Words:
    """The words of a BCP 47 language ("ar", "es-419"), by its primary subtag; English otherwise."""
    return WORDS.get(language.split("-")[0].lower(), WORDS["en"])
