"""The documentation stays true to the code: docs/configuration.md against the settings, and links.

The truth is taken from the code, never from a list kept by hand:

- the variables `Settings.from_env()` reads are the whole-string constants such as
  "FLASHWIRE_PORT" that flashwire/core/settings.py passes to a call (found with `ast`);
- every other variable the package reads (the CLI, the dev stack) is found the same way
  in every module under flashwire/ (service/, workers/ and web/ included, through their links);
- a documented default is checked by feeding it back: `Settings.from_env({VAR: default})`
  must equal `Settings.from_env({})`, so the doc's `15` for a float of 15.0 or `1` for a
  bool that is on both pass, and any value the code would not default to fails;
- each fixed limit names its source (`Settings.max_topics`, `flashwire.core.models.SOURCE_MAX_CHARS`)
  and its documented number must be that source's value.

The Redis keys table of docs/operations.md is compared with the names `Keys` makes.

Relative links in README.md and docs/*.md must name an existing file, and an anchor
(`#section`) an existing heading of that file, slugged as GitHub does; a repository path in
inline code (`service/hub.py`, `tests/conftest.py`) must name an existing file or folder.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import os
import re
import unicodedata
from pathlib import Path

import pytest

from flashwire.core.keys import Keys
from flashwire.core.settings import Settings, SettingsError

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "flashwire"
SETTINGS_MODULE = PACKAGE / "core" / "settings.py"
CONFIG_DOC = ROOT / "docs" / "configuration.md"
ENV_NAME = re.compile(r"^(?:REDIS_URL|FLASHWIRE_[A-Z0-9_]+)$")
# A table row whose first cell is a variable: | `FLASHWIRE_PORT` | `8000` | meaning |
DOC_ROW = re.compile(r"^\|\s*`(?P<name>[A-Z][A-Z0-9_]*)`\s*\|(?P<default>[^|]*)\|")
FIRST_CODE_SPAN = re.compile(r"^\s*`(?P<value>[^`]*)`")


def env_names_in_calls(source: str) -> set[str]:
    """Environment variable names passed as whole-string arguments to any call, or used as a
    subscript (`env["REDIS_URL"]`), in one module's source."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        candidates: list[ast.expr] = []
        if isinstance(node, ast.Call):
            candidates = [*node.args, *(keyword.value for keyword in node.keywords)]
        elif isinstance(node, ast.Subscript):
            candidates = [node.slice]
        for candidate in candidates:
            if isinstance(candidate, ast.Constant) and isinstance(candidate.value, str):
                if ENV_NAME.match(candidate.value):
                    names.add(candidate.value)
    return names


def settings_variables() -> set[str]:
    """Every variable `Settings.from_env()` reads."""
    return env_names_in_calls(SETTINGS_MODULE.read_text())


def package_variables() -> set[str]:
    """Every variable any module of the installed package reads (settings included)."""
    names: set[str] = set()
    # service/, workers/ and web/ are linked into flashwire/: walk through the links.
    for folder, _, files in os.walk(PACKAGE, followlinks=True):
        for file in files:
            if file.endswith(".py"):
                names |= env_names_in_calls((Path(folder) / file).read_text())
    return names


def documented_variables(text: str) -> dict[str, str]:
    """Variable name -> its default cell, from every table row of the configuration page that
    starts with a variable; a variable listed twice is an error."""
    rows: dict[str, str] = {}
    for line in text.splitlines():
        match = DOC_ROW.match(line)
        if match is None or not ENV_NAME.match(match["name"]):
            continue
        name = match["name"]
        assert name not in rows, f"docs/configuration.md lists {name} twice"
        rows[name] = match["default"].strip()
    return rows


def test_the_settings_are_found_in_the_code() -> None:
    """The code scan itself works: the settings module reads REDIS_URL and the port, and the CLI
    reads FLASHWIRE_URL (so an empty scan cannot make the other tests pass vacuously)."""
    assert {"REDIS_URL", "FLASHWIRE_PORT", "FLASHWIRE_EDITIONS"} <= settings_variables()
    assert "FLASHWIRE_URL" in package_variables() - settings_variables()
    scanned = {Path(folder).name for folder, _, _ in os.walk(PACKAGE, followlinks=True)}
    assert {"core", "dev", "service", "workers"} <= scanned


def test_every_variable_the_code_reads_is_documented() -> None:
    """A variable read by the settings, the CLI or the dev stack has a row in docs/configuration.md."""
    documented = documented_variables(CONFIG_DOC.read_text())
    missing = sorted(package_variables() - documented.keys())
    assert not missing, f"read by the code but missing from docs/configuration.md: {missing}"


