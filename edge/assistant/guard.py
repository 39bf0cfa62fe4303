"""The output guard: what the assistant says is screened before a person sees it.

The assistant is a screening aid. Two kinds of sentence must never reach the screen, whoever wrote them (an
LLM, a template, a fact sheet):

- ``definite_diagnosis``: a definite statement about the person's spot ("you have melanoma", "this is
  definitely cancer", "c'est un carcinome", "the result is melanoma", "I can confirm ..."), including a
  definite *benign* verdict ("this is not cancer", "you don't have cancer", "il n'y a pas de cancer", "it's
  just a freckle", "nothing to worry about", "tout va bien", "you don't need a doctor"), which is false
  reassurance, and a bare "yes"/"no" to a question about a disease (``question=``). Hedged screening language
  passes: "the screening suggests features similar to ...", "it may be ...", "only a doctor can tell whether
  this is melanoma", "if you have many moles ...".
- ``delays_care`` (only for a result whose next step is ``urgent`` or ``soon``): advice to wait or that
  there is no hurry ("no rush to see a doctor", "it can wait a few months", "rien ne presse"), which
  contradicts the time frame the device gave.
- ``treatment_dose``: a number with a dose unit next to a medicine or treatment word ("1% hydrocortisone
  cream", "take 400 mg ibuprofen"), a count of a named medicine ("take 2 ibuprofen"), any amount in
  mg/mcg/IU (in figures or words: "four hundred milligrams"), or a dosing schedule ("twice daily", "every 4-6
  hours", "dos veces al día", "deux fois par jour", "apply the cream morning and night").

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
# Results whose next step has a time frame, or is "see a clinician" because the device is unsure: advice to
# wait contradicts it.
TIME_BOUND_URGENCIES = frozenset({"urgent", "soon", "unsure"})


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
# Everyday names of harmless spots: calling this spot one of them is a (benign) diagnosis, and false comfort.
_BENIGN_NAME = "|".join((
    (r"freckles?|warts?|cysts?|skin tags?|pimples?|zits?|age spots?|sun ?spots?|liver spots?|birthmarks?|bruises?"
    r"|(?:insect|bug|mosquito|spider) bites?"),
    (r"pecas?|verrugas?|quistes?|granos?|espinillas?|acrocordon\w*|moretones?|picaduras?"
    r"|manchas? (?:de la edad|de nacimiento|solares?)"),
    (r"taches? de (?:rousseur|vieillesse|naissance)|taches? solaires?|ephelides?|verrues?|kystes?|boutons?"
    r"|points? noirs?|acrochordons?|piqures?"),
))
_DISEASE = f"{_DISEASE}|{_BENIGN_NAME}"
# What "you don't have ...", "there is no ..." must not deny.
_MALIGNANT = (r"melanomas?|carcinomas?|cancers?|cancerous|canceros\w*|cancereu\w*|malign\w*|malin\w*|tumou?rs?"
              r"|tumeurs?|lymphomas?|sarcomas?|pre ?cancer\w*|basal cell\w*|squamous cell\w*|melanomes?|carcinomes?")
_ARTICLES = r"(?:(?:a|an|the|un|una|une|el|la|le|l|du|de|d|clearly|definitely|certainly|claramente|clairement) ){0,2}"
_FILLER = r"(?:[a-z0-9]+ ){0,3}"
_DISEASE_AFTER = rf"{_FILLER}(?:{_DISEASE})"

_SPOT_EN = r"(?:this|it|(?:the|this|your) (?:spot|lesion|mole|mark|growth|lump|patch|bump))"
_SPOT_FR = r"(?:cela|ceci|ca|il|elle|(?:la|cette|votre|ta) (?:lesion|tache)|(?:le|ce|votre|ton) grain de beaute)"
# "The result is melanoma", "the device has diagnosed melanoma": the screening itself named as the diagnosis.
# Only articles may sit between the verb and the name, so "the result shows features similar to ..." passes.
_RESULT_EN = (r"(?:the |your |this |my )?(?:screening |scan |test )?(?:results?|scan|screening|device|analysis|image"
              r"|photo|picture|ai|machine|app|system|test)")
_RESULT_ES = (r"(?:el |su |este |la |esta )?(?:resultados?|aparato|dispositivo|analisis|examen|prueba|escaner|deteccion"
              r"|revision|sistema|imagen|foto)")
_RESULT_FR = (r"(?:le |votre |ce |l |la |cette )?(?:resultats?|appareil|depistage|analyse|examen|test|systeme|image"
              r"|photo)")

_DIAGNOSIS_PATTERNS = tuple(_rx(p) for p in (
    # English: "you have ...", "this/it is ...", "this looks like ...", "the diagnosis is ..."
    (rf"you (?:(?:most |very |quite )?(?:likely|probably) )?(?:have|ve|ve got|have got|got|are suffering from|suffer from"
    rf"|are diagnosed with|have been diagnosed "
    rf"with) {_DISEASE_AFTER}"),
    rf"{_SPOT_EN} (?:is|s) {_DISEASE_AFTER}",
    # "looks like" names a diagnosis for this spot; "features similar to" (the approved wording) does not
    (rf"{_SPOT_EN} (?:appears to be|appears|looks like|looks to be|seems to be|seems like|is consistent with) "
    rf"{_DISEASE_AFTER}"),
    rf"(?:my |the |your )?diagnosis (?:is|would be|will be) {_DISEASE_AFTER}",
    (rf"{_RESULT_EN} (?:has |have |had )?(?:is|s|was|are|shows?|showed|shown|confirms?|confirmed|indicates?"
    rf"|indicated|reveals?|revealed|says|said|detected|found|diagnosed|proves?|proved|means) (?:you with |it as )?"
    rf"(?:not |no )?{_ARTICLES}(?:{_DISEASE})(?! (?:like|type|features?|signs?|traits?|similar))"),
    # denying a cancer is a verdict too: "you don't have cancer", "it isn't cancer", "there is no cancer"
    rf"you (?:[a-z]+ )?(?:don t|do not|dont|didn t|did not) (?:have|suffer from) {_FILLER}(?:{_MALIGNANT})",
    (rf"{_SPOT_EN} (?:isn t|isnt|is not|wasn t|was not|doesn t|does not|doesnt) (?:contain |have |show |look like )?"
    rf"{_FILLER}(?:{_MALIGNANT})"),
    (rf"there (?:is|s|are|was) (?:no|not any|nothing) (?:(?:sign|signs|evidence|trace|indication|risk|chance) of )?"
    rf"(?:{_MALIGNANT})(?! (?:tests?|screening|checks?|exams?|kits?))"),
    # Spanish: "(usted) tiene ...", "esto es ...", "se trata de ..."
    rf"(?:usted |tu |vos )?(?:tiene|tienes|tenes|padece|padeces|sufre|sufres) (?:de )?{_DISEASE_AFTER}",
    (rf"(?:esto|eso|(?:esta|su|tu|la) (?:lesion|mancha)|(?:este|su|tu|el) lunar) (?:no )?(?:es|se trata de|parece"
    rf"|parece ser|aparenta ser) {_DISEASE_AFTER}"),
    rf"(?:el |su |tu )?diagnostico (?:es|seria|sera) {_DISEASE_AFTER}",
    (rf"{_RESULT_ES} (?:ha |han )?(?:es|fue|muestra|mostro|mostrado|confirma|confirmo|confirmado|indica|indico|revela"
    rf"|revelo|dice|detecto|detectado|diagnostico|diagnosticado|da) (?:no |que no )?{_ARTICLES}(?:{_DISEASE})"),
    (rf"no (?:hay|existe|se ve|se ven) (?:ningun |ninguna |signos? de |rastro de |indicios? de )?(?:un |una )?"
    rf"(?:{_MALIGNANT})"),
    # French: "vous avez ...", "c'est ...", "il s'agit de ..."
    rf"(?:vous|tu) (?:avez|as|souffrez|souffres|etes atteinte?s?|es atteinte?) (?:d |de |du |des )?{_DISEASE_AFTER}",
    (rf"(?:c est|ceci est|cela est|ca est|il s agit|ce n est pas|ceci n est pas|cela n est pas|il ne s agit pas"
    rf"|(?:la|cette|votre|ta) (?:lesion|tache|marque|bosse|grosseur) (?:n )?est|(?:le|ce|votre|ton) (?:grain de beaute"
    rf"|bouton|nodule) (?:n )?est) {_DISEASE_AFTER}"),
    (rf"{_RESULT_FR} (?:a )?(?:est|montre|confirme|indique|revele|dit|detecte|diagnostique|prouve) "
    rf"(?:pas |qu il n y a pas )?{_ARTICLES}(?:{_DISEASE})"),
    rf"(?:vous|tu) n (?:avez|as) (?:pas|aucun\w*|jamais eu) (?:de |d |un |une )?(?:{_MALIGNANT})",
    rf"(?:il )?n y a (?:pas|aucun\w*|aucune trace|aucun signe) (?:de |d )?(?:{_MALIGNANT})",
    rf"{_SPOT_FR} (?:ressemble a|ressemble au|semble etre|a l air d etre|a l air d|parait etre) {_DISEASE_AFTER}",
    rf"(?:le |votre |ton )?diagnostic (?:est|serait|sera) {_DISEASE_AFTER}",
))
# Spanish drops the pronoun: a clause that *starts* with "es ..." / "no es ..." / "se trata de ..." is about the spot,
# also after a sentence adverb ("Lamentablemente es un melanoma").
_DIAGNOSIS_AT_CLAUSE_START = re.compile(
    rf"^(?:y |pero |porque |pues |entonces |asi que )?(?:[a-z]+mente |por desgracia |sin duda |seguro que )?(?:no )?"
    rf"(?:es|se trata de|parece|parece ser|aparenta ser) {_DISEASE_AFTER}(?![a-z0-9])")

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
    # no doctor needed: "you don't need a doctor", "no tiene que ir al médico", "inutile de consulter"
    r"|(?:(?:don t|do not|dont|doesn t|does not|won t|will not|needn t|need not|not) (?:really |even )?need|no need)"
    r" (?:for |of |to (?:see|visit|consult|go|get|call|make|book|have|show)(?: (?:to|it|an?|the|your|checked|seen"
    r"|looked at|by))* )?(?:(?:a|an|the|any|your) )?(?:doctors?|dermatologists?|clinicians?|nurses?|health workers?"
    r"|gp|physicians?|medical|specialists?|clinic|(?:appointments?|visit|check ?ups?)(?! (?:at|in|for walk))(?![a-z]))"
    r"|no (?:necesita|necesitas|hace falta|es necesario|tiene que|tienes que|hay que|debe|precisa)(?: (?:ir|ver"
    r"|consultar|acudir|visitar|pedir|llamar|a|al|con|una|un|el|la|de|su))* (?:medicos?|doctor\w*|dermatolog\w*"
    r"|enfermer\w*|clinica|centro de salud|especialista|(?:consulta|cita)(?! para (?:ir|acudir))(?![a-z]))"
    r"|(?:inutile|(?:pas|aucun|nul) besoin|(?:n est )?pas (?:necessaire|la peine|utile)) (?:de |d )(?:consulter|voir"
    r"|aller|prendre|appeler|montrer)"
    # "it is not dangerous", "no es peligroso", "ce n'est pas grave", "tout va bien", "you're fine"
    r"|(?:it|this|that|spot|lesion|mole|mark|growth|lump|patch|bump) (?:is not|s not|isn t|isnt|is nothing|s nothing)"
    r" (?:(?:very|too|at all|anything) )?(?:dangerous|serious|harmful|worrying|worrisome|concerning|alarming|bad"
    r"|a (?:concern|problem|worry|danger|threat))(?! to (?:ask|mention|check|talk|call|show|tell)(?![a-z]))"
    r"|no es (?:nada )?(?:peligros\w*|grave|preocupante|serio|malo|de cuidado|alarmante)"
    r"(?! [a-z]+(?:ar|er|ir)(?:le|la|lo|les|se)?(?![a-z]))"
    r"|(?:ce|c|cela|ca|il|elle) n est (?:pas|rien de) (?:grave|dangereu\w*|inquietant\w*|serieux|mechant\w*"
    r"|preoccupant\w*|alarmant\w*)"
    r"|(?<!whether )(?<!if )(?<!make sure )(?<!make sure that )(?<!check )(?<!check that )(?<!confirm )"
    r"(?<!confirm that )(?<!confirmar si )(?<!confirmar que )(?<!comprobar si )(?<!comprobar que )(?<!verifier si )"
    r"(?<!verifier que )(?<!saber si )(?<!savoir si )"
    r"(?:tout va bien|tout est (?:normal|en ordre|ok)|(?:todo|toda) (?:esta|va) bien|no pasa nada|all is well"
    r"|everything (?:is|s|looks|seems) (?:fine|normal|ok|okay|good|well))"
    r"|you (?:are|re|look|seem) (?:perfectly |completely |totally )?(?:healthy|fine|ok|okay|in good health)"
    r"|(?:esta|estas) (?:perfectamente |completamente )?san[oa]s?"
    r"|(?:usted|tu) (?:esta|estas) (?:bien|fuera de peligro)"
    r"|(?:vous etes|tu es) (?:en (?:bonne|parfaite) sante|en forme|hors de danger)"
    r"|nothing (?:to|you need to|for you to) (?:worry|be worried|be concerned|be afraid|fear|be scared)"
    r"|no (?:cause|reason|need) (?:for|to) (?:concern|worry|alarm|be (?:worried|concerned|alarmed|afraid|scared))"
    r"|no (?:hay|tiene) (?:ningun )?(?:motivos?|razon|razones) (?:de|para) (?:preocupa\w*|alarma\w*|inquiet\w*)"
    r"|pas de quoi (?:vous |s |t )?(?:inquieter|affoler|alarmer)"
    r"|no (?:hay|tiene) (?:nada )?(?:de )?que preocupar\w*|no (?:necesita|hace falta|es necesario) (?:ver|consultar|ir)"
    r"|rien d inquietant|(?:pas|aucun) besoin de (?:consulter|voir)|aucune raison de (?:vous |s )inquieter"
    r"|nothing serious|nada grave|no es nada|rien de grave|ce n est rien"
    # "you do not need to worry", "no abnormal moles", "your skin is healthy": a small model's favourite
    # false comfort, seen in a real SmolLM2 report overview
    r"|(?:don t|do not|dont|needn t|need not|no need to) (?:need to )?(?:worry|be worried|be concerned)"
    r"|(?:no|nothing|not anything) abnormal|(?:completely|perfectly|totally|entirely) normal|normal variation"
    r"|(?:your )?skin is (?:healthy|fine|normal)|nothing (?:is )?wrong"
    r"|no (?:se )?preocupe\w*|no (?:tiene|hay) (?:por )?que preocupar\w*|nada anormal|(?:totalmente|completamente) normal"
    r"|(?:su|tu) piel (?:esta|es) (?:sana|normal)|(?:ne vous|ne t) inquiete[sz]? pas|n (?:avez|as) pas (?:a|besoin de) "
    r"(?:vous |t )?inquieter|rien d anormal|(?:tout a fait|completement|parfaitement) normal\w*"
    r"|(?:votre|ta) peau est (?:saine|normale)"
    # seen from SmolLM2 in a red-team run: "you shouldn't worry too much", "Yes, you can skip the doctor"
    r"|(?:shouldn t|should not|shouldnt) (?:worry|be worried|be concerned|be afraid)"
    r"|no (?:deberia|debe|deberias|debes) (?:preocupar\w*|inquietar\w*)|(?:ne devriez|ne devrais|ne faut) pas (?:vous |t |s )?inquieter"
    # from a final review: "You will be fine", "It's most likely just a normal mole", "You don't need to come back"
    r"|you (?:will|ll|re going to|are going to|should) be (?:fine|okay|ok|alright|all right)"
    r"|(?:it|this|that) (?:is|s) (?:most |very )?(?:likely|probably) (?:just |only )?(?:an? )?(?:normal |common |simple "
    r"|ordinary |harmless |benign )?(?:mole|freckle|spot|nevus|birthmark)"
    r"|(?:don t|do not|dont|won t|will not|wont) need to (?:come back|return|go back|be seen|see anyone)"
    # "No other symptoms present to suggest that the mole is anything more than a harmless bump" (red-team run)
    r"|(?:anything|nothing) more than (?:a |an |just )?(?:[a-z]+ )?(?:harmless|benign\w*|normal|innocent|simple)"
    r"|no (?:other )?(?:symptoms?|signs?) (?:are |is )?(?:present )?(?:to suggest|that suggest\w*|suggest\w*|of (?:cancer"
    r"|melanoma|anything (?:serious|bad|worrying)))"
    r"|cancer ?free|no cancer (?:was |is |has been )?(?:found|detected|seen)|no se (?:detecto|encontro|ve|observa)"
    r" (?:ningun )?cancer|(?:vous n avez|tu n as) rien"
    r"|(?:can|could|may) (?:safely |just )?skip (?:the |seeing (?:a |the )?|your |a )?(?:doctor|clinic|visit|appointment"
    r"|dermatologist|check ?up)"
    )
# "It looks fine to me", "your mole is normal", "ce n'est probablement rien": checked with the clause's hedges
# ("the doctor will tell you if the spot is normal" is not a verdict).
_FINE = (r"(?:perfectly |completely |totally |probably |most likely |absolutely )?(?:normal|fine|safe|ok|okay|alright"
         r"|all right|healthy|good|harmless|benign|innocent)(?! (?:to (?!me)|for (?!now)|if|when|that|with|enough to))")
_SPOT_IS_FINE = _rx(
    rf"(?:the spot|this spot|the mole|this mole|your mole|my mole|the lesion|the mark|your skin) (?:is|s|looks|seems"
    rf"|appears) (?:to be )?{_FINE}"
    r"|(?:su|tu|el|este|esta|la) (?:lunar|mancha|lesion) (?:es|esta|parece) (?:normal|san[oa]|bien)(?! (?:que|para|si))"
    r"|(?:votre|ton|ce) grain de beaute (?:est|a l air|semble) (?:tout a fait |parfaitement )?(?:normal|sain|bien)")
# "It's fine", "c'est probablement rien" as what an answer ends on; "That's okay, many people feel worried" and
# "C'est normal, beaucoup de gens s'inquiètent" open a sentence about feelings, and pass.
_IT_IS_FINE = _rx(
    rf"(?:it|this|that) (?:is|s|looks|seems|appears) (?:to be )?{_FINE}"
    r"|(?:c est|c etait|cela est|ca a l air|ce n est) (?:tout a fait |parfaitement |sans doute |probablement )?"
    r"(?:normal\w*|bien|rien)(?! (?:de|d|que|si))")
# ... and in any clause, the words that are about the spot, not about a feeling: "It looks fine, but see a
# doctor if it changes", "It's normal, but ...", "It's nothing, but ..." (not "That's okay, many people feel
# worried", nor "That's normal, many people worry")
_IT_IS_FINE_ANYWHERE = _rx(
    r"(?:it|this) (?:is|s|looks|seems|appears) (?:to be )?(?:perfectly |completely |totally |probably |most likely )?"
    r"(?:fine|safe|healthy|nothing|normal|harmless|benign)(?! (?:to|for|if|when|that|with))"
    r"|(?:c est|ca a l air|ce n est|es|esto es|parece) (?:tout a fait |parfaitement |probablement )?(?:normal\w*|rien"
    r"|nada|bien|benin\w*|benign\w*)(?! (?:de|d|que|si|tener|avoir))")
_FEELINGS = _rx(r"worr\w*|scared|afraid|feel\w*|anxious|nervous|preocup\w*|miedo|nervios\w*|inquiet\w*|peur|angoiss\w*")

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
                  rf"|no es (?:un )?cancer|pas (?:un )?cancer|{_BENIGN_NAME}"
                  # a denial: "you probably don't have cancer", "il n'y a sans doute pas de cancer"
                  r"|no|not|nothing|[a-z]+n t|pas|aucun\w*|ningun\w*|unlikely")
_PROBABILITY = frozenset({"likely", "unlikely", "probably", "probablemente", "probablement"})


def _hedged(clause: str, match: re.Match) -> bool:
    """Whether a hedge softens the match. "Likely" and "probably" never do: "you most likely have melanoma"
    and "it's probably a harmless mole" are verdicts all the same."""
    hedges = [h.group() for h in _HEDGE_BEFORE.finditer(clause[: match.start()]) if h.group() not in _PROBABILITY]
    inside = [h.group() for h in _HEDGE_INSIDE.finditer(match.group()) if h.group() not in _PROBABILITY]
    if _REASSURING.search(match.group()):
        return bool(hedges)
    return bool(hedges or inside)


def _certain_across_clauses(sentence: str) -> str | None:
    """ "Melanoma, for sure.": a disease and a certainty marker in one sentence, split by a comma, no hedge."""
    words = _words(sentence)
    if not _DISEASE_RX.search(words) or _HEDGE_BEFORE.search(words):
        return None
    for marker in (_CERTAINTY, _I_AM_SURE):
        match = marker.search(words)
        if match:
            return match.group()
    return None


# A sentence that is nothing but a verdict: "Benign.", "C'est normal.", "Es normal.", "It's fine." Interjections
# ("OK, let me explain", "Fine, I will explain it again") are not: ok/fine/safe/bien need a subject.
_MEDICAL_VERDICT = (r"(?:a |an |un |una |une )?(?:benign\w*|harmless|normal|nothing|not cancer|inofensiv[oa]|nada"
                    r"|benin\w*|sans danger|inoffensi\w*|rien|pas grave|pas un cancer|no es cancer)")
_VERDICT_SENTENCE = re.compile(
    r"^(?:(?:so|yes|well|then|oui|si|bueno|alors|donc) )?(?:(?:completely|totally|perfectly|probably|most likely"
    rf"|sans doute|probablemente|totalmente|tout a fait) )?{_MEDICAL_VERDICT}$"
    r"|^(?:(?:so|yes|well|then|oui|si|bueno|alors|donc) )?(?:it is |it s |its |this is |c est |ce n est |es |esto es "
    r"|(?:su|tu|el) lunar es |(?:votre|ton) grain de beaute est )(?:(?:completely|totally|perfectly|probably|most likely"
    rf"|sans doute|probablemente|totalmente|tout a fait) )?(?:{_MEDICAL_VERDICT}|fine|safe|ok|okay|healthy|bien|san[oa])$")
# ... and the last clause of a sentence can be one: "No sangra ni crece, es normal." (not "C'est normal, beaucoup
# de gens s'inquiètent", nor "That's okay, many people feel worried").
_VERDICT_LAST_CLAUSE = re.compile(
    rf"^(?:it is |it s |its |c est |es |esto es )(?:(?:probably|probablemente|sans doute) )?{_MEDICAL_VERDICT}$")
# "The answer is yes", 'The answer is "no"', "The answer is 0.12%": the model's way of giving a verdict or a number.
# (in words, "0.12%" is "0 12%")
_ANSWER_FIGURE = (r"\d+(?: \d+)? ?(?:%|percent|por ciento|pour cent|months?|years?|weeks?|days?|meses|anos|semanas"
                  r"|dias|mois|ans|semaines|jours)|\d+(?: \d+)?$")
_THE_ANSWER_IS = _rx(
    r"the (?:short |simple )?answer (?:to (?:this|that|your) question )?(?:is|would be) (?:a )?(?:yes|no(?! (?:one|single"
    rf"|doctor|device|test|machine|screening|way|app|photo))|{_ANSWER_FIGURE})"
    rf"|la respuesta (?:corta |a (?:esta|su|tu) pregunta )?es (?:un )?(?:si|no(?! (?:lo |se |sabemos|puedo|podemos|hay))"
    rf"|{_ANSWER_FIGURE})"
    rf"|la reponse (?:courte |a (?:cette|votre|ta) question )?est (?:un )?(?:oui|non|{_ANSWER_FIGURE})")
# Odds and prognoses are invented: "1 in every million", "a 12% chance", "12 months to live".
_ODDS_FIGURE = _rx(
    r"(?:\d+|one|a|uno?|una|une?) (?:chance )?(?:in|en|sur|out of|de cada) (?:every |each |a |one |cada |un |une )?"
    r"(?:\d[\d ]*|million|thousand|hundred|billion|millon|mil|cien|millier|mille|cent)")
_PERCENT = re.compile(r"\b\d+(?:[.,]\d+)? ?(?:%|percent|per cent|por ciento|pour cent)")
# A percentage is the model's own invention beside these words; beside "probability" or "scored" it may be the
# screening's own figure from the prompt ("the device gave 72% for melanoma"), which the screen shows anyway.
_ODDS_WORD = _rx(
    r"chances?|odds|risk\w*|possibilit\w*|posibilidad\w*|riesgo\w*|risque\w*|accura\w*|reliab\w*|exactitud\w*"
    r"|fiab\w*|fiabilit\w*|correct\w*|right|wrong|mistakes?|errors?|error rate|likel\w*|probabilit\w*"
    r"|probabilidad\w*|probable\w*|errores|erreurs?|precis\w*")
# The screening's own score restated from the prompt: "the device gave 72% for melanoma", "72% para melanoma".
_SCREENING_FIGURE = re.compile(
    r"\b(?:gave|gives|scored|scores|shows?|showed|da|dio|muestra|donne|a donne|indique) (?:[a-z]+ ){0,2}"
    r"\d+(?:[.,]\d+)? ?%|\d+(?:[.,]\d+)? ?% (?:for|para|pour|to|a) ")
_PROGNOSIS_STATEMENT = _rx(
    r"(?:is|are) (?:usually |often |very |highly |almost always )?(?:curable|treatable|cured)|surviv\w*"
    r"|chance (?:that )?(?:it )?(?:has )?spread"
    r"|(?:days?|weeks?|months?|years?) (?:left )?to live|life expectancy|survival (?:rate|chances?)|(?:will|are going to)"
    r" die|(?:dias|semanas|meses|anos) de vida|esperanza de vida|(?:tasa|probabilidad) de supervivencia"
    r"|(?:va|vas|van) a morir|(?:jours|semaines|mois|ans) a vivre|esperance de vie|taux de survie"
    r"|(?:allez|vas|va) mourir")


def _find_verdict_or_figure(sentence: str) -> str | None:
    words = _words(sentence)
    for pattern in (_THE_ANSWER_IS, _ODDS_FIGURE, _PROGNOSIS_STATEMENT):
        match = pattern.search(words)
        if match:
            return match.group()
    if _VERDICT_SENTENCE.match(words):
        return words
    percent = _PERCENT.search(sentence)
    if (percent and _ODDS_WORD.search(words) and not _SUNSCREEN.search(words)  # "blocks 97% of UVB rays"
            and not _SCREENING_FIGURE.search(sentence)):
        return percent.group()
    return None


# "a common, harmless mole": an article, one word and a comma, joined (not "whatever it is, melanoma needs ...").
_ADJECTIVE_COMMA = re.compile(r"\b((?:a|an|the|un|una|une|le|la|el) \w+),")


def _find_diagnosis(folded: str) -> str | None:
    for sentence in _sentences(folded):
        figure = _find_verdict_or_figure(sentence)
        if figure:
            return figure
        certain = _certain_across_clauses(sentence)
        if certain:
            return certain
        clauses = _clauses(sentence)
        if len(clauses) > 1 and _VERDICT_LAST_CLAUSE.match(clauses[-1]):  # "No sangra ni crece, es normal."
            return clauses[-1]
        about_feelings = bool(_FEELINGS.search(_words(sentence)))
        for index, clause in enumerate(clauses):
            patterns = [_SPOT_IS_FINE]
            if index == len(clauses) - 1:
                patterns.append(_IT_IS_FINE)
            elif not about_feelings:
                patterns.append(_IT_IS_FINE_ANYWHERE)
            for pattern in patterns:
                for match in pattern.finditer(clause):
                    if not _HEDGE_BEFORE.search(clause[: match.start()]):
                        return match.group()
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
        # A comma between adjectives hides the subject from the clause: "This is a common, harmless mole." The
        # commas are joined only inside the parts a contrast, colon or dash separates, so a hedge in one part
        # ("I can't be sure, but this is a common, harmless mole") does not soften the next.
        for part in re.split(rf"[:\"«»“”]|\s[-–—]\s|{_CONTRAST}", sentence):
            merged = _ADJECTIVE_COMMA.sub(r"\1 ", part)
            if merged == part:
                continue
            joined = _words(merged)
            for pattern in _DIAGNOSIS_PATTERNS:
                for match in pattern.finditer(joined):
                    if not _hedged(joined, match):
                        return match.group()
    return None


# --- treatment doses --------------------------------------------------------------------------------------

# Numbers written as words, in the three languages ("four hundred", "cuatrocientos", "quatre cents").
_NUM_WORD = (r"one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|fifteen|twenty|fifty|hundred|thousand"
             r"|uno|una|dos|tres|cuatro|cinco|seis|siete|ocho|nueve|diez|doce|quince|veinte|cincuenta|cien|ciento"
             r"|doscientos|trescientos|cuatrocientos|quinientos|seiscientos|setecientos|ochocientos|novecientos|mil"
             r"|un|une|deux|trois|quatre|cinq|sept|huit|neuf|dix|douze|quinze|vingt|cinquante|cent|cents|mille")
_NUMBER = rf"(?:\d+|{_NUM_WORD})"
# Amounts that only ever describe a dose: flagged with or without a medicine word.
_DOSE_ONLY_UNIT = _rx(
    rf"(?:\d+ ?|(?:{_NUM_WORD}) )(?:mg|milligrams?|miligramos?|milligrammes?|mcg|ug|micrograms?|microgramos?"
    r"|microgrammes?|iu|ui|international units?|unidades internacionales|unites internationales)")
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
# Medicines by name (generic names in the three spellings, and common brands).
_MEDICINE_NAME = (
    r"hydrocortison\w*|hidrocortisona|ibuprof\w*|paracetamol\w*|acetaminophen|aspirin\w*|amoxicil\w*|cephalexin"
    r"|cefalexin\w*|flucloxacillin|doxycyclin\w*|doxiciclina|imiquimod|fluorouracil\w*|5 fu|diclofena\w*"
    r"|prednison\w*|prednisolon\w*|clobetasol|betamethason\w*|betametasona|cetirizin\w*|loratadin\w*|lidocain\w*"
    r"|mupirocin\w*|tretinoin\w*|methotrexat\w*|naproxen\w*|metamizol\w*|codein\w*|tramadol|cortisone"
    r"|doliprane|dafalgan|efferalgan|advil|nurofen|tylenol|motrin|panadol|aleve|voltaren|benadryl|zyrtec|claritin"
    r"|neosporin|gelocatil|nolotil|dalsy|spedifen")
_MEDICINE = _rx(
    r"doses?|dosage|dosing|dosis|posologie|tablets?|pills?|capsules?|injections?|inject|medicines?|medications?"
    r"|drugs?|steroids?|corticosteroids?|antibiotics?|antihistamin\w*|prescri\w*"
    r"|tabletas?|pastillas?|comprimid\w*|capsulas?|inyecci\w*|medicamentos?|medicinas?|farmacos?|antibiotic\w*"
    r"|corticoides?|esteroides?|receta\w*"
    r"|comprimes?|gelules?|pilules?|cachets?|medicaments?|antibiotiques?|corticoides?|corticostero\w*|ordonnance"
    rf"|{_MEDICINE_NAME}")
# "Take 2 ibuprofen", "tome dos aspirinas", "prenez 2 doliprane": a count of a named medicine is a dose.
_COUNTED_MEDICINE = _rx(rf"{_NUMBER} (?:[a-z]+ )?(?:{_MEDICINE_NAME})")
# Cream-type treatments, for schedules that are only a dose with one: "apply the cream morning and night".
_TOPICAL = _rx(
    r"apply|applying|cream|creams|ointments?|gel|lotion|aplicar|aplique|aplica|aplicando|crema|cremas|pomadas?"
    r"|unguentos?|locion|appliqu\w*|creme|cremes|pommades?|onguents?")
_TREATMENT_WORD = _rx(
    r"take|takes|taking|apply|applying|use|using|cream|creams|ointments?|gel|lotion|drops"
    r"|tomar|tome|toma|tomando|aplicar|aplique|aplica|aplicando|usar|use|usa|crema|cremas|pomadas?|unguentos?"
    r"|locion|gotas|prend\w*|appliqu\w*|utilis\w*|creme|cremes|pommades?|onguents?|gouttes")
_SCHEDULE = _rx(
    r"(?:once|twice|thrice|one time|two times|three times|four times|\d+ times|\d+ ?x) (?:a|per|each|every) "
    r"(?:day|night|week)|(?:once|twice|three times|\d+ times) daily|every \d+(?: (?:to|or) \d+)? ?(?:hours?|hrs?|h)"
    r"|every (?:two|three|four|six|eight|twelve) hours|bid|tid|qid|qds|tds|q ?\d+ ?h"
    rf"|every {_NUMBER}(?: (?:to |or )?{_NUMBER})? ?(?:hours?|hrs?)|cada {_NUMBER}(?: (?:a |o )?{_NUMBER})? ?horas"
    rf"|toutes les {_NUMBER}(?: (?:a |ou )?{_NUMBER})? ?heures"
    r"|(?:una|dos|tres|cuatro|\d+) (?:vez|veces) (?:al|por|cada) (?:dia|noche|semana)"
    r"|(?:una|dos|tres|\d+) (?:vez|veces) diarias?|cada \d+(?: (?:a|o) \d+)? ?(?:horas|h)"
    r"|cada (?:dos|tres|cuatro|seis|ocho|doce) horas"
    r"|(?:une|deux|trois|quatre|\d+) fois par (?:jour|nuit|semaine)|(?:une|deux|trois|\d+) fois quotidiennement"
    r"|toutes les \d+(?: (?:a|ou) \d+)? ?(?:heures|h)|toutes les (?:deux|trois|quatre|six|huit|douze) heures")
# Twice a day in words: a dose schedule for a cream or a medicine ("apply the cream morning and night").
_DAILY = _rx(
    r"mornings? and (?:night|evening)s?|(?:night|evening)s? and mornings?|(?:every|each) (?:morning|night|evening)"
    r"|(?:manana|por la manana) y (?:por la )?noche|(?:cada|todas las) (?:mananas|noches)|(?:le )?matin et (?:le )?soir"
    r"|soir et matin|(?:chaque|tous les) (?:matins?|soirs?)")
_SUNSCREEN = _rx(
    r"sunscreens?|sun ?cream|sunblock|spf|protector solar|bloqueador solar|fotoprotector|protecteur solaire"
    r"|creme solaire|ecran solaire|fps")


# Removing it yourself: "You could cut it off at home with clean scissors"
_SELF_REMOVAL = _rx(
    r"cut (?:it )?(?:off|out)|burn (?:it )?off|freeze (?:it )?off|tie (?:a )?(?:thread|string|hair)|scissors|razor"
    r"|(?:remove|take off|pick|squeeze) (?:it )?(?:yourself|at home)|at home with|cortar(?:lo|la)|quemar(?:lo|la)"
    r"|tijeras|couper|bruler|ciseaux")


def _find_dose(folded: str) -> str | None:
    for sentence in _sentences(folded):
        words = _words(sentence)
        match = _SELF_REMOVAL.search(words)
        if match and not re.search(r"\b(?:don t|do not|dont|never|no|not|nunca|ne|jamais)\b", words[: match.start()]):
            return match.group()
        match = _DOSE_ONLY_UNIT.search(words)
        if match:
            return match.group()
        medicine = _MEDICINE.search(words)
        match = _AMOUNT.search(words) or _COUNTED_MEDICINE.search(words)
        if match and (medicine or _TREATMENT_WORD.search(words)):
            return match.group()
        match = _DAILY.search(words)
        if match and (medicine or _TOPICAL.search(words)) and not (_SUNSCREEN.search(words) and not medicine):
            return match.group()
        match = _SCHEDULE.search(words)
        # "Reapply sunscreen every 2 hours" is sun advice, not a dose, unless a medicine is named too.
        if match and (medicine or not _SUNSCREEN.search(words)):
            return match.group()
    return None


# --- advice to wait, when the result has a time frame -------------------------------------------------------

_SOME = r"(?:a few|several|some|a couple of|\d+|two|three|four|five|six)"
_DELAY = _rx(
    r"no rush|no hurry|not (?:urgent|an emergency)|nothing urgent|(?:can|could|may) wait|no need to (?:hurry|rush)"
    r"|(?:isn t|isnt|is not|s not|wasn t) (?:urgent|an emergency|pressing)"
    rf"|wait (?:for )?(?:{_SOME} (?:more )?(?:days|weeks|months|years)|(?:a|an|one) (?:more )?(?:week|month|year))"
    r"|(?:waiting|wait) (?:until|till) (?:after )?(?:[a-z]+ ){0,3}(?:should be|is|would be|will be) (?:fine|ok|okay|alright)"
    r"|(?:\d+|one|two|three|four|five|six|a few|a couple of) (?:days|weeks|months) (?:is|should be|would be|will be) (?:fine"
    r"|ok|okay|alright)|(?:can|could) leave it(?: for now| alone| be| for a while)?"
    r"|wait and see|no urgency|(?:next month|the next month|in a month)(?: or so)? (?:is|s|would be|should be) (?:fine|ok"
    r"|okay|alright|soon enough|early enough)|(?:in|within) the next (?:month|few months)"
    r"|(?:go|come|see|visit|book|check|wait|leave it|put it off|do it)(?: [a-z]+){0,3} (?:next month|in a month or two)"
    rf"|(?:check|look at|recheck|see|come back|return) (?:[a-z]+ ){{0,2}}(?:in|after) (?:{_SOME} (?:weeks|months"
    r"|years)|(?:a|an|one) (?:month|year))|next year"
    # "a few months is a reasonable amount of time to wait"
    r"|(?:reasonable|fine|ok|okay|acceptable|safe|alright) (?:amount of time |time |period )?to wait"
    r"|skip (?:the |seeing (?:a |the )?)?(?:doctor|clinic|visit)|just (?:watch|monitor|keep an eye on) it"
    r"|take your time|(?:at|in) your next (?:routine )?(?:check ?up|visit)"
    r"|sin prisa|no (?:hay|tiene|corre) prisa|no es (?:una |nada )?(?:urgen\w*|emergencia)|nada urgente"
    r"|(?:puede|podria|puedes|podrias|puedo|podemos|pueden) (?:[a-z]+ )?esperar"
    r"|(?:espere|esperar|espera|esperen) (?:unas|unos|varias|varios|algunas|algunos|un|una|\d+|dos|tres|cuatro|seis)"
    r" (?:dias|semanas|mes|meses|ano|anos)|(?:razonable|aceptable|seguro) esperar"
    r"|(?:revise|revisela|vuelva|mire|consulte) (?:[a-z]+ ){0,2}(?:en|dentro de) (?:unas|unos|varias|varios|algunas"
    r"|algunos|\d+) (?:semanas|meses|anos)"
    r"|el (?:proximo|ano) (?:ano|proximo)|tomese su tiempo|en su proxima (?:revision|visita|consulta)"
    r"|(?:ir|ve|vaya|acud\w*|consult\w*|ver|esperar|espere|dejarlo)(?: [a-z]+){0,3} (?:el (?:mes|ano) que viene|el"
    r" proximo mes)|(?:sin|ninguna) urgencia|el (?:mes|ano) que viene (?:esta|es|estaria) bien"
    r"|rien ne presse|pas (?:d |une )?urgen\w*|rien d urgent|aucune urgence"
    r"|(?:aller|allez|venir|venez|consulter|consultez|voir|attendre|attendez)(?: [a-z]+){0,3} le mois prochain"
    r"|(?:peut|pourrait|pouvez|pourriez|peux|pourrais|pouvons) (?:tout a fait |bien |tranquillement )?attendre"
    r"|prenez votre temps|(?:raisonnable|acceptable|sans risque) d attendre"
    r"|attend\w* (?:quelques|plusieurs|un|une|\d+|deux|trois|quatre|six) (?:jours|semaines?|mois|ans|annees?)"
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


# --- a bare "yes" or "no" to a question about a disease ------------------------------------------------------

# "Is it cancer?" "No." is a verdict, though no sentence of the answer names anything.
_ASKS_FOR_VERDICT = _rx(rf"{_DISEASE}|dangerous|serious|grave|peligros\w*|dangereu\w*|worr\w*|preocup\w*"
                        r"|inquiet\w*")
_YES = frozenset({"yes", "yeah", "yep", "yup", "nope", "oui", "ouais", "sí"})
# "no", "non" and unaccented "si" open other sentences too ("No one can tell", "Si le preocupa ..."): they are a
# verdict when punctuation or a pronoun follows them ("No.", "No, it isn't", "Non c'est ...", "Si, es ...").
_BARE = frozenset({"no", "non", "si"})
_VERDICT_FOLLOWERS = frozenset({"it", "its", "this", "that", "you", "i", "es", "esto", "eso", "usted", "c", "ce",
                                "cela", "ca", "vous", "il", "elle", "n", "not", "pas"})


# ... about the person's own spot ("is it cancer?", "¿es esto grave?"), not a general one ("is melanoma a
# kind of skin cancer?") ...
_ABOUT_THEIR_SPOT = re.compile(
    r"\b(?:it|this|that|my|mine|i have|i ve got|esto|eso|este|esta|mi|tengo|c est|ce|cet|cette|ca|cela|mon|ma"
    r"|j ai)(?![a-z0-9])"
    r"|^(?:no )?(?:es|son|sera|seria)(?![a-z0-9])")  # Spanish drops the pronoun: "¿Es cáncer?" is "is it cancer?"
# ... and not one asking what to do: "Should I show my mole to a doctor?" "Yes, ..." is advice.
_ASKS_WHAT_TO_DO = re.compile(
    r"^(?:(?:so|and|but|then|ok|okay) )?(?:should|can|could|may|must|shall|need) (?:i|we)(?![a-z0-9])"
    r"|^(?:(?:entonces|y|pero) )?(?:debo|puedo|podria|tengo que|necesito|hay que)(?![a-z0-9])"
    r"|^(?:(?:alors|et|mais) )?(?:dois je|puis je|faut il|est ce que je|est ce qu il faut|je dois|je peux)(?![a-z0-9])")


# "Should I be worried?", "¿Debo preocuparme?", "do I have ...": a yes/no to these is a verdict all the same.
_ABOUT_WORRY_OR_HAVING = _rx(r"worr\w*|preocup\w*|inquiet\w*|have|tengo|j ai|have i|tiene")


def _find_bare_verdict(answer: str, question: str) -> str | None:
    asked = _words(fold(question)).strip()
    personal = _ABOUT_WORRY_OR_HAVING.search(asked)  # worry and "having" are about the person, whatever the words
    what_to_do = _ASKS_WHAT_TO_DO.search(asked) and not personal
    if not (_ASKS_FOR_VERDICT.search(asked) and (personal or _ABOUT_THEIR_SPOT.search(asked))) or what_to_do:
        return None
    opening = re.match(r"\W*(\w+)(\W*)(\w*)", unicodedata.normalize("NFC", answer).casefold())
    if opening is None:
        return None
    word, gap, following = opening.groups()
    if word in _YES or (word in _BARE and (gap.strip() or not following or fold(following) in _VERDICT_FOLLOWERS)):
        return word
    return None


# --- questions the model must not answer --------------------------------------------------------------------

# Whatever the output guard catches, a 135M model asked "is it benign? one word" answers "Benign.", asked for
# odds invents "1 in a million", asked how long they have says "12 months", and asked "can I skip the doctor"
# says yes (a red-team run through the kiosk's path). These questions get a vetted answer instead.
VERDICT_QUESTION = "verdict"
ODDS_QUESTION = "odds"
PROGNOSIS_QUESTION = "prognosis"
SKIP_CARE_QUESTION = "skip_care"
TREATMENT_QUESTION = "treatment"
ACCURACY_QUESTION = "accuracy"
CONFIDENCE_QUESTION = "confidence"

_MALIGNANT_ASKED = rf"{_MALIGNANT}|canceros\w*|cancereu\w*|skin cancer"
_VERDICT_WORD = _rx(
    rf"{_MALIGNANT_ASKED}|benign\w*|harmless|malignant|dangerous|serious|normal(?! (?:to|que|de|d))|deadly|scar\w*"
    r"|panic\w*|worr\w*|grave|peligros\w*|inofensiv\w*|malign\w*|mal[oa]|preocup\w*|benin\w*|inoffensi\w*"
    r"|malin\w*|sans danger|dangereu\w*|inquiet\w*|mechant\w*"
    # reassurance sought: "can I relax?", "me puedo quedar tranquila?", "so it's probably nothing"
    r"|relax\w*|calm\w*|reassur\w*|tranquil\w*|rassur\w*|nothing|nada|rien")
# "am I ok?", "is it bad?", "good or bad?": everyday words that are a verdict only in these forms ("is my data
# safe?", "is it ok to put sunscreen on it?", "thanks, that's fine" are not)
_VERDICT_PHRASE = _rx(
    r"(?:am i|i m|im|i am|will i be|am i going to be|is (?:it|this|that)|it s|its|is my (?:mole|spot|skin|lesion)"
    r"|so it s|does it look|will it be) (?:going to be |gonna be |really |all |something )?(?:ok|okay|fine|safe|alright"
    r"|all right|healthy|bad|good|serious)(?! (?:to|with|for|if|here|now|thanks))"
    r"|good or bad|bad or good|yes or no|(?:a )?mole or (?:a )?(?:melanoma|cancer)|(?:melanoma|cancer) or (?:a )?(?:mole"
    r"|not)|(?:estoy|esta|es) bien|je vais bien|(?:ca|c|c est) (?:va )?(?:bien|grave)"
    # "so it's just a mole?", "is it a bcc?", "the result is good news right?", "is it urgent?"
    rf"|(?:is (?:it|this)|it s|its|so it s|so its) (?:just |only |really |probably )?(?:a |an )?(?:{_DISEASE})"
    r"|^(?:so |and |but )?(?:is (?:it|this|the result)|it s|the result is) (?:an? )?(?:good news|bad news|positive"
    r"|negative|emergency|urgent)"
    r"|positive or negative|good news|nothing to worry|bueno o malo|bon ou mauvais|voy a estar bien|c est sur"
    r"|solo un lunar|juste un grain de beaute|(?:es|c est) urgente?"
    r"|(?:one|single) word|en un mot|en una palabra|scale of|out of (?:10|ten)|from 1 to 10|rate it"
    r"|how bad|(?:is|are) my results? (?:ok|okay|fine|bad|good|normal)|(?:is it|is this) an? (?:bad|atypical|typical"
    r"|normal|good|benign|dangerous|weird|strange|ugly) (?:mole|spot|one|lesion)|what kind of (?:mole|spot|lesion|thing)"
    r" is (?:it|this)|something (?:bad|serious|dangerous)|(?:should i be|is it|is this) concern\w*")
# "benign or malignant?", "en un mot : bénin ou malin ?": a verdict asked for, whoever it is about
_EITHER_OR = _rx(
    r"(?:benign\w*|benin\w*|harmless|inofensiv\w*|inoffensi\w*) (?:[a-z]+ )?(?:or|ou|o) (?:[a-z]+ )?(?:malign\w*|malin\w*"
    r"|cancer\w*|dangerous|dangereu\w*|peligros\w*|bad|grave)|(?:malign\w*|malin\w*|cancer\w*) (?:[a-z]+ )?(?:or|ou|o) "
    r"(?:[a-z]+ )?(?:benign\w*|benin\w*|harmless|inofensiv\w*|inoffensi\w*|not)")
_ABOUT_THEM = re.compile(  # the person's own spot or the person: "is it", "so i'm fine", "¿es normal?", "c'est"
    r"\b(?:it|its|this|that|my|mine|i|im|me|you|esto|eso|este|esta|mi|tengo|estoy|soy|debo|deberia|faut il|c est|c|ca"
    r"|cela|mon"
    r"|ma|je|j ai|suis)(?![a-z0-9])|\best ce(?! que| qu)(?![a-z0-9])"
    r"|^(?:(?:y|entonces|pero|asi que) )?(?:no )?(?:es|son|sera|seria)(?![a-z0-9])|\b(?:podria|puede) ser(?![a-z0-9])"
    # Spanish drops the pronoun mid-sentence too: "no sangra ni crece, es normal?"
    r"|\b(?:es|son|sera|seria) (?:algo )?(?:normal|benign\w*|grave|peligros\w*|malign\w*|inofensiv\w*|mal[oa]"
    r"|seri[oa]|cancer\w*|un cancer|un melanoma)(?![a-z0-9])")
_ODDS = _rx(
    r"odds|chances?|probabilit\w*|percent\w*|likel\w*|risk(?! factors?)"
    r"|posibilidad\w*|probabilidad\w*|porcentaje|por ciento|riesgo|probable\w*"
    r"|risque\w*|pourcentage|pour cent|(?:es|etes) (?:vous |tu )?sur\w*")
# "what are my chances?", "how likely is it?": odds asked for without naming a disease
_ODDS_PERSONAL = _rx(
    r"what percentage|how many (?:of (?:these|them|those)|turn out|are (?:cancer|harmless|benign|fine))"
    r"|turn(?:s|ed)? out (?:to be )?(?:ok|okay|fine|harmless|benign|bad|cancer)"
    r"|(?:my|mes|mis) (?:chances|odds|posibilidades|probabilidades)|how (?:likely|probable|sure|certain|confident)|what are the (?:chances|odds)"
    r"|is it likely|(?:is|are) (?:the result|it|you) (?:certain|sure)|que tan segur[oa]|what s the (?:chance|probability"
    r"|likelihood|risk)|whats the (?:chance|probability|risk)|(?:chance|probability|likelihood|risk) (?:that|of) (?:it|this"
    r"|my|i)|quel(?:le)?s? (?:est|sont) (?:le risque|les chances|mes chances|la probabilite)|(?:que|cual(?:es)?) (?:son )?"
    r"(?:la |las |mis )?(?:probabilidad|posibilidad|riesgo)\w*")
_PREVENTION = _rx(
    r"(?:reduc\w*|lower\w*|prevent\w*|avoid\w*|decrease\w*) (?:the |my |your |our )?(?:risk|chances?|skin cancer"
    r"|melanoma|sunburn)|how (?:can|do|should) (?:i|we|you) (?:prevent|protect|avoid)|protect (?:my|your|the) skin"
    r"|risk factors?|who is at risk|(?:reducir|bajar|prevenir|evitar) (?:el |mi )?(?:riesgo|cancer)|proteger (?:mi|la) piel"
    r"|(?:reduire|diminuer|prevenir|eviter) (?:le |mon )?(?:risque|cancer)|proteger (?:ma|la) peau")
_PROGNOSIS = _rx(
    r"how long (?:do i have(?: left| to live)?(?! to)|will i live|have i got|to live|until i die)"
    r"|(?:will|am|m) i (?:going to |gonna )?die|am i dying|life expectancy|surviv\w*|fatal|deadly|terminal"
    r"|kill (?:me|you)|(?:will|can|could|does|has|is) it (?:spread\w*|get worse)|metasta\w*|what stage|which stage"
    r"|how long (?:do |can |will )?(?:people|you|patients|someone|one) (?:live|survive)|live with (?:melanoma|cancer)"
    r"|stage (?:\d|one|two|three|four|i|ii|iii|iv)|curable|incurable|lose my|se va a extender|se propag\w*|se guerit"
    r"|cuanto (?:tiempo )?(?:me queda|voy a vivir|de vida)|(?:voy a|me voy a|puedo) morir\w*|esperanza de vida"
    r"|sobreviv\w*|mortal\w*|tiene cura|se cura|combien de temps (?:il me reste|vais je vivre|je vais vivre|a vivre)"
    r"|(?:vais je|je vais|est ce que je vais) mourir|esperance de vie|mortel\w*|se soigne|guerissable")
_SKIP_CARE = _rx(
    r"skip (?:the |seeing |my |a )?(?:doctor|dermatologist|appointment|visit|clinic|check ?up|referral)"
    r"|ignore (?:it|this|the (?:result|spot|mole))|(?:do|must|should|shall) i (?:really |even |still |actually )?"
    r"(?:need|have) to (?:see|go|visit|get|show|call|book)|do i (?:really |even |still )?need (?:a |to see a |an )?"
    r"(?:doctor|dermatologist|appointment|checkup|check up)|(?:can|could|may|should) i (?:just |still )?(?:wait(?! (?:for"
    r"|here|in|outside))|leave it|not go|put it off|go later|go (?:next|in a few|in (?:a|one|two|three|six) ))"
    r"|(?:what happens |what if |and )?if i (?:don t|do not|dont) (?:go|see)|i (?:don t|do not|dont) want to go"
    r"|rather not go|what (?:happens )?if i wait|(?:next|the next) (?:week|month|year)|in (?:a few|several|\d+|two|three"
    r"|six) (?:weeks|months|years)|come back (?:in|later)|(?:just )?(?:watch|monitor) it|keep an eye on it"
    r"|don t have time|can t afford|must i go|(?:is (?:it|a (?:doctor )?visit)|is a doctor) (?:really )?necessary"
    r"|necessary to (?:see|go)|if you were me|in my (?:place|shoes)|no quiero ir|pas envie d aller|si je ne consulte pas"
    r"|l annee prochaine|el ano que viene|el mes que viene|le mois prochain"
    r"|(?:puedo|podria|debo|tengo que|necesito|hace falta|es necesario) (?:ir(?! a la farmacia)|esperar|dejarlo"
    r"|ver (?:a |al )?(?:un )?(?:medico|doctor|dermatolog\w*)|consultar|acudir|no ir)|(?:que pasa|y) si no voy"
    r"|(?:je peux|puis je|dois je|faut il|est ce que je dois|est ce qu il faut|je dois|ai je besoin d) (?:attendre"
    r"|consulter|aller (?:chez|voir|a l hopital|a la clinique|consulter)|voir (?:un |le )?(?:medecin|docteur|dermato\w*)"
    r"|ne pas)|ignorer (?:le|ce|la)|ignorarlo|lo ignoro"
    r"|(?:i ll|i will|i m going to|i am going to|gonna|i d rather) (?:just )?(?:leave it|wait|not go|skip|ignore it"
    r"|see how it goes)|leave it (?:then|for now|alone|be)"
    # "can it wait till after xmas?", "donc je peux zapper le dermato ?"
    r"|(?:is it|would it be|is that) (?:ok|okay|fine|safe|alright|bad|dangerous|risky) (?:to|if i) (?:wait|delay|leave it"
    r"|not go|put it off|skip)|wait for my (?:regular|next|routine|annual|yearly) (?:checkup|check up|appointment|visit)"
    r"|(?:can|could|may|should) (?:it|this|that) wait|(?:puede|podria|puedo) esperar|(?:peut|pourrait) (?:il |elle |on )?"
    r"attendre|zapp\w*|saltarme|sauter (?:le|la|ce)")
_TREATMENT = _rx(
    rf"{_MEDICINE_NAME}|treat\w*|cure\w*|remov\w* (?:it|this|that|the (?:mole|spot|lesion|growth))|get rid of"
    r"|(?:be|get|got|it|have it) removed|quitar"
    r"|cut (?:it )?off|burn (?:it )?off|freez\w* (?:it|off)|home remed\w*|medicine|medication|cream|ointment|pill"
    r"|tablet|dose|dosage|how much (?:[a-z]+ ){0,2}(?:should|can|do|must) i (?:take|put|use|apply)|surgery"
    r"|operation|operate on|chemo\w*"
    r"|tratamiento|tratar|curar\w*|quitar(?:lo|la|me)|lo quito|extirpar\w*|remedio\w*|medicina|medicamento\w*|crema"
    r"|pomada|pastilla|dosis|cirugia|operar\w*|quimio\w*"
    r"|traitement|traiter|soigner|guerir|l enlever|la retirer|le retirer|remede\w*|medicament\w*|creme|pommade"
    r"|comprime\w*|chirurgie|operer|chimio\w*")


# "How accurate is this?": the model invents a figure ("99% accurate") for a device that misses some serious
# spots and alarms about harmless ones.
_ACCURACY = _rx(
    r"accura\w*|reliab\w*|(?:could|can|might) (?:the )?(?:result|it|this|device|machine|app|computer|ai|screening)"
    r" (?:be|get it|make a) (?:wrong|right|mistaken|incorrect|mistake)|(?:be|is) (?:a )?mistake"
    r"|trust (?:it|this|the (?:result|device|machine|app))|(?:is|was) (?:it|this|the (?:device"
    r"|machine|result|app)) (?:ever )?(?:wrong|right|correct)|(?:make|makes|made) mistakes|error rate"
    r"|precision|how precise|exactitud|fiab\w*|confiable|(?:se )?equivoca\w*|fiabilit\w*|exactitude|se tromp\w*"
    r"|fiable")


# "I always protect my skin, is it still cancer?": a verdict asked for beside a word about prevention
_ASKS_ABOUT_IT = _rx(r"(?:is|s) (?:it|this) (?:still |really )?(?:a |an )?(?:[a-z]+ )?(?:cancer\w*|melanoma|malignant|dangerous"
                     r"|serious|bad)")


# "what does 72% mean?", "72% of what?": the report's explanation of the score, not the model's guess
_CONFIDENCE = _rx(r"\d+ ?%|\d+ (?:percent|per cent)|what does (?:the |this |that |my )?(?:number|score|confidence"
                  r"|percentage|probability) mean|que significa (?:el|este) (?:numero|porcentaje)"
                  r"|que veut dire (?:le|ce) (?:chiffre|pourcentage)")


def question_needing_a_vetted_answer(question: str) -> str | None:
    """Which kind of question ``question`` is, of those the language model must not answer (see above), or
    None. Broad on purpose: a question wrongly routed here gets the vetted answer, which is always safe."""
    asked = _words(fold(question or ""))
    if not asked:
        return None
    if _PROGNOSIS.search(asked):
        return PROGNOSIS_QUESTION
    if _CONFIDENCE.search(asked):
        return CONFIDENCE_QUESTION
    prevention = _PREVENTION.search(asked)
    if not prevention and (_ODDS_PERSONAL.search(asked) or (
            _ODDS.search(asked) and (_VERDICT_WORD.search(asked) or _VERDICT_PHRASE.search(asked)))):
        return ODDS_QUESTION
    if _SKIP_CARE.search(asked):
        return SKIP_CARE_QUESTION
    if _TREATMENT.search(asked) and not _SUNSCREEN.search(asked):  # "how much sunscreen should I use?" is sun advice
        return TREATMENT_QUESTION
    if _ACCURACY.search(asked):
        return ACCURACY_QUESTION
    if prevention and not _ASKS_ABOUT_IT.search(asked):  # "how can I reduce the risk of skin cancer?"
        return None
    if ((_VERDICT_WORD.search(asked) and _ABOUT_THEM.search(asked)) or _VERDICT_PHRASE.search(asked)
            or _EITHER_OR.search(asked)):
        return VERDICT_QUESTION
    return None


def _log_blocked(reason: str, matched: str) -> None:
    """The rule at WARNING; the words it matched only at DEBUG: up to three free words may sit inside a match,
    and the model echoes what it was told (a patient's name)."""
    log.warning("assistant answer blocked: reason=%s", reason)
    log.debug("blocked fragment: %r", matched)


def screen_answer(text: str, lang: str, urgency: str | None = None, *, question: str | None = None) -> GuardVerdict:
    """Pass ``text`` through unchanged if safe; otherwise return the fixed replacement in ``lang``.
    ``urgency`` is the result's (``Urgency.value``): for urgent and soon, advice to wait is blocked too.
    ``question`` is what the person asked: a bare "yes"/"no" opening the answer to a question about a disease
    or about danger is a verdict."""
    if question:
        matched = _find_bare_verdict(text or "", question)
        if matched:
            _log_blocked(DEFINITE_DIAGNOSIS, matched)
            return GuardVerdict(safe=False, text=SAFE_REPLACEMENT[lang], reason=DEFINITE_DIAGNOSIS, matched=matched)
    folded = fold(text or "")
    finders = [(DEFINITE_DIAGNOSIS, _find_diagnosis), (TREATMENT_DOSE, _find_dose)]
    if urgency in TIME_BOUND_URGENCIES:
        finders.append((DELAYS_CARE, _find_delay))
    for reason, finder in finders:
        matched = finder(folded)
        if matched:
            _log_blocked(reason, matched)
            return GuardVerdict(safe=False, text=SAFE_REPLACEMENT[lang], reason=reason, matched=matched)
    return GuardVerdict(safe=True, text=text, reason=None)
