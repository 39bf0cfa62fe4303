"""The output guard: what the assistant says is screened before a person sees it.

The assistant is a screening aid. Two kinds of sentence must never reach the screen, whoever wrote them (an
LLM, a template, a fact sheet):

- ``definite_diagnosis``: a definite statement about the person's spot ("you have melanoma", "this is
  definitely cancer", "c'est un carcinome", "I can confirm ..."), including a definite *benign* verdict
  ("this is not cancer", "nothing to worry about"), which is false reassurance. Hedged screening language
  passes: "the screening suggests features similar to ...", "it may be ...", "only a doctor can tell whether
  this is melanoma", "if you have many moles ...".
- ``delays_care`` (only for a result whose next step is ``urgent`` or ``soon``): advice to wait or that
  there is no hurry ("no rush to see a doctor", "it can wait a few months", "rien ne presse"), which
  contradicts the time frame the device gave.
- ``treatment_dose``: a number with a dose unit next to a medicine or treatment word ("1% hydrocortisone
  cream", "take 400 mg ibuprofen"), any amount in mg/mcg/IU, or a dosing schedule ("twice daily", "every 8
  hours", "dos veces al día", "deux fois par jour").

Matching works on folded text (accents, case and apostrophes removed), in English, Spanish and French at
once: a model asked in one language can answer in another. A blocked answer is replaced by a fixed, kind
message in the user's language. This module also owns the shared vocabulary of the safety layer: the
supported languages and the one-sentence ``DISCLAIMER`` used everywhere.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from dataclasses import dataclass

log = logging.getLogger("edge.assistant")

SUPPORTED_LANGS = ("en", "es", "fr")
DEFAULT_LANG = "en"

DEFINITE_DIAGNOSIS = "definite_diagnosis"
TREATMENT_DOSE = "treatment_dose"
DELAYS_CARE = "delays_care"
# Results whose next step has a time frame: advice to wait contradicts it.
TIME_BOUND_URGENCIES = frozenset({"urgent", "soon"})


def resolve_lang(lang: str | None) -> str:
    """``"es-MX"`` -> ``"es"``; anything unsupported (or empty) -> ``"en"``."""
    base = re.split(r"[-_]", (lang or "").strip().lower(), maxsplit=1)[0]
    return base if base in SUPPORTED_LANGS else DEFAULT_LANG


class ByLanguage(dict):
    """Fixed texts keyed by language; an unsupported or regional code falls back via ``resolve_lang``."""

    def __missing__(self, lang: str) -> str:
        return dict.__getitem__(self, resolve_lang(lang))


DISCLAIMER = ByLanguage(
    en="This is a screening aid, not a diagnosis: only a trained health professional can diagnose a skin "
       "problem.",
    es="Esto es una ayuda para la detección, no un diagnóstico: solo un profesional de la salud capacitado "
       "puede diagnosticar un problema de la piel.",
    fr="Ceci est une aide au dépistage, pas un diagnostic : seul un professionnel de santé formé peut "
       "diagnostiquer un problème de peau.",
)

SAFE_REPLACEMENT = ByLanguage(
    en="I'm sorry, I can't give a diagnosis or tell you medicine doses. Only a doctor or nurse who examines you "
       "can do that safely. Please show this result to a health worker or doctor, and ask them about the spot "
       "and any treatment. " + DISCLAIMER["en"],
    es="Lo siento, no puedo dar un diagnóstico ni indicar dosis de medicamentos. Solo un médico o una enfermera "
       "que le examine puede hacerlo de forma segura. Muestre este resultado a un trabajador de salud o a un "
       "médico, y pregúntele por la mancha y por cualquier tratamiento. " + DISCLAIMER["es"],
    fr="Désolé, je ne peux pas donner de diagnostic ni de doses de médicaments. Seul un médecin ou une "
       "infirmière qui vous examine peut le faire sans risque. Montrez ce résultat à un soignant ou à un "
       "médecin, et posez-lui vos questions sur la tache et sur un éventuel traitement. " + DISCLAIMER["fr"],
)


@dataclass(frozen=True)
class GuardVerdict:
    """``text`` is the original when ``safe``, otherwise the fixed replacement in the user's language."""

    safe: bool
    text: str
    reason: str | None = None
    matched: str | None = None  # the folded phrase that triggered the block, for logs and tests


# --- folding ----------------------------------------------------------------------------------------------

