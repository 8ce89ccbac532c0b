"""How Replicate's clients read a prediction's progress from its logs, so tests can read ours the same way.

``PATTERN`` is the regular expression of replicate-python's ``Prediction.Progress``
(``replicate/prediction.py`` in github.com/replicate/replicate-python): the logs are split on newlines and the
last line (whitespace stripped) that matches it from its start gives the percentage, the count done and the
total. tqdm's default format, with nothing before the percentage, is what it matches.
"""

from __future__ import annotations

import re

PATTERN = re.compile(r"^\s*(?P<percentage>\d+)%\s*\|.+?\|\s*(?P<current>\d+)\/(?P<total>\d+)")


def progress_lines(logs: str | None) -> list[tuple[int, int, int]]:
    """``(percentage, current, total)`` of every line that matches, in order."""
    found = []
    for line in (logs or "").split("\n"):
        match = PATTERN.match(line.strip())
        if match:
            found.append((int(match["percentage"]), int(match["current"]), int(match["total"])))
    return found


def client_progress(logs: str | None) -> tuple[int, int, int] | None:
    """What ``Prediction.progress`` reports for these logs: the last matching line, or None."""
    lines = progress_lines(logs)
    return lines[-1] if lines else None
