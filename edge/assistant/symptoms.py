"""Symptoms the user ticks adjust the triage tier; they can raise it, never lower it.

Rules, in order (``URGENT`` > ``SOON`` > ``ROUTINE``):

1. a red flag in the user's own words (``check_red_flags``), or ``bleeding`` together with ``recent_change``
   -> ``URGENT``;
2. ``bleeding`` or ``recent_change`` alone -> at least ``SOON``;
3. ``itching``, ``painful``, ``duration_over_4_weeks`` and ``none`` never change the tier on their own.
   Itching and mild pain are common in harmless spots; a spot present for a long time *without* change is, if
   anything, reassuring. A sore that has not healed for weeks, or severe pain, are red flags and come in
   through rule 1 from the free text.

The model's tier is a floor: the result is the higher of the model's tier and the symptom tier.

An abstained (``UNSURE``) result stays ``UNSURE`` unless a symptom calls for ``SOON`` or ``URGENT``; then that
tier is shown. Why: ``UNSURE`` already tells the person to see a clinician, but without a time frame. When a
symptom alone justifies "soon" or "urgently", that time frame is what the person needs; the image result
being unreliable does not make bleeding or a recent change less important. The abstention itself is not lost:
it stays on the ``Result`` and the report still says the device could not give a reliable answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from edge.assistant.guard import resolve_lang
from edge.assistant.redflags import RedFlagMatch, flag_text
from edge.types import Urgency

SYMPTOMS = ("itching", "bleeding", "duration_over_4_weeks", "recent_change", "painful", "none")

_RANK = {Urgency.ROUTINE: 1, Urgency.SOON: 2, Urgency.URGENT: 3}

TIER_NAMES = {
    "en": {Urgency.URGENT: "see a doctor urgently", Urgency.SOON: "see a doctor soon",
           Urgency.ROUTINE: "routine check", Urgency.UNSURE: "the device is unsure"},
    "es": {Urgency.URGENT: "ver a un médico con urgencia", Urgency.SOON: "ver a un médico pronto",
           Urgency.ROUTINE: "revisión de rutina", Urgency.UNSURE: "el aparato no está seguro"},
    "fr": {Urgency.URGENT: "voir un médecin en urgence", Urgency.SOON: "voir un médecin bientôt",
           Urgency.ROUTINE: "contrôle de routine", Urgency.UNSURE: "l'appareil n'est pas sûr"},
}

_RAISED = {
    "en": "Raised to '{tier}' because {why}.",
    "es": "Se ha subido a «{tier}» porque {why}.",
    "fr": "Relevé à « {tier} » parce que {why}.",
}
_WHY = {
    "en": {
        "red_flag": "you described a warning sign ({flags})",
        "bleeding_and_change": "the spot is bleeding and has recently changed",
        "bleeding": "the spot has been bleeding",
        "recent_change": "the spot has recently changed",
    },
    "es": {
        "red_flag": "describió una señal de alarma ({flags})",
        "bleeding_and_change": "la mancha sangra y ha cambiado hace poco",
        "bleeding": "la mancha ha sangrado",
        "recent_change": "la mancha ha cambiado hace poco",
    },
    "fr": {
        "red_flag": "vous avez décrit un signe d'alerte ({flags})",
        "bleeding_and_change": "la tache saigne et a changé récemment",
        "bleeding": "la tache a saigné",
        "recent_change": "la tache a changé récemment",
    },
}


@dataclass(frozen=True)
class Adjustment:
    """The tier to show after symptoms, with a plain-language reason for every raise."""

    urgency: Urgency
    reasons: tuple[str, ...]
    model_urgency: Urgency

    @property
    def raised(self) -> bool:
        return self.urgency != self.model_urgency


def _validate(symptoms: Iterable[str]) -> frozenset[str]:
    ticked = frozenset(symptoms)
    unknown = sorted(ticked.difference(SYMPTOMS))
    if unknown:
        raise ValueError(f"unknown symptom id(s) {unknown}; known: {', '.join(SYMPTOMS)}")
    if "none" in ticked and len(ticked) > 1:
        raise ValueError(f"'none' cannot be combined with other symptoms: {sorted(ticked)}")
    return ticked


def adjust_urgency(result_urgency: Urgency, symptoms: Iterable[str], lang: str = "en", *,
                   red_flags: RedFlagMatch | None = None, duration_weeks: float | None = None) -> Adjustment:
    """Raise ``result_urgency`` for the ticked ``symptoms`` (ids in ``SYMPTOMS``) and any free-text red flags.

    ``duration_weeks`` is an alternative to ticking ``duration_over_4_weeks`` (a value over 4 ticks it); like
    that tick it is recorded but does not change the tier (see the module docstring).
    """
    ticked = set(_validate(symptoms))
    if duration_weeks is not None:
        if duration_weeks < 0:
            raise ValueError(f"duration_weeks must be >= 0, got {duration_weeks}")
        if duration_weeks > 4:
            ticked.add("duration_over_4_weeks")
    lang = resolve_lang(lang)
    model_urgency = Urgency(result_urgency)

    if red_flags is not None and red_flags.flags:
        target, why = Urgency.URGENT, "red_flag"
    elif {"bleeding", "recent_change"} <= ticked:
        target, why = Urgency.URGENT, "bleeding_and_change"
    elif "bleeding" in ticked:
        target, why = Urgency.SOON, "bleeding"
    elif "recent_change" in ticked:
        target, why = Urgency.SOON, "recent_change"
    else:
        return Adjustment(model_urgency, (), model_urgency)

    current = _RANK.get(model_urgency, 0)  # UNSURE ranks below SOON: a symptom tier replaces it
    if _RANK[target] <= current:
        return Adjustment(model_urgency, (), model_urgency)
    flags = ", ".join(flag_text(f, lang) for f in red_flags.flags) if why == "red_flag" else ""
    reason = _RAISED[lang].format(tier=TIER_NAMES[lang][target], why=_WHY[lang][why].format(flags=flags))
    return Adjustment(target, (reason,), model_urgency)
