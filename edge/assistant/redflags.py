"""Red flags in what a person types, checked *before* any LLM sees the text.

Some symptoms need a clinician soon whatever the photo shows; this device cannot assess them. When one is
mentioned, the kiosk shows ``urgent_message`` (fixed, vetted text) instead of, or before, anything generated.

Detection is deliberately simple and auditable: regular expressions over normalised text, in English,
Spanish and French at once (a Spanish speaker may type Spanish while the UI is English).

- Normalisation: NFKD, combining marks stripped, case-folded; punctuation becomes a clause boundary; a letter
  typed three or more times in a row counts twice ("bleeeding" -> "bleeding", "soooo" -> "soo").
- Inflections are covered by stems: bleeds/bleeding/bled, sangra/sangrado/sangrando, saigne/saignement.
- Negation: a negation word (no, not, never, without, n't; no, sin, nunca, ni; ne, n', pas, sans, jamais,
  aucun) up to four words before a mention, in the same clause, cancels that mention: "no bleeding", "sin
  sangrado", "pas de saignement", "ne saigne pas". Clauses end at punctuation and at "but / and / pero / y /
  mais / et", so "no pain but it bleeds" still flags bleeding. Phrases whose meaning *includes* a negation
  ("won't stop bleeding", "no para de sangrar", "doesn't heal", "ne cicatrise pas") are matched as a whole,
  and so is a negated "stop" with the bleeding as its object ("I can't get the bleeding to stop", "no puedo
  parar el sangrado"). A negation does not cancel a mention when a verb of seeing or knowing sits between
  them ("I didn't realise it was bleeding", "je ne l'ai jamais vu saigner") unless the mention is quantified
  away ("never noticed any bleeding"), nor when "this much / tanto / autant" follows ("never bled this much").
- Everyday senses are left out: a person growing ("I am growing worried", "my kids are growing"), "it
  changes nothing", a stomach ulcer, a bleeding-heart plant.
- Errors go one way on purpose: when unsure, flag. Any un-negated mention of bleeding or oozing from a spot
  counts (a spot that bleeds without injury is itself a warning sign, and free text cannot tell "bled once"
  from "won't stop"); a false alarm costs a clinic visit, a miss can cost much more.
"""

from __future__ import annotations

import itertools
import logging
import re
from dataclasses import dataclass, field
from typing import Callable, Iterable

from edge.assistant.guard import DISCLAIMER, ByLanguage, fold, resolve_lang

log = logging.getLogger("edge.assistant")

FLAGS = ("bleeding", "rapid_change", "non_healing", "spreading_redness_fever", "severe_pain", "new_lump",
         "ulceration", "nail_streak")


@dataclass(frozen=True)
class RedFlagMatch:
    """Flags found, in the stable order of ``FLAGS``; ``matched_text[i]`` is the user's words for ``flags[i]``."""

    flags: tuple[str, ...]
    matched_text: tuple[str, ...]


# --- normalisation with a map back to the user's text ----------------------------------------------------

_BOUNDARY = ","
_CLAUSE_PUNCT = set(".,;:!?¡¿()[]{}\"“”«»…\n\r|/")


@dataclass(frozen=True)
class _Normalised:
    text: str  # lower-case ascii-ish words separated by single spaces; "," marks a clause boundary
    origin: tuple[int, ...]  # origin[i] = index in the original text of text[i]
    original: str

    def source(self, start: int, end: int) -> str:
        return self.original[self.origin[start]: self.origin[end - 1] + 1]


def _normalise(text: str) -> _Normalised:
    chars: list[str] = []
    origin: list[int] = []

    def emit(c: str, i: int) -> None:
        if c == " " and (not chars or chars[-1] == " "):
            return
        if c.isalpha() and len(chars) >= 2 and chars[-1] == chars[-2] == c:  # "bleeeding" -> "bleeding"
            return
        chars.append(c)
        origin.append(i)

    for i, ch in enumerate(text):
        if ch in _CLAUSE_PUNCT:
            for c in f" {_BOUNDARY} ":
                emit(c, i)
            continue
        for c in fold(ch):
            emit(c if c.isalnum() else " ", i)
    while chars and chars[-1] == " ":
        chars.pop()
        origin.pop()
    return _Normalised("".join(chars), tuple(origin), text)


# --- negation ---------------------------------------------------------------------------------------------

_NEGATIONS = frozenset({
    "no", "not", "never", "without", "nor", "neither", "none", "nothing", "cannot", "t", "dont", "doesnt",
    "didnt", "isnt", "wasnt", "hasnt", "havent", "hadnt", "wont", "cant", "arent", "werent", "deny", "denies", "aint",
    "sin", "nunca", "ni", "jamas", "tampoco", "ningun", "ninguna", "ninguno", "nada",
    "ne", "n", "pas", "sans", "jamais", "aucun", "aucune", "rien",
})
# Words that end a negation's reach: clause joiners, and subordinators ("I don't know why it bleeds").
_SCOPE_ENDS = frozenset({
    _BOUNDARY, "but", "however", "although", "though", "yet", "and", "except", "why", "because", "when",
    "whether", "if", "that", "which",
    "pero", "aunque", "sino", "y", "e", "excepto", "salvo", "porque", "cuando", "si", "que",
    "mais", "cependant", "pourtant", "et", "sauf", "parce", "quand", "lorsque", "pourquoi", "qui", "qu",
})
_NEGATION_REACH = 4  # words
# "without" negates what follows closely ("without any bleeding"), not a later clause without a comma
# ("without warning it started bleeding").
_SHORT_NEGATIONS = frozenset({"without", "sin", "sans"})
_SHORT_REACH = 2  # words


