"""Printable reports built from templates: the result, its fact sheet and the person's symptoms.

A report always has the same nine sections, in this order (``SECTION_KEYS``); titles are localised, keys
are stable. The text comes from the fact sheet and fixed, localised templates. An LLM may later rewrite
three of them (``LLM_REPLACEABLE``: overview, key features, prevention), and only after each text passes
``guard.screen_answer``; a blocked text leaves the template in place and is recorded in ``Report.blocked``.
The opening sentence of the overview (what the device found, or that it could not give a reliable answer)
and the disclaimers are never replaced.

``Report.html()`` is a complete, self-contained page (inline CSS with print rules, no scripts, no external
resources, a restrictive Content-Security-Policy) in which every piece of text is HTML-escaped: labels and
LLM text are untrusted.
"""

from __future__ import annotations

import dataclasses

import html
import logging
import re
import time
from dataclasses import dataclass, field

from edge.assistant.facts import FactSheet
from edge.assistant.guard import DISCLAIMER, fold, resolve_lang, screen_answer
from edge.assistant.symptoms import Adjustment
from edge.types import Result, Urgency

log = logging.getLogger("edge.assistant")

SECTION_KEYS = ("condition_overview", "confidence_meaning", "key_features", "recommended_actions",
                "immediate_care_triggers", "self_monitoring_checklist", "prevention_tips",
                "professional_follow_up", "disclaimers")
LLM_REPLACEABLE = frozenset({"condition_overview", "key_features", "prevention_tips"})
MAX_LLM_CHARS = 2000

SECTION_TITLES = {
    "en": ("Condition Overview", "Confidence Meaning", "Key Features", "Recommended Actions",
           "Immediate Care Triggers", "Self-Monitoring Checklist", "Prevention Tips",
           "Professional Follow-Up Rationale", "Disclaimers"),
    "es": ("Resumen de la afección", "Qué significa la confianza", "Características principales",
           "Acciones recomendadas", "Cuándo buscar atención inmediata", "Lista de autocontrol",
           "Consejos de prevención", "Por qué consultar a un profesional", "Avisos importantes"),
    "fr": ("Aperçu de l'affection", "Signification de la confiance", "Caractéristiques principales",
           "Actions recommandées", "Quand consulter immédiatement", "Liste d'auto-surveillance",
           "Conseils de prévention", "Pourquoi un suivi professionnel", "Avertissements"),
}

