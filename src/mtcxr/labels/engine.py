"""The labeler's engine: reads report texts with the vocabulary into the 14 CheXpert labels.

`label_reports` turns report texts into the labels contract's 14 Int8 columns (1 positive,
0 negative, -1 uncertain, null not mentioned) plus `abnormal`. The terms and cues are in
`mtcxr.labels.vocabulary`; files and the extract_labels stage are in `mtcxr.labels.extract`.

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
the few term regexes that can start with a word's first three characters are tried there (which
terms those are is worked out at import by `mtcxr.labels.regex_subset`).
"""

from __future__ import annotations

import bisect
import itertools
import re
from collections.abc import Sequence

import polars as pl

from mtcxr.labels import regex_subset, vocabulary
from mtcxr.tables import CHEXPERT_LABELS, abnormal_from_no_finding

# The vocabulary is bound here by assignment, not by `from … import`: CPython 3.11 compiles
# `name.method(…)` on an imported name as a plain attribute load (taking the name for a module),
# which made the per-word loop (CUE_WORDS.get, NEG_POST_RE.match, …) about 4% slower.
ABNORMAL_STATE_RE = vocabulary.ABNORMAL_STATE_RE
ALTERNATIVE_GAP_RE = vocabulary.ALTERNATIVE_GAP_RE
BETWEEN_STATES_RE = vocabulary.BETWEEN_STATES_RE
BREAK = vocabulary.BREAK
COMMA = vocabulary.COMMA
CONCEPTS = vocabulary.CONCEPTS
CORRELATE_STEM = vocabulary.CORRELATE_STEM
CUE_WORDS = vocabulary.CUE_WORDS
HEDGE = vocabulary.HEDGE
HEDGE_STEMS = vocabulary.HEDGE_STEMS
NEG_POST_RE = vocabulary.NEG_POST_RE
NEGATED_LIST_END = vocabulary.NEGATED_LIST_END
NEGATION = vocabulary.NEGATION
NEUTRAL = vocabulary.NEUTRAL
OBSERVATIONS = vocabulary.OBSERVATIONS
REWRITE_GUARD_RE = vocabulary.REWRITE_GUARD_RE
REWRITES = vocabulary.REWRITES
STATE_NEGATED_RE = vocabulary.STATE_NEGATED_RE
STATE_RE = vocabulary.STATE_RE
STATEMENT_RE = vocabulary.STATEMENT_RE
TERMS = vocabulary.TERMS
UNC_POST_RE = vocabulary.UNC_POST_RE

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
del _concept


# The terms in the order they are tried. Python's alternation takes the first alternative that
# matches, not the longest: findings by their shortest possible match, longest first, organs last,
# so "heart failure" or "lytic lesion" wins over "heart" or "lytic" at the same place.
_PARSED = [regex_subset.parse(regex) for regex, _, _ in TERMS]
_ORDER = sorted(range(len(TERMS)), key=lambda i: (TERMS[i][2] == "organ", -regex_subset.min_length(_PARSED[i]), i))
_TERMS = [TERMS[i][1:] for i in _ORDER]  # (concept, kind)
_TERM_PATTERNS = [TERMS[i][0] for i in _ORDER]

_WINDOW = 3  # mentions are looked up by the first three characters at a word's start


def _mention_dispatch() -> dict[str, tuple[re.Pattern[str], list[tuple[str, str]]]]:
    """Per three-character window: one regex over the terms that can start with it, and those terms.

    Trying only the few terms that can start with a word's first three characters (most words
    start none) makes mention search several times faster than one alternation over every term
    tried at every position. Each alternative ends with an empty group, so that `lastindex` names
    the term that matched while the engine can still reject a branch on its first character.
    """
    by_window: dict[str, list[int]] = {}
    for index, term in enumerate(_ORDER):
        for window in regex_subset.prefixes(_PARSED[term], _WINDOW):
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
    return list(itertools.product(regex_subset.ANY_CHARACTERS, repeat=length))


_MENTION_DISPATCH = _mention_dispatch()

