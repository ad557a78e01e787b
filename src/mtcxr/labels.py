"""Report label extraction: a fast rule-based labeler for the 14 CheXpert observations.

`label_reports` turns report texts into the labels contract's 14 Int8 columns (1 positive,
0 negative, -1 uncertain, null not mentioned) plus `abnormal`; `label_file` is `mtcxr label`;
`extract_labels` is the Snakemake stage.

How a report is read
--------------------
1. The text is lowercased once and split into sentences (full stops not inside a number such
   as "1.5 cm" or after "vs", semicolons, colons of headings, blank lines; a single newline is
   a line wrap, as in MIMIC's reports).
2. Each sentence is read word by word: a word may be a cue (below) and may start a mention of
   a concept: the 13 observations, plus "other" abnormalities that are not CheXpert classes
   (emphysema, granuloma, hiatal hernia, degenerative spine, …), which only matter for
   No Finding. A mention is either a *finding* ("pneumothorax", "airspace disease") or an
   *organ* ("heart size", "cardiac silhouette", "mediastinum") whose value comes from a state
   word in the same clause ("enlarged" positive, "normal" negative, "borderline" uncertain).
3. Each mention is then negated, hedged or left positive from cues before it ("no", "without",
   "negative for", "possible", "may represent", "?") and after it ("is not seen", "has
   resolved", "cannot be excluded"). A cue before a mention reaches it unless a clause break
   intervenes ("but", "however", "which", "there is", …) or a comma does; a comma does not stop
   it inside a list closed by "or"/"nor" ("no pneumothorax, effusion, or consolidation").
   Two findings offered as alternatives ("atelectasis or pneumonia", "effusion versus
   scarring", "atelectasis/scarring") are both uncertain unless negated.
4. "No change", "unchanged" and "not significantly changed" are not negations of the finding
   they describe; "resolved", "resolution of", "cleared" and "removed" are, unless qualified
   ("partially resolved", "near-complete resolution").
5. De-identification tokens (IU X-ray's ``XXXX``, MIMIC's ``___``) are kept as unknown words:
   they neither mention nor negate anything, but they do not break a cue's reach either.
6. A report's value per observation is its strongest mention: positive beats uncertain beats
   negative (CheXpert's aggregation). No Finding is positive only when no observation other
   than Support Devices is positive or uncertain *and* no other abnormality is either;
   otherwise it is null, as in CheXpert's own output.

Empty or null text gives null for all 14 observations; `abnormal` is then True, because
`abnormal_from_no_finding` (the contract's definition) calls a study normal only when No Finding
is positive, and an empty report does not show a normal study.

Speed: results are cached per distinct sentence, digits ignored (reports repeat sentences
heavily); each cached value is a bit mask (three bits per concept: negative, uncertain, positive)
so a report is the OR of its sentences' masks, and the masks are decoded to columns in polars,
vectorised. A new sentence costs one pass over its words: cues are dictionary look-ups, and only
the few term regexes that can start with a word's first three characters are tried there.
"""

from __future__ import annotations

import bisect
import codecs
import csv
import gzip
import io
import logging
import re
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import polars as pl

from mtcxr.errors import InputError
from mtcxr.tables import (
    CHEXPERT_DISPLAY,
    CHEXPERT_LABELS,
    LABEL_SOURCES,
    abnormal_from_no_finding,
    read_table,
    write_table,
)

log = logging.getLogger(__name__)

# Concepts that mentions can carry: the 13 observations read from text, then "other".
OBSERVATIONS = tuple(name for name in CHEXPERT_LABELS if name != "no_finding")
OTHER = "other"
NEUTRAL = "neutral"
CONCEPTS = (*OBSERVATIONS, OTHER)
_INDEX = {concept: position for position, concept in enumerate(CONCEPTS)}
NEGATIVE, UNCERTAIN, POSITIVE = 0, 1, 2  # bit offsets within a concept's three bits
_HAS_TEXT = 1 << (3 * len(CONCEPTS))  # set for every report with text, so "no mention" is not null


def _bit(concept: str, value: int) -> int:
    return 1 << (3 * _INDEX[concept] + value)


# Anything positive or uncertain here rules out No Finding (everything except support devices).
_NOT_NORMAL = 0
for _concept in CONCEPTS:
    if _concept != "support_devices":
        _NOT_NORMAL |= _bit(_concept, POSITIVE) | _bit(_concept, UNCERTAIN)


# ---------------------------------------------------------------------------------------------
# Vocabulary. Each entry: regex (matched on lowercased text at word boundaries), concept, and
# kind: "finding" (positive unless negated or hedged) or "organ" (see _ORGANS). The concept
# NEUTRAL consumes phrases that would otherwise read as a finding ("nipple shadow", "bone density").