# A verb of knowing between the negation and the mention takes the negation for itself: "I didn't realise
# it was bleeding", "no sabía que sangraba" say that it bleeds. So does a verb of seeing followed by a finite
# verb: "I didn't notice it was bleeding", "I didn't see it was bleeding". Not a verb of seeing alone: "I
# haven't seen it bleed", "je ne l'ai jamais vu saigner" say that it does not ("never seen it bleed this much"
# is the amount rule below). Not when the mention is quantified away either: "I didn't know of any bleeding".
_KNOWING = frozenset({
    "realise", "realised", "realising", "realize", "realized", "realizing", "know", "knew", "known", "aware",
    "sabia", "sabido", "cuenta", "savais", "savait", "compte",
})
_SEEING = frozenset({
    "see", "seen", "saw", "seeing", "notice", "noticed", "noticing", "visto", "ver", "vi", "vio", "notado", "notar",
    "note", "noto", "vu", "vue", "voir", "vois", "voit", "remarque", "remarquee", "apercu", "apercue",
})
_FINITE = frozenset({"was", "were", "is", "s", "had", "has", "been", "estaba", "era", "etait", "est"})
_QUANTIFIERS = frozenset({"any", "ningun", "ninguna", "ninguno", "aucun", "aucune", "de", "d"})
# ... and so does a measure of amount after the mention: "I've never seen it bleed this much", "nunca había
# sangrado tanto" (but "así que" is "so that").
_MORE_THAN_EVER = re.compile(r" (?:this much|so much|like this|tanto|tantisimo|asi(?! que)|autant|comme ca)"
                             r"(?![a-z0-9])")


# A negation reaches across the commas of a list of symptoms: "It hasn't bled, grown or changed", "no ha
# sangrado, crecido ni cambiado" (each used to raise an emergency message). Only where the list's form says
# so, because "not itchy, bleeding or oozing" and "it doesn't itch, bleeds or oozes" report bleeding: the
# conjunction must join symptom words, and in English the items must have the form the negation takes (past
# participles after "hasn't", plain verbs after "doesn't"); in Spanish and French the list must be joined by "ni"
# ("ni crecido ni cambiado"). At most two words besides earlier items, and no subject, may sit between the comma
# and the mention.
_SUBJECTS = frozenset({"it", "its", "i", "im", "he", "she", "they", "this", "that", "my", "mine", "esta", "este",
                       "eso", "esto", "mi", "yo", "il", "elle", "ca", "cela", "je", "j", "mon", "ma"})
_SYMPTOM_WORD = re.compile(
    r"chang\w*|cambi\w*|grow\w*|grew|crec\w*|gross\w*|grandi\w*|bled|bleed\w*|sangr\w*|saign\w*|hurt\w*|dol\w*"
    r"|itch\w*|pica\w*|demang\w*|spread\w*|extend\w*|ooz\w*|weep\w*|supur\w*|suint\w*|heal\w*|crust\w*|scab\w*"
    r"|colou?r\w*|size|shape|tamano|forma|taille|couleur")
_PAST_FORM = re.compile(r"[a-z]+(?:ed|en|wn)|bled|grew|spread|hurt")
_PERFECT_NEGATIONS = frozenset({"hasn", "hadn", "haven", "hasnt", "hadnt", "havent", "never"})
_DID_NEGATIONS = frozenset({"didn", "didnt", "doesn", "doesnt", "don", "dont"})


def _joined_to_a_symptom(words: list[str]) -> bool:
    """A list's conjunction followed by a symptom word: "or changed", "ni cambiado" (not "once or twice")."""
    return any(word in ("or", "nor", "ni") and following != _BOUNDARY and _SYMPTOM_WORD.fullmatch(following)
               for word, following in itertools.pairwise(words))


def _list_comma(before: list[str], comma: int, after: list[str], mention: str) -> bool:
    """Whether the comma at ``before[comma]`` joins a negated list the mention (after ``before``) belongs to."""
    before_comma, between = before[comma - 1], before[comma + 1:]
    others = [w for w in between if w != _BOUNDARY and not _SYMPTOM_WORD.fullmatch(w)]  # earlier items pass
    if not _SYMPTOM_WORD.fullmatch(before_comma) or len(others) > 2 or _SUBJECTS.intersection(others):
        return False
    joined = [w for w in [*between, mention, *after[:3]] if w != _BOUNDARY]  # "bled, or changed": serial comma
    if not _joined_to_a_symptom(joined):
        return False
    if "ni" in joined:
        return True
    # English: past participles after "hasn't", "has not", "never" ("it hasn't bled, grown or changed"); plain
    # verbs after "didn't", "doesn't" ("it doesn't itch, bleed or grow"). "It didn't hurt, bled or oozed" is not
    # such a list: "bled" after "didn't" starts a new statement.
    window = set(before[max(0, comma - 5):comma - 1])
    items = (before_comma, mention)
    if _PERFECT_NEGATIONS & window or ("not" in window and {"has", "had", "have"} & window):
        return all(_PAST_FORM.fullmatch(w) for w in items)
    if _DID_NEGATIONS & window or ("not" in window and {"did", "does", "do"} & window):
        return all(w in ("bleed", "hurt") or not (_PAST_FORM.fullmatch(w) or w.endswith(("ing", "s")))
                   for w in items)
    return False


def _negated_before(text: str, start: int, end: int | None = None) -> bool:
    before = text[:start].split()
    after = text[end:].split() if end is not None else []
    mention = (text[start:end].split() or [""])[0] if end is not None else ""
    reach = _NEGATION_REACH
    for count, word in enumerate(reversed(before)):
        if (word == _BOUNDARY and count + 1 < len(before)
                and _list_comma(before, len(before) - count - 1, after, mention)):
            reach += 1  # the comma is not a word of the clause
            continue
        if word in _SCOPE_ENDS or count >= reach:
            return False
        if word in _NEGATIONS and (word not in _SHORT_NEGATIONS or count < _SHORT_REACH):
            between = set(before[len(before) - count:])
            lifted = _KNOWING & between or (_SEEING & between and _FINITE & between)
            return not (lifted and before[-1] not in _QUANTIFIERS)
    return False