def test_every_documented_variable_is_read_by_the_code() -> None:
    """A row of docs/configuration.md names a variable that the package actually reads."""
    documented = documented_variables(CONFIG_DOC.read_text())
    unknown = sorted(documented.keys() - package_variables())
    assert not unknown, f"documented in docs/configuration.md but read by nothing: {unknown}"


def test_every_variable_named_in_the_docs_is_read_by_the_code() -> None:
    """A `FLASHWIRE_*` name anywhere in README.md or docs/ (security.md names a setting for each
    bound) is one the package, the tests or the benchmarks read: a renamed or removed setting
    cannot linger in prose."""
    known = package_variables()
    for module in [*(ROOT / "tests").rglob("*.py"), *(ROOT / "bench").glob("*.py")]:
        known |= env_names_in_calls(module.read_text())
    stale = sorted(
        f"{doc.relative_to(ROOT)}: {name}"
        for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
        for name in set(re.findall(r"\bFLASHWIRE_[A-Z0-9_]*[A-Z0-9]\b", doc.read_text()))
        if name not in known
    )
    assert not stale, f"named in the docs but read by nothing: {stale}"


def test_documented_defaults_are_the_settings_defaults() -> None:
    """Each settings variable's documented default, set in the environment, gives exactly the
    settings of an empty environment."""
    documented = documented_variables(CONFIG_DOC.read_text())
    baseline = Settings.from_env({})
    wrong: list[str] = []
    for name in sorted(settings_variables() & documented.keys()):
        match = FIRST_CODE_SPAN.match(documented[name])
        unset = documented[name].strip().startswith("unset")
        if match is None and not unset:
            wrong.append(f"{name}: the default cell must start with the value in backticks, or 'unset'")
            continue
        value = "" if match is None else match["value"]
        try:
            configured = Settings.from_env({name: value})
        except SettingsError as exc:
            wrong.append(f"{name}: documented default {value!r} is refused: {exc}")
            continue
        if configured != baseline:
            changed = sorted(
                field
                for field in baseline.__dataclass_fields__
                if getattr(configured, field) != getattr(baseline, field)
            )
            wrong.append(f"{name}: documented default {value!r} changes {', '.join(changed)}")
    assert not wrong, "docs/configuration.md has wrong defaults:\n" + "\n".join(wrong)


# A row of the "Fixed limits" table: | limit | value | `Settings.field` or `flashwire.module.CONSTANT` |
LIMIT_ROW = re.compile(r"^\|[^|]*\|(?P<value>[^|]*)\|\s*`(?P<source>[A-Za-z_][\w.]*)`\s*\|$")
FIRST_NUMBER = re.compile(r"\d[\d,]*")


def documented_limits(text: str) -> list[tuple[str, str]]:
    """(value cell, source) of each row of the "Fixed limits" section that names one source."""
    section = text.partition("## Fixed limits")[2].partition("\n## ")[0]
    return [(m["value"], m["source"]) for m in map(LIMIT_ROW.match, section.splitlines()) if m is not None]


def limit_value(source: str) -> object:
    """The value a limit's source names: a Settings field's default, or a module constant."""
    if source.startswith("Settings."):
        return getattr(Settings(), source.removeprefix("Settings."))
    module_name, _, constant = source.rpartition(".")
    return getattr(importlib.import_module(module_name), constant)


def test_fixed_limits_are_the_code_constants() -> None:
    """Each fixed limit's first number is the value of the Settings field or constant named beside it."""
    limits = documented_limits(CONFIG_DOC.read_text())
    assert len(limits) >= 10, "the Fixed limits table of docs/configuration.md was not found"
    wrong = []
    for value_cell, source in limits:
        number = FIRST_NUMBER.search(value_cell)
        actual = limit_value(source)
        if number is None or int(number[0].replace(",", "")) != actual:
            wrong.append(f"{source} is {actual!r}, documented as {value_cell.strip()!r}")
    assert not wrong, "docs/configuration.md has wrong fixed limits:\n" + "\n".join(wrong)


OPERATIONS_DOC = ROOT / "docs" / "operations.md"
# A row of the Redis keys table: | `{fw}:ticker:{edition}` | stream | ... |
KEY_ROW = re.compile(r"^\s*\|\s*`(?P<key>(?:fw|\{fw(?::push)?\}):[^`]+)`\s*\|")


def redis_key_names() -> set[str]:
    """Every key name `Keys` makes under the default prefix, parameters shown as `{name}`."""
    keys = Keys()
    names = set()
    for name, member in inspect.getmembers(Keys):
        if name.startswith("_") or name in {"tag", "push_tag"}:  # hash tags, not keys
            continue
        if isinstance(member, property):
            names.add(getattr(keys, name))
        elif inspect.isfunction(member):
            parameters = list(inspect.signature(member).parameters)[1:]
            names.add(getattr(keys, name)(*(f"{{{parameter}}}" for parameter in parameters)))
    return names