_FINDINGS: dict[str, list[str]] = {
    "enlarged_cardiomediastinum": [
        r"(?:widen\w*|enlarg\w*) (?:of )?(?:the )?(?:superior )?(?:cardio)?mediastin\w*(?: silhouette| contours?| width)?",
        r"(?:superior )?mediastinal (?:widening|enlargement|prominence)",
    ],
    "cardiomegaly": [
        r"cardiomegaly",
        r"cardiac (?:enlargement|dilatation|dilation)",
        r"enlarg\w* (?:of )?(?:the )?(?:heart|cardiac silhouette|cardiac shadow)",
    ],
    "lung_opacity": [
        r"opacit(?:y|ies)",
        r"opacification",
        r"opacified",
        r"infiltrat\w*",
        r"air[- ]?space (?:disease|process|filling|opacit(?:y|ies))",
        r"alveolar (?:disease|process|filling)",
        r"densit(?:y|ies)",
        r"ground[- ]glass",
        r"reticul(?:ar|onodular|ation)(?: (?:markings|pattern|changes))?",
        r"interstitial (?:disease|lung disease|process|pattern|thickening|prominence|markings|changes|accentuation)",
        r"(?:increased|prominent|coarse(?:ned)?|accentuated) (?:\w+ )?(?:interstitial|lung|pulmonary|bronchovascular) markings",
    ],
    "lung_lesion": [
        r"nodul(?:e|es|ar|arity)",
        r"mass(?:es)?",
        r"mass[- ]like",
        r"(?:lung |pulmonary )?lesions?",
        r"tumou?rs?",
        r"neoplas(?:m|ms|tic)",
        r"malignan(?:cy|cies|t)",
        r"carcinoma",
        r"(?:lung |bronchogenic )?cancer",
        r"metasta(?:sis|ses|tic)",
        r"cavit(?:y|ies|ary|ation)",
    ],
    "edema": [
        r"(?:pulmonary |interstitial |alveolar |perihilar |airspace )?o?edema",
        r"kerley b?(?:-| )?lines?",
        r"b-lines",
    ],
    "consolidation": [
        r"consolidat(?:ion|ions|ive|ed)",
    ],
    "pneumonia": [
        r"(?:broncho)?pneumoni(?:a|as|tis)",
        r"infection",
        r"infectious (?:process|etiology|disease)",
        r"infective process",
    ],
    "atelectasis": [
        r"atelecta(?:sis|ses|tic)",
        r"(?:lobar|lobe|segmental|subsegmental|lung) collapse",
        r"collapse of (?:the )?(?:\w+ ){0,4}(?:lungs?|lobes?|segments?)",
        r"collapsed (?:\w+ ){0,2}(?:lungs?|lobes?|segments?)",
    ],
    "pneumothorax": [
        r"(?:hydro|hemo)?pneumothora(?:x|ces|xes)",
        r"pleural air",
        r"ptx",
    ],
    "pleural_effusion": [
        r"(?:pleural |parapneumonic |subpulmonic |loculated )?effusions?",
        r"pleural fluid",
        r"fluid (?:in|within) the (?:\w+ )?pleural (?:space|spaces|cavity)",
        r"hydrothorax",
        r"hydropneumothorax",
        r"hemothorax",
    ],
    "pleural_other": [
        r"pleural (?:thickening|plaques?|scarring|scar|calcifications?|fibrosis|reaction|disease)",
        r"pleuro-?parenchymal (?:scarring|scar|thickening|opacit(?:y|ies)|changes?)",
        r"(?:thickened|calcified) pleura",
        r"thickening of the (?:\w+ )?pleura",
        r"apical (?:pleural )?(?:cap|capping|thickening|scarring)",
        r"fibrothorax",
        r"pleural-based",
    ],
    "fracture": [
        r"fractur(?:e|es|ed)",
        r"fx",
        r"compression deformit(?:y|ies)",
    ],
    "support_devices": [
        r"(?:endotracheal|tracheostomy|nasogastric|orogastric|enteric|feeding|chest|thoracostomy|gastrostomy|"
        r"dobhoff|drainage|et|ng|og|ett) tubes?",
        r"tubes?",
        r"tubing",
        r"(?:central|venous|picc|arterial|port|dialysis|jugular|subclavian|femoral|ij|"
        r"swan[- ]ganz|pulmonary artery) (?:\w+ )?(?:lines?|catheters?)",
        r"catheters?",
        r"picc",
        r"port-?a-?cath",
        r"(?:pacemaker|pacer|defibrillator|aicd|icd)s?",
        r"(?:pacing|pacemaker|pacer|transvenous|cardiac|epicardial) (?:wires?|leads?)",
        r"leads",
        r"stents?",
        r"drains?",
        r"(?:valve|valvular) (?:replacement|prosthesis|prostheses)",
        r"prosthetic (?:\w+ )?valves?",
        r"(?:loop|event) recorder",
        r"(?:nerve |spinal cord |vagal )?stimulator",
        r"(?:medi|power|infusion )?ports?",
        r"(?:intra-?aortic )?balloon pump",
        r"(?:ventricular )?assist device",
        r"(?:ecg|ekg|monitoring|telemetry) (?:leads|wires|electrodes)",
        r"electrodes",
    ],
    NEUTRAL: [
        r"soft tissue (?:edema|swelling|emphysema)",
        r"nipple (?:shadows?|markers?|densit(?:y|ies))",
        r"(?:soft tissue|bone|bony|osseous|breast|breast tissue|metallic) densit(?:y|ies)",
        r"(?:pleural|thoracic|chest|abdominal|peritoneal|oral|nasal) cavit(?:y|ies)",
        r"(?:joint|knee|elbow|ankle|shoulder|hip) effusions?",
        r"(?:breast|soft tissue) shadows?",
        r"lung (?:volumes?|markings) (?:are |is )?(?:normal|within normal limits)",
    ],
    OTHER: [
        # Abnormalities outside the 14 classes: they only keep No Finding from being positive.
        r"emphysema\w*",
        r"copd",
        r"chronic obstructive",
        r"(?:hyper|over)[- ]?(?:inflat|expan|aerat|lucen|distend|distent)\w*",
        r"flatten\w* (?:of )?(?:the )?(?:\w+ )?(?:hemi)?diaphragm\w*",
        r"bull(?:a|ae|ous)",
        r"blebs?",
        r"granulom\w*",
        r"calcified (?:densit(?:y|ies)|foc(?:us|i))",
        r"calcifi\w*",
        r"atheroscler\w*",
        r"tortu\w*",
        r"ectasia|ectatic",
        r"unfold\w*",
        r"aneurysm\w*",
        r"(?:dilated|enlarged|prominent) (?:\w+ )?aort\w*",
        r"degenerat\w*",
        r"spondyl\w*",
        r"osteophyt\w*",
        r"dish",
        r"arthrit\w*|arthropath\w*|arthros\w*",
        r"(?:dextro|levo)?scolio\w*",
        r"(?:exaggerated |increased |accentuated )?kyphos\w*",
        r"kyphotic",
        r"hernia\w*",
        r"eventration",
        r"elevat\w* (?:of )?(?:the )?(?:right |left )?(?:hemi)?diaphragm\w*",
        r"(?:hypo|under)[- ]?(?:inflat|expan|aerat)\w*",
        r"low (?:lung )?volumes?",
        r"(?:poor|shallow|suboptimal) inspiration",
        r"volume loss",
        r"(?:bronchovascular )?crowding",
        r"(?:diminished|decreased|reduced|small) (?:lung )?volumes?",
        r"(?:lung )?volumes (?:are |is )?(?:\w+ )?(?:diminished|decreased|reduced|low)",
        r"scar(?:s|ring|red)?",
        r"fibros\w*|fibrotic",
        r"bronchiectasis|bronchiectatic",
        r"bronchitis",
        r"(?:peri)?bronchial (?:wall )?(?:thickening|cuffing)",
        r"airway disease",
        r"air trapping",
        r"(?:lymph)?adenopath\w*",
        r"enlarged (?:\w+ )?(?:lymph )?nodes?",
        r"(?:bi)?hilar (?:prominence|enlargement|fullness|mass|adenopathy)",
        r"(?:prominen\w*|enlarge\w*|fullness) (?:of )?(?:the )?(?:\w+ )?hil(?:a|um|ar)\b",
        r"pulmonary (?:arterial )?hypertension",
        r"(?:enlarged|prominent|dilated) (?:\w+ )?pulmonary arter\w*",
        r"(?:vascular|venous|pulmonary) congestion",
        r"congesti(?:on|ve)",
        r"cephalization",
        r"(?:vascular|vasculature) (?:prominence|engorgement|redistribution)",
        r"(?:prominent|increased) (?:\w+ )?(?:vascularity|vasculature|vascular markings)",
        r"(?:congestive )?(?:heart|cardiac) failure",
        r"(?:fluid|volume) overload",
        r"chf",
        r"sternotom\w*",
        r"cabg",
        r"(?:coronary )?bypass",
        r"post-?(?:surgical|operative|radiation|traumatic)",
        r"surgical (?:clips?|changes?|sutures?|staples?)",
        r"clips",
        r"(?:sternal )?(?:sutures?|wires?)",
        r"(?:mast|lob|pneumon|cholecyst|segment)ectom\w*",
        r"thoracotom\w*",
        r"resection",
        r"hardware",
        r"(?:surgical|orthopedic|spinal) (?:fixation|fusion)",
        r"(?:breast )?implants?",
        r"foreign bod\w*",
        r"jewelry|piercings?",
        r"bullet|shrapnel|metallic (?:fragments?|foreign|densit(?:y|ies))",
        r"deformit\w*",
        r"osteopeni\w*|osteoporo\w*|demineraliz\w*|osteodystroph\w*",
        r"(?:spine |spinal )?curvature",
        r"(?:spinal )?fusion",
        r"spurs?|spurring",
        r"lucenc(?:y|ies)",
        r"(?:lytic|sclerotic|blastic|osseous|bony|bone) lesions?",
        r"lytic|sclerotic",
        r"pneumomediastinum|pneumoperitoneum",
        r"(?:free|subdiaphragmatic|intraperitoneal) air",
        r"subcutaneous (?:air|gas)",
        r"pericardial effusions?",
        r"cysts?|cystic",
        r"blunt\w*",
        r"(?:tuberculosis|tb|histoplasm\w*|sarcoid\w*)",
        # An infection named as past or granulomatous is a history, not a pneumonia now.
        r"(?:prior|previous|old|remote|healed|past) (?:\w+ ){0,2}(?:infection|infectious process|pneumonia)",
        r"granulomatous (?:infection|disease|process)",
        r"tuberculous (?:infection|disease)",
        r"aspiration",
        r"abnormalit(?:y|ies)",
        r"pectus(?: excavatum| carinatum)?",
        r"cervical ribs?",
        r"(?:azygos|accessory) (?:lobe|fissure)",
        r"mediastinal shift|shift of the mediastinum",
        r"(?:chronic|old|healed|remote) (?:\w+ )?(?:changes?|disease|process|injury|infection|inflammatory)",
    ],
}