def _negated_after(text: str, end: int) -> bool:
    """Spoken French drops the "ne": "ça saigne pas" (but "saigne pas mal" means "bleeds quite a lot")."""
    after = text[end:].split()[:2]
    if not after or after[0] not in {"pas", "jamais"}:
        return False
    return not (after[0] == "pas" and after[1:] == ["mal"])


# --- rules ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Term:
    pattern: re.Pattern
    negation_inside: bool = False  # the phrase means something *because* of its negation ("won't heal")
    check: Callable[[re.Match], bool] | None = None


def _terms(*patterns: str, negation_inside: bool = False, check=None) -> tuple[_Term, ...]:
    return tuple(_Term(re.compile(rf"\b(?:{p})(?![a-z0-9])"), negation_inside, check) for p in patterns)


@dataclass(frozen=True)
class _Rule:
    flag: str
    terms: tuple[_Term, ...] = ()
    # Alternatively, every group mentioned (un-negated) anywhere in the text: fever *and* redness.
    together: tuple[tuple[_Term, ...], ...] = field(default_factory=tuple)


_W = r"[a-z0-9]+ "  # one word inside a clause (never crosses a "," boundary)
_NOT_EN = (r"(?:(?:won|can|doesn|don|didn|isn|hasn|haven|wasn|aren|weren|couldn|wouldn) t|not|never|wont|cant"
           r"|doesnt|dont|didnt|isnt|hasnt|havent|cannot)")

_NUMBER_WORDS = {
    "a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
    "nine": 9, "ten": 10, "un": 1, "una": 1, "uno": 1, "dos": 2, "tres": 3, "cuatro": 4, "cinco": 5, "seis": 6,
    "siete": 7, "ocho": 8, "une": 1, "deux": 2, "trois": 3, "quatre": 4, "cinq": 5, "sept": 7, "huit": 8,
}
_SORE = (r"sores?|wounds?|ulcers?|scabs?|cuts?|llagas?|heridas?|ulceras?|costras?|grietas?|plaies?|blessures?"
         r"|croutes?|ulceres?")
_DURATION = (rf"(?:{_SORE}) (?:{_W}){{0,8}}(?P<n>\d+|a few|an?|one|two|three|four|five|six|seven|eight|nine|ten"
             r"|several|many|few|un|una|uno|dos|tres|cuatro|cinco|seis|siete|ocho|varias|varios|muchas|muchos|unas"
             r"|unos|une|deux|trois|quatre|cinq|sept|huit|plusieurs|quelques) (?P<unit>weeks?|months?|years?|semanas?"
             r"|mes|meses|anos?|semaines?|mois|ans?|annees?)")


def _long_enough(match: re.Match) -> bool:
    """A sore present for three weeks or more (any number of months or years) has not healed."""
    unit, amount = match.group("unit"), match.group("n")
    if not unit.startswith(("week", "semana", "semaine")):
        return True
    number = int(amount) if amount.isdigit() else _NUMBER_WORDS.get(amount, 3)  # several/a few/varias -> 3
    return number >= 3


# "Growing" is about the spot unless a person is the subject or a feeling follows: "I am growing worried",
# "my kids are growing"; "it changes nothing" is not a change. (French "j'ai grossi": I put on weight.)
_PERSON = (r"i|we|you|they|he|she|kids?|children|child|sons?|daughters?|baby|babies|hair|nails|yo|ninos?|ninas?"
           r"|hijos?|hijas?|bebes?|pelo|cabello|je|j|nous|enfants?|fils|filles?|cheveux")
# the person is the subject ("my kids are growing"), not a possessor ("the mole on my son is growing")
_PERSON_SUBJECT = re.compile(
    r"(?:^|(?<![a-z])(?!(?:on|of|in|at|to|my|our|his|her|their|de|del|en|a|mi|mis|su|sus|sur|du|chez|mon|ma|mes|son"
    rf"|sa|ses) )[a-z]+ )(?:(?:my|our|his|her|their|mi|mis|su|sus|mon|ma|mes|nos) )?(?:{_PERSON})"
    r"(?: (?:am|m|are|re|is|s|was|were|keep|keeps|kept|have|ve|has|estoy|estan|esta|estamos|ai|suis|sont|est|a"
    r"|ont))?(?: been)? $")
_NOT_A_CHANGE = re.compile(r" (?:worried|concerned|anxious|nervous|scared|afraid|tired|impatient|old|older|up"
                           r"|fond|weary|used|nothing|anything)(?![a-z0-9])")


def _about_the_spot(match: re.Match) -> bool:
    text = match.string
    return not (_PERSON_SUBJECT.search(text, 0, match.start()) or _NOT_A_CHANGE.match(text, match.end()))


_ORGAN_BEFORE = re.compile(r"(?:^| )(?:stomach|gastric|peptic|duodenal|intestinal|bowel|mouth|oral) $")
_ORGAN_AFTER = re.compile(r" (?:de |del |en el |en la |a l |de l |d )?(?:estomago|estomacal|gastric\w*"
                          r"|peptic\w*|duodenal\w*|intestin\w*|boca|bucal\w*|estomac|bouche)(?![a-z0-9])")


def _on_the_skin(match: re.Match) -> bool:
    """A stomach or mouth ulcer is not a skin sign: "I have a stomach ulcer", "úlcera de estómago"."""
    return not (_ORGAN_BEFORE.search(match.string, 0, match.start()) or _ORGAN_AFTER.match(match.string, match.end()))


_LUMP_EN = r"lumps?|bumps?|swelling|swollen|mass|masses|knots?|nodes?|glands?|balls?"
_LOC_EN = r"armpits?|underarms?|under arm|arm pit|axilla|groin|neck|behind (?:my |the |his |her )?ears?|collar ?bones?"
_LUMP_ES = (r"bult\w*|bolas?|bolitas?|ganglios?|nodulos?|hinchazon|inflamacion|masas?|pelotitas?|quistes?"
            r"|chichon\w*|dureza")
