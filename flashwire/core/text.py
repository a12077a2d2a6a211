"""The one rule for free text and the one rule for links, used by every field that takes them.

A headline, a source, a retraction reason, a token name: each is shown to people
(in the ticker, a feed reader, a partner's CMS, a terminal) and copied into
formats that forbid some characters (XML 1.0 §2.2 `Char`, HTTP field values,
RFC 9110 §5.5). One definition keeps every field safe in every one of them:

- control characters (category Cc) are refused, except that tab, line feed and
  carriage return count as whitespace; runs of whitespace collapse to one space
  and the text is NFC-normalised (Unicode Standard Annex #15);
- format characters (Cf) are refused, except the direction marks and joiners
  that Arabic and Persian text needs (LRM, RLM, ALM, ZWNJ, ZWJ) and the tag
  characters of an emoji tag sequence (UTS #51 §2.3, e.g. the flag of England):
  the others — bidi overrides and isolates (the "Trojan Source" class), zero-width
  spaces, invisible operators — only serve to disguise what a reader sees;
- surrogates, private-use, unassigned code points and noncharacters (Cs, Co, Cn;
  U+FFFE and U+FFFF are Cn) are refused: XML forbids some of them and none of
  them shows anything a reader can check (categories as in Python's Unicode
  database, `unicodedata.unidata_version`);
- text with nothing visible is refused: only whitespace, default-ignorable code
  points (Hangul fillers, variation selectors: DerivedCoreProperties.txt,
  Unicode 15.1), combining marks without a base, or the blank braille pattern.

Links follow RFC 3986/3987: an absolute http or https URL naming a valid host
(IDNA 2008 via the `idna` package, or an IP literal), with a port in 1-65535 if
any, no credentials in the authority (RFC 3986 §3.2.1 deprecates them; they
make "https://reuters.com@evil.example/" read as Reuters), well-formed
percent-escapes, no default-ignorable code point (a link must not hide
anything), and none of the characters above nor those RFC 3987 §2.2 excludes
from an IRI (space, <, >, ", {, }, |, \\, ^, `).
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata
from urllib.parse import urlsplit

import idna

# LRM, RLM, Arabic letter mark, ZWNJ, ZWJ: needed to write Arabic, Persian and emoji.
ALLOWED_FORMAT_CHARS = frozenset("\u200e\u200f\u061c\u200c\u200d")
_WHITESPACE_CONTROLS = frozenset("\t\n\r")
_REFUSED_CATEGORIES = frozenset({"Cc", "Cs", "Co", "Cn"})
_BLACK_FLAG = "\U0001f3f4"
_TAGS = range(0xE0020, 0xE0080)
# Default_Ignorable_Code_Point (DerivedCoreProperties.txt, Unicode 15.1): drawn as nothing.
_DEFAULT_IGNORABLE = (
    (0x00AD, 0x00AD),
    (0x034F, 0x034F),
    (0x061C, 0x061C),
    (0x115F, 0x1160),
    (0x17B4, 0x17B5),
    (0x180B, 0x180F),
    (0x200B, 0x200F),
    (0x202A, 0x202E),
    (0x2060, 0x206F),
    (0x3164, 0x3164),
    (0xFE00, 0xFE0F),
    (0xFEFF, 0xFEFF),
    (0xFFA0, 0xFFA0),
    (0xFFF0, 0xFFF8),
    (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A),
    (0xE0000, 0xE0FFF),
)
# Drawn as an empty cell though not default-ignorable.
_BLANK_GLYPHS = frozenset("\u2800")
URL_MAX_CHARS = 2048
# RFC 3987 §2.2: not allowed anywhere in an IRI, though browsers tolerate some.
_IRI_EXCLUDED = frozenset(' <>"{}|\\^`')
_BAD_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")


class TextRuleError(ValueError):
    """A value breaks the text or the URL rule; `message` says how, without naming the field."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _default_ignorable(code: int) -> bool:
    return any(low <= code <= high for low, high in _DEFAULT_IGNORABLE)


