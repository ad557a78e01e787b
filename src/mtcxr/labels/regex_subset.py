r"""The shortest match and the possible first characters of a term regex, from a parser of our own.

The engine needs both for the vocabulary's term regexes: the shortest match orders the terms, the
first characters choose which terms to try at a word. They were read from `re`'s private parse
tree, which any Python release may change; this module parses the small subset of the syntax the
vocabulary is written in instead: literals and escaped characters, ``\w``, ``\d``, ``\s`` and their
negations, ``.``, character classes, non-capturing groups ``(?:…)``, alternation, the quantifiers
``?``, ``*``, ``+``, ``{m}``, ``{m,}``, ``{,n}``, ``{m,n}`` (greedy or lazy), and the zero-width ``\b``,
``\B``, ``\A``, ``\Z``, ``^``, ``$``. Anything else (a capturing or named group, a lookaround, a
backreference, a possessive quantifier, an inline flag) is a ValueError, so that a vocabulary edit
outside the subset fails at import instead of being misread.
"""

from __future__ import annotations

import re

# Text is lowercased before matching, so \w stands for the lowercase word characters (a letter
# outside ASCII never starts a term). ANY_CHARACTERS is every character text is expected to hold;
# what cannot be told exactly (\s, \W, ., a negated class) stands for all of them.
WORD_CHARACTERS = "abcdefghijklmnopqrstuvwxyz0123456789_"
DIGITS = "0123456789"
ANY_CHARACTERS = WORD_CHARACTERS + " .,-/()'\"?!:;+&%#*=<>[]"

# A parsed regex is a tree of tuples:
#   ("chars", str)                      one character out of str
#   ("empty",)                          matches the empty string (an assertion or an empty branch)
#   ("seq", (node, ...))                the nodes one after another
#   ("alt", (node, ...))                one of the nodes
#   ("repeat", low, high, node)         node low to high times (high None: unbounded)
Node = tuple

_EMPTY: Node = ("empty",)
_CLASS_ESCAPES = {
    "w": WORD_CHARACTERS,
    "d": DIGITS,
    "s": ANY_CHARACTERS,
    "W": ANY_CHARACTERS,
    "D": ANY_CHARACTERS,
    "S": ANY_CHARACTERS,
}
_ASSERTION_ESCAPES = frozenset("bBAZ")
_CONTROL_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "f": "\f", "v": "\v", "a": "\a"}
_QUANTIFIER_RE = re.compile(r"\{(\d*)(?:(,)(\d*))?\}")