# Organs: their mention carries no value until a state word in the same clause gives one.
_ORGANS: dict[str, tuple[str, list[str]]] = {
    "heart": (
        "cardiomegaly",
        [
            r"heart(?: size| silhouette| shadow| contours?| borders?)?",
            r"cardiac (?:size|silhouette|shadow|contours?|outline|diameter|borders?|dimensions?)",
            r"cardiothoracic ratio",
        ],
    ),
    "mediastinum": (
        "enlarged_cardiomediastinum",
        [
            r"(?:superior |upper )?mediastin(?:um|al)(?: contours?| silhouette| width| size| shadow| borders?)?",
            r"cardio-?mediastin(?:um|al)(?: contours?| silhouette| size| shadow| borders?| width)?",
        ],
    ),
}
_STATE_RE = re.compile(
    r"\b(?:(?P<normal>normal|unremarkable|wnl|within (?:the )?normal limits|not enlarged|upper limits|top normal"
    r"|high normal)|(?P<borderline>borderline|equivocal(?:ly)?|possibly enlarged|questionabl[ey] enlarged)"
    r"|(?P<abnormal>enlarg\w*|large|larger|increased|prominen\w*|widen\w*|wide|dilat\w*|globular|big|bulg\w*"
    r"|fullness|cardiomegaly))\b"
)
_ABNORMAL_STATE_RE = re.compile(r"\b(?:enlarg\w*|large|larger|increased|prominen\w*|widen\w*|dilat\w*)\b")
_BETWEEN_STATES_RE = re.compile(r"^ ?(?:[\w-]+ ){0,3}?(?:or|to|versus|vs)(?: [\w-]+){0,2} ?$")
_STATE_NEGATED_RE = re.compile(r"\b(?:not|no|without)(?: \w+)? $")

# Replacements made before reading a sentence, so that compound phrases act as one cue.
# Each entry: substrings one of which must be present (a cheap test that skips the regex), regex,
# replacement.
_REWRITES: list[tuple[tuple[str, ...], re.Pattern[str], str]] = [
    # De-identification tokens become one unknown word.
    (("xx", "__"), re.compile(r"x{2,}(?:-x{2,})*|_{2,}"), " xxxx "),
    # "cannot be excluded", "not ruled out", "difficult to exclude": uncertain, not negative.
    (
        ("exclu", "rule", "elimina"),
        re.compile(
            r"\b(?:can ?not|could not|can't|not|unable to|difficult to|hard to|impossible to)"
            r"(?: be)?(?: \w+ly)? (?:exclude[ds]?|rule[ds]? out|ruled out|excluded|eliminated?)\b"
        ),
        " qqunc ",
    ),
    (("not ",), re.compile(r"\bnot (?:well|clearly|definitely) (?:seen|visualized|visualised|evaluated|assessed|excluded)\b"), " qqunc "),
    # "no (interval) change", "not significantly changed", "without change": about time, not the finding.
    (
        ("chang",),
        re.compile(
            r"\b(?:no|not|without)(?: \w+ly)?(?: (?:significant|appreciable|substantial|definite|interval|major|"
            r"acute|other|radiographic|further))* chang(?:e|es|ed)\b"
        ),
        " qqchg ",
    ),
    # Partial resolution leaves the finding present.
    (
        ("resol", "clear"),
        re.compile(
            r"\b(?:partial(?:ly)?|incomplete(?:ly)?|near(?:ly)?|almost|near[- ]complete(?:ly)?|some|slow(?:ly)?|gradual(?:ly)?"
            r"|continued|ongoing|improving|not (?:completely|entirely|fully)) (?:interval )?"
            r"(?:resolution|resolving|resolved|clearing|cleared)\b"
        ),
        " qqimp ",
    ),
    (("resolving",), re.compile(r"\bresolving\b"), " qqimp "),
    (("r/o",), re.compile(r"\br/o\b"), " qqunc "),
]

_REWRITE_GUARD_RE = re.compile("|".join(re.escape(guard) for guards, _, _ in _REWRITES for guard in guards))