_LOC_ES = r"axilas?|sobacos?|ingles?|cuello"
_LUMP_FR = r"boules?|bosses?|grosseurs?|ganglions?|masses?|nodules?|gonflements?|kystes?|durete"
_LOC_FR = r"aisselles?|aine|aines|cou|creux axillaire"
_NAIL_EN = r"(?:thumb|finger|toe)?nails?|nail beds?"
_STREAK_EN = r"streaks?|lines?|stripes?|bands?|strips?"
_STREAK_ES = r"(?:linea|raya|franja|banda|veta|estria)s?"
_STREAK_FR = r"(?:ligne|bande|trait|strie|raie|rayure|trace|trainee)s?"

_RULES: tuple[_Rule, ...] = (
    _Rule("bleeding", _terms(
        # "bleeding heart" is a plant
        r"bleed\w*(?! hearts?(?![a-z0-9]))|bled|bloody|ooz\w*|weep\w*|pus"
        r"|leak\w*|discharg\w*"
        r"|(?:red|blood|bloody) ?stains?|stain\w* (?:of |with )?blood|(?:manchas?|restos?) de sangre|taches? de sang"
        r"|blood (?:comes|coming|came|keeps|everywhere|on|from)|ha?emorr?h?ag\w*",
        # common misspellings, and blood itself when it is on or from the spot (not "blood pressure")
        r"blea?d(?:s|ing|in)?|bled+ing|bleeing|blooding|bloodied",
        r"(?:there is|there s|theres|is|some|covered in|full of|lots of|a lot of|bit of|drops? of|spots? of) blood",
        r"sangr\w*|supur\w*", r"saign\w*|suint\w*|du sang|de sang|sang coule",
    ) + _terms(
        # a negated "stop" with the bleeding as its object means it bleeds: "I can't get the bleeding to stop",
        # "no puedo parar el sangrado", "je n'arrive pas à arrêter le saignement"
        rf"{_NOT_EN} (?:[a-z]+ ){{0,3}}(?:stop\w*|halt\w*) (?:[a-z]+ ){{0,2}}(?:bleed\w*|ooz\w*|blood)",
        rf"{_NOT_EN} (?:[a-z]+ ){{0,2}}(?:bleed\w*|ooz\w*|blood) (?:[a-z]+ ){{0,2}}stop\w*",
        r"(?:no|nunca|nada|nadie) (?:[a-z]+ ){0,3}(?:parar\w*|detener\w*|cortar\w*|frenar\w*|contener\w*) "
        r"(?:[a-z]+ ){0,2}(?:sangr\w*|hemorrag\w*|supur\w*)",
        r"(?:ne|n|rien|personne) (?:[a-z]+ ){0,3}(?:arret\w*|stopp\w*|cesse\w*) (?:[a-z]+ ){0,3}"
        r"(?:saign\w*|sang|hemorrag\w*|suint\w*)",
        r"(?:nothing|no one|none) (?:[a-z]+ ){0,2}(?:stop\w*|help\w*) (?:[a-z]+ ){0,2}(?:bleed\w*|ooz\w*|blood)",
        r"nada (?:[a-z]+ ){0,2}(?:detiene|para|paro|corta|frena|cesa) (?:[a-z]+ ){0,2}(?:sangr\w*|supur\w*)",
        r"rien (?:[a-z]+ ){0,2}(?:arret\w*|stopp\w*) (?:[a-z]+ ){0,2}(?:saign\w*|sang)",
        r"no (?:[a-z]+ ){0,2}(?:para|paro|deja|dejo|parado|dejado|detiene|corta|cesa) (?:de )?(?:sangr\w*|supur\w*)",
        r"(?:ne |n )?(?:arret\w*|cesse) (?:pas |plus |jamais )?de (?:saign\w*|suint\w*)",
        negation_inside=True,
    )),
    _Rule("rapid_change", _terms(
        r"grows|growing|grown|grew", r"crec\w*", r"grossi\w*",
        r"(?:has|have|had|is|s|keeps|kept|been|started|starting|began|begun|it|mole|spot|lesion|mark|lump|freckle"
        r"|patch) (?:[a-z]+ )?chang\w*",
        check=_about_the_spot,
    ) + _terms(
        r"enlarg\w*|expanding|evolv\w*|(?:fast|rapid|quick|sudden)\w* (?:growth|change\w*)",
        r"(?:get|gets|getting|got|gotten|become|becomes|became|becoming|turn|turns|turned|turning|went|gone|go"
        r"|going) (?:much |a lot |a bit |really |way |even )?(?:bigger|larger|wider|darker|thicker|raised|lumpy"
        r"|irregular|uneven)",
        r"(?:bigger|larger|darker|wider|thicker) than (?:before|it was|it used|last)",
        r"(?:looks?|looking|seems?) (?:much |a lot |a bit |even |now )?(?:bigger|larger|darker|wider|thicker)"
        r"|(?:is|s) (?:much |a lot |a bit |even )?(?:bigger|larger|darker|wider|thicker) now",
        r"doubl\w* (?:in )?size|(?:increas\w*|grow\w*) in size|used to be (?:flat|smaller|lighter|round|even)",
        # "its twice the size it was in january", "went from light brown to almost black", "the size of a pea
        # and now its like a grape"
        # (a comparison with another spot is not growth: "my other mole is twice the size of this one")
        r"(?:twice|three times|triple) (?:the |its |as )?(?:size|big|large|wide)(?! (?:of|as) (?:this|that|my|the"
        r"|another|other))|(?:twice|three times) as (?:big|large|wide|dark)(?! as (?:this|that|my|the|another|other))",
        r"(?:went|gone|turned|changed|going|turning|changing) from (?:[a-z]+ ){1,3}to (?:an? |almost |nearly |very "
        r"|really )?(?:black|dark\w*|blue|red|purple)",
        r"(?:was|used to be) (?:[a-z]+ ){0,7}now (?:it s |its |it is |is )?(?:like |the size of |as big as |bigger "
        r"than )?(?:an? )?(?:grape|marble|walnut|golf ball|coin|cherry|olive|bean|pea|huge|big|bigger|larger)",
        r"(?:el )?doble de (?:grande|tamano|ancho)|(?:dos|tres) veces mas grande|deux fois plus (?:gros|grand)\w*"
        r"|(?:double|doublee) de (?:taille|volume)",
        r"chang\w* (?:in |its |the |of ){0,2}(?:size|shape|colou?rs?|appearance|texture)",
        r"(?:size|shape|colou?rs?|appearance) (?:has |have |is |are |s )?(?:chang\w*|different)",
        r"new colou?rs?",
        # from a final review: "it was flat, now its a bump", "it looks different to last month", "the edges are
        # spreading out"
        r"(?:was|used to be) flat (?:[a-z]+ ){0,4}now|(?:raised|a bump|bumpy|lumpy) now (?:[a-z]+ ){0,3}(?:was|used to be)"
        r" flat|now (?:it s |its |it is )?(?:raised|a bump|bumpy|lumpy)",
        r"(?:looks?|looking) different (?:to|from|than) (?:last|before|it did|a few|a month|a week|weeks|months)",
        r"edges? (?:are |is )?(?:spreading|growing|getting bigger|blurr\w*|getting irregular)",
        # a spot that spreads or has doubled, in any language
        # (a question about what it could do, "can it spread?", is not a report that it does)
        r"(?<!can )(?<!could )(?<!will )(?<!would )(?<!does )(?<!might )(?<!may )(?<!puede )(?<!podria )(?<!peut )"
        r"(?:it|mole|spot|lesion|mark|patch|freckle|growth|pigment|colou?r|stain|lunar|mancha|tache|grain de beaute)"
        r" (?:is |s |has |has been |keeps |seems to be |se |se esta |esta |s est |s )?(?:spread\w*|extend\w*"
        r"|extiende\w*|expand\w*|propag\w*|etend\w*|etal\w*)",
        r"doubl\w* (?:in |de |d )?(?:size|volume|taille)|(?:duplic\w*|doblad\w*|doblo) (?:su |el |de |en )?"
        r"(?:tamano|volumen)",
        # Spanish
        r"agrand\w*|oscurec\w*|evolu\w*|aument\w* (?:de )?(?:tamano|volumen)",
        r"(?:hecho|puesto|vuelto|volviendo|haciendo|poniendo|pone|vuelve|puso|hizo|volvio|ponia|hacia) (?:mas |muy )?"
        r"(?:grande|oscur\w*|grues\w*|irregular|elevad\w*|abultad\w*)",
        r"mas (?:grande|oscur\w*|grues\w*|anch[oa]|elevad\w*|abultad\w*) (?:que|de lo que) (?:antes|era|estaba"
        r"|hace)",
        r"cada vez mas (?:grande|oscur\w*|grues\w*|irregular)",
        r"cambi\w* (?:de |en |su |el |la ){0,2}(?:tamano|forma|color|aspecto|apariencia)",
        r"(?:tamano|forma|color|aspecto) (?:ha |han )?cambi\w*",
        r"(?:ha|han|esta|estan|sigue|va) (?:[a-z]+ )?cambi\w*",
        # French
        r"grandi\w*|agrandi\w*|assombri\w*",
        r"plus (?:gros|grosse|grand|grande|fonce\w*|sombre|noir\w*|epais\w*|large|bomb\w*) (?:qu|que) (?:avant"
        r"|auparavant|il y a|d habitude|la derniere fois)",
        r"chang\w* (?:de |d |en ){0,2}(?:taille|forme|couleur|aspect)",
        r"(?:taille|forme|couleur|aspect) (?:a |ont |qui )?(?:chang\w*|evolu\w*)",
        r"(?:a|ont|avoir|ai|as) (?:[a-z]+ ){0,2}chang\w*",
        r"(?:devenu|devenue|devenus|devient|deviennent) (?:[a-z]+ )?(?:plus )?(?:gros|grosse|grand|grande|fonce\w*"
        r"|sombre|noir\w*|epais\w*|irregulier\w*|bomb\w*)",
        r"de plus en plus (?:gros|grosse|grand|grande|fonce\w*|sombre|noir\w*|epais\w*)",
    )),
    _Rule("non_healing", _terms(
        rf"{_NOT_EN} (?:[a-z]+ ){{0,2}}heal\w*",
        r"non ?heal\w*|unheal\w*",
        r"keeps? (?:on )?(?:coming back|reopening|re opening|opening up|breaking down|scabbing)",
        # "the scab keeps falling off and it never closes up"; a scab or crust there for weeks
        r"(?:scab\w*|crust\w*)(?: [a-z0-9,]+){0,6} (?:for|since) (?:\d+|a few|several|two|three|four|five|six|many) "
        r"(?:weeks|months)|(?:been|was) (?:scabby|crusty|scabbed|crusted) (?:for|since) (?:\d+|a few|several|many|weeks|months)"
        r"|(?:scabbed|crusted) over (?:and )?(?:came|comes|keeps coming) back"
        r"|(?:scab|crust) (?:that s|that has|which has|thats) been there (?:since|for)",
        rf"{_NOT_EN} (?:[a-z]+ ){{0,2}}(?:close|closes|closed|closing) (?:up|over)",
        r"(?:scab|crust)s? (?:keeps?|kept) (?:on )?(?:falling|coming|peeling|dropping) off",
        r"heal\w* (?:and|then|but) (?:[a-z]+ )?(?:comes back|came back|reopens|reopened|opens again|breaks down)",
        r"(?:opens?|opened|opening|breaks?|broke) (?:up |open )?again|re ?opens?|re ?opened",
        r"no (?:se |me |le |lo |la |ha |han |he |termina de |acaba de |quiere |logra |parece |consigue ){0,3}"
        r"(?:cura\w*|curo|sana\w*|sano|cicatriz\w*|cierra\w*|cerrad\w*|cerro|curad\w*)",
        r"sin (?:cura\w*|sana\w*|cicatriz\w*|cerrar\w*)|vuelve a abrir\w*|se vuelve a abrir|sigue abierta"
        r"|todavia abierta",
        r"(?:ne|n) (?:[a-z]+ ){0,2}(?:gueri\w*|cicatris\w*|referm\w*|ferme\w*)(?: pas| jamais| plus| toujours pas)?",
        r"(?:pas|jamais|toujours pas) (?:encore |vraiment )?(?:gueri\w*|cicatris\w*|referm\w*)(?: pas| jamais)?",
        r"(?:gueri\w*|cicatris\w*|referm\w*) (?:toujours )?(?:pas(?! mal)|jamais)",
        r"sans (?:gueri\w*|cicatris\w*|se refermer)|rouvr\w*|reouvr\w*|toujours ouverte?",
        negation_inside=True,
    ) + _terms(_DURATION, check=_long_enough)),
    _Rule("spreading_redness_fever", _terms(
        rf"(?:redness|red area|red patch|red skin|rash|swelling|infection|inflammation|red) (?:{_W}){{0,3}}"
        r"(?:spread\w*|expand\w*|getting bigger|moving up|going up|extending)",
        r"spreading (?:redness|red|rash|swelling|infection|inflammation)|red (?:streaks?|lines?) (?:up|along|going)",
        rf"(?:enrojecimiento|rojez|rojo|roja|zona roja|hinchazon|inflamacion|infeccion) (?:{_W}){{0,3}}"
        r"(?:extiende\w*|extendiendo|expande\w*|expandiendo|propaga\w*|propagando|avanza\w*)",
        r"lineas? rojas?|rayas? rojas?",
        rf"(?:rougeurs?|rouge|gonflement|inflammation|infection|zone rouge) (?:{_W}){{0,3}}(?:s etend\w*|s etal\w*"
        r"|se propag\w*|progresse\w*|gagne\w*|avance\w*)",
        r"trainees? rouges?|lignes? rouges? (?:qui )?(?:monte|remonte)\w*",
    ), together=(
        _terms(r"fever\w*|feverish|chills|shivering|high temperature|(?:running|got|have|has) a temperature",
               r"fiebre|febril|escalofrio\w*|calentura|temperatura alta",
               r"fievre\w*|fiev\w*|frissons?|temperature elevee|de la temperature"),
        _terms(r"red|redness|reddish|warm|hot|swollen|swelling|inflamed|infected",
               r"roj\w*|enrojec\w*|caliente|calor|hinchad\w*|hinchazon|inflamad\w*|infectad\w*",
               r"rouge\w*|chaud\w*|chaleur|gonfl\w*|enfl\w*|inflamm\w*|infecte\w*"),
    )),
    _Rule("severe_pain", _terms(
        r"(?:severe|intense|terrible|unbearable|excruciating|extreme|agoni[sz]ing|awful|horrible|worsening"
        r"|increasing|a lot of|lots of|so much|really bad|very bad) (?:[a-z]+ )?(?:pain|ache|aching|burning)",
        r"(?:pain|ache|hurts?|hurting) (?:[a-z]+ ){0,2}(?:getting worse|worse and worse|worsening|increasing"
        r"|unbearable|severe|so much|so bad|too much|a lot(?! better| less)|really bad|very bad|badly|terribly"
        r"|more and more)",
        r"(?:very|extremely|really|so|incredibly|unbearably) (?:painful|sore|tender)|hurts? like hell",
        r"excruciating\w*|(?:pain|ache|aching|hurt\w*|sore\w*) (?:[a-z]+ ){0,2}(?:killing|kills) me",
        r"hurts? like (?:crazy|mad|anything|nothing else|the devil)",
        r"(?:mucho|muchisimo|fuerte|intenso|terrible|insoportable|severo|horrible|tremendo) dolor",
        r"dolor (?:muy |bastante |tan )?(?:fuerte|intenso|severo|insoportable|terrible|horrible|tremendo)",
        r"dolor (?:que )?(?:aumenta|empeora|va en aumento|es cada vez mayor)",
        r"dolor (?:[a-z]+ ){0,2}(?:matando|mata)|(?:matando|mata) de dolor",
        r"duele (?:muchisimo|mucho|bastante|demasiado|horrible|cada vez mas|un monton|fuerte)"
        r"|cada vez (?:me |le |te )?duele mas|(?:muy|super|extremadamente|bastante) doloros\w*",
        r"(?:douleurs?|mal) (?:tres |vraiment |de plus en plus )?(?:fortes?|intenses?|severes?|insupportable\w*"
        r"|terrible\w*|atroce\w*|horrible\w*)",
        r"(?:fortes?|intenses?|vives?|terribles?|atroces?|horribles?|grosses?) douleurs?",
        r"(?:tres|extremement|vraiment|super|trop) doulour\w*",
        r"fait (?:tres|vraiment|super|trop|atrocement|horriblement|de plus en plus) mal",
        r"(?:fait|ai|a) (?:un )?mal (?:de chien|fou|atroce|horrible)",
        r"(?:j ai|il a|elle a|on a|ai|a) (?:tres|vraiment|super|trop|atrocement|horriblement) mal",
        r"douleurs? (?:qui )?(?:augmente\w*|empire\w*|s aggrave\w*|s intensifie\w*)",
    )),
    _Rule("new_lump", _terms(
        rf"(?:{_LUMP_EN}) (?:{_W}){{0,4}}(?:in|under|on|near|at|of) (?:my |the |his |her |their |your |one )?"
        rf"(?:left |right )?(?:{_LOC_EN})",
        rf"(?:{_LUMP_EN}) (?:{_W}){{0,4}}under (?:my |the |his |her |their |your |one )?(?:left |right )?arms?",
        rf"(?:{_LUMP_EN}) (?:{_W}){{0,4}}behind (?:my |the |his |her |their |your |one )?(?:left |right )?ears?",
        rf"(?:{_LOC_EN}) (?:{_W}){{0,2}}(?:lumps?|swollen|swelling|mass)",
        r"swollen (?:lymph )?(?:nodes?|glands?)|lymph nodes? (?:[a-z]+ ){0,2}(?:swollen|enlarged|bigger|up)",
        rf"(?:{_LUMP_ES}) (?:{_W}){{0,4}}(?:en|bajo|debajo de|debajo del|de|del|cerca de|cerca del) "
        r"(?:la |el |mi |las |los |mis )?"
        rf"(?:{_LOC_ES})",
        rf"(?:{_LOC_ES}) (?:{_W}){{0,2}}(?:hinchad\w*|inflamad\w*|con un bulto|con una bola)",
        r"ganglios? (?:[a-z]+ )?(?:inflamad\w*|hinchad\w*|grandes|agrandad\w*)",
        rf"(?:{_LUMP_FR}) (?:{_W}){{0,4}}(?:sous (?:le|mon) bras|(?:a|au|dans|sous|sur|de|pres de) "
        rf"(?:l |la |le |mon |ma |mes |les )?(?:{_LOC_FR}))",
        r"ganglions? (?:[a-z]+ )?(?:gonfle\w*|enfle\w*|grossi\w*|augmente\w*)",
    )),
    _Rule("ulceration", _terms(r"ulcer\w*", check=_on_the_skin) + _terms(
        r"open (?:sore|wound)|crater\w*|blacken\w*|necros\w*",
        r"(?:turn\w*|went|gone|going|become|became|becoming|get|gets|getting|got|gotten) (?:all |completely |very "
        r"|really )?black",
        r"llaga abierta|herida abierta|ennegrec\w*",
        r"(?:puesto|volviendo|vuelto|volvio|pone|puso|vuelve|poniendo|torno|tornado) (?:muy |completamente |toda "
        r"|todo )?negr\w*",
        r"plaie (?:ouverte|a vif)|noirci\w*|(?:devenu\w*|devient) (?:tout |toute |completement )?noir\w*",
    )),
    _Rule("nail_streak", _terms(
        rf"(?:{_STREAK_EN}) (?:{_W}){{0,4}}(?:under|in|on|along|down|through|across) (?:my |the |a |one |his "
        rf"|her |your )?(?:[a-z]+ )?(?:{_NAIL_EN})",
        rf"(?:{_NAIL_EN}) (?:{_W}){{0,3}}(?:dark|black|brown|brownish|blackish) (?:{_STREAK_EN})",
        rf"(?:{_NAIL_EN}) (?:has |have |is |are )?(?:gone|going|turned|turning|got|gotten|become|becoming) (?:dark|black"
        r"|brown)",
        r"melanonych\w*|melanoniqui\w*",
        # "uña" folds to "una" (also "a"/"one"), so a Spanish nail needs an article or preposition before it, or
        # a streak right next to it: "uña con una raya", "línea oscura en uña" (not "una raya en la piel").
        rf"{_STREAK_ES} (?:{_W}){{0,3}}(?:en|bajo|debajo de|de|por) (?:la|mi|las|mis|una|su|sus) unas?",
        rf"{_STREAK_ES} (?:{_W}){{0,2}}(?:en|bajo|debajo de|de) unas?(?= ,|$| del? (?:la |mi |su )?(?:pie|mano|dedo"
        r"|pulgar))",
        rf"(?:la|mi|las|mis|su|sus) unas? (?:{_W}){{0,3}}{_STREAK_ES}",
        rf"unas? (?:con|tiene|que tiene) (?:una |un |unas |unos )?{_STREAK_ES}",
        rf"{_STREAK_FR} (?:{_W}){{0,4}}(?:sous|sur|dans|de|le long de) (?:l |un |mon |ma |mes |le |la |les )?ongles?",
        rf"ongles? (?:{_W}){{0,4}}{_STREAK_FR}",
    )),
)