class _Parser:
    def __init__(self, pattern: str) -> None:
        self.pattern = pattern
        self.position = 0

    def fail(self, what: str) -> ValueError:
        return ValueError(
            f"term regex {self.pattern!r}: {what} at position {self.position} "
            "is outside the syntax the labeler reads (see mtcxr.labels.regex_subset)"
        )

    def peek(self) -> str | None:
        return self.pattern[self.position] if self.position < len(self.pattern) else None

    def alternation(self) -> Node:
        branches = [self.sequence()]
        while self.peek() == "|":
            self.position += 1
            branches.append(self.sequence())
        return branches[0] if len(branches) == 1 else ("alt", tuple(branches))

    def sequence(self) -> Node:
        items = []
        while self.peek() not in (None, "|", ")"):
            items.append(self.quantified(self.atom()))
        return items[0] if len(items) == 1 else ("seq", tuple(items)) if items else _EMPTY

    def atom(self) -> Node:
        character = self.pattern[self.position]
        if character == "(":
            if not self.pattern.startswith("(?:", self.position):
                raise self.fail("a group other than (?:…)")
            self.position += 3
            node = self.alternation()
            if self.peek() != ")":
                raise self.fail("an unclosed group")
            self.position += 1
            return node
        if character in "*+?" or (character == "{" and _QUANTIFIER_RE.match(self.pattern, self.position)):
            raise self.fail("a quantifier with nothing to repeat")
        self.position += 1
        if character == "[":
            return ("chars", self.character_class())
        if character == "\\":
            return self.escape()
        if character == ".":
            return ("chars", ANY_CHARACTERS)
        if character in "^$":
            return _EMPTY
        return ("chars", character)

    def escape(self) -> Node:
        if self.position >= len(self.pattern):
            raise self.fail("a trailing backslash")
        character = self.pattern[self.position]
        self.position += 1
        if character in _CLASS_ESCAPES:
            return ("chars", _CLASS_ESCAPES[character])
        if character in _ASSERTION_ESCAPES:
            return _EMPTY
        if character in _CONTROL_ESCAPES:
            return ("chars", _CONTROL_ESCAPES[character])
        if character.isalnum():  # \1, \x41, \N{…}, \u…: not needed by any term
            raise self.fail(f"the escape \\{character}")
        return ("chars", character)

    def character_class(self) -> str:
        """The characters of a class whose "[" has been read; a negated class stands for any."""
        negated = self.peek() == "^"
        if negated:
            self.position += 1
        characters = ""
        first = True
        while True:
            character = self.peek()
            if character is None:
                raise self.fail("an unclosed character class")
            if character == "]" and not first:
                self.position += 1
                break
            first = False
            low = self.class_character()
            if self.peek() == "-" and self.pattern[self.position + 1 : self.position + 2] not in ("]", ""):
                self.position += 1
                high = self.class_character()
                if len(low) != 1 or len(high) != 1 or ord(low) > ord(high):
                    raise self.fail("a bad character range")
                characters += "".join(map(chr, range(ord(low), ord(high) + 1)))
            else:
                characters += low
        return ANY_CHARACTERS if negated else characters

    def class_character(self) -> str:
        """One item of a character class: a character, or the characters of a class escape."""
        character = self.pattern[self.position]
        self.position += 1
        if character != "\\":
            return character
        if self.position >= len(self.pattern):
            raise self.fail("a trailing backslash")
        character = self.pattern[self.position]
        self.position += 1
        if character in _CLASS_ESCAPES:
            return _CLASS_ESCAPES[character]
        if character in _CONTROL_ESCAPES:
            return _CONTROL_ESCAPES[character]
        if character.isalnum():
            raise self.fail(f"the escape \\{character} in a character class")
        return character

    def quantified(self, node: Node) -> Node:
        character = self.peek()
        if character in ("?", "*", "+"):
            self.position += 1
            low, high = {"?": (0, 1), "*": (0, None), "+": (1, None)}[character]
        elif character == "{" and (match := _QUANTIFIER_RE.match(self.pattern, self.position)):
            if not match.group(1) and not match.group(2):
                raise self.fail("an empty {} quantifier")
            self.position = match.end()
            low = int(match.group(1) or 0)
            high = None if match.group(2) and not match.group(3) else int(match.group(3) or match.group(1))
            if high is not None and high < low:
                raise self.fail("a {m,n} quantifier with n < m")
        else:
            return node
        if self.peek() == "?":  # lazy: the same matches, only another order
            self.position += 1
        if self.peek() in ("?", "*", "+") or (self.peek() == "{" and _QUANTIFIER_RE.match(self.pattern, self.position)):
            raise self.fail("a possessive or repeated quantifier")
        return ("repeat", low, high, node)


def parse(pattern: str) -> Node:
    """The tree of a regex in the subset this module reads; ValueError for anything else."""
    parser = _Parser(pattern)
    node = parser.alternation()
    if parser.position != len(pattern):  # only an unmatched ")" stops the parser early
        raise parser.fail("an unmatched ')'")
    return node


def min_length(node: Node) -> int:
    """The length of the shortest string the parsed regex matches."""
    kind = node[0]
    if kind == "chars":
        return 1
    if kind == "empty":
        return 0
    if kind == "seq":
        return sum(min_length(child) for child in node[1])
    if kind == "alt":
        return min(min_length(child) for child in node[1])
    return node[1] * min_length(node[3])


def prefixes(node: Node, length: int) -> set[str]:
    """Every string of `length` characters a match can start with, and every shorter whole match.

    Exact over ANY_CHARACTERS, except that \\s, \\W, \\D, \\S, "." and a negated class stand for
    all of ANY_CHARACTERS (a superset only costs the engine a regex attempt; a miss would lose a
    mention) and that an assertion is read as always true.
    """
    return _grow(node, {""}, length)


def _grow(node: Node, starts: set[str], length: int) -> set[str]:
    """`starts` with each one shorter than `length` extended by what `node` can match next."""
    growing = {start for start in starts if len(start) < length}
    if not growing:
        return starts
    kind = node[0]
    if kind == "empty":
        return starts
    if kind == "seq":
        for child in node[1]:
            starts = _grow(child, starts, length)
        return starts
    if kind == "chars":
        grown = {start + character for start in growing for character in node[1]}
    elif kind == "alt":
        grown = set().union(*(_grow(child, growing, length) for child in node[1]))
    else:
        # After `length` repetitions every start has reached `length` characters or stays as it
        # was (empty repetitions), so more repetitions add nothing: count up to `length` at most.
        _, low, high, body = node
        top = length if high is None else min(high, length)
        grown, current = set(), growing
        for count in range(top + 1):
            if count >= min(low, top):
                grown |= current
            if count < top:
                current = _grow(body, current, length)
    return (starts - growing) | grown