# Marks that become tokens of their own, so that a word after them starts a token.
_SPACED_MARKS = (",", "/", "(", ")", "?")
_PIECE_RE = re.compile(r"[a-z0-9_]+")

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
    if REWRITE_GUARD_RE.search(text):  # most sentences need no rewrite
        for guards, pattern, replacement in REWRITES:
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
        role = CUE_WORDS.get(token)
        if role is None and not token.isalnum():
            # "age-indeterminate", "[heart", "x-xxxx": read the word pieces of the token too.
            pieces = [(start + match.start(), match.group()) for match in _PIECE_RE.finditer(token)]
        else:
            pieces = None
        if role is not None:
            if type(role) is tuple:
                role = role[0] if index < last and tokens[index + 1] in role[1] else None
            if role == NEGATION:
                negations.append(position - 1)
            elif role == HEDGE:
                hedges.append(position - 1)
            elif role == BREAK:
                break_starts.append(start)
            elif role == COMMA:
                commas.append(start)
            elif role is not None:
                lists.append(start)
                if role == NEGATED_LIST_END:
                    negations.append(position - 1)
        elif token.startswith(HEDGE_STEMS) or (
            token.startswith(CORRELATE_STEM) and index < last and tokens[index + 1] == "for"
        ):
            hedges.append(position - 1)
        elif pieces:
            for _, piece in pieces:
                if CUE_WORDS.get(piece) in (NEGATION, HEDGE) or piece.startswith(HEDGE_STEMS):
                    (negations if CUE_WORDS.get(piece) == NEGATION else hedges).append(position - 1)
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
        statements.append(statements[-1] + (STATEMENT_RE.search(text, comma, following) is not None))
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
        if cued(negations, anchor) or NEG_POST_RE.match(right_context(end)):
            values.append((concept, NEGATIVE, start, end))
        elif cued(hedges, anchor) or UNC_POST_RE.match(right_context(end)):
            values.append((concept, UNCERTAIN, start, end))
        else:
            values.append((concept, POSITIVE, start, end))
    # Alternatives ("a or b", "a versus b", "a/b") leave both uncertain; devices are not
    # alternatives to each other ("ICD/pacemaker" names both).
    for index in range(len(values) - 1):
        first, second = values[index], values[index + 1]
        if (first[1] == POSITIVE or second[1] == POSITIVE) and "support_devices" not in (first[0], second[0]):
            if ALTERNATIVE_GAP_RE.match(text[first[3] : second[2]]):
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
    match = STATE_RE.search(after)
    position = end + match.start() if match else -1
    if match is None:
        # A state before the organ: "normal heart size", "enlarged cardiac silhouette".
        before = text[max(0, start - 40) : start]
        matches = list(STATE_RE.finditer(before))
        if not matches or len(before[matches[-1].end() :].split()) > 2:
            return None, start
        match = matches[-1]
        position = start - len(before) + match.start()
    if match.lastgroup == "normal":
        # "upper limits of normal or mildly enlarged": a state between normal and enlarged.
        if position >= end:
            following = ABNORMAL_STATE_RE.search(after, position - end + len(match.group(0)))
            if following and BETWEEN_STATES_RE.match(after[position - end + len(match.group(0)) : following.start()]):
                return UNCERTAIN, position
        return NEGATIVE, position
    if match.lastgroup == "borderline":
        return UNCERTAIN, position
    if STATE_NEGATED_RE.search(text[max(0, position - 30) : position]):
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
    frame = pl.DataFrame({"mask": masks.cast(pl.Int64)}).select([columns[name].alias(name) for name in CHEXPERT_LABELS])
    return frame.with_columns(abnormal=abnormal_from_no_finding(pl.col("no_finding")))


def label_reports(texts: Sequence[str | None], progress: bool = False) -> pl.DataFrame:
    """Return the 14 CheXpert label columns (Int8: 1, 0, -1, null) and `abnormal`, one row per text.

    Empty or null texts give nulls in all 14 columns and `abnormal` True (see module docstring).
    """
    if isinstance(texts, pl.Series):
        texts = texts.to_list()
    masks = report_masks(texts, progress=progress)
    return decode_masks(pl.Series("mask", masks, dtype=pl.Int64))