# Cues before a mention, looked up per word: negation, hedge (uncertainty), clause break (where a
# cue's reach ends), and list ends ("or"/"nor" carry a cue across commas). A tuple value needs one
# of the given next words ("free of", "rule out", "there is").
_NEGATION, _HEDGE, _BREAK, _LIST_END, _NEGATED_LIST_END, _COMMA = range(6)
_CUE_WORDS: dict[str, int | tuple[int, frozenset[str]]] = {
    **dict.fromkeys(
        ("no", "not", "without", "negative", "absent", "resolved", "cleared", "removed", "instead", "neither",
         "never", "unlikely", "excluded", "exclusion"),
        _NEGATION,
    ),
    **dict.fromkeys(("absence", "resolution", "clearing", "removal"), (_NEGATION, frozenset({"of"}))),
    "free": (_NEGATION, frozenset({"of"})),
    "clear": (_NEGATION, frozenset({"of"})),
    "rather": (_NEGATION, frozenset({"than"})),
    "ruled": (_NEGATION, frozenset({"out"})),
    **dict.fromkeys(
        ("possible", "possibly", "possibility", "probable", "probably", "likely", "may", "might", "could",
         "questionable", "questionably", "question", "questioned", "suspicious", "suspicion", "worrisome", "worrying",
         "perhaps", "equivocal", "indeterminate", "borderline", "differential", "versus", "vs", "vs.", "qqunc",
         "uncertain", "unclear", "exclude", "?"),
        _HEDGE,
    ),
    "rule": (_HEDGE, frozenset({"out"})),
    "evaluate": (_HEDGE, frozenset({"for"})),
    "evaluation": (_HEDGE, frozenset({"for"})),
    "assess": (_HEDGE, frozenset({"for"})),
    **dict.fromkeys(
        ("but", "however", "although", "though", "except", "aside", "apart", "besides", "whereas", "while", "which",
         "yet", "otherwise", "exception", "qqchg", "addition", "additionally"),
        _BREAK,
    ),
    "other": (_BREAK, frozenset({"than"})),
    "and": (_BREAK, frozenset({"the", "there"})),
    "there": (_BREAK, frozenset({"is", "are", "was", "were", "has", "have"})),
    "or": _LIST_END,
    "nor": _NEGATED_LIST_END,
    ",": _COMMA,
}
_HEDGE_STEMS = ("suspect", "concern", "suggest", "presum", "consider", "favor", "favour")
_CORRELATE_STEM = "correlat"  # "correlate for pneumonia": a hedge when followed by "for"
# Marks that become tokens of their own, so that a word after them starts a token.
_SPACED_MARKS = (",", "/", "(", ")", "?")
_PIECE_RE = re.compile(r"[a-z0-9_]+")
_FILLER = r"(?:[\w/-]+ ){0,5}?"
_NEG_POST_RE = re.compile(
    r" ?" + _FILLER + r"(?:(?:is|are|was|were|has been|have been|has|have) )?(?:(?:\w+ly) )?"
    r"(?:(?:not|no longer) (?:\w+ )?(?:seen|identified|present|visualized|visualised|demonstrated|appreciated|"
    r"noted|evident|apparent|detected|visible|shown|observed|found|confirmed)"
    r"|absent|resolved|cleared|disappeared|(?:been )?removed|negative|excluded|ruled out|no longer)\b"
    # A finding stated to be normal: "vascular markings appear within normal limits".
    r"| ?(?:[\w/-]+ ){0,3}?(?:is|are|appears?|remains?|looks?) (?:\w+ )?(?:normal|unremarkable|"
    r"within (?:the )?(?:normal )?limits)\b"
)
_UNC_POST_RE = re.compile(
    r" ?" + _FILLER + r"(?:qqunc|\?|(?:is|are|was|were) (?:also |more |less )?(?:possible|likely|probable|favou?red|"
    r"considered|a consideration|not definite)|(?:(?:is|are|was|were) )?(?:suspected|questioned)|"
    r"(?:may|might|could) be (?:present|seen|noted|developing|forming|a consideration))\b"
)
# Two findings offered as alternatives: "atelectasis or pneumonia", "effusion versus scarring".
_ALTERNATIVE_GAP_RE = re.compile(r"^ ?(?:[\w-]+ ){0,3}?(?:or|versus|vs\.?|and/or|/|or possibly|or less likely)(?: [\w-]+){0,3} ?$|^ ?/ ?$")
# Words that make the text after a comma a statement of its own rather than one more list item.
_STATEMENT_RE = re.compile(
    r"\b(?:is|are|was|were|has|have|had|be|been|seen|noted|present|identified|demonstrated|mild\w*|moderate\w*|"
    r"severe\w*|small|minimal\w*|trace|tiny|stable|unchanged|persist\w*|new|increas\w*|decreas\w*|improv\w*|"
    r"wors\w*|slight\w*|marked\w*|again|residual|chronic|old|redemonstrat\w*|bilateral\w*|left|right|bibasilar|"
    r"possible|probable|questionable|suspected|may|might|could|\w+ly)\b"
)

# One alternation over every term: the group index of a match names its term.
_TERMS: list[tuple[str, str]] = []  # (concept, kind) per group
_patterns: list[str] = []
for _concept, _regexes in _FINDINGS.items():
    for _regex in _regexes:
        _TERMS.append((_concept, "finding"))
        _patterns.append(_regex)
for _organ, (_concept, _regexes) in _ORGANS.items():
    for _regex in _regexes:
        _TERMS.append((_concept, "organ"))
        _patterns.append(_regex)
# Python's alternation takes the first alternative that matches, not the longest: order findings
# by their shortest possible match, longest first, and organs last, so "heart failure" or "lytic
# lesion" wins over "heart" or "lytic" at the same place.
_order = sorted(
    range(len(_patterns)),
    key=lambda i: (_TERMS[i][1] == "organ", -re._parser.parse(_patterns[i]).getwidth()[0], i),
)
_TERMS = [_TERMS[i] for i in _order]
_TERM_PATTERNS = [_patterns[i] for i in _order]
del _concept, _regexes, _regex, _organ, _patterns, _order


_WINDOW = 3  # mentions are looked up by the first three characters at a word's start
_WORD_CHARACTERS = "abcdefghijklmnopqrstuvwxyz0123456789_"
_ANY_CHARACTERS = _WORD_CHARACTERS + " .,-/()'\"?!:;+&%#*=<>[]"


def _character_set(items: Sequence) -> str:
    """The characters a parsed regex character class can match (a superset for categories)."""
    from re import _constants as sre

    characters = ""
    for kind, value in items:
        if kind is sre.LITERAL:
            characters += chr(value)
        elif kind is sre.RANGE:
            characters += "".join(map(chr, range(value[0], value[1] + 1)))
        elif kind is sre.CATEGORY and value is sre.CATEGORY_WORD:
            characters += _WORD_CHARACTERS
        elif kind is sre.CATEGORY and value is sre.CATEGORY_DIGIT:
            characters += "0123456789"
        else:
            return _ANY_CHARACTERS
    return characters


def _windows(items: Sequence, prefixes: set[str]) -> set[str]:
    """Extend each prefix shorter than _WINDOW by what the parsed regex `items` can match next.

    A superset is fine (it only costs a regex attempt); a miss is not, so anything this does not
    model exactly (a category, a negated class) extends by every character.
    """
    from re import _constants as sre

    for op, argument in items:
        growing = {prefix for prefix in prefixes if len(prefix) < _WINDOW}
        if not growing:
            break
        if op is sre.AT:
            continue
        if op is sre.LITERAL:
            grown = {prefix + chr(argument) for prefix in growing}
        elif op is sre.IN:
            grown = {prefix + character for prefix in growing for character in _character_set(argument)}
        elif op is sre.SUBPATTERN:
            grown = _windows(argument[-1], growing)
        elif op is sre.BRANCH:
            grown = set().union(*(_windows(branch, growing) for branch in argument[1]))
        elif op in (sre.MAX_REPEAT, sre.MIN_REPEAT):
            low, high, repeated = argument
            grown, current = set(), growing
            for count in range(min(high, _WINDOW) + 1):
                if count >= low:
                    grown |= current
                current = _windows(repeated, current)
            grown |= {prefix for prefix in current if len(prefix) == _WINDOW}
        else:
            grown = {prefix + character for prefix in growing for character in _ANY_CHARACTERS}
        prefixes = (prefixes - growing) | grown
    return prefixes


def _mention_dispatch() -> dict[str, tuple[re.Pattern[str], list[tuple[str, str]]]]:
    """Per three-character window: one regex over the terms that can start with it, and those terms.

    Trying only the few terms that can start with a word's first three characters (most words
    start none) makes mention search several times faster than one alternation over every term
    tried at every position. Each alternative ends with an empty group, so that `lastindex` names
    the term that matched while the engine can still reject a branch on its first character.
    """
    from re import _parser

    by_window: dict[str, list[int]] = {}
    for index, pattern in enumerate(_TERM_PATTERNS):
        for window in _windows(_parser.parse(pattern), {""}):
            # A term shorter than the window ends at a word boundary: any character may follow.
            for padded in {window + "".join(rest) for rest in _padding(_WINDOW - len(window))}:
                by_window.setdefault(padded, []).append(index)
    compiled: dict[tuple[int, ...], tuple[re.Pattern[str], list[tuple[str, str]]]] = {}
    dispatch = {}
    for window, chosen in by_window.items():
        key = tuple(chosen)
        if key not in compiled:
            regex = re.compile("(?:" + "|".join(f"(?:{_TERM_PATTERNS[i]})()" for i in key) + r")\b")
            compiled[key] = (regex, [_TERMS[i] for i in key])
        dispatch[window] = compiled[key]
    return dispatch