_TEXT = {
    "en": {
        "title": "Skin screening report",
        "banner": "Screening aid – not a diagnosis.",
        "date": "Date", "model": "Model", "reference": "Reference", "result": "Most similar to",
        "no_answer": "No reliable answer", "next_step": "Next step",
        "found": "The screening found features most similar to: {name}.",
        "abstained": "The device could not give a reliable answer for this photo.",
        "low_confidence": "None of its possible answers was clear enough.",
        "out_of_distribution": "The photo looks different from the images the device learned from (for example, "
                               "it may not show a skin spot, or the light or focus may be unusual).",
        "closest": "Its closest match was \"{name}\", but this should not be relied on.",
        "confidence": "The device gave a confidence of {pct} for \"{name}\". Put simply: in earlier tests, when "
                      "the device gave a score like this, it was right about {n} times out of 100. This is an "
                      "estimate from a photo only. It cannot tell you whether you have this condition, and the "
                      "device can be wrong, especially with unusual photos, skin tones or body sites.",
        "priority": "The device points out a possible \"{name}\" even at lower scores, because missing it would "
                    "be serious.",
        "confidence_abstained": "The device's highest score was only {pct}, for \"{name}\". That is too low to be "
                                "a reliable answer, so the device did not give one.",
        "confidence_ood": "The photo looked unusual to the device, so its scores cannot be trusted.",
        "next": {
            Urgency.URGENT: "See a doctor within days (urgent referral)",
            Urgency.SOON: "See a doctor within a few weeks",
            Urgency.ROUTINE: "Mention it at your next routine visit and keep monitoring it",
            Urgency.UNSURE: "The device is unsure: please see a clinician",
        },
        "action": {
            Urgency.URGENT: "See a doctor within days (urgent referral). Do not wait to see if the spot changes.",
            Urgency.SOON: "See a doctor or nurse within a few weeks.",
            Urgency.ROUTINE: "Mention this spot at your next routine visit, and keep an eye on it using the "
                             "checklist below. See someone sooner if it changes.",
            Urgency.UNSURE: "The device is unsure: please see a clinician, who can look at the spot properly.",
        },
        "retake": "You can also take a new photo in good light, in focus, with the spot in the centre. A new "
                  "photo does not replace a visit.",
        "show": "Show this report to the health worker or doctor.",
        "same_day": "Get medical help the same day if:",
        "triggers": ("bleeding does not stop after 10 minutes of firm pressure",
                     "redness spreads from the spot, the area becomes hot and swollen, or you have a fever",
                     "the spot grows or changes quickly over days or weeks",
                     "a sore has not healed after 3 to 4 weeks",
                     "a new lump appears in the armpit, groin or neck"),
        "emergency": "Call emergency services if bleeding is heavy or you feel very unwell.",
        "for_this": "For this kind of spot:",
        "checklist": ("Once a month, look at the spot in good light.",
                      "Take a photo from the same distance each time, with a coin or ruler next to it for size.",
                      "Check the ABCDE signs: Asymmetry, Border (uneven edge), Colour (several colours), "
                      "Diameter (bigger than about 6 mm), Evolving (any change).",
                      "Write down any new itching, bleeding, crusting or pain, and when it started.",
                      "Check the rest of your skin too: back, scalp, palms, soles and nails. Ask someone to help.",
                      "Bring your photos and notes to your appointment."),
        "general_signs": "The device could not match this spot reliably, so no description of a specific "
                         "condition is shown. General signs that any spot should be checked:",
        "signs": ("Asymmetry: the two halves look different.",
                  "Border: the edge is uneven, ragged or blurred.",
                  "Colour: several colours, or a colour that is changing.",
                  "Diameter: bigger than about 6 mm.",
                  "Evolving: any change in size, shape or colour, or new itching or bleeding.",
                  "A spot that looks different from your other spots."),
        "general_prevention": ("Protect your skin from strong sun: shade, a hat, clothing and sunscreen of "
                               "SPF 30 or higher.",
                               "Avoid sunburn and sunbeds.",
                               "Do not pick or scratch the spot."),
        "why": {
            Urgency.URGENT: "This type of spot needs a prompt check because, if it is serious, early treatment "
                            "works best.",
            Urgency.SOON: "This type of spot is usually simple to treat, and a check within a few weeks stops "
                          "it from getting worse.",
            Urgency.ROUTINE: "Spots like this are usually harmless, but only an examination can tell them apart "
                             "from spots that need treatment.",
            Urgency.UNSURE: "Because the device could not give a reliable answer, a person needs to look at the "
                            "spot.",
        },
        "why_common": "Only a trained health professional can examine the spot properly, for example with a "
                      "dermatoscope (a special magnifier), and decide whether a small sample (a biopsy) is "
                      "needed. This device looks at one photo and can be wrong.",
        "symptoms_matter": "Your symptoms also matter:",
        "symptoms_override": "Because of your symptoms, please follow the next step above, even where the usual "
                             "advice below says it can wait.",
        "what_next": "What usually happens next:",
        "disclaimers": ("The result can be wrong. A \"routine\" result does not rule out a serious problem, and an "
                        "\"urgent\" result is a reason to be checked quickly, not a diagnosis.",
                        "The device learned mostly from photos of lighter skin and may be less accurate on "
                        "darker skin.",
                        "If you are worried about a spot, see a health worker whatever this report says.",
                        "In an emergency, call your local emergency number."),
        "fallback": "Some information in this report is only available in English.",
        "percent": "{n}%",
    },
    "es": {
        "title": "Informe de revisión de la piel",
        "banner": "Ayuda para la detección: no es un diagnóstico.",
        "date": "Fecha", "model": "Modelo", "reference": "Referencia", "result": "Lo más parecido a",
        "no_answer": "Sin respuesta fiable",
        "next_step": "Siguiente paso",
        "found": "La revisión encontró rasgos que se parecen más a: {name}.",
        "abstained": "El aparato no pudo dar una respuesta fiable para esta foto.",
        "low_confidence": "Ninguna de sus posibles respuestas fue lo bastante clara.",
        "out_of_distribution": "La foto se ve distinta de las imágenes con las que aprendió el aparato (por "
                               "ejemplo, puede que no muestre una mancha de la piel, o que la luz o el enfoque "
                               "sean poco habituales).",
        "closest": "Lo más parecido fue «{name}», pero no se debe confiar en ello.",
        "confidence": "El aparato dio una confianza de {pct} para «{name}». En pocas palabras: en pruebas "
                      "anteriores, cuando el aparato dio una puntuación así, acertó unas {n} veces de cada 100. "
                      "Es solo una estimación a partir de una foto. No puede decirle si usted tiene esta afección, "
                      "y el aparato puede equivocarse, sobre todo con fotos poco habituales, algunos tonos de piel "
                      "o algunas zonas del cuerpo.",
        "priority": "El aparato avisa de la posibilidad de «{name}» incluso con puntuaciones más bajas, porque "
                    "pasarlo por alto sería grave.",
        "confidence_abstained": "La puntuación más alta del aparato fue solo de {pct}, para «{name}». Es demasiado "
                                "baja para ser una respuesta fiable, así que el aparato no dio ninguna.",
        "confidence_ood": "La foto le pareció poco habitual al aparato, así que no se puede confiar en sus "
                          "puntuaciones.",
        "next": {
            Urgency.URGENT: "Ver a un médico en pocos días (derivación urgente)",
            Urgency.SOON: "Ver a un médico en unas semanas",
            Urgency.ROUTINE: "Comentarlo en la próxima consulta de rutina y vigilarlo",
            Urgency.UNSURE: "El aparato no está seguro: consulte a un profesional de la salud",
        },
        "action": {
            Urgency.URGENT: "Vea a un médico en los próximos días (derivación urgente). No espere a ver si la "
                            "mancha cambia.",
            Urgency.SOON: "Vea a un médico o a una enfermera en las próximas semanas.",
            Urgency.ROUTINE: "Comente esta mancha en su próxima consulta de rutina y vigílela con la lista de "
                             "abajo. Consulte antes si cambia.",
            Urgency.UNSURE: "El aparato no está seguro: por favor, consulte a un profesional de la salud, que "
                            "pueda mirar bien la mancha.",
        },
        "retake": "También puede hacer una foto nueva con buena luz, enfocada y con la mancha en el centro. Una "
                  "foto nueva no sustituye a una consulta.",
        "show": "Enseñe este informe al trabajador de salud o al médico.",
        "same_day": "Busque atención médica el mismo día si:",
        "triggers": ("el sangrado no para tras 10 minutos de presión firme",
                     "el enrojecimiento se extiende desde la mancha, la zona se pone caliente e hinchada, o tiene "
                     "fiebre",
                     "la mancha crece o cambia rápido en días o semanas",
                     "una llaga no se ha curado en 3 o 4 semanas",
                     "aparece un bulto nuevo en la axila, la ingle o el cuello"),
        "emergency": "Llame a emergencias si el sangrado es abundante o se siente muy mal.",
        "for_this": "Para este tipo de mancha:",
        "checklist": ("Una vez al mes, mire la mancha con buena luz.",
                      "Hágale una foto siempre a la misma distancia, con una moneda o una regla al lado para ver "
                      "el tamaño.",
                      "Revise los signos ABCDE: Asimetría, Borde (irregular), Color (varios colores), Diámetro "
                      "(más de unos 6 mm), Evolución (cualquier cambio).",
                      "Apunte cualquier picor, sangrado, costra o dolor nuevo, y cuándo empezó.",
                      "Revise también el resto de la piel: espalda, cuero cabelludo, palmas, plantas de los pies "
                      "y uñas. Pida ayuda a alguien.",
                      "Lleve sus fotos y notas a la consulta."),
        "general_signs": "El aparato no pudo relacionar esta mancha de forma fiable, así que no se muestra la "
                         "descripción de ninguna afección concreta. Señales generales de que una mancha debe "
                         "revisarse:",
        "signs": ("Asimetría: las dos mitades son diferentes.",
                  "Borde: irregular, desigual o borroso.",
                  "Color: varios colores, o un color que cambia.",
                  "Diámetro: más de unos 6 mm.",
                  "Evolución: cualquier cambio de tamaño, forma o color, o picor o sangrado nuevos.",
                  "Una mancha que se ve distinta de sus otras manchas."),
        "general_prevention": ("Proteja su piel del sol fuerte: sombra, sombrero, ropa y protector solar de FPS "
                               "30 o más.",
                               "Evite las quemaduras solares y las camas solares.",
                               "No se rasque ni se arranque la mancha."),
        "why": {
            Urgency.URGENT: "Este tipo de mancha necesita una revisión pronto porque, si fuera grave, el "
                            "tratamiento temprano funciona mejor.",
            Urgency.SOON: "Este tipo de mancha suele tratarse con facilidad, y revisarla en unas semanas evita "
                          "que empeore.",
            Urgency.ROUTINE: "Las manchas como esta suelen ser inofensivas, pero solo una exploración puede "
                             "distinguirlas de las que necesitan tratamiento.",
            Urgency.UNSURE: "Como el aparato no pudo dar una respuesta fiable, una persona tiene que mirar la "
                            "mancha.",
        },
        "why_common": "Solo un profesional de la salud capacitado puede explorar bien la mancha, por ejemplo con "
                      "un dermatoscopio (una lupa especial), y decidir si hace falta tomar una pequeña muestra "
                      "(biopsia). Este aparato mira una sola foto y puede equivocarse.",
        "symptoms_matter": "Sus síntomas también cuentan:",
        "symptoms_override": "Por sus síntomas, siga el siguiente paso indicado arriba, aunque el consejo habitual "
                             "de abajo diga que puede esperar.",
        "what_next": "Lo que suele pasar después:",
        "disclaimers": ("El resultado puede ser erróneo. Un resultado «de rutina» no descarta un problema grave, "
                        "y un resultado «urgente» es un motivo para revisarse pronto, no un diagnóstico.",
                        "El aparato aprendió sobre todo con fotos de piel clara y puede ser menos preciso en "
                        "pieles más oscuras.",
                        "Si una mancha le preocupa, consulte a un trabajador de salud, diga lo que diga este "
                        "informe.",
                        "En caso de emergencia, llame al número de emergencias de su país."),
        "fallback": "Parte de la información de este informe solo está disponible en inglés.",
        "percent": "{n} %",
    },
    "fr": {
        "title": "Rapport de dépistage cutané",
        "banner": "Aide au dépistage – pas un diagnostic.",
        "date": "Date", "model": "Modèle", "reference": "Référence", "result": "Ressemble le plus à",
        "no_answer": "Pas de réponse fiable",
        "next_step": "Étape suivante",
        "found": "Le dépistage a trouvé des caractéristiques qui ressemblent le plus à : {name}.",
        "abstained": "L'appareil n'a pas pu donner de réponse fiable pour cette photo.",
        "low_confidence": "Aucune de ses réponses possibles n'était assez claire.",
        "out_of_distribution": "La photo est différente des images sur lesquelles l'appareil a appris (par "
                               "exemple, elle ne montre peut-être pas une tache de la peau, ou la lumière ou la "
                               "netteté sont inhabituelles).",
        "closest": "La réponse la plus proche était « {name} », mais il ne faut pas s'y fier.",
        "confidence": "L'appareil a donné une confiance de {pct} pour « {name} ». Autrement dit : lors de tests "
                      "précédents, quand l'appareil donnait un score comme celui-ci, il avait raison environ {n} "
                      "fois sur 100. Ce n'est qu'une estimation à partir d'une photo. Elle ne peut pas vous dire si "
                      "vous avez cette maladie, et l'appareil peut se tromper, surtout avec des photos "
                      "inhabituelles, certaines couleurs de peau ou certaines parties du corps.",
        "priority": "L'appareil signale la possibilité de « {name} » même avec des scores plus bas, car passer "
                    "à côté serait grave.",
        "confidence_abstained": "Le score le plus élevé de l'appareil n'était que de {pct}, pour « {name} ». "
                                "C'est trop bas pour être une réponse fiable, donc l'appareil n'en a pas donné.",
        "confidence_ood": "La photo a semblé inhabituelle à l'appareil, donc ses scores ne sont pas fiables.",
        "next": {
            Urgency.URGENT: "Voir un médecin sous quelques jours (orientation urgente)",
            Urgency.SOON: "Voir un médecin dans les prochaines semaines",
            Urgency.ROUTINE: "En parler à la prochaine consultation de routine et surveiller",
            Urgency.UNSURE: "L'appareil n'est pas sûr : consultez un soignant",
        },
        "action": {
            Urgency.URGENT: "Consultez un médecin dans les jours qui viennent (orientation urgente). N'attendez "
                            "pas de voir si la tache change.",
            Urgency.SOON: "Consultez un médecin ou une infirmière dans les prochaines semaines.",
            Urgency.ROUTINE: "Parlez de cette tache lors de votre prochaine consultation de routine et "
                             "surveillez-la avec la liste ci-dessous. Consultez plus tôt si elle change.",
            Urgency.UNSURE: "L'appareil n'est pas sûr : veuillez consulter un soignant, qui pourra bien examiner "
                            "la tache.",
        },
        "retake": "Vous pouvez aussi reprendre une photo avec une bonne lumière, nette, la tache au centre. Une "
                  "nouvelle photo ne remplace pas une consultation.",
        "show": "Montrez ce rapport au soignant ou au médecin.",
        "same_day": "Consultez le jour même si :",
        "triggers": ("un saignement ne s'arrête pas après 10 minutes de pression ferme",
                     "une rougeur s'étend autour de la tache, la zone devient chaude et gonflée, ou vous avez de "
                     "la fièvre",
                     "la tache grossit ou change vite en quelques jours ou semaines",
                     "une plaie n'a pas guéri après 3 à 4 semaines",
                     "une nouvelle boule apparaît à l'aisselle, à l'aine ou au cou"),
        "emergency": "Appelez les urgences si le saignement est abondant ou si vous vous sentez très mal.",
        "for_this": "Pour ce type de tache :",
        "checklist": ("Une fois par mois, regardez la tache sous une bonne lumière.",
                      "Prenez-la en photo toujours à la même distance, avec une pièce ou une règle à côté pour "
                      "la taille.",
                      "Vérifiez les signes ABCDE : Asymétrie, Bords (irréguliers), Couleur (plusieurs couleurs), "
                      "Diamètre (plus de 6 mm environ), Évolution (tout changement).",
                      "Notez toute nouvelle démangeaison, saignement, croûte ou douleur, et quand cela a "
                      "commencé.",
                      "Examinez aussi le reste de votre peau : dos, cuir chevelu, paumes, plantes des pieds et "
                      "ongles. Demandez de l'aide.",
                      "Apportez vos photos et vos notes à la consultation."),
        "general_signs": "L'appareil n'a pas pu reconnaître cette tache de façon fiable, donc aucune description "
                         "d'une affection précise n'est montrée. Signes généraux qu'une tache doit être "
                         "examinée :",
        "signs": ("Asymétrie : les deux moitiés sont différentes.",
                  "Bords : irréguliers, déchiquetés ou flous.",
                  "Couleur : plusieurs couleurs, ou une couleur qui change.",
                  "Diamètre : plus de 6 mm environ.",
                  "Évolution : tout changement de taille, de forme ou de couleur, ou de nouvelles démangeaisons "
                  "ou saignements.",
                  "Une tache qui ne ressemble pas à vos autres taches."),
        "general_prevention": ("Protégez votre peau du soleil fort : ombre, chapeau, vêtements et crème solaire "
                               "d'indice 30 ou plus.",
                               "Évitez les coups de soleil et les cabines de bronzage.",
                               "Ne grattez pas la tache et n'y touchez pas."),
        "why": {
            Urgency.URGENT: "Ce type de tache doit être examiné rapidement car, si c'est grave, un traitement "
                            "précoce donne les meilleurs résultats.",
            Urgency.SOON: "Ce type de tache se traite en général facilement, et un examen dans les prochaines "
                          "semaines évite qu'il ne s'aggrave.",
            Urgency.ROUTINE: "Les taches comme celle-ci sont en général sans danger, mais seul un examen permet "
                             "de les distinguer de celles qui demandent un traitement.",
            Urgency.UNSURE: "Comme l'appareil n'a pas pu donner de réponse fiable, une personne doit examiner la "
                            "tache.",
        },
        "why_common": "Seul un professionnel de santé formé peut bien examiner la tache, par exemple avec un "
                      "dermatoscope (une loupe spéciale), et décider si un petit prélèvement (biopsie) est "
                      "nécessaire. Cet appareil regarde une seule photo et peut se tromper.",
        "symptoms_matter": "Vos symptômes comptent aussi :",
        "symptoms_override": "En raison de vos symptômes, suivez l'étape indiquée plus haut, même si le conseil "
                             "habituel ci-dessous dit que cela peut attendre.",
        "what_next": "Ce qui se passe ensuite en général :",
        "disclaimers": ("Le résultat peut être faux. Un résultat « de routine » n'exclut pas un problème grave, "
                        "et un résultat « urgent » est une raison de consulter vite, pas un diagnostic.",
                        "L'appareil a surtout appris sur des photos de peaux claires et peut être moins précis "
                        "sur les peaux foncées.",
                        "Si une tache vous inquiète, consultez un soignant, quoi que dise ce rapport.",
                        "En cas d'urgence, appelez le numéro d'urgence de votre pays."),
        "fallback": "Certaines informations de ce rapport ne sont disponibles qu'en anglais.",
        "percent": "{n} %",
    },
}