_SPECIAL_LETTERS = {"œ": "oe", "æ": "ae", "ß": "ss", "ø": "o", "ł": "l", "đ": "d", "μ": "u", "µ": "u"}
_APOSTROPHES = "'’‘ʼ`´"


def fold(text: str) -> str:
    """Lower-case, accent-free text (NFKD, combining marks dropped); punctuation is kept."""
    decomposed = unicodedata.normalize("NFKD", text)
    stripped = "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()
    return "".join(_SPECIAL_LETTERS.get(c, c) for c in stripped)


def _words(text: str) -> str:
    """Words (and ``%``) separated by single spaces; apostrophes split ``c'est`` into ``c est``."""
    return re.sub(r"[^\w%]+", " ", text.replace("_", " ")).strip()


def _sentences(folded: str) -> list[str]:
    # A full stop ends a sentence only before a space or the end, so "2.5 mg" stays in one sentence.
    return [s for s in re.split(r"[!?;\n¡¿]+|\.(?=\s|$)", folded) if s.strip()]


# "Diagnosis: melanoma" states a diagnosis; the colon must not split it into two harmless clauses.
_DIAGNOSIS_LABEL = re.compile(r"\b(diagnosis|diagnostico|diagnostic)\s*:")
_LABEL_VERB = {"diagnosis": "diagnosis is", "diagnostico": "diagnostico es", "diagnostic": "diagnostic est"}
# A hedge in one clause does not soften the next: "I can't be sure, but you have melanoma".
_CONTRAST = r"\s(?:but|however|yet|pero|sin embargo|mais|cependant|pourtant)\s"


def _clauses(sentence: str) -> list[str]:
    sentence = _DIAGNOSIS_LABEL.sub(lambda m: _LABEL_VERB[m.group(1)], sentence)
    parts = re.split(rf"[,:\"«»“”]|\s[-–—]\s|{_CONTRAST}", sentence)
    return [w for w in (_words(part) for part in parts) if w]


def _rx(pattern: str) -> re.Pattern:
    return re.compile(rf"\b(?:{pattern})(?![a-z0-9])")


# --- definite diagnosis -----------------------------------------------------------------------------------

_DISEASE = "|".join((
    # English
    r"melanomas?|carcinomas?|cancers?|cancerous|malignan\w*|basal cell\w*|squamous cell\w*|bcc|scc",
    r"(?:actinic |solar |seborrh\w* )?keratos[ie]s|bowen s(?: disease)?|bowens(?: disease)?|bowen disease",
    r"dermatofibromas?|nevus|naevus|nevi|naevi|moles?|angiomas?|angiokeratomas?|granulomas?|lentigo|lentigines",
    r"tumou?rs?|lymphomas?|sarcomas?|benign|harmless|pre ?cancer\w*",
    # Spanish
    r"malign\w*|basocelular\w*|espinocelular\w*|queratosis|nevos?|lunar\w*|angioqueratomas?|tumor\w*",
    r"benign\w*|inofensiv\w*",
    # French
    r"melanomes?|carcinomes?|malin\w*|basocellulaire\w*|spinocellulaire\w*|keratoses?|dermatofibromes?",
    r"grains? de beaute|angiomes?|angiokeratomes?|granulomes?|tumeurs?|benin\w*|inoffensi\w*|sans danger",
))
_FILLER = r"(?:[a-z0-9]+ ){0,3}"
_DISEASE_AFTER = rf"{_FILLER}(?:{_DISEASE})"

_SPOT_EN = r"(?:this|it|(?:the|this|your) (?:spot|lesion|mole|mark|growth|lump|patch|bump))"
_SPOT_FR = r"(?:cela|ceci|ca|il|elle|(?:cette|votre) (?:lesion|tache)|(?:ce|votre) grain de beaute)"

