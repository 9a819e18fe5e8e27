"""Answer extraction: map a model's free-text output to an option letter.

One function serves every model. It reads the output in a fixed order of rules,
from the most explicit form to the least, and stops at the first rule that
finds an answer:

1. the whole output is a letter, optionally bracketed or followed by a stop
   (``B``, ``(b)``, ``**B**``, ``Ｂ。``), or the first line is;
2. an answer phrase (``The answer is (C).``, ``Answer: B``, ``Final answer: D``,
   ``I choose option A``, ``答案是B``);
3. a leading letter with a delimiter (``C. Pleural Effusion``, ``B) ...``);
4. one option text, matched on word boundaries after normalisation, or one
   option box for segmentation questions (``[120,300,410,620]``);
5. one bracketed letter elsewhere (``I think (B) fits best``).

Anything ambiguous (``A and C``, two option texts, two answer phrases naming
different letters, a letter followed by a different option's text) or
unparseable (empty output, a refusal) returns ``INVALID``. The function never
guesses a default option.
"""

from __future__ import annotations

import functools
import logging
import re
import unicodedata
from collections.abc import Sequence

from builder.mat import LETTERS

logger = logging.getLogger(__name__)

INVALID = "invalid"
"""The token returned when no single option can be read from the output."""

_THINK_BLOCK = re.compile(r"<think>.*?</think>", re.IGNORECASE | re.DOTALL)
_UNCLOSED_THINK = re.compile(r"<think>.*\Z", re.IGNORECASE | re.DOTALL)
_THINK_TAIL = re.compile(r"\A.*</think>", re.IGNORECASE | re.DOTALL)
_MARKDOWN = re.compile(r"\*\*|__|`|\*")
_WHITESPACE = re.compile(r"\s+")

# NFKC maps full-width letters, digits, brackets and colons to ASCII but keeps
# these CJK punctuation marks, so they are mapped by hand.
_CJK_PUNCTUATION = str.maketrans({"。": ".", "、": ",", "【": "[", "】": "]", "「": '"', "」": '"'})

_OPEN = r"[\(\[]"
_CLOSE = r"[\)\]]"
_LETTER_ONLY = re.compile(rf"^{_OPEN}?\s*([A-Da-d])\s*{_CLOSE}?\s*[.,:;!]?$")
_LEADING_LETTER = re.compile(rf"^(?:{_OPEN}\s*([A-Da-d])\s*{_CLOSE}|([A-D])\s*(?:[.:)\]]|\s-\s)|([a-d])\))")
_BRACKETED_LETTER = re.compile(rf"{_OPEN}([A-D])\s*{_CLOSE}")
_BOX = re.compile(r"[\[\(]\s*(-?\d+)\s*,\s*(-?\d+)\s*,\s*(-?\d+)\s*,\s*(-?\d+)\s*[\]\)]")

_FINAL_KEYWORDS = r"final\s+answer|最终答案"
_ANSWER_KEYWORDS = r"answer|答案"
_OPTION_KEYWORDS = r"option|choice|choose|select|pick|选项|选择|选"
_ANSWER_TAIL = (
    r"(?:\s*(?:is|was|would\s+be|should\s+be|will\s+be|是|为|=))?"
    r"\s*[:\-]?\s*(?:(?:option|choice|选项)\s*)?"
    rf"(?P<open>{_OPEN}?)\s*(?P<letter>[A-Da-d])\s*(?P<close>{_CLOSE}?)(?![A-Za-z0-9])"
)

# A second letter after "and", "or", a comma or a slash makes the answer
# ambiguous. A lower-case second letter counts only before a stop or the end,
# so "B, a pleural effusion" still reads as B.
_AMBIGUOUS_AFTER_LETTER = re.compile(
    rf"^\s*{_CLOSE}?\s*(?:and|or|AND|OR|,|/|&|或|和)\s*{_OPEN}?\s*"
    r"(?:[A-D]|[a-d](?=\s*(?:[.,;!?)\]]|$)))(?![A-Za-z0-9])"
)
_LETTER_IS_CORRECT = re.compile(
    rf"(?<![A-Za-z])(?i:option\s+|choice\s+)?(?P<open>{_OPEN}?)(?P<letter>[A-D])(?P<close>{_CLOSE}?)"
    r"(?i:\s+is\s+(?:the\s+)?(?:correct|right|best|most\s+likely|answer))"
)
_REFUSAL = re.compile(
    r"\b(?:cannot|can't|can\s+not|unable\s+to|not\s+possible|impossible|not\s+sure|unclear|"
    r"(?:don't|do\s+not)\s+know|insufficient)\b|无法|不能确定",
    re.IGNORECASE,
)
_NEGATION_BEFORE = re.compile(r"(?:\bnot|n't|\bno|\bwithout|\brule\s+out)\s*$", re.IGNORECASE)