# Leaking and discharge count unless something else is named as leaking: "my nose is leaking", "the tap has
# been leaking", "I was discharged from hospital", "my discharge letter".
_NOT_THE_SPOT_LEAKING = re.compile(
    r"\b(?:nose|tap|roof|pipe|faucet|sink|toilet|bottle|battery|data|gas|eyes?|ears?|car|boat|shower|hospital)"
    r" (?:[a-z]+ ){0,3}$")
_NOT_THE_SPOT_DISCHARGE = re.compile(r"discharg\w* (?:from (?:the )?hospital|letter|papers?|summary|note|date)")


def _other_leak(text: str, match: re.Match) -> bool:
    word = match.group()
    if not word.startswith(("leak", "discharg")):
        return False
    return bool(_NOT_THE_SPOT_LEAKING.search(text, 0, match.start())
                or _NOT_THE_SPOT_DISCHARGE.match(text, match.start())
                or (word.startswith("discharged") and " from " in text[match.end():match.end() + 6]))


def _affirmed(norm: _Normalised, terms: Iterable[_Term]) -> tuple[int, int] | None:
    """The first mention of any term that is not negated, as a span of ``norm.text``."""
    text = norm.text
    for term in terms:
        for match in term.pattern.finditer(text):
            if term.check and not term.check(match):
                continue
            if _other_leak(text, match):
                continue
            if not term.negation_inside and _NEGATIONS.intersection(match.group().split()):
                continue
            if _MORE_THAN_EVER.match(text, match.end()):
                return match.span()
            if (_negated_before(text, match.start(), match.end()) or _negated_after(text, match.end())
                    or _answered_no(norm, match.end())):
                continue
            return match.span()
    return None


