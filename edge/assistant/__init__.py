"""The assistant's safety layer: red flags before the LLM, a guard after it, symptom triage, fact sheets and
template reports.

Nothing here loads a model: the LLM (llama-cpp-python) is wired on top of these pure functions, and every
piece of generated text passes ``guard.screen_answer`` before a person sees it. This is a screening aid,
not a diagnostic device; the safety behaviour is part of correctness.

    check_red_flags(text) -> RedFlagMatch | None     free text, en/es/fr, before any LLM call
    urgent_message(lang, flags) -> str               fixed "seek care promptly" message
    screen_answer(text, lang, urgency) -> GuardVerdict  no diagnosis, no doses, no waiting on an urgent result
    adjust_urgency(urgency, symptoms, lang) -> Adjustment
    load_facts(pack_dir, label, lang) -> FactSheet
    build_report(result, facts, lang, ...) -> Report  .markdown() / .html()
"""

from edge.assistant.facts import FactSheet, FactSheetError, load_facts
from edge.assistant.guard import DISCLAIMER, GuardVerdict, screen_answer
from edge.assistant.redflags import RedFlagMatch, check_red_flags, urgent_message
from edge.assistant.report import Report, build_report
from edge.assistant.symptoms import Adjustment, adjust_urgency

__all__ = [
    "DISCLAIMER", "Adjustment", "FactSheet", "FactSheetError", "GuardVerdict", "RedFlagMatch", "Report",
    "adjust_urgency", "build_report", "check_red_flags", "load_facts", "screen_answer", "urgent_message",
]