def _phrase_pattern(keywords: str) -> re.Pattern[str]:
    # A keyword must not continue a longer Latin word ("answered", "options"),
    # but CJK keywords may follow other CJK characters.
    return re.compile(rf"(?<![A-Za-z])(?:{keywords}){_ANSWER_TAIL}", re.IGNORECASE)


_FINAL_PHRASE = _phrase_pattern(_FINAL_KEYWORDS)
_ANSWER_PHRASE = _phrase_pattern(_ANSWER_KEYWORDS)
_OPTION_PHRASE = _phrase_pattern(_OPTION_KEYWORDS)


def extract_answer(text: str, options: Sequence[str]) -> str:
    """Read the chosen option letter from a model's output.

    Args:
        text: The decoded model output, as generated (chat special tokens removed).
        options: The option texts in the order the model saw them; letter ``A``
            is ``options[0]``. Box options are texts such as ``"[120, 300, 410, 620]"``.

    Returns:
        A letter ``"A"`` to ``"D"`` in the displayed order of ``options``, or ``INVALID``
        when the output names no single option or names a letter beyond the
        number of options.
    """
    cleaned = normalise_output(text)
    letters = LETTERS[: len(options)]
    if not cleaned:
        return INVALID

    for rule in _RULES:
        letter = rule(cleaned, options)
        if letter is None:
            continue
        if letter == INVALID or letter not in letters:
            logger.debug("Output %r is ambiguous or names a letter outside %s", text, letters)
            return INVALID
        return letter
    return INVALID


def normalise_output(text: str) -> str:
    """Remove reasoning blocks and Markdown emphasis, and fold full-width forms to ASCII.

    ``<think>...</think>`` blocks are removed. An unclosed ``<think>`` removes
    everything after it, because the model stopped while still reasoning. A
    ``</think>`` with no opening tag (chat templates that put ``<think>`` in
    the prompt) removes everything before it.

    Args:
        text: A model output; a non-string value gives ``""``.

    Returns:
        The cleaned text, stripped of surrounding whitespace.
    """
    if not isinstance(text, str):
        return ""

    without_think = text
    if "</think>" in text.lower():
        without_think = _THINK_BLOCK.sub(" ", without_think)
        without_think = _THINK_TAIL.sub(" ", without_think)
    without_think = _UNCLOSED_THINK.sub(" ", without_think)

    folded = unicodedata.normalize("NFKC", without_think).translate(_CJK_PUNCTUATION)
    # Each whitespace run becomes one character, which keeps the adjacent
    # optional-space groups of the patterns from backtracking polynomially on
    # degenerate outputs (thousands of spaces after "answer").
    collapsed = _WHITESPACE.sub(lambda match: "\n" if "\n" in match.group() else " ", folded)
    return _MARKDOWN.sub("", collapsed).strip()


def _read_letter_only(cleaned: str, options: Sequence[str]) -> str | None:
    first_line = cleaned.splitlines()[0].strip()
    for candidate in (cleaned, first_line):
        match = _LETTER_ONLY.match(candidate)
        if match:
            return match.group(1).upper()
    return None


def _read_answer_phrases(cleaned: str, options: Sequence[str]) -> str | None:
    """Read the last final-answer phrase, else the one letter that all answer phrases (then option phrases) name."""
    final = _phrase_letters(_FINAL_PHRASE, cleaned, options)
    if final:
        return final[-1]

    answer_letters = _phrase_letters(_ANSWER_PHRASE, cleaned, options)
    answer_letters += _phrase_letters(_LETTER_IS_CORRECT, cleaned, options)
    for letters in (answer_letters, _phrase_letters(_OPTION_PHRASE, cleaned, options)):
        if letters:
            return letters[0] if len(set(letters)) == 1 else INVALID
    return None


def _phrase_letters(pattern: re.Pattern[str], cleaned: str, options: Sequence[str]) -> list[str]:
    letters = []
    for match in pattern.finditer(cleaned):
        letter = match.group("letter")
        remainder = cleaned[match.end() :]
        bracketed = bool(match.group("open") or match.group("close"))
        # A lower-case letter followed by a word is the article "a" or a word
        # fragment ("the answer is a pleural effusion"), not an option letter.
        if letter.islower() and not bracketed and re.match(r"\s+\w", remainder):
            continue
        letters.append(_check_after_letter(letter.upper(), remainder, options))
    return letters