_DIAGNOSIS_PATTERNS = tuple(_rx(p) for p in (
    # English: "you have ...", "this/it is ...", "this looks like ...", "the diagnosis is ..."
    rf"you (?:have|ve|ve got|have got|got|are suffering from|suffer from|are diagnosed with|have been diagnosed "
    rf"with) {_DISEASE_AFTER}",
    rf"{_SPOT_EN} (?:is|s) {_DISEASE_AFTER}",
    # "looks like" names a diagnosis for this spot; "features similar to" (the approved wording) does not
    rf"{_SPOT_EN} (?:appears to be|appears|looks like|looks to be|seems to be|seems like|is consistent with) "
    rf"{_DISEASE_AFTER}",
    rf"(?:my |the |your )?diagnosis (?:is|would be|will be) {_DISEASE_AFTER}",
    # Spanish: "(usted) tiene ...", "esto es ...", "se trata de ..."
    rf"(?:usted |tu |vos )?(?:tiene|tienes|tenes|padece|padeces|sufre|sufres) (?:de )?{_DISEASE_AFTER}",
    rf"(?:esto|eso|(?:esta|su|tu|la) (?:lesion|mancha)|(?:este|su|tu|el) lunar) (?:no )?(?:es|se trata de|parece"
    rf"|parece ser|aparenta ser) {_DISEASE_AFTER}",
    rf"(?:el |su |tu )?diagnostico (?:es|seria|sera) {_DISEASE_AFTER}",
    # French: "vous avez ...", "c'est ...", "il s'agit de ..."
    rf"(?:vous|tu) (?:avez|as|souffrez|souffres|etes atteinte?s?|es atteinte?) (?:d |de |du |des )?{_DISEASE_AFTER}",
    rf"(?:c est|ceci est|cela est|ca est|il s agit|ce n est pas|ceci n est pas|cela n est pas|il ne s agit pas"
    rf"|(?:cette|votre) (?:lesion|tache) est|(?:ce|votre) grain de beaute est) {_DISEASE_AFTER}",
    rf"{_SPOT_FR} (?:ressemble a|ressemble au|semble etre|a l air d etre|a l air d|parait etre) {_DISEASE_AFTER}",
    rf"(?:le |votre |ton )?diagnostic (?:est|serait|sera) {_DISEASE_AFTER}",
))
# Spanish drops the pronoun: a clause that *starts* with "es ..." / "no es ..." / "se trata de ..." is about the spot.
_DIAGNOSIS_AT_CLAUSE_START = re.compile(
    rf"^(?:y |pero |porque |pues |entonces |asi que )?(?:no )?(?:es|se trata de|parece|parece ser|aparenta "
    rf"ser) {_DISEASE_AFTER}(?![a-z0-9])")

_CERTAINTY = _rx(
    r"definitely|certainly|clearly|undoubtedly|unquestionably|obviously|without (?:a |any )?doubt|for sure"
    r"|for certain|100 ?%|100 percent"
    r"|definitivamente|sin (?:ninguna )?duda|claramente|con (?:toda )?(?:seguridad|certeza)|100 ?%"
    r"|cien por cien\w*|definitivement|certainement|clairement|sans (?:aucun )?doute|assurement|a coup sur"
    r"|indeniablement|cent pour cent")
_DISEASE_RX = _rx(_DISEASE)
_I_CONFIRM = _rx(
    r"i (?:can |could )?(?:confirm|diagnose)|(?<!no )(?:puedo|podemos) (?:confirmar|diagnosticar)"
    r"|(?:le |te )?confirmo|je (?:peux |vous |te )*(?:confirme\w*|diagnostique\w*)")
_I_AM_SURE = _rx(
    r"i (?:am|m) (?:completely |absolutely |totally |quite |very )?(?:sure|certain|positive)"
    r"|(?:estoy|estamos) (?:completamente |totalmente |muy |bastante )?segur[oa]s?"
    r"|je suis (?:tout a fait |absolument |tres )?(?:sur|sure|certaine?)")
_FALSE_REASSURANCE = _rx(
    r"nothing to worry about|no need to (?:see|visit|consult)|(?:don t|do not|dont) need to (?:see|visit|consult)"
    r"|no (?:hay|tiene) (?:nada )?(?:de )?que preocupar\w*|no (?:necesita|hace falta|es necesario) (?:ver|consultar|ir)"
    r"|rien d inquietant|(?:pas|aucun) besoin de (?:consulter|voir)|aucune raison de (?:vous |s )inquieter"
    r"|nothing serious|nada grave|no es nada|rien de grave|ce n est rien"
    # "you do not need to worry", "no abnormal moles", "your skin is healthy": a small model's favourite
    # false comfort, seen in a real SmolLM2 report overview
    r"|(?:don t|do not|dont|needn t|need not|no need to) (?:need to )?(?:worry|be worried|be concerned)"
    r"|(?:no|nothing|not anything) abnormal|(?:completely|perfectly|totally|entirely) normal|normal variation"
    r"|(?:your )?skin is (?:healthy|fine|normal)|you are (?:healthy|fine|ok|okay)|nothing (?:is )?wrong"
    r"|no (?:se )?preocupe\w*|no (?:tiene|hay) (?:por )?que preocupar\w*|nada anormal|(?:totalmente|completamente) normal"
    r"|(?:su|tu) piel (?:esta|es) (?:sana|normal)|(?:ne vous|ne t) inquiete[sz]? pas|n (?:avez|as) pas (?:a|besoin de) "
    r"(?:vous |t )?inquieter|rien d anormal|(?:tout a fait|completement|parfaitement) normal\w*"
    r"|(?:votre|ta) peau est (?:saine|normale)")