# "Has it changed? No. Does it bleed? No.": a question about the symptom, answered "no" (raised the emergency
# message). Only straight after a question mark: "sangra, ¿no?" asks for agreement.
_ANSWERED_NO = re.compile(r"\s*\w*\s*\?\s*(?:no|nope|nah|never|non|nunca|jamais)\s*(?:[.!,;]|$)", re.IGNORECASE)


def _answered_no(norm: _Normalised, end: int) -> bool:
    return bool(_ANSWERED_NO.match(norm.original, norm.origin[end - 1] + 1))


def check_red_flags(text: str) -> RedFlagMatch | None:
    """Red-flag symptoms mentioned (and not negated) in ``text``, in any supported language; ``None`` if none."""
    norm = _normalise(text or "")
    flags, matched = [], []
    for rule in _RULES:
        span = _affirmed(norm, rule.terms)
        if span:
            found = norm.source(*span)
        else:
            spans = [_affirmed(norm, group) for group in rule.together]
            if not spans or not all(spans):
                continue
            found = " … ".join(norm.source(*s) for s in spans)
        flags.append(rule.flag)
        matched.append(found)
    if not flags:
        return None
    log.info("red flag found in a question: urgent-care message shown")  # which ones is health data: DEBUG only
    log.debug("red flags in user text: %s", ",".join(flags))
    return RedFlagMatch(tuple(flags), tuple(matched))