def _padding(length: int) -> list[tuple[str, ...]]:
    """Every way to fill `length` characters (0 to 2 in practice)."""
    import itertools

    return list(itertools.product(_ANY_CHARACTERS, repeat=length))


_MENTION_DISPATCH = _mention_dispatch()

# Sentence boundaries on lowercased text: full stops not in a number or after "vs"/"dr",
# semicolons, heading colons, blank lines (a single newline is a line wrap).
# The pattern starts with a character class so that the regex engine scans for it quickly.
_SENTENCE_SPLIT_RE = re.compile(r"[.;!:\n](?:(?<=\n)[ \t]*\n|(?<=[;!])|(?<=[.:])(?!\d)(?<!\bvs\.)(?<!\bdr\.))\s*")
_DIGIT_BLIND = str.maketrans("123456789", "000000000")
_SENTENCE_CACHE_LIMIT = 1_000_000
_sentence_cache: dict[str, int] = {}


def _reach(
    start: int, end: int, breaks: list[int], commas: list[int], statements: list[int], lists: list[int], clause_end: int
) -> bool:
    """Whether a cue ending at `start` reaches a mention starting at `end` in the same clause."""
    if bisect.bisect_left(breaks, start) != bisect.bisect_left(breaks, end):
        return False
    first_comma = bisect.bisect_left(commas, start)
    if first_comma < len(commas) and commas[first_comma] < end:
        # A comma lies between: a list closed by "or"/"nor" carries the cue across it ("no
        # pneumothorax, effusion, or consolidation"), and so do bare list items ("negative for
        # pneumothorax, pleural effusion"), but not a new statement ("no effusion, mild cardiomegaly").
        following = bisect.bisect_left(lists, commas[first_comma])
        if following < len(lists) and lists[following] < clause_end:
            return True
        # statements[i] counts the commas before commas[i] that open a statement.
        return statements[bisect.bisect_left(commas, end)] == statements[first_comma]
    return True


def _sentence_mask(sentence: str) -> int:
    """Bit mask of the concept values one sentence expresses (see module docstring)."""
    text = " " + sentence + " "
    if _REWRITE_GUARD_RE.search(text):  # most sentences need no rewrite
        for guards, pattern, replacement in _REWRITES:
            if any(guard in text for guard in guards):
                text = pattern.sub(replacement, text)
    for mark in _SPACED_MARKS:
        if mark in text:
            text = text.replace(mark, f" {mark} ")
    tokens = text.split()
    # One space between tokens, so positions follow from token lengths and cue patterns can count
    # words by spaces.
    text = " " + " ".join(tokens) + " "
    mentions = []
    negations: list[int] = []  # cue ends
    hedges: list[int] = []
    break_starts: list[int] = []
    lists: list[int] = []
    commas: list[int] = []
    taken = 0  # mentions do not overlap: a word inside the last mention starts none
    position = 1
    last = len(tokens) - 1
    for index, token in enumerate(tokens):
        start = position
        position += len(token) + 1
        role = _CUE_WORDS.get(token)
        if role is None and not token.isalnum():
            # "age-indeterminate", "[heart", "x-xxxx": read the word pieces of the token too.
            pieces = [(start + match.start(), match.group()) for match in _PIECE_RE.finditer(token)]
        else:
            pieces = None
        if role is not None:
            if type(role) is tuple:
                role = role[0] if index < last and tokens[index + 1] in role[1] else None
            if role == _NEGATION:
                negations.append(position - 1)
            elif role == _HEDGE:
                hedges.append(position - 1)
            elif role == _BREAK:
                break_starts.append(start)
            elif role == _COMMA:
                commas.append(start)
            elif role is not None:
                lists.append(start)
                if role == _NEGATED_LIST_END:
                    negations.append(position - 1)
        elif token.startswith(_HEDGE_STEMS) or (
            token.startswith(_CORRELATE_STEM) and index < last and tokens[index + 1] == "for"
        ):
            hedges.append(position - 1)
        elif pieces:
            for _, piece in pieces:
                if _CUE_WORDS.get(piece) in (_NEGATION, _HEDGE) or piece.startswith(_HEDGE_STEMS):
                    (negations if _CUE_WORDS.get(piece) == _NEGATION else hedges).append(position - 1)
        if pieces is None:
            if start >= taken:
                entry = _MENTION_DISPATCH.get(text[start : start + _WINDOW])
                if entry is not None:
                    match = entry[0].match(text, start)
                    if match is not None:
                        mentions.append((start, match.end(), entry[1][match.lastindex - 1]))
                        taken = match.end()
            continue
        negated_piece = False
        for piece_start, piece in pieces:
            # "non-calcified": the prefix negates its own word only, so that word is no mention.
            if negated_piece or piece_start < taken:
                negated_piece = False
                continue
            negated_piece = piece == "non"
            entry = _MENTION_DISPATCH.get(text[piece_start : piece_start + _WINDOW])
            if entry is not None:
                match = entry[0].match(text, piece_start)
                if match is not None:
                    mentions.append((piece_start, match.end(), entry[1][match.lastindex - 1]))
                    taken = match.end()
    if not mentions:
        return 0
    # Running count of commas after which the text (to the next comma) is a statement of its own
    # rather than a bare list item; the difference of two counts says whether a cue crosses.
    statements = [0]
    for index, comma in enumerate(commas):
        following = commas[index + 1] if index + 1 < len(commas) else len(text)
        statements.append(statements[-1] + (_STATEMENT_RE.search(text, comma, following) is not None))
    length = len(text)

    def clause_end_after(position: int) -> int:
        index = bisect.bisect_right(break_starts, position)
        return break_starts[index] if index < len(break_starts) else length

    def cued(cues: list[int], position: int) -> bool:
        # The nearest cue before the mention decides; earlier ones are further from it.
        index = bisect.bisect_right(cues, position) - 1
        return index >= 0 and _reach(
            cues[index], position, break_starts, commas, statements, lists, clause_end_after(position)
        )

    def right_context(position: int) -> str:
        # Cues after a mention sit within a few words of it; the cap keeps long texts linear.
        stop = min(clause_end_after(position), position + 160)
        comma = bisect.bisect_left(commas, position)
        if comma < len(commas):
            stop = min(stop, commas[comma])
        return text[position:stop]

    values: list[tuple[str, int, int, int]] = []  # (concept, value, start, end)
    for start, end, (concept, kind) in mentions:
        anchor = start  # where cues before the mention are measured from
        if kind == "organ":
            state, anchor = _organ_state(text, start, end, right_context(end))
            if state is None:
                continue
            if state != POSITIVE:
                values.append((concept, state, start, end))
                continue
        if cued(negations, anchor) or _NEG_POST_RE.match(right_context(end)):
            values.append((concept, NEGATIVE, start, end))
        elif cued(hedges, anchor) or _UNC_POST_RE.match(right_context(end)):
            values.append((concept, UNCERTAIN, start, end))
        else:
            values.append((concept, POSITIVE, start, end))
    # Alternatives ("a or b", "a versus b", "a/b") leave both uncertain; devices are not
    # alternatives to each other ("ICD/pacemaker" names both).
    for index in range(len(values) - 1):
        first, second = values[index], values[index + 1]
        if (first[1] == POSITIVE or second[1] == POSITIVE) and "support_devices" not in (first[0], second[0]):
            if _ALTERNATIVE_GAP_RE.match(text[first[3] : second[2]]):
                if first[1] == POSITIVE:
                    values[index] = (first[0], UNCERTAIN, first[2], first[3])
                if second[1] == POSITIVE:
                    values[index + 1] = (second[0], UNCERTAIN, second[2], second[3])
    mask = 0
    for concept, value, _, _ in values:
        if concept != NEUTRAL:
            mask |= _bit(concept, value)
    return mask