_CSS = """
:root{color-scheme:light}
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"Noto Sans",sans-serif;max-width:48rem;margin:1.5rem auto;
padding:0 1rem;line-height:1.5;color:#111;background:#fff;font-size:1.05rem}
h1{font-size:1.6rem;margin:.2rem 0}
h2{font-size:1.2rem;margin:1.4rem 0 .4rem;padding-bottom:.2rem;border-bottom:1px solid #bbb}
.banner{border:2px solid #333;padding:.4rem .7rem;font-weight:700;display:inline-block}
dl.meta{display:grid;grid-template-columns:max-content 1fr;gap:.1rem .8rem;margin:.8rem 0}
dl.meta dt{font-weight:600}
dl.meta dd{margin:0}
.tier{padding:.5rem .7rem;border-left:.5rem solid #888;background:#f3f3f3;font-weight:600}
.tier-urgent{border-color:#b00020;background:#fdecee}
.tier-soon{border-color:#b36b00;background:#fff4e0}
.tier-routine{border-color:#2e7d32;background:#edf7ee}
.tier-unsure{border-color:#555;background:#f0f0f0}
ul{padding-left:1.3rem;margin:.3rem 0}
p{margin:.4rem 0}
@media print{
body{max-width:none;margin:0;padding:0;font-size:11pt;color:#000}
h2{break-after:avoid;page-break-after:avoid}
section{break-inside:avoid;page-break-inside:avoid}
.tier{-webkit-print-color-adjust:exact;print-color-adjust:exact}
@page{margin:15mm}
}
""".strip()