# --- the urgent message -----------------------------------------------------------------------------------

_FLAG_TEXT = {
    "en": {
        "bleeding": "bleeding or oozing",
        "rapid_change": "a spot that is growing or changing quickly",
        "non_healing": "a sore that does not heal",
        "spreading_redness_fever": "redness that spreads, or redness with warmth or fever",
        "severe_pain": "strong or increasing pain",
        "new_lump": "a new lump in the armpit, groin or neck",
        "ulceration": "a spot that has turned black or become an open sore",
        "nail_streak": "a dark line under a nail",
    },
    "es": {
        "bleeding": "sangrado o supuración",
        "rapid_change": "una mancha que crece o cambia rápido",
        "non_healing": "una llaga que no se cura",
        "spreading_redness_fever": "enrojecimiento que se extiende, o enrojecimiento con calor o fiebre",
        "severe_pain": "dolor fuerte o que va en aumento",
        "new_lump": "un bulto nuevo en la axila, la ingle o el cuello",
        "ulceration": "una mancha que se ha puesto negra o se ha abierto como una llaga",
        "nail_streak": "una línea oscura bajo una uña",
    },
    "fr": {
        "bleeding": "un saignement ou un suintement",
        "rapid_change": "une tache qui grossit ou change vite",
        "non_healing": "une plaie qui ne guérit pas",
        "spreading_redness_fever": "une rougeur qui s'étend, ou une rougeur avec de la chaleur ou de la fièvre",
        "severe_pain": "une douleur forte ou qui augmente",
        "new_lump": "une nouvelle boule à l'aisselle, à l'aine ou au cou",
        "ulceration": "une tache devenue noire ou qui s'est ouverte comme une plaie",
        "nail_streak": "une ligne foncée sous un ongle",
    },
}

