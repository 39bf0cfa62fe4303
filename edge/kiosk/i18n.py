"""Message catalogues: every user-facing string of the kiosk, in English, Spanish and French.

Templates and the page's script look strings up by key; nothing user-facing is written in a template.
A key missing from a language falls back to English (and a test checks that none is missing).
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

LANGUAGES = ("en", "es", "fr")
DEFAULT = "en"
FOLDER = Path(__file__).parent / "i18n"


@lru_cache(maxsize=None)
def catalogue(lang: str) -> dict[str, str]:
    base = json.loads((FOLDER / f"{DEFAULT}.json").read_text(encoding="utf-8"))
    if lang != DEFAULT:
        base.update(json.loads((FOLDER / f"{lang}.json").read_text(encoding="utf-8")))
    return base


def supported(lang: str | None) -> str:
    lang = (lang or DEFAULT).split("-")[0].lower()
    return lang if lang in LANGUAGES else DEFAULT


def text(lang: str, key: str) -> str:
    return catalogue(supported(lang)).get(key, key)