@dataclass(frozen=True)
class Report:
    """A finished report; ``sections`` are ``(localised title, text)`` pairs, ``keys`` their stable ids."""

    lang: str
    title: str
    sections: list[tuple[str, str]]
    keys: tuple[str, ...]
    source: str  # "template" or "llm" (at least one section written by the LLM and passed by the guard)
    urgency: Urgency
    header: tuple[tuple[str, str], ...] = ()
    banner: str = ""
    blocked: tuple[tuple[str, str], ...] = field(default=())  # (section key, guard reason)
    note: str = ""  # e.g. "written from templates because the assistant did not answer in time"

    def with_note(self, note: str | None) -> "Report":
        return dataclasses.replace(self, note=note or "")

    def section(self, key: str) -> str:
        return self.sections[self.keys.index(key)][1]

    def markdown(self) -> str:
        lines = [f"# {_md(self.title)}", "", f"**{_md(self.banner)}**", ""]
        if self.note:
            lines += [f"_{_md(self.note)}_", ""]
        lines += [f"- **{_md(name)}:** {_md(value)}" for name, value in self.header]
        for title, text in self.sections:
            lines += ["", f"## {_md(title)}", "", _md_block(text)]
        return "\n".join(lines) + "\n"

    def html(self) -> str:
        e = _escape
        meta = "".join(f"<dt>{e(name)}</dt><dd>{e(value)}</dd>" for name, value in self.header)
        body = "\n".join(
            f'<section id="{e(key)}">\n<h2>{e(title)}</h2>\n{_html_blocks(text)}\n</section>'
            for key, (title, text) in zip(self.keys, self.sections))
        tier = _TEXT[self.lang]["next"][self.urgency]
        return (
            "<!DOCTYPE html>\n"
            f'<html lang="{e(self.lang)}">\n<head>\n<meta charset="utf-8">\n'
            '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">\n"
            f"<title>{e(self.title)}</title>\n<style>\n{_CSS}\n</style>\n</head>\n<body>\n"
            f"<header>\n<h1>{e(self.title)}</h1>\n<p class=\"banner\">{e(self.banner)}</p>\n"
            f'<dl class="meta">{meta}</dl>\n'
            + (f'<p class="note" role="note">{e(self.note)}</p>\n' if self.note else "")
            + f'<p class="tier tier-{e(self.urgency.value)}">{e(tier)}</p>\n</header>\n'
            f"<main>\n{body}\n</main>\n</body>\n</html>\n"
        )