# Hedges before a statement in the same clause turn it into screening language: "if you have ...",
# "only a doctor can tell whether this is ...". Hedging adverbs inside the statement count too ("it is
# possibly a ..."). Bare negation ("it is not cancer") is deliberately *not* a hedge, and neither is the
# word "screening" ("your screening result shows you have melanoma" is a diagnosis) or a bare "can".
_HEDGE_BEFORE = _rx(
    r"may|might|could|cannot|can not|can t (?:say|tell|be sure|know|confirm)|unable|possibly|possible|perhaps"
    r"|maybe|suggests?|suggested|similar|resembles?|whether|if|unsure|likely|unlikely|probably|rule out"
    r"|puedo|podemos|puede|pueden|podria|podrian|quizas?|tal vez|posibles?|posiblemente|probablemente"
    r"|sugiere\w*|similar\w*|parecid\w*|si|descartar"
    r"|peux|pouvons|pouvez|peut|peuvent|pourrait|pourraient|possiblement|probablement|suggere\w*|similaires?"
    r"|ressembl\w*|semblable\w*|s il|exclure|eventuel\w*")
_HEDGE_INSIDE = _rx(
    r"possibly|probably|perhaps|maybe|likely|unlikely|necessarily|posiblemente|probablemente|quizas?|tal vez"
    r"|necesariamente|possiblement|probablement|peut etre|eventuellement|forcement|necessairement")


# A benign verdict is false reassurance even when it is only "probable": "it's most likely a harmless mole".
_REASSURING = _rx(r"benign\w*|harmless|inofensiv\w*|benin\w*|inoffensi\w*|sans danger|not (?:a )?cancer"
                  r"|no es (?:un )?cancer|pas (?:un )?cancer")
_PROBABILITY = frozenset({"likely", "unlikely", "probably", "probablemente", "probablement"})


def _hedged(clause: str, match: re.Match) -> bool:
    hedges = [h.group() for h in _HEDGE_BEFORE.finditer(clause[: match.start()])]
    if _REASSURING.search(match.group()):
        return any(h not in _PROBABILITY for h in hedges)
    return bool(hedges or _HEDGE_INSIDE.search(match.group()))


def _find_diagnosis(folded: str) -> str | None:
    for sentence in _sentences(folded):
        for clause in _clauses(sentence):
            for pattern in (*_DIAGNOSIS_PATTERNS, _DIAGNOSIS_AT_CLAUSE_START):
                for match in pattern.finditer(clause):
                    if not _hedged(clause, match):
                        return match.group()
            for match in _I_CONFIRM.finditer(clause):
                if not _HEDGE_BEFORE.search(clause[: match.start()]):
                    return match.group()
            if _DISEASE_RX.search(clause):
                for marker in (_CERTAINTY, _I_AM_SURE):
                    match = marker.search(clause)
                    if match and not _HEDGE_BEFORE.search(clause[: match.start()]):
                        return match.group()
            match = _FALSE_REASSURANCE.search(clause)
            if match:
                return match.group()
    return None


# --- treatment doses --------------------------------------------------------------------------------------

# Amounts that only ever describe a dose: flagged with or without a medicine word.
_DOSE_ONLY_UNIT = _rx(
    r"\d+ ?(?:mg|milligrams?|miligramos?|milligrammes?|mcg|ug|micrograms?|microgramos?|microgrammes?|iu|ui"
    r"|international units?|unidades internacionales|unites internationales)")