def test_the_redis_keys_table_lists_every_key() -> None:
    """docs/operations.md lists exactly the keys flashwire/core/keys.py defines."""
    documented = {m["key"] for m in map(KEY_ROW.match, OPERATIONS_DOC.read_text().splitlines()) if m}
    code = redis_key_names()
    assert "{fw}:ticker:{edition}" in code
    assert documented == code, (
        f"missing from docs/operations.md: {sorted(code - documented)}; "
        f"listed but not in Keys: {sorted(documented - code)}"
    )


# -- links ----------------------------------------------------------------------------------

MARKDOWN_LINK = re.compile(r"!?\[(?:[^\]\\]|\\.)*\]\((?P<target>[^)\s]+)(?:\s+\"[^\"]*\")?\)")
FENCE = re.compile(r"^\s*(```|~~~)")
HEADING = re.compile(r"^(#{1,6})\s+(?P<title>.+?)\s*#*\s*$")


def _prose_lines(text: str) -> list[str]:
    """The lines outside fenced code blocks, with inline code spans blanked out."""
    lines, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            lines.append(re.sub(r"`[^`]*`", "``", line))
    return lines


def github_anchors(text: str) -> set[str]:
    """The anchors GitHub gives a Markdown file's headings: lower case, punctuation dropped
    (letters, digits, `-`, `_` and spaces kept), spaces to `-`, repeats numbered -1, -2, …"""
    anchors: set[str] = set()
    seen: dict[str, int] = {}
    fenced = False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        match = None if fenced else HEADING.match(line)
        if match is None:
            continue
        title = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", match["title"]).replace("`", "")
        slug = "".join(
            char
            for char in title.strip().lower()
            if char in " -_" or unicodedata.category(char)[0] in {"L", "N", "M"}
        ).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        anchors.add(slug if count == 0 else f"{slug}-{count}")
    return anchors


def relative_links(path: Path) -> list[str]:
    """Targets of the Markdown links and images in a file that point inside the repository."""
    targets = []
    for line in _prose_lines(path.read_text()):
        for match in MARKDOWN_LINK.finditer(line):
            target = match["target"]
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
                continue
            targets.append(target)
    return targets


DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


@pytest.mark.parametrize("doc", DOC_FILES, ids=lambda path: str(path.relative_to(ROOT)))
def test_relative_links_resolve(doc: Path) -> None:
    """Every relative link names an existing file, and its #anchor an existing heading there."""
    broken = []
    for target in relative_links(doc):
        file_part, _, anchor = target.partition("#")
        destination = (doc.parent / file_part).resolve() if file_part else doc
        if not destination.exists():
            broken.append(f"{target}: no file {destination.relative_to(ROOT)}")
        elif anchor and destination.suffix == ".md" and anchor not in github_anchors(destination.read_text()):
            broken.append(f"{target}: no heading with anchor #{anchor} in {destination.relative_to(ROOT)}")
    assert not broken, f"broken links in {doc.relative_to(ROOT)}:\n" + "\n".join(broken)


def test_github_anchors_follow_githubs_rule() -> None:
    """The slug rule on headings of the kinds our docs use (code, punctuation, numbers, repeats)."""
    text = "# Flashwire\n## 4.4 `line` — a new line\n## Embed the ticker\n## FAQ?\n## FAQ?\n"
    assert github_anchors(text) == {"flashwire", "44-line--a-new-line", "embed-the-ticker", "faq", "faq-1"}


# A path into the repository written as inline code, e.g. `service/hub.py` or `web/desk/`.
REPO_PATH = re.compile(r"`(?P<path>(?:flashwire|service|workers|web|tests|bench|docs)/[\w./-]*)`")


@pytest.mark.parametrize("doc", DOC_FILES, ids=lambda path: str(path.relative_to(ROOT)))
def test_repository_paths_in_inline_code_exist(doc: Path) -> None:
    """A file or folder named in inline code exists (placeholders such as `docs/*.png` are skipped)."""
    missing = []
    fenced = False
    for line in doc.read_text().splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        if fenced:
            continue
        for match in REPO_PATH.finditer(line):
            path = match["path"]
            if any(char in path for char in "*{<") or (ROOT / path).exists():
                continue
            missing.append(path)
    assert not missing, f"{doc.relative_to(ROOT)} names paths that do not exist: {sorted(set(missing))}"
