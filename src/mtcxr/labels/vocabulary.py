"""The labeler's vocabulary: the terms of each concept, and the cues and states that give a value.

Everything here is data written for lowercased report text; `mtcxr.labels.engine` reads reports
with it (its docstring says how).
"""

from __future__ import annotations

import re

from mtcxr.tables import CHEXPERT_LABELS

# Concepts that mentions can carry: the 13 observations read from text, then "other".
OBSERVATIONS = tuple(name for name in CHEXPERT_LABELS if name != "no_finding")
OTHER = "other"
NEUTRAL = "neutral"
CONCEPTS = (*OBSERVATIONS, OTHER)

# Terms. Each is a regex matched on lowercased text from a word's start to a word boundary,
# written in the subset of the syntax that mtcxr.labels.regex_subset reads, without capturing
# groups. A finding is positive unless negated or hedged; an organ's value comes from a state word
# (see ORGANS). The concept NEUTRAL consumes phrases that would otherwise read as a finding
# ("nipple shadow", "bone density").

FINDINGS: dict[str, list[str]] = {
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
ORGANS: dict[str, tuple[str, list[str]]] = {
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
STATE_RE = re.compile(
    r"\b(?:(?P<normal>normal|unremarkable|wnl|within (?:the )?normal limits|not enlarged|upper limits|top normal"
    r"|high normal)|(?P<borderline>borderline|equivocal(?:ly)?|possibly enlarged|questionabl[ey] enlarged)"
    r"|(?P<abnormal>enlarg\w*|large|larger|increased|prominen\w*|widen\w*|wide|dilat\w*|globular|big|bulg\w*"
    r"|fullness|cardiomegaly))\b"
)
ABNORMAL_STATE_RE = re.compile(r"\b(?:enlarg\w*|large|larger|increased|prominen\w*|widen\w*|dilat\w*)\b")
BETWEEN_STATES_RE = re.compile(r"^ ?(?:[\w-]+ ){0,3}?(?:or|to|versus|vs)(?: [\w-]+){0,2} ?$")
STATE_NEGATED_RE = re.compile(r"\b(?:not|no|without)(?: \w+)? $")

# Replacements made before reading a sentence, so that compound phrases act as one cue.
# Each entry: substrings one of which must be present (a cheap test that skips the regex), regex,
# replacement.
REWRITES: list[tuple[tuple[str, ...], re.Pattern[str], str]] = [
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
    (
        ("not ",),
        re.compile(r"\bnot (?:well|clearly|definitely) (?:seen|visualized|visualised|evaluated|assessed|excluded)\b"),
        " qqunc ",
    ),
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

REWRITE_GUARD_RE = re.compile("|".join(re.escape(guard) for guards, _, _ in REWRITES for guard in guards))

# Cues before a mention, looked up per word: negation, hedge (uncertainty), clause break (where a
# cue's reach ends), and list ends ("or"/"nor" carry a cue across commas). A tuple value needs one
# of the given next words ("free of", "rule out", "there is").
NEGATION, HEDGE, BREAK, LIST_END, NEGATED_LIST_END, COMMA = range(6)
CUE_WORDS: dict[str, int | tuple[int, frozenset[str]]] = {
    **dict.fromkeys(
        (
            "no",
            "not",
            "without",
            "negative",
            "absent",
            "resolved",
            "cleared",
            "removed",
            "instead",
            "neither",
            "never",
            "unlikely",
            "excluded",
            "exclusion",
        ),
        NEGATION,
    ),
    **dict.fromkeys(("absence", "resolution", "clearing", "removal"), (NEGATION, frozenset({"of"}))),
    "free": (NEGATION, frozenset({"of"})),
    "clear": (NEGATION, frozenset({"of"})),
    "rather": (NEGATION, frozenset({"than"})),
    "ruled": (NEGATION, frozenset({"out"})),
    **dict.fromkeys(
        (
            "possible",
            "possibly",
            "possibility",
            "probable",
            "probably",
            "likely",
            "may",
            "might",
            "could",
            "questionable",
            "questionably",
            "question",
            "questioned",
            "suspicious",
            "suspicion",
            "worrisome",
            "worrying",
            "perhaps",
            "equivocal",
            "indeterminate",
            "borderline",
            "differential",
            "versus",
            "vs",
            "vs.",
            "qqunc",
            "uncertain",
            "unclear",
            "exclude",
            "?",
        ),
        HEDGE,
    ),
    "rule": (HEDGE, frozenset({"out"})),
    "evaluate": (HEDGE, frozenset({"for"})),
    "evaluation": (HEDGE, frozenset({"for"})),
    "assess": (HEDGE, frozenset({"for"})),
    **dict.fromkeys(
        (
            "but",
            "however",
            "although",
            "though",
            "except",
            "aside",
            "apart",
            "besides",
            "whereas",
            "while",
            "which",
            "yet",
            "otherwise",
            "exception",
            "qqchg",
            "addition",
            "additionally",
        ),
        BREAK,
    ),
    "other": (BREAK, frozenset({"than"})),
    "and": (BREAK, frozenset({"the", "there"})),
    "there": (BREAK, frozenset({"is", "are", "was", "were", "has", "have"})),
    "or": LIST_END,
    "nor": NEGATED_LIST_END,
    ",": COMMA,
}
HEDGE_STEMS = ("suspect", "concern", "suggest", "presum", "consider", "favor", "favour")
CORRELATE_STEM = "correlat"  # "correlate for pneumonia": a hedge when followed by "for"
_FILLER = r"(?:[\w/-]+ ){0,5}?"
NEG_POST_RE = re.compile(
    r" ?" + _FILLER + r"(?:(?:is|are|was|were|has been|have been|has|have) )?(?:(?:\w+ly) )?"
    r"(?:(?:not|no longer) (?:\w+ )?(?:seen|identified|present|visualized|visualised|demonstrated|appreciated|"
    r"noted|evident|apparent|detected|visible|shown|observed|found|confirmed)"
    r"|absent|resolved|cleared|disappeared|(?:been )?removed|negative|excluded|ruled out|no longer)\b"
    # A finding stated to be normal: "vascular markings appear within normal limits".
    r"| ?(?:[\w/-]+ ){0,3}?(?:is|are|appears?|remains?|looks?) (?:\w+ )?(?:normal|unremarkable|"
    r"within (?:the )?(?:normal )?limits)\b"
)
UNC_POST_RE = re.compile(
    r" ?" + _FILLER + r"(?:qqunc|\?|(?:is|are|was|were) (?:also |more |less )?(?:possible|likely|probable|favou?red|"
    r"considered|a consideration|not definite)|(?:(?:is|are|was|were) )?(?:suspected|questioned)|"
    r"(?:may|might|could) be (?:present|seen|noted|developing|forming|a consideration))\b"
)
# Two findings offered as alternatives: "atelectasis or pneumonia", "effusion versus scarring".
ALTERNATIVE_GAP_RE = re.compile(
    r"^ ?(?:[\w-]+ ){0,3}?(?:or|versus|vs\.?|and/or|/|or possibly|or less likely)(?: [\w-]+){0,3} ?$|^ ?/ ?$"
)
# Words that make the text after a comma a statement of its own rather than one more list item.
STATEMENT_RE = re.compile(
    r"\b(?:is|are|was|were|has|have|had|be|been|seen|noted|present|identified|demonstrated|mild\w*|moderate\w*|"
    r"severe\w*|small|minimal\w*|trace|tiny|stable|unchanged|persist\w*|new|increas\w*|decreas\w*|improv\w*|"
    r"wors\w*|slight\w*|marked\w*|again|residual|chronic|old|redemonstrat\w*|bilateral\w*|left|right|bibasilar|"
    r"possible|probable|questionable|suspected|may|might|could|\w+ly)\b"
)


# Every term as (regex, concept, kind), findings then organs, in the order written above.
TERMS: list[tuple[str, str, str]] = [
    *((regex, concept, "finding") for concept, regexes in FINDINGS.items() for regex in regexes),
    *((regex, concept, "organ") for concept, regexes in ORGANS.values() for regex in regexes),
]