def _organ_state(text: str, start: int, end: int, after: str) -> tuple[int | None, int]:
    """(value, position of the state word) for an organ mention; value None when no state is given."""
    match = _STATE_RE.search(after)
    position = end + match.start() if match else -1
    if match is None:
        # A state before the organ: "normal heart size", "enlarged cardiac silhouette".
        before = text[max(0, start - 40) : start]
        matches = list(_STATE_RE.finditer(before))
        if not matches or len(before[matches[-1].end() :].split()) > 2:
            return None, start
        match = matches[-1]
        position = start - len(before) + match.start()
    if match.lastgroup == "normal":
        # "upper limits of normal or mildly enlarged": a state between normal and enlarged.
        if position >= end:
            following = _ABNORMAL_STATE_RE.search(after, position - end + len(match.group(0)))
            if following and _BETWEEN_STATES_RE.match(after[position - end + len(match.group(0)) : following.start()]):
                return UNCERTAIN, position
        return NEGATIVE, position
    if match.lastgroup == "borderline":
        return UNCERTAIN, position
    if _STATE_NEGATED_RE.search(text[max(0, position - 30) : position]):
        return NEGATIVE, position
    return POSITIVE, position


def _report_mask(text: str, cache: dict[str, int]) -> int:
    """Bit mask of one report: the OR of its sentences' masks, plus the has-text bit."""
    mask = _HAS_TEXT
    for sentence in _SENTENCE_SPLIT_RE.split(text.lower()):
        value = cache.get(sentence)
        if value is None:
            # Numbers never change a label, so sentences that differ only in them ("a 1.2 cm
            # nodule", "a 3.4 cm nodule") share one entry under their digit-blind form.
            blind = sentence.translate(_DIGIT_BLIND)
            value = cache.get(blind)
            if value is None:
                value = _sentence_mask(blind) if blind else 0
            if len(sentence) < 1000:  # long run-on "sentences" rarely repeat
                cache[sentence] = cache[blind] = value
        mask |= value
    return mask


def report_masks(texts: Sequence[str | None], progress: bool = False) -> list[int | None]:
    """Bit mask per report (None for empty or null text); the raw form `label_reports` decodes."""
    cache = _sentence_cache
    seen: dict[str, int] = {}  # whole reports repeat too ("No acute cardiopulmonary abnormality.")
    masks: list[int | None] = []
    append = masks.append
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(texts), unit="report", desc="labelling", mininterval=0.5)
    chunk = 20_000
    for offset in range(0, len(texts), chunk):
        if len(cache) > _SENTENCE_CACHE_LIMIT:  # bounds memory on huge, varied report sets
            cache.clear()
        for text in texts[offset : offset + chunk]:
            if not text or text.isspace():
                append(None)
                continue
            mask = seen.get(text)
            if mask is None:
                mask = _report_mask(text, cache)
                seen[text] = mask
            append(mask)
        if bar is not None:
            bar.update(min(chunk, len(texts) - offset))
    if bar is not None:
        bar.close()
    return masks


def decode_masks(masks: pl.Series) -> pl.DataFrame:
    """Turn report bit masks (Int64, null for no text) into the 14 label columns and `abnormal`."""
    mask = pl.col("mask")
    columns: dict[str, pl.Expr] = {}
    has_text = (mask & _HAS_TEXT) != 0
    columns["no_finding"] = pl.when(has_text & ((mask & _NOT_NORMAL) == 0)).then(1).otherwise(None).cast(pl.Int8)
    for concept in OBSERVATIONS:
        columns[concept] = (
            pl.when((mask & _bit(concept, POSITIVE)) != 0)
            .then(1)
            .when((mask & _bit(concept, UNCERTAIN)) != 0)
            .then(-1)
            .when((mask & _bit(concept, NEGATIVE)) != 0)
            .then(0)
            .otherwise(None)
            .cast(pl.Int8)
        )
    frame = pl.DataFrame({"mask": masks.cast(pl.Int64)}).select(
        [columns[name].alias(name) for name in CHEXPERT_LABELS]
    )
    return frame.with_columns(abnormal=abnormal_from_no_finding(pl.col("no_finding")))


def label_reports(texts: Sequence[str | None], progress: bool = False) -> pl.DataFrame:
    """Return the 14 CheXpert label columns (Int8: 1, 0, -1, null) and `abnormal`, one row per text.

    Empty or null texts give nulls in all 14 columns and `abnormal` True (see module docstring).
    """
    if isinstance(texts, pl.Series):
        texts = texts.to_list()
    masks = report_masks(texts, progress=progress)
    return decode_masks(pl.Series("mask", masks, dtype=pl.Int64))


# ---------------------------------------------------------------------------------------------
# Files

# How to fix a malformed CSV, said once for every parse fault.
_QUOTING_FIX = (
    "a field holding the separator, a double quote or a line break must be enclosed in double quotes, "
    'with each quote inside it doubled (""); re-export the file with standard CSV quoting'
)
_SHOWN_IDS = 5  # repeated or blank ids quoted in a message


def _first_line(error: BaseException) -> str:
    """The first line of an exception's message (polars adds pages of advice below it)."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _raw_bytes(path: Path) -> bytes:
    """The file's bytes, gunzipped when its name ends in .gz."""
    try:
        data = path.read_bytes()
        return gzip.decompress(data) if path.suffix.lower() == ".gz" else data
    except (OSError, EOFError, zlib.error) as error:
        reason = _first_line(error)
        raise InputError(f"{path}: cannot be read ({reason}); check the file is complete and readable") from None


def _decode(path: Path, data: bytes, encoding: str) -> str:
    """Decode `data` strictly; InputError naming the first bad byte, its line and the fix."""
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        if codecs.lookup(encoding).name == "utf-8":
            plain = path.name.removesuffix(".gz").removesuffix(".GZ")
            converted = path.with_name(f"{Path(plain).stem}.utf8{Path(plain).suffix}")
            iconv = "iconv -f latin1 -t utf-8"
            source = f"gunzip -c {path} | {iconv}" if plain != path.name else f"{iconv} {path}"
            fix = f"rerun with --encoding latin-1 (or cp1252), or convert the file: {source} > {converted}"
        else:
            fix = "give the file's encoding with --encoding"
        raise InputError(
            f"{path}: not valid {encoding}: byte 0x{data[error.start]:02x} on line {line} cannot be decoded; {fix}"
        ) from None
    except LookupError:  # a codec that is not text-to-bytes, such as rot13 or hex
        raise InputError(f"--encoding {encoding!r} is not a text encoding; give e.g. utf-8, latin-1 or cp1252") from None