# Amounts that describe a dose when a medicine or treatment word is in the same sentence.
_AMOUNT = re.compile(
    r"\b\d+ ?(?:%|percent|per cent|por ciento|pour cent|g|gr|grams?|gramos?|grammes?|ml|cc|millilit\w*"
    r"|mililit\w*|units?|unidades|unites|drops?|gotas|gouttes|tablets?|pills?|capsules?|tabletas?|pastillas?"
    r"|comprimid\w*|capsulas?|comprimes?|gelules?|cachets?)(?![a-z0-9])"
    # "2 ibuprofen tablets", "1 paracetamol pill": a count, a medicine name or two, then the form
    r"|\b\d+ (?:[a-z]+ ){1,2}(?:tablets?|pills?|capsules?|tabletas?|pastillas?|comprimid\w*|capsulas?|comprimes?"
    r"|gelules?|cachets?)(?![a-z0-9])"
    r"|\b(?:one|two|three|four|un|una|dos|tres|cuatro|une|deux|trois|quatre) (?:tablets?|pills?|capsules?"
    r"|tabletas?|pastillas?|comprimid\w*|capsulas?|comprimes?|gelules?|cachets?)(?![a-z0-9])"
    r"|\b(?:for|during|durante|por|pendant|sur) \d+ (?:days?|weeks?|dias|semanas|jours|semaines)(?![a-z0-9])")
_MEDICINE = _rx(
    r"doses?|dosage|dosing|dosis|posologie|tablets?|pills?|capsules?|injections?|inject|medicines?|medications?"
    r"|drugs?|steroids?|corticosteroids?|hydrocortisone|ibuprofen|paracetamol|acetaminophen|aspirin|antibiotics?"
    r"|amoxicillin|cephalexin|cefalexin|flucloxacillin|doxycycline|imiquimod|fluorouracil|5 fu|diclofenac"
    r"|prednison\w*|prednisolon\w*|clobetasol|betamethason\w*|antihistamin\w*|cetirizin\w*|loratadin\w*"
    r"|lidocain\w*|mupirocin\w*|tretinoin\w*|methotrexat\w*|prescri\w*"
    r"|tabletas?|pastillas?|comprimid\w*|capsulas?|inyecci\w*|medicamentos?|medicinas?|farmacos?|antibiotic\w*"
    r"|corticoides?|esteroides?|hidrocortisona|ibuprofeno|aspirina|amoxicilina|cefalexina|doxiciclina"
    r"|fluorouracilo|diclofenaco|betametasona|receta\w*"
    r"|comprimes?|gelules?|pilules?|cachets?|medicaments?|antibiotiques?|corticoides?|corticostero\w*|cortisone"
    r"|ibuprofene|aspirine|amoxicilline|fluorouracile|ordonnance")
_TREATMENT_WORD = _rx(
    r"take|takes|taking|apply|applying|use|using|cream|creams|ointments?|gel|lotion|drops"
    r"|tomar|tome|toma|tomando|aplicar|aplique|aplica|aplicando|usar|use|usa|crema|cremas|pomadas?|unguentos?"
    r"|locion|gotas|prend\w*|appliqu\w*|utilis\w*|creme|cremes|pommades?|onguents?|gouttes")
_SCHEDULE = _rx(
    r"(?:once|twice|thrice|one time|two times|three times|four times|\d+ times|\d+ ?x) (?:a|per|each|every) "
    r"(?:day|night|week)|(?:once|twice|three times|\d+ times) daily|every \d+(?: (?:to|or) \d+)? ?(?:hours?|hrs?|h)"
    r"|every (?:two|three|four|six|eight|twelve) hours|bid|tid|qid|qds|tds|q ?\d+ ?h"
    r"|(?:una|dos|tres|cuatro|\d+) (?:vez|veces) (?:al|por|cada) (?:dia|noche|semana)"
    r"|(?:una|dos|tres|\d+) (?:vez|veces) diarias?|cada \d+(?: (?:a|o) \d+)? ?(?:horas|h)"
    r"|cada (?:dos|tres|cuatro|seis|ocho|doce) horas"
    r"|(?:une|deux|trois|quatre|\d+) fois par (?:jour|nuit|semaine)|(?:une|deux|trois|\d+) fois quotidiennement"
    r"|toutes les \d+(?: (?:a|ou) \d+)? ?(?:heures|h)|toutes les (?:deux|trois|quatre|six|huit|douze) heures")
_SUNSCREEN = _rx(
    r"sunscreens?|sun ?cream|sunblock|spf|protector solar|bloqueador solar|fotoprotector|protecteur solaire"
    r"|creme solaire|ecran solaire|fps")


