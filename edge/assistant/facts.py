"""Fact sheets: short, vetted, plain-language text about each label, shipped inside the model pack.

``<pack>/facts/<label>.<lang>.md`` holds an optional ``# Title`` line and exactly five ``## `` sections, in
this order: What it is, Typical features, What usually happens next, When to get help sooner, Prevention and
self-care. Headings may be written in any supported language (a Spanish sheet uses "## Qué es"); sections
are keyed by their English title either way, so code never depends on the language. HTML comments (review
notes) are ignored.

A missing translation falls back to English and says so (``fallback_from``); a missing English sheet is a
``FileNotFoundError`` naming every path tried; a malformed sheet is a ``FactSheetError``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from edge.assistant.guard import fold
from edge.errors import ModelError

SECTIONS = ("What it is", "Typical features", "What usually happens next", "When to get help sooner",
            "Prevention and self-care")

SECTION_HEADINGS = {
    "en": SECTIONS,
    "es": ("Qué es", "Características típicas", "Qué suele pasar después", "Cuándo buscar ayuda antes",
           "Prevención y autocuidado"),
    "fr": ("De quoi s'agit-il ?", "Signes typiques", "Ce qui se passe ensuite en général",
           "Quand consulter plus tôt", "Prévention et soins personnels"),
}

_HEADING_KEYS = {
    re.sub(r"[^a-z0-9]+", " ", fold(heading)).strip(): key
    for headings in SECTION_HEADINGS.values() for heading, key in zip(headings, SECTIONS)
}
_LABEL = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
_LANG = re.compile(r"^[a-z]{2,3}$")


class FactSheetError(ModelError):
    """A fact sheet in the model pack is malformed."""


@dataclass(frozen=True)
class FactSheet:
    label: str
    lang: str  # the language of the text actually loaded
    sections: dict[str, str]  # keyed by the English titles in ``SECTIONS``, in that order
    text: str  # the whole file
    fallback_from: str | None = None  # the language asked for, when English was loaded instead
    title: str | None = None  # the "# " line, in the sheet's language
    path: Path | None = None


def _heading_key(heading: str, path: Path) -> str:
    key = _HEADING_KEYS.get(re.sub(r"[^a-z0-9]+", " ", fold(heading)).strip())
    if key is None:
        raise FactSheetError(f"{path}: unknown section heading '## {heading}'; expected one of {list(SECTIONS)}")
    return key


def parse_fact_sheet(text: str, *, label: str, lang: str, path: Path, fallback_from: str | None = None) -> FactSheet:
    body = re.sub(r"<!--.*?-->", "", text, flags=re.S)
    title = None
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in body.splitlines():
        if line.startswith("## "):
            key = _heading_key(line[3:].strip(), path)
            if key in sections:
                raise FactSheetError(f"{path}: section '{key}' appears twice")
            current = sections[key] = []
        elif line.startswith("# ") and title is None and not sections:
            title = line[2:].strip()
        elif current is not None:
            current.append(line)
        elif line.strip():
            raise FactSheetError(f"{path}: text before the first '## ' section: {line.strip()[:60]!r}")
    missing = [key for key in SECTIONS if key not in sections]
    if missing:
        raise FactSheetError(f"{path}: missing section(s) {missing}")
    if list(sections) != list(SECTIONS):
        raise FactSheetError(f"{path}: sections out of order {list(sections)}; expected {list(SECTIONS)}")
    texts = {key: "\n".join(lines).strip() for key, lines in sections.items()}
    empty = [key for key, value in texts.items() if not value]
    if empty:
        raise FactSheetError(f"{path}: empty section(s) {empty}")
    return FactSheet(label=label, lang=lang, sections=texts, text=text, fallback_from=fallback_from, title=title,
                     path=path)


def fact_sheet_path(pack_dir: Path, label: str, lang: str) -> Path:
    return Path(pack_dir) / "facts" / f"{label}.{lang}.md"


def load_facts(pack_dir: Path, label: str, lang: str) -> FactSheet:
    """The fact sheet for ``label`` in ``lang`` (``"es-MX"`` reads ``es``), falling back to English."""
    if not _LABEL.match(label or ""):
        raise ValueError(f"invalid label {label!r}: expected lower-case letters, digits, '_' or '-'")
    wanted = re.split(r"[-_]", (lang or "en").strip().lower(), maxsplit=1)[0]
    if not _LANG.match(wanted):
        raise ValueError(f"invalid language code {lang!r}")
    tried = []
    for candidate in dict.fromkeys((wanted, "en")):
        path = fact_sheet_path(pack_dir, label, candidate)
        tried.append(str(path))
        if path.is_file():
            return parse_fact_sheet(path.read_text(encoding="utf-8"), label=label, lang=candidate, path=path,
                                    fallback_from=wanted if candidate != wanted else None)
    raise FileNotFoundError(f"no fact sheet for label {label!r}: tried {', '.join(tried)}")