def _csv_fault(text: str, separator: str) -> str | None:
    """Where the first malformed record of a CSV text starts and what is wrong there, or None."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=separator, strict=True)
    width, start = None, 1
    try:
        for row in reader:
            if row and width is None:
                width = len(row)
            elif row and len(row) != width:
                return f"line {start} has {len(row)} fields where the header has {width}"
            start = reader.line_num + 1
    except csv.Error as error:
        if "end of data" in str(error):
            return f"the quoted field starting on line {start} is never closed"
        return f"the record starting on line {start} is malformed ({error})"
    return None


def _read_csv(path: Path, id_column: str, text_column: str, encoding: str) -> pl.DataFrame:
    """Read the id and text columns of a CSV (or TSV, optionally gzipped), every column as text."""
    separator = "\t" if ".tsv" in [suffix.lower() for suffix in path.suffixes] else ","
    try:
        codec = codecs.lookup(encoding).name
    except LookupError:
        raise InputError(f"--encoding {encoding!r} is not a known text encoding; "
                        "give e.g. utf-8, latin-1 or cp1252") from None
    # polars reads UTF-8 itself (checking it as it goes); anything else is decoded here first.
    source = path if codec == "utf-8" else _decode(path, _raw_bytes(path), encoding).encode()
    try:
        columns = pl.read_csv(source, n_rows=0, separator=separator).columns
        _check_columns(path, columns, id_column, text_column)
        # Every column is read as text, so that ids keep their leading zeros.
        return pl.read_csv(source, columns=list(dict.fromkeys([id_column, text_column])), separator=separator,
                           infer_schema=False)
    except pl.exceptions.NoDataError:
        raise InputError(f"{path}: no header row (the file is blank); "
                        "give a CSV whose first line names the columns") from None
    except pl.exceptions.PolarsError as error:
        # Re-read with Python's strict reader to say where the file goes wrong: polars does not.
        text = _decode(path, _raw_bytes(path), encoding)
        where = _csv_fault(text, separator) or _first_line(error)
        raise InputError(f"{path}: not a well-formed CSV: {where}; {_QUOTING_FIX}") from None
    except OSError as error:
        raise InputError(f"{path}: cannot be read ({_first_line(error)})") from None


def _check_columns(path: Path, columns: list[str], id_column: str, text_column: str) -> None:
    """KeyError naming the id or text column when the file has no such column."""
    missing = [column for column in (id_column, text_column) if column not in columns]
    if missing:
        raise KeyError(
            f"{path}: no column {', '.join(repr(column) for column in missing)}; "
            f"the columns there are {columns}. Choose them with --id-column and --text-column."
        )


def _read_reports(input_path: Path, id_column: str, text_column: str, encoding: str = "utf-8") -> pl.DataFrame:
    """Read the id and text columns of a CSV or Parquet file, the text as a String column.

    CSV text (and Binary Parquet text) is decoded strictly as `encoding`; a fault of the file is a
    InputError naming it and the fix.
    """
    if not input_path.is_file():
        raise FileNotFoundError(f"{input_path}: no such file; give a CSV or Parquet file of reports.")
    if input_path.stat().st_size == 0:
        raise InputError(f"{input_path}: empty file (0 bytes); give a CSV or Parquet file whose header names "
                        "the id and text columns")
    suffixes = [suffix.lower() for suffix in input_path.suffixes]
    if suffixes and suffixes[-1] in (".parquet", ".pq"):
        try:
            columns = list(pl.read_parquet_schema(input_path))
            _check_columns(input_path, columns, id_column, text_column)
            frame = pl.read_parquet(input_path, columns=list(dict.fromkeys([id_column, text_column])))
        except (OSError, pl.exceptions.PolarsError) as error:
            raise InputError(f"{input_path}: not a readable Parquet file ({_first_line(error)}); "
                            "check it is complete, or give the reports as CSV") from None
    elif suffixes and (suffixes[-1] in (".csv", ".tsv") or suffixes[-2:] in ([".csv", ".gz"], [".tsv", ".gz"])):
        frame = _read_csv(input_path, id_column, text_column, encoding)
    else:
        raise ValueError(f"{input_path}: unsupported file type; give a .csv, .tsv or .parquet file.")
    text = frame[text_column]
    if text.dtype == pl.Binary:
        values = []
        for row, raw in enumerate(text):
            try:
                values.append(None if raw is None else raw.decode(encoding))
            except (UnicodeDecodeError, LookupError) as error:
                raise InputError(f"{input_path}: the text of row {row + 1} ({frame[id_column][row]!r}) is not valid "
                                f"{encoding} ({error}); give the file's encoding with --encoding") from None
        text = pl.Series(text_column, values, dtype=pl.String)
    elif text.dtype != pl.String:
        try:
            text = text.cast(pl.String)
        except pl.exceptions.PolarsError:
            raise InputError(f"{input_path}: column {text_column!r} holds {text.dtype}, not report text; "
                            "choose the text column with --text-column") from None
    return frame.with_columns(text.alias(text_column))


def _check_unique_ids(reports: pl.DataFrame, input_path: Path, id_column: str) -> None:
    """InputError naming up to five repeated ids and how often each occurs."""
    repeated = reports.group_by(id_column, maintain_order=True).len().filter(pl.col("len") > 1)
    if repeated.height:
        shown = ", ".join(f"{value!r} ({count} times)" for value, count in repeated.head(_SHOWN_IDS).iter_rows())
        more = f" and {repeated.height - _SHOWN_IDS} more" if repeated.height > _SHOWN_IDS else ""
        raise InputError(
            f"{input_path}: {repeated.height} id(s) in column {id_column!r} occur more than once: {shown}{more}; "
            "make the id column unique (one row per report: drop repeated rows or join their texts), "
            "or choose another --id-column"
        )


def label_file(
    input_path: str | Path,
    id_column: str,
    text_column: str,
    output_path: str | Path,
    progress: bool = True,
    encoding: str = "utf-8",
) -> pl.DataFrame:
    """Label the reports of a CSV or Parquet file; write and return id + 14 labels + `abnormal`.

    A null, NaN or blank text gets all 14 labels null (not mentioned) and `abnormal` null, since an
    empty report says nothing about its study; one warning counts them. (`label_reports`, which the
    extract_labels stage uses, leaves such a study abnormal; ingest never hands the stage one.)
    Raises FileNotFoundError for a missing input, KeyError naming a missing column (and listing the
    columns there are), ValueError for an unsupported file type, and InputError naming the file and
    the fix for an empty or malformed file, text that is not `encoding`, repeated ids, or an output
    that cannot be written.
    """
    input_path, output_path = Path(input_path), Path(output_path)
    if output_path.is_dir():
        raise InputError(f"-o {output_path} is a folder; give the output Parquet file's name, "
                        f"e.g. {output_path / 'labels.parquet'}")
    reports = _read_reports(input_path, id_column, text_column, encoding)
    _check_unique_ids(reports, input_path, id_column)
    stripped = pl.col(text_column).str.strip_chars()
    blank = reports.select(stripped.is_null() | stripped.str.to_lowercase().is_in(["", "nan"]))[text_column]
    texts = reports.select(pl.when(blank).then(None).otherwise(pl.col(text_column)).alias(text_column))[text_column]
    # A bar only helps when labelling takes a noticeable time.
    labels = label_reports(texts.to_list(), progress=progress and reports.height >= 50_000)
    labels = labels.with_columns(abnormal=pl.when(blank).then(None).otherwise(pl.col("abnormal")))
    result = pl.concat([reports.select(id_column), labels], how="horizontal")
    try:
        output_path.parent.mkdir(parents=True, exist_ok=True)
        result.write_parquet(output_path)
    except (OSError, pl.exceptions.PolarsError) as error:
        filename = getattr(error, "filename", None)
        reason = f"{error.strerror}: {filename}" if filename else _first_line(error)
        raise InputError(f"-o {output_path}: cannot be written ({reason}); "
                        "give a file path in a writable folder") from None
    n_blank = int(blank.sum())
    if n_blank:
        ids = ", ".join(repr(value) for value in reports.filter(blank)[id_column].head(_SHOWN_IDS).to_list())
        log.warning("%d report(s) with blank text: labels left unmentioned and abnormal null (%s; ids %s%s)",
                    n_blank, input_path, ids, ", …" if n_blank > _SHOWN_IDS else "")
    log.info(
        "labelled %d reports from %s (%d blank) -> %s; %d abnormal",
        result.height, input_path, n_blank, output_path, result["abnormal"].sum(),
    )
    return result


# ---------------------------------------------------------------------------------------------
# The extract_labels stage

AGREEMENT_SCHEMA = {
    "observation": pl.String,
    "display_name": pl.String,
    "n": pl.Int64,
    "dataset_positive": pl.Int64,
    "extracted_positive": pl.Int64,
    "agreement": pl.Float64,
    "exact_agreement": pl.Float64,
    "precision": pl.Float64,
    "recall": pl.Float64,
    "f1": pl.Float64,
    "kappa": pl.Float64,
}


def _binary(values: pl.Series) -> np.ndarray:
    """Positive = 1 or -1 (uncertain counts as positive); negative = 0 or null (not mentioned)."""
    return values.fill_null(0).is_in([1, -1]).to_numpy()


def agreement_table(dataset: pl.DataFrame, extracted: pl.DataFrame) -> pl.DataFrame:
    """Return per-observation agreement of extracted labels with the dataset's, on shared study_ids.

    Each observation is made binary: positive = 1 or -1 (uncertain read as positive, as in the
    U-Ones policy), negative = 0 or null. `agreement` is the share of studies where the two binary
    labels match; `exact_agreement` the share where the 4-valued labels (1, 0, -1, null) match;
    precision/recall/F1 treat the dataset's labels as the reference; `kappa` is Cohen's kappa of
    the binary labels. A score that is undefined (no positives in either, or a constant pair of
    label vectors for kappa) is null.
    """
    joined = dataset.join(extracted, on="study_id", how="inner", suffix="_extracted")
    rows = []
    for name in CHEXPERT_LABELS:
        reference = _binary(joined[name])
        predicted = _binary(joined[f"{name}_extracted"])
        n = int(reference.size)
        true_positive = int((reference & predicted).sum())
        false_positive = int((~reference & predicted).sum())
        false_negative = int((reference & ~predicted).sum())
        observed = float((reference == predicted).mean()) if n else None
        exact = (
            float(joined[name].eq_missing(joined[f"{name}_extracted"]).mean()) if n else None
        )
        precision = true_positive / (true_positive + false_positive) if true_positive + false_positive else None
        recall = true_positive / (true_positive + false_negative) if true_positive + false_negative else None
        scored = true_positive + false_positive + false_negative
        f1 = 2 * true_positive / (2 * true_positive + false_positive + false_negative) if scored else None
        kappa = None
        if n:
            p_reference, p_predicted = reference.mean(), predicted.mean()
            expected = p_reference * p_predicted + (1 - p_reference) * (1 - p_predicted)
            if expected < 1:
                kappa = float((observed - expected) / (1 - expected))
        rows.append(
            {
                "observation": name,
                "display_name": CHEXPERT_DISPLAY[name],
                "n": n,
                "dataset_positive": int(reference.sum()),
                "extracted_positive": int(predicted.sum()),
                "agreement": observed,
                "exact_agreement": exact,
                "precision": precision,
                "recall": recall,
                "f1": f1,
                "kappa": kappa,
            }
        )
    if not joined.height:
        return pl.DataFrame(schema=AGREEMENT_SCHEMA)
    return pl.DataFrame(rows, schema=AGREEMENT_SCHEMA)


def extract_labels(
    studies_path: str | Path,
    dataset_labels_path: str | Path,
    output_labels: str | Path,
    output_agreement: str | Path,
    source: str = "extracted",
) -> pl.DataFrame:
    """Label every study's report; write the labels table and the agreement table; return the labels.

    `source="extracted"`: every row is the labeler's. `source="dataset"`: studies the dataset
    labels keep the dataset's row (source "dataset"), the rest get extracted ones (source
    "extracted"). Whenever the dataset ships labels, `output_agreement` compares the extracted
    labels with them per observation (see `agreement_table`); otherwise it has zero rows.
    """
    if source not in LABEL_SOURCES:
        raise ValueError(f"labels.source is {source!r}; allowed: {list(LABEL_SOURCES)}.")
    studies = read_table(studies_path, "studies")
    dataset = read_table(dataset_labels_path, "labels")
    extracted = pl.concat(
        [studies.select("study_id"), label_reports(studies["report"].to_list(), progress=False)], how="horizontal"
    ).with_columns(source=pl.lit("extracted"))

    unknown = dataset.filter(~pl.col("study_id").is_in(studies["study_id"].implode()))
    if unknown.height:
        log.warning("%d dataset label rows name studies not in %s; ignored", unknown.height, studies_path)
    dataset = dataset.filter(pl.col("study_id").is_in(studies["study_id"].implode()))

    if source == "dataset":
        if not dataset.height:
            log.warning("labels.source is 'dataset' but %s has no labels; using extracted labels", dataset_labels_path)
        kept = dataset.with_columns(source=pl.lit("dataset")).select(extracted.columns)
        rest = extracted.filter(~pl.col("study_id").is_in(kept["study_id"].implode()))
        # Rows in the studies table's order, whichever source they come from.
        order = studies.select("study_id").with_row_index("row")
        labels = pl.concat([kept, rest]).join(order, on="study_id").sort("row").drop("row")
    else:
        labels = extracted
    written = write_table(labels, "labels", output_labels)

    agreement = agreement_table(dataset, extracted) if dataset.height else pl.DataFrame(schema=AGREEMENT_SCHEMA)
    Path(output_agreement).parent.mkdir(parents=True, exist_ok=True)
    agreement.write_parquet(output_agreement)

    counts = written.group_by("source").len().sort("source")
    log.info(
        "labels: %d studies (%s), %d abnormal (%.1f%%)",
        written.height,
        ", ".join(f"{row['source']}={row['len']}" for row in counts.iter_rows(named=True)),
        written["abnormal"].sum(),
        100 * written["abnormal"].mean() if written.height else 0.0,
    )
    if agreement.height:
        for row in agreement.iter_rows(named=True):
            log.info(
                "agreement %-27s n=%d dataset+=%d extracted+=%d agree=%.3f F1=%s kappa=%s",
                row["display_name"], row["n"], row["dataset_positive"], row["extracted_positive"], row["agreement"],
                "n/a" if row["f1"] is None else f"{row['f1']:.3f}",
                "n/a" if row["kappa"] is None else f"{row['kappa']:.3f}",
            )
        log.info("agreement macro F1 %.3f, macro kappa %.3f", agreement["f1"].mean() or 0.0, agreement["kappa"].mean() or 0.0)
    else:
        log.info("no dataset labels: %s has zero rows", output_agreement)
    return written
