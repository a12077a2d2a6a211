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
  characters of a well-formed emoji tag sequence (UTS #51 §2.3 ED-14a: the black
  flag, one to six lower-case letter or digit tags, the cancel tag — the flags
  of England, Scotland and Wales): the others — bidi overrides and isolates
  (the "Trojan Source" class), zero-width spaces, invisible operators, stray
  tags that smuggle hidden ASCII — only serve to disguise what a reader sees;
- surrogates, private-use, unassigned code points and noncharacters (Cs, Co, Cn;
  U+FFFE and U+FFFF are noncharacters) are refused: XML forbids some of them
  and none of them shows anything a reader can check;
- a variation selector must follow a character it is defined for (Unicode
  §23.4: an emoji, an ideograph, a mathematical symbol), one at most: anywhere
  else it changes nothing a reader sees, and a run of them hides data behind
  an ordinary-looking word ("Reuters" followed by U+FE0F is not "Reuters"); no
  character carries more than 30 combining marks (UAX #15 §13, Stream-Safe
  Text Format), which only serve to draw over the lines around it;
- text with nothing visible is refused: only whitespace, default-ignorable code
  points (Hangul fillers, variation selectors), combining marks without a base,
  or glyphs drawn empty (the blank braille pattern, the musical null notehead).

Character properties come from the `regex` package's Unicode database (Unicode
16 or later), not Python's `unicodedata` (Unicode 14 on Python 3.11), so that a
headline with a recent emoji is not refused as "unassigned".

Links follow RFC 3986/3987: an absolute http or https URL naming a valid host
(IDNA 2008 via the `idna` package, or an IP literal; written with ASCII full
stops only, since U+3002 and its kin are read as "." and would make
"reuters.com。evil.example" look like Reuters), with a port in 1-65535 if any, no
credentials in the authority (RFC 3986 §3.2.1 deprecates them; they make
"https://reuters.com@evil.example/" read as Reuters), well-formed
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
import regex

URL_MAX_CHARS = 2048
# UAX #15 §13: the Stream-Safe Text Format allows at most 30 non-starters in a row.
MAX_COMBINING_MARKS = 30

_CONTROL = regex.compile(r"[\p{Cc}--[\t\n\r]]", regex.V1)
# UTS #51 §2.3 (ED-14a) emoji tag sequence as used for subdivision flags, e.g. gbeng.
_EMOJI_TAG_SEQUENCE = regex.compile("\U0001f3f4[\U000e0030-\U000e0039\U000e0061-\U000e007a]{1,6}\U000e007f")
# LRM, RLM, Arabic letter mark, ZWNJ, ZWJ: needed to write Arabic, Persian and emoji.
_REFUSED = regex.compile(r"[\p{Cs}\p{Co}\p{Cn}[\p{Cf}--[\u200e\u200f\u061c\u200c\u200d]]]", regex.V1)
# A variation selector applies only to the characters it is defined for (Unicode §23.4,
# StandardizedVariants.txt, emoji-variation-sequences.txt, the Ideographic Variation Database):
# VS15/VS16 after an emoji, ideographic variation selectors after an ideograph, VS1-VS14 after an
# ideograph or a mathematical symbol. Anywhere else it changes nothing a reader sees.
_MISPLACED_VARIATION_SELECTOR = regex.compile(
    r"(?<!\p{Emoji})[\ufe0e\ufe0f]|(?<!\p{Ideographic})[\U000e0100-\U000e01ef]"
    r"|(?<![\p{Ideographic}\p{Math}])[\ufe00-\ufe0d]",
    regex.V1,
)
_MARK_PILE = regex.compile(r"\p{M}{" + str(MAX_COMBINING_MARKS + 1) + "}")
_VISIBLE = regex.compile(
    r"[^\p{White_Space}\p{Default_Ignorable_Code_Point}\p{M}\p{C}\u2800\U0001d159]", regex.V1
)
_HIDDEN_IN_URL = regex.compile(r"[\p{White_Space}\p{Default_Ignorable_Code_Point}\p{C}]", regex.V1)
# RFC 3987 §2.2: not allowed anywhere in an IRI, though browsers tolerate some.
_IRI_EXCLUDED = frozenset(' <>"{}|\\^`')
_BAD_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
# Full stops IDNA (UTS #46) maps to ".": a host must be written with the ASCII one.
_WIDE_FULL_STOPS = frozenset("\u3002\uff0e\uff61")


class TextRuleError(ValueError):
    """A value breaks the text or the URL rule; `message` says how, without naming the field."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _describe(char: str) -> str:
    """'the noncharacter U+FFFF' and the like, for an error message."""
    code = f"U+{ord(char):04X}"
    if regex.match(r"\p{Noncharacter_Code_Point}", char):
        return f"the noncharacter {code}"
    kind = {
        "Cc": "the control character",
        "Cs": "the lone surrogate",
        "Co": "the private-use character",
        "Cn": "the unassigned code point",
    }.get(unicodedata.category(char) if not regex.match(r"\p{Cn}", char) else "Cn")
    return f"{kind or 'the invisible character'} {code}"


def free_text(value: str, *, max_chars: int) -> str:
    """`value` cleaned by the free-text rule (module docstring), at most `max_chars` code points.

    Returns the text with whitespace runs collapsed to one space, trimmed, NFC; "" if nothing
    but whitespace was sent (the caller decides whether an empty optional field is null or an
    error). The limit counts code points after that cleaning. Raises TextRuleError for a refused
    character (naming its code point), a stray variation selector, a pile of combining marks, a
    text with nothing visible, or one too long.
    """
    control = _CONTROL.search(value)
    if control:
        raise TextRuleError(f"contains {_describe(control.group())}")
    text = unicodedata.normalize("NFC", " ".join(value.split()))
    if not text:
        return ""
    checked = _EMOJI_TAG_SEQUENCE.sub("\U0001f3f4", text)
    refused = _REFUSED.search(checked)
    if refused:
        raise TextRuleError(f"contains {_describe(refused.group())}")
    misplaced = _MISPLACED_VARIATION_SELECTOR.search(checked)
    if misplaced:
        raise TextRuleError(
            f"has a variation selector U+{ord(misplaced.group()):04X} after a character it does not apply to"
        )
    if _MARK_PILE.search(checked):
        raise TextRuleError(f"has more than {MAX_COMBINING_MARKS} combining marks on one character")
    if not _VISIBLE.search(checked):
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
    wide = next((char for char in host if char in _WIDE_FULL_STOPS), None)
    if wide is not None:
        raise TextRuleError(f"writes its host with U+{ord(wide):04X}; use the ASCII full stop '.'")
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
    hidden = _HIDDEN_IN_URL.search(value)
    if hidden:
        raise TextRuleError(f"contains {_describe(hidden.group())}")
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