def _find_dose(folded: str) -> str | None:
    for sentence in _sentences(folded):
        words = _words(sentence)
        match = _DOSE_ONLY_UNIT.search(words)
        if match:
            return match.group()
        medicine = _MEDICINE.search(words)
        match = _AMOUNT.search(words)
        if match and (medicine or _TREATMENT_WORD.search(words)):
            return match.group()
        match = _SCHEDULE.search(words)
        # "Reapply sunscreen every 2 hours" is sun advice, not a dose, unless a medicine is named too.
        if match and (medicine or not _SUNSCREEN.search(words)):
            return match.group()
    return None


# --- advice to wait, when the result has a time frame -------------------------------------------------------

_DELAY = _rx(
    r"no rush|no hurry|not (?:urgent|an emergency)|nothing urgent|(?:can|could|may) wait|no need to (?:hurry|rush)"
    r"|wait (?:a few|several|some|a couple of|\d+|one|two|three|six) (?:days|weeks|months|years)|wait and see"
    r"|(?:check|look at|recheck|see|come back|return) (?:[a-z]+ ){0,2}(?:in|after) (?:a few|several|some|a couple of"
    r"|\d+|two|three|six) (?:weeks|months|years)|next year"
    r"|skip (?:the |seeing (?:a |the )?)?(?:doctor|clinic|visit)|just (?:watch|monitor|keep an eye on) it"
    r"|take your time|(?:at|in) your next (?:routine )?(?:check ?up|visit)"
    r"|sin prisa|no (?:hay|tiene|corre) prisa|no es urgente|nada urgente|(?:puede|podria) esperar"
    r"|espere (?:unas|unos|varias|varios|algunas|algunos|\d+) (?:dias|semanas|meses)"
    r"|(?:revise|revisela|vuelva|mire|consulte) (?:[a-z]+ ){0,2}(?:en|dentro de) (?:unas|unos|varias|varios|algunas"
    r"|algunos|\d+) (?:semanas|meses|anos)"
    r"|el (?:proximo|ano) (?:ano|proximo)|tomese su tiempo|en su proxima (?:revision|visita|consulta)"
    r"|rien ne presse|pas (?:d )?urgen\w*|(?:peut|pourrait) attendre|prenez votre temps"
    r"|attendez (?:quelques|plusieurs|\d+) (?:jours|semaines|mois)"
    r"|(?:surveillez|revenez|consultez|verifiez|regardez) (?:[a-z]+ ){0,2}dans (?:quelques|plusieurs|\d+) "
    r"(?:semaines|mois|ans)|l annee prochaine"
    r"|a votre prochaine (?:visite|consultation)")
_DELAY_NEGATIONS = frozenset({"don", "t", "dont", "not", "never", "no", "nunca", "ne", "n", "jamais"})
_NEGATED_PHRASE_STARTS = frozenset({"no", "not", "nothing", "nada", "sin", "pas", "rien"})


def _find_delay(folded: str) -> str | None:
    """Advice to wait, unless a negation just before it turns it around ("don't wait a few weeks")."""
    for sentence in _sentences(folded):
        for clause in _clauses(sentence):
            for match in _DELAY.finditer(clause):
                phrase = match.group()
                if phrase.split()[0] in _NEGATED_PHRASE_STARTS:  # "pas urgent" after "ce n est": one negation
                    return phrase
                before = clause[: match.start()].split()[-2:]
                if not _DELAY_NEGATIONS.intersection(before):
                    return phrase
    return None


def screen_answer(text: str, lang: str, urgency: str | None = None) -> GuardVerdict:
    """Pass ``text`` through unchanged if safe; otherwise return the fixed replacement in ``lang``.
    ``urgency`` is the result's (``Urgency.value``): for urgent and soon, advice to wait is blocked too."""
    folded = fold(text or "")
    finders = [(DEFINITE_DIAGNOSIS, _find_diagnosis), (TREATMENT_DOSE, _find_dose)]
    if urgency in TIME_BOUND_URGENCIES:
        finders.append((DELAYS_CARE, _find_delay))
    for reason, finder in finders:
        matched = finder(folded)
        if matched:
            log.warning("assistant answer blocked: reason=%s matched=%r", reason, matched)
            return GuardVerdict(safe=False, text=SAFE_REPLACEMENT[lang], reason=reason, matched=matched)
    return GuardVerdict(safe=True, text=text, reason=None)