def _refused(char: str, previous: str) -> bool:
    """Is `char` (after `previous`) a character no free text may hold?"""
    category = unicodedata.category(char)
    if category in _REFUSED_CATEGORIES:
        return True
    if category != "Cf" or char in ALLOWED_FORMAT_CHARS:
        return False
    # Tag characters are allowed only inside an emoji tag sequence: black flag, tags, cancel tag.
    return not (ord(char) in _TAGS and (previous == _BLACK_FLAG or ord(previous or "\0") in _TAGS))


def _visible(char: str) -> bool:
    if char.isspace() or char in _BLANK_GLYPHS or _default_ignorable(ord(char)):
        return False
    return not unicodedata.category(char).startswith("M")


def free_text(value: str, *, max_chars: int) -> str:
    """`value` cleaned by the free-text rule (module docstring), at most `max_chars` code points.

    Returns the text with whitespace runs collapsed to one space, trimmed, NFC; "" if nothing
    but whitespace was sent (the caller decides whether an empty optional field is null or an
    error). Raises TextRuleError for a refused character (naming its code point), a text with
    nothing visible, or one too long.
    """
    for char in value:
        if unicodedata.category(char) == "Cc" and char not in _WHITESPACE_CONTROLS:
            raise TextRuleError(f"contains the control character U+{ord(char):04X}")
    text = unicodedata.normalize("NFC", " ".join(value.split()))
    if not text:
        return ""
    previous = ""
    for char in text:
        if _refused(char, previous):
            raise TextRuleError(f"contains a control or invisible character U+{ord(char):04X}")
        previous = char
    if not any(_visible(char) for char in text):
        raise TextRuleError("has no visible characters")
    if len(text) > max_chars:
        raise TextRuleError(f"is {len(text)} characters; the limit is {max_chars}")
    return text


def _check_host(host: str) -> None:
    if host.startswith("["):
        try:
            ipaddress.IPv6Address(host[1:-1].split("%")[0])
        except ValueError:
            raise TextRuleError("names an invalid IPv6 host") from None
        return
    try:
        ipaddress.IPv4Address(host)
        return
    except ValueError:
        pass
    try:
        idna.encode(host.rstrip("."), uts46=True)
    except idna.IDNAError as exc:
        raise TextRuleError(f"names an invalid host ({exc})") from None


def _split_authority(authority: str) -> tuple[str, str | None]:
    """(host, port or None) of an RFC 3986 §3.2 authority without userinfo."""
    if authority.startswith("["):
        end = authority.find("]")
        rest = authority[end + 1 :] if end > 0 else "?"
        if rest and not rest.startswith(":"):
            raise TextRuleError("names an invalid IPv6 host")
        return authority[: end + 1], rest[1:] if rest else None
    host, sep, port = authority.partition(":")
    return host, port if sep else None


def http_url(value: str, *, max_chars: int = URL_MAX_CHARS) -> str:
    """`value` if it is an absolute http(s) link by the URL rule (module docstring), unchanged.

    Raises TextRuleError saying what is wrong: too long, a refused character (naming its code
    point), not http(s), no host or an invalid one, credentials, a bad port or percent-escape.
    """
    if len(value) > max_chars:
        raise TextRuleError(f"is longer than {max_chars} characters")
    for char in value:
        if char.isspace() or char in _IRI_EXCLUDED:
            raise TextRuleError(f"must not contain spaces or the character {char!r} (RFC 3987 §2.2)")
        if unicodedata.category(char) in _REFUSED_CATEGORIES | {"Cf"} or _default_ignorable(ord(char)):
            raise TextRuleError(f"contains a control or invisible character U+{ord(char):04X}")
    if _BAD_PERCENT.search(value):
        raise TextRuleError("has a '%' that does not start a percent-escape such as %20")
    scheme, sep, _ = value.partition("://")
    if not sep or scheme.lower() not in {"http", "https"}:
        raise TextRuleError("must be an absolute http or https URL")
    try:
        authority = urlsplit(value).netloc
    except ValueError as exc:
        raise TextRuleError(f"is not a valid URL ({exc})") from None
    if "@" in authority:
        raise TextRuleError("must not carry credentials (user:password@) before the host")
    host, port = _split_authority(authority)
    if not host:
        raise TextRuleError("must name a host")
    if port is not None and not (port.isascii() and port.isdigit() and 1 <= int(port) <= 65535):
        raise TextRuleError("has an invalid port; it must be a number from 1 to 65535")
    _check_host(host)
    return value
