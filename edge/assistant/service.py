"""The assistant as the kiosk sees it: safety first, then a grounded answer, then safety again.

For every question:
1. **Red flags** in the user's words (any of en/es/fr) -> the fixed urgent-care message, no model call.
2. **Grounded prompt**: the result (label, calibrated probabilities, urgency) and the pack's vetted fact sheet
   for that label, after a fixed system prompt that the model owner has already cached.
3. **Output guard**, sentence by sentence as tokens stream: a sentence stating a diagnosis or a dose stops
   the answer and replaces it with a safe one; a clean answer ends with the screening-aid disclaimer.
   The grounding and the guard use the tier *after* symptoms: the result's urgency raised by the ticked
   symptoms and by red flags the person described earlier in the conversation (``adjust_urgency``), so
   "no rush" is blocked for a routine result whose spot bleeds and has changed.
4. **Fallbacks**: no model, a model error or a timeout -> the fact sheet itself, and the UI is told so. So
   does an answer in Spanish or French that the model wrote in English (``wrong_language``).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from edge.assistant.facts import load_facts
from edge.assistant.guard import (
    ACCURACY_QUESTION,
    CONFIDENCE_QUESTION,
    DISCLAIMER,
    ODDS_QUESTION,
    PROGNOSIS_QUESTION,
    SKIP_CARE_QUESTION,
    TREATMENT_QUESTION,
    VERDICT_QUESTION,
    fold,
    question_needing_a_vetted_answer,
    resolve_lang,
    screen_answer,
)
from edge.assistant.llm import LlmOwner, LlmTimeout, LlmUnavailable, default_gguf
from edge.assistant.redflags import check_red_flags, urgent_message
from edge.assistant.report import build_report
from edge.assistant.symptoms import SYMPTOMS, TIER_NAMES, Adjustment, adjust_urgency
from edge.errors import EdgeError
from edge.types import Result, Urgency

log = logging.getLogger("edge.assistant")
LANGUAGE_NAMES = {"en": "English", "es": "Spanish", "fr": "French"}
SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
# Chat-template control text ("<|im_start|>system", "</s>", "[INST]"): llama.cpp parses special tokens in the
# prompt, so a person who types one could open a system turn of their own and override the grounding.
CONTROL_TEXT = re.compile(r"<\|[^<>|]{0,40}\|>|</?s>|\[/?INST\]|<</?SYS>>", re.IGNORECASE)


def plain_text(text: str) -> str:
    """What a person typed, with chat-template control sequences removed (repeatedly: they can nest)."""
    while True:
        cleaned = CONTROL_TEXT.sub("", text)
        if cleaned == text:
            return text
        text = cleaned


# Short function words that appear in almost every sentence of their language (and in no other of the three).
_STOPWORDS = {
    "en": frozenset({"the", "is", "are", "was", "you", "your", "this", "that", "it", "its", "of", "to", "and", "with",
                     "can", "be", "should", "for", "have", "has", "what", "not", "will", "would", "if", "they",
                     "about", "any", "or", "do", "does", "may", "we"}),
    "es": frozenset({"el", "los", "las", "del", "que", "y", "es", "un", "una", "por", "para", "con", "su", "se",
                     "lo", "al", "usted", "muy", "pero", "como", "esta", "este", "puede", "debe", "si"}),
    "fr": frozenset({"le", "les", "des", "du", "et", "est", "un", "une", "vous", "que", "qui", "pour", "pas", "ne",
                     "ce", "il", "elle", "sur", "avec", "votre", "au", "aux", "dans", "peut", "mais"}),
}


def wrong_language(text: str, lang: str) -> bool:
    """Whether ``text``, meant for a Spanish or French reader, is clearly English: at least three English
    function words and more than twice as many as the expected language's. Names and medical words do not
    count, so "El melanoma (melanoma) es ..." is Spanish."""
    lang = resolve_lang(lang)
    if lang == "en":
        return False
    words = re.findall(r"[a-z]+", fold(text))
    english = sum(word in _STOPWORDS["en"] for word in words)
    own = sum(word in _STOPWORDS[lang] for word in words)
    return english >= 3 and english > 2 * own


SYSTEM_PROMPT = (
    "You are a careful assistant on an offline skin-screening device. You are not a doctor and the device "
    "does not diagnose. Explain the screening result and the fact sheet you are given in simple, kind words, "
    "in at most four short sentences. Never say what the person has, never name a medicine or a dose, and "
    "suggest showing the spot to a health worker for any worry. If you do not know, say so."
)
NOTICES = {
    "en": "The assistant is not available right now, so here is the fact sheet for this result.",
    "es": "El asistente no está disponible ahora; esta es la ficha informativa de este resultado.",
    "fr": "L'assistant n'est pas disponible pour le moment ; voici la fiche d'information de ce résultat.",
}
NOT_IN_THIS_LANGUAGE = {
    "en": "The assistant does not answer in English on this device, so here is the fact sheet for this result.",
    "es": "El asistente no responde en español en este dispositivo; esta es la ficha informativa de este resultado.",
    "fr": "L'assistant ne répond pas en français sur cet appareil ; voici la fiche d'information de ce résultat.",
}
NO_RESULT = {
    "en": "Please take or upload a photo first, so I can explain the screening result.",
    "es": "Primero tome o suba una foto, para que pueda explicarle el resultado.",
    "fr": "Prenez ou envoyez d'abord une photo, pour que je puisse vous expliquer le résultat.",
}


REPORT_NOTES = {
    "unavailable": {
        "en": "The assistant is not available on this device: this report was written from templates.",
        "es": "El asistente no está disponible en este dispositivo: este informe se redactó con plantillas.",
        "fr": "L'assistant n'est pas disponible sur cet appareil : ce rapport a été rédigé à partir de modèles.",
    },
    "failed": {
        "en": "The assistant did not answer in time: this report was written from templates.",
        "es": "El asistente no respondió a tiempo: este informe se redactó con plantillas.",
        "fr": "L'assistant n'a pas répondu à temps : ce rapport a été rédigé à partir de modèles.",
    },
}


_CANNOT_JUDGE = {
    "en": "I can't tell you whether this spot is harmful or harmless, how likely either is, or what it means for "
          "your health: no screening tool can, and this one makes mistakes. Only a health worker or doctor who "
          "examines the spot can tell you.",
    "es": "No puedo decirle si esta mancha es peligrosa o inofensiva, qué probabilidad hay de una cosa u otra, ni "
          "qué significa para su salud: ninguna herramienta de detección puede hacerlo, y esta puede equivocarse. Solo "
          "un trabajador de salud o un médico que examine la mancha puede decírselo.",
    "fr": "Je ne peux pas vous dire si cette tache est dangereuse ou sans danger, quelle en est la probabilité, ni "
          "ce que cela signifie pour votre santé : aucun outil de dépistage ne le peut, et celui-ci peut se tromper. "
          "Seul un soignant ou un médecin qui examine la tache peut vous le dire.",
}
# A person telling the assistant about their spot ("It hasn't bled, grown or changed") rather than asking: the
# model answered such statements with nonsense ("The sentence is in English."). They get the warning signs to
# watch for, as the report gives them, and the next step.
SYMPTOMS_REPORTED = "symptoms_reported"
# The answers to questions the language model must not answer (guard.question_needing_a_vetted_answer) and to
# statements about the spot, each followed by the next step for the answer's tier.
VETTED_ANSWERS = {
    VERDICT_QUESTION: _CANNOT_JUDGE,
    ODDS_QUESTION: _CANNOT_JUDGE,
    PROGNOSIS_QUESTION: _CANNOT_JUDGE,
    SKIP_CARE_QUESTION: {
        "en": "Please don't skip or put off the next step because of this screening: it can be wrong in both "
              "directions, and only a health worker or doctor who examines the spot can tell you how soon it "
              "needs to be seen.",
        "es": "No deje de dar el siguiente paso ni lo aplace por esta detección: puede equivocarse en los dos "
              "sentidos, y solo un trabajador de salud o un médico que examine la mancha puede decirle con qué "
              "rapidez hay que verla.",
        "fr": "Ne renoncez pas à l'étape suivante et ne la repoussez pas à cause de ce dépistage : il peut se "
              "tromper dans les deux sens, et seul un soignant ou un médecin qui examine la tache peut vous dire "
              "dans quel délai la faire voir.",
    },
    TREATMENT_QUESTION: {
        "en": "I can't advise on treatments, medicines or doses for this spot: a doctor or nurse who examines it "
              "will tell you what, if anything, is needed. Please don't treat, cut or remove it yourself.",
        "es": "No puedo aconsejar tratamientos, medicamentos ni dosis para esta mancha: un médico o una enfermera "
              "que la examine le dirá qué hace falta, si hace falta algo. No la trate, ni la corte ni la quite usted mismo.",
        "fr": "Je ne peux pas conseiller de traitement, de médicament ni de dose pour cette tache : un médecin ou "
              "une infirmière qui l'examine vous dira ce qu'il faut faire, s'il faut faire quelque chose. Ne la "
              "traitez pas, ne la coupez pas et ne l'enlevez pas vous-même.",
    },
    ACCURACY_QUESTION: {
        "en": "This screening makes mistakes in both directions: it misses some serious spots and raises the alarm "
              "about some harmless ones. It was trained and tested only on magnified photos of skin (dermoscopy), "
              "mostly of lighter skin, so on other photos and on darker skin it may do worse. Its measured accuracy "
              "is written in its model card, which the health worker can show you. That is why a health worker or "
              "doctor needs to look at the spot.",
        "es": "Esta detección puede equivocarse en los dos sentidos: no ve algunas manchas graves y da la alarma por "
              "algunas inofensivas. Se entrenó y se probó solo con fotos ampliadas de la piel (dermatoscopia), sobre "
              "todo de piel clara, así que con otras fotos y en pieles más oscuras puede fallar más. Su exactitud "
              "medida figura en su ficha del modelo, que el trabajador de salud puede enseñarle. Por eso un "
              "trabajador de salud o un médico debe ver la mancha.",
        "fr": "Ce dépistage peut se tromper dans les deux sens : il passe à côté de certaines taches graves et donne "
              "l'alerte pour certaines sans danger. Il a été entraîné et testé uniquement sur des photos agrandies "
              "de la peau (dermoscopie), surtout de peaux claires : sur d'autres photos et sur des peaux plus "
              "foncées, il peut faire moins bien. Sa précision mesurée figure dans sa fiche de modèle, que le "
              "soignant peut vous montrer. C'est pourquoi un soignant ou un médecin doit examiner la tache.",
    },
    SYMPTOMS_REPORTED: {
        "en": "Thank you for telling me. This device cannot examine the spot, so please keep watching it.",
        "es": "Gracias por contármelo. Este aparato no puede examinar la mancha, así que siga vigilándola.",
        "fr": "Merci de me l'avoir dit. Cet appareil ne peut pas examiner la tache : continuez à la surveiller.",
    },
    CONFIDENCE_QUESTION: {
        "en": "Here is what the number on the screen means.",
        "es": "Esto es lo que significa el número de la pantalla.",
        "fr": "Voici ce que signifie le chiffre affiché à l'écran.",
    },
}
_SYMPTOM_STATEMENT = re.compile(
    r"\b(?:bleed\w*|bled|blood\w*|ooz\w*|weep\w*|itch\w*|hurt\w*|pain\w*|sore|grow\w*|grew|bigger|chang\w*|spread\w*"
    r"|heal\w*|crust\w*|scab\w*|sangr\w*|supur\w*|pica\w*|duele|dolor\w*|crec\w*|cambi\w*|saign\w*|suint\w*"
    r"|demang\w*|douleur\w*|gross\w*|grandi\w*)\b")


def reports_symptoms(message: str) -> bool:
    """A statement (not a question) about how the spot behaves."""
    return "?" not in message and bool(_SYMPTOM_STATEMENT.search(fold(message)))


NEXT_STEP_HEADING = {"en": "What this screening suggests you do next:",
                     "es": "Lo que esta detección le sugiere como siguiente paso:",
                     "fr": "Ce que ce dépistage vous suggère comme prochaine étape :"}


def _sheet_next_step_fits(result: Result, raised: bool) -> bool:
    """A fact sheet's "What usually happens next" is written for its label's tier: it does not fit when symptoms
    raised the tier, nor when the device was unsure ("see a clinician", not "nothing needs to be done")."""
    return not (raised or result.abstained)


class FactsUnavailable(EdgeError):
    """The model pack has no fact sheet for this label (e.g. a pack that is not a skin model)."""


@dataclass(frozen=True)
class ChatEvent:
    kind: str  # token | replace | redflag | notice | done | error
    data: dict


class Assistant:
    def __init__(self, settings, pack_dir: Path | None, llm: LlmOwner | None, llm_error: str | None) -> None:
        self.settings = settings.assistant
        self.pack_dir = pack_dir
        self.llm = llm
        self.llm_error = llm_error

    # -- chat ------------------------------------------------------------------------------------------
    def prepare(self, result: Result, lang: str) -> None:
        """Called when a result is shown: evaluate its grounding now, while the person reads the screen, so
        the first question about it does not wait for the fact sheet to be read by the model."""
        if self.llm is not None and self._speaks(lang):
            self.llm.prefill(self._messages("", result, lang, [])[:-1] + [{"role": "user", "content": ""}])

    def answer(self, message: str, result: Result | None, lang: str, *, history: list[dict],
               symptoms: frozenset[str], abandoned: Callable[[], bool] | None = None) -> Iterator[ChatEvent]:
        """The events of one answer. ``abandoned`` says whether the person has gone (the kiosk passes the
        server's client-disconnected check): the model then stops, free for the next patient."""
        flags = check_red_flags(message)
        if flags is not None:
            yield ChatEvent("redflag", {"text": urgent_message(lang, flags), "urgency": Urgency.URGENT.value,
                                        "flags": list(flags.flags)})
            yield ChatEvent("done", {"source": "redflag"})
            return
        if result is None:
            yield ChatEvent("token", {"text": NO_RESULT.get(lang, NO_RESULT["en"]) + "\n\n" + DISCLAIMER[lang]})
            yield ChatEvent("done", {"source": "template"})
            return
        adjustment = self.answer_adjustment(result, symptoms, history, lang)
        kind = question_needing_a_vetted_answer(message)
        if kind is None and reports_symptoms(message):
            kind = SYMPTOMS_REPORTED
        if kind is not None:
            yield from self._vetted_answer(kind, result, lang, adjustment)
            return
        if self.llm is None:
            yield from self._fact_sheet_answer(result, lang, self.llm_error or "assistant disabled", adjustment)
            return
        if not self._speaks(lang):
            yield from self._fact_sheet_answer(result, lang, f"the language model is not used in {lang}",
                                               adjustment, notice=NOT_IN_THIS_LANGUAGE)
            return
        yield from self._llm_answer(message, result, lang, history, abandoned, adjustment)

    def _speaks(self, lang: str) -> bool:
        """Whether the model answers in ``lang`` (``assistant.llm_languages``)."""
        return resolve_lang(lang) in self.settings.llm_languages

    def answer_adjustment(self, result: Result, symptoms: Iterable[str], history: list[dict],
                          lang: str) -> Adjustment:
        """The tier an answer must keep to: the result's urgency raised by the ticked ``symptoms`` and by red
        flags in the person's earlier messages (``history``), exactly as the report raises it."""
        ticked = set(symptoms or ())
        unknown = ticked.difference(SYMPTOMS)
        if unknown:
            log.warning("ignoring unknown symptom id(s) %s", sorted(unknown))
        ticked = ticked.intersection(SYMPTOMS) - {"none"}  # "none" never changes the tier
        said = "\n".join(str(turn.get("content") or "") for turn in history or () if turn.get("role") == "user")
        return adjust_urgency(result.urgency, ticked, lang, red_flags=check_red_flags(said) if said else None)

    def _llm_answer(self, message: str, result: Result, lang: str, history: list[dict],
                    abandoned: Callable[[], bool] | None, adjustment: Adjustment) -> Iterator[ChatEvent]:
        messages = self._messages(message, result, lang, history, adjustment)
        pending, emitted = "", []
        try:
            for piece in self.llm.stream(messages, max_tokens=self.settings.max_tokens,
                                         temperature=self.settings.temperature, timeout_s=self.settings.timeout_s,
                                         abandoned=abandoned):
                pending += piece
                *complete, pending = SENTENCE_END.split(pending)
                for sentence in complete:
                    ending = self._ending(sentence, emitted, message, result, lang, adjustment)
                    if ending:
                        yield from ending
                        return
                    emitted.append(sentence)
                    yield ChatEvent("token", {"text": sentence + " "})
        except (LlmTimeout, RuntimeError, ValueError) as exc:
            # ValueError is llama.cpp's "the prompt does not fit the context": the earlier turns go first
            if isinstance(exc, ValueError) and history and not emitted:
                log.warning("LLM prompt too long (%s): answering without the earlier turns", exc)
                yield from self._llm_answer(message, result, lang, [], abandoned, adjustment)
                return
            log.warning("LLM answer failed, falling back to the fact sheet: %s", exc)
            yield from self._fact_sheet_answer(result, lang, str(exc), adjustment)
            return
        tail = pending.strip()
        if tail:
            ending = self._ending(tail, emitted, message, result, lang, adjustment)
            if ending:
                yield from ending
                return
            yield ChatEvent("token", {"text": tail + " "})
        yield ChatEvent("token", {"text": "\n\n" + DISCLAIMER[lang]})
        yield ChatEvent("done", {"source": "llm", **self.llm.stats()})

    def _ending(self, sentence: str, emitted: list[str], message: str, result: Result, lang: str,
                adjustment: Adjustment) -> list[ChatEvent]:
        """The events that end the answer at ``sentence`` instead of showing it: the fact sheet when the
        model wrote the wrong language, the guard's replacement when the answer so far is unsafe; none when
        the sentence may be shown."""
        if wrong_language(sentence, lang):
            return list(self._wrong_language(result, lang, adjustment, bool(emitted)))
        verdict = screen_answer(" ".join([*emitted, sentence]), lang, adjustment.urgency.value, question=message)
        if not verdict.safe:
            return [ChatEvent("replace", {"text": verdict.text, "reason": verdict.reason}),
                    ChatEvent("done", {"source": "guard"})]
        return []

    def _wrong_language(self, result: Result, lang: str, adjustment: Adjustment,
                        shown: bool) -> Iterator[ChatEvent]:
        # the answer's text is not logged: the model's words can echo the patient's
        log.warning("LLM answered in another language than %s: falling back to the fact sheet", lang)
        if shown:  # the sentences already on screen go: the fact sheet replaces the whole answer
            yield ChatEvent("replace", {"text": "", "reason": "wrong_language"})
        yield from self._fact_sheet_answer(result, lang, "the model answered in another language", adjustment)

    def _vetted_answer(self, kind: str, result: Result, lang: str, adjustment: Adjustment) -> Iterator[ChatEvent]:
        """A question the model must not answer, or a statement about the spot (``VETTED_ANSWERS``): a fixed
        answer, the report's warning signs or its explanation of the score where the kind asks for them, then
        the next step for the answer's tier as the report gives it."""
        lang = resolve_lang(lang)
        parts = [VETTED_ANSWERS[kind][lang]]
        try:
            facts = self.facts(result.label, lang)
        except FactsUnavailable as exc:
            log.warning("%s", exc)
        else:
            report = build_report(result, facts, lang, symptoms=adjustment)
            if kind == SYMPTOMS_REPORTED:
                parts.append(report.section("immediate_care_triggers").strip())
            elif kind == CONFIDENCE_QUESTION:
                parts.append(report.section("confidence_meaning").strip())
            parts.append(f"{NEXT_STEP_HEADING[lang]}\n{report.section('recommended_actions').strip()}")
            if adjustment.urgency == Urgency.ROUTINE:  # its next step says "using the checklist below"
                parts.append(report.section("self_monitoring_checklist").strip())
        parts.append(DISCLAIMER[lang])
        yield ChatEvent("token", {"text": "\n\n".join(parts)})
        yield ChatEvent("done", {"source": "template", "reason": kind})

    def _fact_sheet_answer(self, result: Result, lang: str, why: str, adjustment: Adjustment, *,
                           notice: dict[str, str] = NOTICES) -> Iterator[ChatEvent]:
        yield ChatEvent("notice", {"text": notice[resolve_lang(lang)], "reason": why})
        try:
            facts = self.facts(result.label, lang)
        except FactsUnavailable as exc:
            log.warning("%s", exc)
            facts = None
        if facts is not None:
            yield ChatEvent("token", {"text": facts.sections["What it is"].strip() + "\n\n"})
            if not _sheet_next_step_fits(result, adjustment.raised):
                next_step = build_report(result, facts, lang, symptoms=adjustment).section("recommended_actions")
            else:
                next_step = facts.sections["What usually happens next"]
            yield ChatEvent("token", {"text": next_step.strip() + "\n\n"})
        yield ChatEvent("token", {"text": DISCLAIMER[lang]})
        yield ChatEvent("done", {"source": "template"})

    def _messages(self, message: str, result: Result, lang: str, history: list[dict],
                  adjustment: Adjustment | None = None) -> list[dict]:
        try:
            facts = self.facts(result.label, "en")
        except FactsUnavailable:
            facts = None
        raised = adjustment is not None and adjustment.raised
        urgency = adjustment.urgency if raised else result.urgency
        language = LANGUAGE_NAMES.get(resolve_lang(lang), "English")
        top = ", ".join(f"{label} {p:.0%}" for label, p in result.top(3))
        sheet = ""
        if facts:
            next_step = (facts.sections["What usually happens next"] if _sheet_next_step_fits(result, raised)
                         else f"Next step: {TIER_NAMES['en'][urgency]}.")
            sheet = f"\nFact sheet:\n{facts.sections['What it is']}\n{next_step}"
        grounding = (
            f"Screening result: {result.display_name}. Calibrated probabilities: {top}. "
            f"Urgency: {urgency.value}."
            + (f" (Raised from {result.urgency.value} by the symptoms the person reported.)" if raised else "")
            + (" The device was unsure about this image." if result.abstained else "")
            + sheet
            + f"\nAnswer in {language}."
        )
        recent = [{"role": turn["role"], "content": plain_text(turn["content"])}
                  for turn in history if turn["role"] in ("user", "assistant")][-4:]
        question = plain_text(message) + (f"\n\nAnswer in {language}." if message else "")
        return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "system", "content": grounding},
                *recent, {"role": "user", "content": question}]

    # -- report ----------------------------------------------------------------------------------------
    def facts(self, label: str, lang: str):
        """The pack's fact sheet for ``label``, or ``FactsUnavailable`` saying why."""
        if self.pack_dir is None:
            raise FactsUnavailable("no model pack is loaded, so there is no fact sheet")
        try:
            return load_facts(self.pack_dir, label, lang)
        except (FileNotFoundError, ValueError) as exc:
            raise FactsUnavailable(f"no fact sheet for '{label}' in this model pack: {exc}") from None

    def report(self, result: Result, lang: str, *, symptoms: frozenset[str], red_flag_text: str = "",
               abandoned: Callable[[], bool] | None = None, overviews: dict | None = None):
        """(report, note): the LLM writes the overview when it can; templates otherwise, and the note says so.

        ``overviews``: the patient session's store of overviews already written, by (result id, language):
        reopening a report (after ticking a symptom, say) reuses the text instead of running the model again.
        The overview depends only on the result and the language; symptoms change the template parts."""
        facts = self.facts(result.label, lang)
        flags = check_red_flags(red_flag_text) if red_flag_text else None
        adjustment = adjust_urgency(result.urgency, symptoms, lang, red_flags=flags) if (symptoms or flags) else None
        llm_text, note = None, None
        if self.llm is None:
            note = REPORT_NOTES["unavailable"].get(lang, REPORT_NOTES["unavailable"]["en"])
        elif self.settings.llm_in_reports and self._speaks(lang):
            try:
                key = (result.id, lang)
                cached = overviews.get(key) if overviews is not None else None
                text = cached if cached is not None else self._overview(result, lang, abandoned)
                finished = not (abandoned is not None and abandoned())  # a cut-off text is not kept
                if overviews is not None and cached is None and text.strip() and finished:
                    overviews[key] = text
                llm_text = {"condition_overview": text}
            except (LlmTimeout, RuntimeError, ValueError) as exc:
                log.warning("LLM overview failed, report from templates: %s", exc)
                note = REPORT_NOTES["failed"].get(lang, REPORT_NOTES["failed"]["en"])
        report = build_report(result, facts, lang, symptoms=adjustment, llm_text=llm_text).with_note(note)
        return report, note

    def _overview(self, result: Result, lang: str, abandoned: Callable[[], bool] | None = None) -> str:
        question = ("In two or three short sentences, explain to the person what this screening result means "
                    "and what they should do next.")
        messages = self._messages(question, result, lang, [])
        return "".join(self.llm.stream(messages, max_tokens=self.settings.max_tokens,
                                       temperature=self.settings.temperature, timeout_s=self.settings.timeout_s,
                                       abandoned=abandoned))

    # -- health ----------------------------------------------------------------------------------------
    def forget(self) -> None:
        """A new patient: the model keeps nothing of the last conversation (done on the model's thread)."""
        if self.llm is not None:
            self.llm.forget()

    def health(self) -> dict:
        if self.llm is None:
            return {"status": "unavailable", "reason": self.llm_error}
        return {"status": "ok", **self.llm.stats()}

    def stats(self) -> dict:
        return self.llm.stats() if self.llm else {"tokens": 0, "last_tokens_per_s": 0.0}

    def close(self) -> None:
        if self.llm is not None:
            self.llm.close()


def build_assistant(settings, pack) -> Assistant:
    """The assistant with its model when it loads; without (templates only) and the reason when not."""
    cfg = settings.assistant
    pack_dir = pack.root if pack is not None else None
    try:
        path = cfg.model_path or default_gguf()
        llm = LlmOwner(path, n_ctx=cfg.n_ctx, threads=cfg.threads, system_prompt=SYSTEM_PROMPT)
    except LlmUnavailable as exc:
        log.warning("assistant runs without a language model: %s", exc)
        return Assistant(settings, pack_dir, None, str(exc))
    return Assistant(settings, pack_dir, llm, None)