# --- rendering helpers ------------------------------------------------------------------------------------


def _escape(text: str) -> str:
    return html.escape(text, quote=True)


def _md_escape(text: str) -> str:
    return html.escape(text, quote=False)


def _md(text: str) -> str:
    """Inline Markdown text: no raw HTML, no line breaks."""
    return _md_escape(" ".join(text.split()))


def _md_block(text: str) -> str:
    """A block of (possibly untrusted) text that cannot open a heading or smuggle raw HTML into Markdown."""
    out = []
    for line in _md_escape(text).splitlines():
        stripped = line.lstrip()
        if stripped.startswith("#") or re.fullmatch(r"[=\-_*\s]{3,}", stripped or "x"):
            line = "\\" + stripped
        out.append(line)
    return "\n".join(out)


def _html_blocks(text: str) -> str:
    parts, items, para = [], [], []

    def flush() -> None:
        if items:
            parts.append("<ul>" + "".join(f"<li>{_escape(i)}</li>" for i in items) + "</ul>")
            items.clear()
        if para:
            parts.append("<p>" + "<br>".join(_escape(p) for p in para) + "</p>")
            para.clear()

    for line in text.splitlines():
        stripped = line.strip()
        if not stripped:
            flush()
        elif stripped.startswith(("- ", "* ")):
            if para:
                flush()
            items.append(stripped[2:].strip())
        else:
            if items:
                flush()
            para.append(stripped)
    flush()
    return "\n".join(parts)


