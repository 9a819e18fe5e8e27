"""One bad-input policy for every reader: raise, warn and skip, or skip quietly.

Readers call :meth:`BadInputLog.report` for every file or row they cannot use.
With the default policy ``"error"`` that raises :class:`BadInputError`; with
``"warn"`` it logs a warning and counts the file; with ``"skip"`` it logs at
DEBUG level and counts it. The counts and reasons make the per-source summary
printed at the end of a build.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from builder.mat import check_choice

logger = logging.getLogger(__name__)

POLICIES: tuple[str, ...] = ("error", "warn", "skip")


class BadInputError(ValueError):
    """A source file or row that cannot be used, with the path and the reason."""

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


def save_worker_failure(folder: str | os.PathLike[str], error: BadInputError) -> None:
    """Write the BadInputError that stops a worker process to ``folder`` for the parent to raise again.

    A process pool sends an exception back without its ``__cause__``, so the
    parent would otherwise lose the file name and the reason.
    """
    path = Path(folder) / f"failed-{os.getpid()}.json"
    path.write_text(json.dumps({"path": error.path, "reason": error.reason}), encoding="utf-8")


def read_worker_failure(folder: str | os.PathLike[str]) -> BadInputError | None:
    """Return the BadInputError saved by :func:`save_worker_failure` in ``folder``, or None."""
    for path in sorted(Path(folder).glob("failed-*.json")):
        record = json.loads(path.read_text(encoding="utf-8"))
        return BadInputError(record["path"], record["reason"])
    return None


@dataclass(frozen=True)
class SkippedInput:
    """One file or row left out of the build, and why."""

    source: str
    path: str
    reason: str


@dataclass
class BadInputLog:
    """The bad-input policy in force and the record of what it skipped.

    Args:
        policy: ``"error"`` (default) raises on the first bad input, ``"warn"``
            logs a warning and skips it, ``"skip"`` skips it with a DEBUG record.
    """

    policy: str = "error"
    skipped: list[SkippedInput] = field(default_factory=list)

    def __post_init__(self) -> None:
        check_choice("on_bad_input policy", self.policy, POLICIES)

    def report(self, source: str, path: str | os.PathLike[str], reason: str) -> None:
        """Apply the policy to one bad input.

        Raises:
            BadInputError: when the policy is ``"error"``.
        """
        if self.policy == "error":
            raise BadInputError(path, reason)

        self.skipped.append(SkippedInput(source, str(path), reason))
        if self.policy == "warn":
            logger.warning("Skipped %s (%s): %s", path, source, reason)
        else:
            logger.debug("Skipped %s (%s): %s", path, source, reason)

    def record(self, source: str, path: str | os.PathLike[str], reason: str) -> None:
        """Record an expected omission under every policy, with an INFO log, without raising."""
        self.skipped.append(SkippedInput(source, str(path), reason))
        logger.info("Left out %s (%s): %s", path, source, reason)

    def counts(self) -> Counter[str]:
        """Return the number of skipped inputs per source."""
        return Counter(item.source for item in self.skipped)

    def extend(self, other: BadInputLog) -> None:
        """Append the records of another log, e.g. one kept by a worker process."""
        self.skipped.extend(other.skipped)

    def save(self, path: Path) -> None:
        """Append the records to a JSON Lines file, one object per skipped input."""
        with path.open("a", encoding="utf-8") as stream:
            for item in self.skipped:
                stream.write(json.dumps(asdict(item)) + "\n")

    @classmethod
    def load(cls, path: Path, policy: str = "skip") -> BadInputLog:
        """Read records written by :meth:`save`."""
        log = cls(policy=policy)
        if not path.exists():
            return log
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                log.skipped.append(SkippedInput(**json.loads(line)))
        return log

    def summary_lines(self) -> list[str]:
        """Return one line per source with its skip count, then one line per skipped input."""
        lines = [f"{source}: {count} skipped" for source, count in sorted(self.counts().items())]
        lines += [f"  {item.source}: {item.path}: {item.reason}" for item in self.skipped]
        return lines
