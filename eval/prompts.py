"""Prompt text, chat messages and option rotation for circular evaluation.

A prompt is the question, then one ``"A. text"`` line per option, then an
instruction to reply with the letter. The image goes in the same user message,
before the text, through the model's chat template. Rotation ``r`` shows the
stored options shifted left by ``r``: the option stored at index ``(j + r) % 4``
is displayed under letter ``j``. Predictions are always mapped back to the
stored order before they are recorded.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from builder.mat import LETTERS

PROMPT_VERSION = "1"
"""The version of the prompt wording; part of every run key. Change it whenever the wording changes."""

INSTRUCTION = "Reply with the letter (A, B, C or D) of the correct option only."
NUM_OPTIONS = len(LETTERS)


def rotate_options(options: Sequence[str], rotation: int) -> list[str]:
    """Return the options in the order shown at one rotation.

    Args:
        options: the four option texts in stored order.
        rotation: 0 to 3; rotation ``r`` shifts the options left by ``r``.

    Returns:
        The four option texts in displayed order.

    Raises:
        ValueError: when there are not four options or the rotation is out of range.
    """
    _check_rotation(rotation)
    if len(options) != NUM_OPTIONS:
        raise ValueError(f"Expected {NUM_OPTIONS} options, got {len(options)}: {list(options)!r}.")
    return [options[(index + rotation) % NUM_OPTIONS] for index in range(NUM_OPTIONS)]


def to_stored_letter(displayed_letter: str, rotation: int) -> str:
    """Map a letter chosen among displayed options back to the stored order.

    Args:
        displayed_letter: ``"A"`` to ``"D"`` as shown at ``rotation``. Any other
            value (``"invalid"``, ``"failed"``) is returned unchanged.
        rotation: the rotation the options were shown at, 0 to 3.

    Returns:
        The letter of the same option in stored order, or ``displayed_letter``
        unchanged when it is not a letter.
    """
    _check_rotation(rotation)
    if displayed_letter not in LETTERS:
        return displayed_letter
    return LETTERS[(LETTERS.index(displayed_letter) + rotation) % NUM_OPTIONS]


def format_prompt(question: str, options: Sequence[str]) -> str:
    """Return the prompt text: the question, the lettered options, the instruction.

    Args:
        question: the question text.
        options: the four option texts in displayed order.

    Returns:
        The text, lines separated by ``"\\n"``.
    """
    lines = [question.strip()]
    lines += [f"{letter}. {text}" for letter, text in zip(LETTERS, options, strict=True)]
    lines.append(INSTRUCTION)
    return "\n".join(lines)


def build_messages(prompt: str, *, blind: bool) -> list[dict[str, Any]]:
    """Return a one-turn chat conversation for ``apply_chat_template``.

    Args:
        prompt: the text from :func:`format_prompt`.
        blind: when True the image entry is left out and the text is unchanged.

    Returns:
        A list with one user message whose content is an image entry (unless
        ``blind``) followed by a text entry.
    """
    content: list[dict[str, Any]] = [] if blind else [{"type": "image"}]
    content.append({"type": "text", "text": prompt})
    return [{"role": "user", "content": content}]


def _check_rotation(rotation: int) -> None:
    if not 0 <= rotation < NUM_OPTIONS:
        raise ValueError(f"Invalid rotation {rotation}: expected an integer from 0 to {NUM_OPTIONS - 1}.")