def _read_leading_letter(cleaned: str, options: Sequence[str]) -> str | None:
    match = _LEADING_LETTER.match(cleaned)
    if not match:
        return None
    letter = (match.group(1) or match.group(2) or match.group(3)).upper()
    return _check_after_letter(letter, cleaned[match.end() :], options)


def _check_after_letter(letter: str, remainder: str, options: Sequence[str]) -> str:
    """Return ``letter``, or INVALID when the text after it names another letter or another option's text."""
    if _AMBIGUOUS_AFTER_LETTER.match(remainder):
        return INVALID

    stripped = re.sub(r"^[\s()\[\].,:;\-]+", "", remainder)
    named = [index for index, option in enumerate(options) if _starts_with_option(stripped, option)]
    index = LETTERS.index(letter)
    if named and index not in named:
        return INVALID
    return letter


def _read_option_text(cleaned: str, options: Sequence[str]) -> str | None:
    if options and all(_parse_box(option) is not None for option in options):
        return _read_option_box(cleaned, options)

    spans = []
    folded = _fold(cleaned)
    for index, option in enumerate(options):
        pattern = _option_pattern(option)
        if pattern is None:
            continue
        spans.extend((match.start(), match.end(), index) for match in pattern.finditer(folded))

    # A match inside a longer matched option ("Effusion" inside "Pleural
    # Effusion") is part of that option, not a mention of its own.
    outer = [span for span in spans if not any(_contains(other, span) for other in spans if other != span)]
    affirmed = {index for start, _, index in outer if not _NEGATION_BEFORE.search(folded[:start])}
    if len(affirmed) > 1:
        return INVALID
    if not affirmed:
        return None
    if _REFUSAL.search(cleaned):
        return INVALID
    return LETTERS[affirmed.pop()]


def _read_option_box(cleaned: str, options: Sequence[str]) -> str | None:
    boxes = [_parse_box(option) for option in options]
    named = {boxes.index(found) for found in _boxes_in(cleaned) if found in boxes}
    if len(named) > 1:
        return INVALID
    return LETTERS[named.pop()] if named else None


def _read_bracketed_letter(cleaned: str, options: Sequence[str]) -> str | None:
    letters = {match.group(1) for match in _BRACKETED_LETTER.finditer(cleaned)}
    if len(letters) > 1:
        return INVALID
    return letters.pop() if letters else None


def _starts_with_option(text: str, option: str) -> bool:
    box = _parse_box(option)
    if box is not None:
        match = _BOX.match(text)
        return match is not None and tuple(int(value) for value in match.groups()) == box

    pattern = _option_pattern(option)
    return pattern is not None and pattern.match(_fold(text)) is not None


@functools.lru_cache(maxsize=4096)
def _option_pattern(option: str) -> re.Pattern[str] | None:
    """Compile a word-boundary pattern for an option text that ignores case and spacing around punctuation.

    Cached, because a benchmark repeats the same few hundred option texts in thousands of questions.
    """
    tokens = re.findall(r"\w+|[^\w\s]", _fold(option))
    if not tokens:
        return None

    parts = [re.escape(tokens[0])]
    for previous, token in zip(tokens, tokens[1:]):
        between_words = previous[-1].isalnum() and token[0].isalnum()
        parts.append(r"\s+" if between_words else r"\s*")
        parts.append(re.escape(token))
    return re.compile(rf"(?<!\w){''.join(parts)}(?!\w)")


def _fold(text: str) -> str:
    return re.sub(r"\s+", " ", unicodedata.normalize("NFKC", text).casefold()).strip()


def _parse_box(text: str) -> tuple[int, ...] | None:
    match = _BOX.fullmatch(text.strip())
    return tuple(int(value) for value in match.groups()) if match else None


def _boxes_in(text: str) -> list[tuple[int, ...]]:
    return [tuple(int(value) for value in match.groups()) for match in _BOX.finditer(text)]


def _contains(outer: tuple[int, int, int], inner: tuple[int, int, int]) -> bool:
    return outer[0] <= inner[0] and inner[1] <= outer[1] and (outer[1] - outer[0]) > (inner[1] - inner[0])


_RULES = (_read_letter_only, _read_answer_phrases, _read_leading_letter, _read_option_text, _read_bracketed_letter)
"""The extraction rules in order; each returns a letter, INVALID, or None to pass to the next rule."""