_URGENT = ByLanguage(
    en=("Please get medical help soon.",
        "What you wrote can be a warning sign: {flags}.",
        "This device cannot check these symptoms.",
        "- See a doctor or nurse today if you can, or go to an urgent care clinic.",
        ("- Call emergency services (your local emergency number) now if bleeding is heavy or will not stop, "
        "if you have a fever with redness that is spreading, or if you feel very unwell.")),
    es=("Por favor, busque atención médica pronto.",
        "Lo que escribió puede ser una señal de alarma: {flags}.",
        "Este aparato no puede evaluar estos síntomas.",
        "- Vea a un médico o a una enfermera hoy mismo si puede, o vaya a un centro de urgencias.",
        ("- Llame ahora a emergencias (el número de emergencias de su país) si el sangrado es abundante o no se "
        "detiene, si tiene fiebre con un enrojecimiento que se extiende, o si se siente muy mal.")),
    fr=("Veuillez consulter rapidement.",
        "Ce que vous avez écrit peut être un signe d'alerte : {flags}.",
        "Cet appareil ne peut pas évaluer ces symptômes.",
        ("- Consultez un médecin ou une infirmière aujourd'hui si possible, ou allez dans un service de soins "
        "urgents."),
        ("- Appelez les urgences (le numéro d'urgence de votre pays) maintenant si le saignement est abondant ou "
        "ne s'arrête pas, si vous avez de la fièvre avec une rougeur qui s'étend, ou si vous vous sentez très "
        "mal.")),
)


def flag_text(flag: str, lang: str) -> str:
    """Plain-language description of one flag id in ``lang``."""
    return _FLAG_TEXT[resolve_lang(lang)][flag]


def urgent_message(lang: str, flags: Iterable[str] | RedFlagMatch | None = None) -> str:
    """The fixed message shown when red flags are found: seek care promptly; this device cannot assess them.

    ``flags`` (ids or a ``RedFlagMatch``) are named in plain words; unknown ids are logged and left out, so
    the message itself can never fail.
    """
    lang = resolve_lang(lang)
    ids = flags.flags if isinstance(flags, RedFlagMatch) else tuple(flags or ())
    unknown = [f for f in ids if f not in _FLAG_TEXT[lang]]
    if unknown:
        log.warning("urgent_message: unknown red-flag ids %s ignored", unknown)
    described = [_FLAG_TEXT[lang][f] for f in FLAGS if f in ids]
    lines = list(_URGENT[lang])
    if described:
        lines[1] = lines[1].format(flags="; ".join(described))
    else:
        del lines[1]
    return "\n".join([*lines, DISCLAIMER[lang]])