def _bullets(lines) -> str:
    return "\n".join(f"- {line}" for line in lines)


# --- building ---------------------------------------------------------------------------------------------


def _percent(value: float, lang: str) -> tuple[str, int]:
    """Rounded, and never shown as 0 % or 100 %: a screening score is never a certainty."""
    n = min(99, max(1, round(float(value) * 100)))
    return _TEXT[lang]["percent"].format(n=n), n


def _display_name(result: Result, facts: FactSheet, lang: str) -> str:
    if facts.title and facts.lang == lang and not facts.fallback_from:
        return facts.title
    return result.display_name or result.label


def _template_sections(result: Result, facts: FactSheet, lang: str, urgency: Urgency,
                       symptoms: Adjustment | None) -> tuple[dict[str, str], str]:
    t = _TEXT[lang]
    name = _display_name(result, facts, lang)
    pct, n = _percent(result.confidence, lang)
    ood = result.abstain_reason == "out_of_distribution"
    fs = facts.sections

    if result.abstained:
        reason = t.get(result.abstain_reason or "", "")
        lead = " ".join(s for s in (t["abstained"], reason, t["closest"].format(name=name)) if s)
        overview_body = ""
        confidence = t["confidence_abstained"].format(pct=pct, name=name)
        if ood:
            confidence += " " + t["confidence_ood"]
        features = t["general_signs"] + "\n" + _bullets(t["signs"])
        prevention = _bullets(t["general_prevention"])
        triggers_extra = ""
        follow_up_extra = ""
    else:
        lead = t["found"].format(name=name)
        overview_body = fs["What it is"]
        confidence = t["confidence"].format(pct=pct, n=n, name=name)
        if result.urgency == Urgency.URGENT and result.confidence < 0.5:
            confidence += " " + t["priority"].format(name=name)
        features = fs["Typical features"]
        prevention = fs["Prevention and self-care"]
        triggers_extra = f"\n\n{t['for_this']}\n{fs['When to get help sooner']}"
        follow_up_extra = f"\n\n{t['what_next']}\n{fs['What usually happens next']}"

    actions = [t["action"][urgency]]
    if symptoms and symptoms.reasons:
        actions.append(_bullets(symptoms.reasons))
    if ood:
        actions.append(t["retake"])
    actions.append(t["show"])

    type_urgency = Urgency.UNSURE if result.abstained else result.urgency
    follow_up = t["why"].get(type_urgency, t["why"][Urgency.UNSURE]) + " " + t["why_common"]
    if symptoms and symptoms.reasons:
        follow_up += f"\n\n{t['symptoms_matter']}\n{_bullets(symptoms.reasons)}"
        if follow_up_extra:
            follow_up += f"\n\n{t['symptoms_override']}"
    follow_up += follow_up_extra

    disclaimers = [DISCLAIMER[lang], *t["disclaimers"]]
    if facts.fallback_from:
        disclaimers.append(t["fallback"])

    sections = {
        "condition_overview": "\n\n".join(s for s in (lead, overview_body) if s),
        "confidence_meaning": confidence,
        "key_features": features,
        "recommended_actions": "\n\n".join(actions),
        "immediate_care_triggers": f"{t['same_day']}\n{_bullets(t['triggers'])}\n\n{t['emergency']}{triggers_extra}",
        "self_monitoring_checklist": _bullets(t["checklist"]),
        "prevention_tips": prevention,
        "professional_follow_up": follow_up,
        "disclaimers": _bullets(disclaimers),
    }
    return sections, lead


TREATMENT_CLAIM = "treatment_claim"
# Treatment, cure and outcome, in the three languages. The small model invents them ("Mohs surgery ... can
# be cured"); in a report that is printed and taken home, only the vetted fact sheets may speak of them.
_TREATMENT_CLAIM = re.compile(
    r"\b(?:cur(?:e|ed|es|ing|able)|treat\w*|surg\w*|laser\w*|remov\w*|excis\w*|mohs|chemo\w*|radiother\w*"
    r"|radiation|prognos\w*|surviv\w*|biops\w*"
    r"|curar\w*|curabl\w*|cura|tratamient\w*|tratar\w*|tratad\w*|cirug\w*|quirurg\w*|extirp\w*|pronostic\w*"
    r"|supervivenc\w*|guer\w*|traitement\w*|traiter|traite|traitee|chirurg\w*|ablation|exerese|survie)(?![a-z0-9])")


def _folded_words(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", " ", fold(text))


def build_report(result: Result, facts: FactSheet, lang: str, *, symptoms: Adjustment | None = None,
                 llm_text: dict[str, str] | None = None) -> Report:
    """A report for ``result`` in ``lang``; ``llm_text`` may rewrite only the sections in ``LLM_REPLACEABLE``."""
    lang = resolve_lang(lang)
    if facts.label != result.label:
        raise ValueError(f"fact sheet is for {facts.label!r} but the result is {result.label!r}")
    llm_text = dict(llm_text or {})
    not_allowed = sorted(set(llm_text) - LLM_REPLACEABLE)
    if not_allowed:
        raise ValueError(f"llm_text may only replace {sorted(LLM_REPLACEABLE)}, got {not_allowed}")

    urgency = symptoms.urgency if symptoms is not None else result.urgency
    sections, lead = _template_sections(result, facts, lang, urgency, symptoms)

    source, blocked = "template", []
    for key in SECTION_KEYS:
        if key not in llm_text:
            continue
        text = (llm_text[key] or "").strip()[:MAX_LLM_CHARS]
        if not text:
            continue
        verdict = screen_answer(text, lang, urgency.value)
        if not verdict.safe:
            log.warning("report: LLM text for %s blocked (%s); template kept", key, verdict.reason)
            blocked.append((key, verdict.reason or "blocked"))
            continue
        claim = _TREATMENT_CLAIM.search(_folded_words(text))
        if claim:  # a printed report says nothing about treatment or outcome that a clinician did not write
            log.warning("report: LLM text for %s talks about treatment; template kept", key)
            blocked.append((key, TREATMENT_CLAIM))
            continue
        sections[key] = f"{lead}\n\n{text}" if key == "condition_overview" else text
        source = "llm"

    t = _TEXT[lang]
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(result.timestamp))
    header = (
        (t["date"], when),
        (t["result"], t["no_answer"] if result.abstained else _display_name(result, facts, lang)),
        (t["next_step"], t["next"][urgency]),
        (t["model"], f"{result.model.name} {result.model.version}"),
        (t["reference"], result.id[:12]),
    )
    titles = dict(zip(SECTION_KEYS, SECTION_TITLES[lang]))
    return Report(
        lang=lang,
        title=t["title"],
        sections=[(titles[key], sections[key]) for key in SECTION_KEYS],
        keys=SECTION_KEYS,
        source=source,
        urgency=urgency,
        header=header,
        banner=t["banner"],
        blocked=tuple(blocked),
    )
