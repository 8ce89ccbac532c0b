"""The files of a directory that a Docker build context holds, given the directory's ``.dockerignore``.

``cog build`` hands the project directory to BuildKit as the build context (replicate/cog,
pkg/docker/buildkit.go, ``solveOptFromImageOptions``), and BuildKit drops what ``.dockerignore`` excludes.
Its rules are not gitignore's, so this module follows the Go code that applies them:

- reading the file: moby/patternmatcher, ``ignorefile/ignorefile.go`` (``ReadAll``): a line starting with
  ``#`` is a comment, whitespace is trimmed, ``!`` marks an exception, each pattern is cleaned like Go's
  ``filepath.Clean`` and loses a leading ``/``;
- matching: moby/patternmatcher, ``patternmatcher.go`` (``Pattern.compile``, ``Pattern.match``,
  ``MatchesUsingParentResults``): patterns match the whole path from the context root, ``*`` and ``?`` stop at
  ``/``, ``**`` spans directories, a pattern that matches a directory matches everything in it, and the last
  matching pattern decides. So ``*.pyc`` or ``__pycache__/`` only match at the top level; ``**/*.pyc`` matches
  at any depth;
- walking: tonistiigi/fsutil, ``filter.go`` (``filterFS.Walk``): an excluded directory is not entered unless
  an exception pattern could re-include something inside it.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

_EXACT, _PREFIX, _SUFFIX, _REGEXP = "exact", "prefix", "suffix", "regexp"
# Characters escaped when a pattern becomes a regular expression (patternmatcher's ``shouldEscape``).
_ESCAPED = frozenset(".+()|{}$")
# Characters that make an exception pattern more than a plain path prefix (fsutil's ``patternChars``).
_PATTERN_CHARS = frozenset("*[]?^\\")


def clean(path: str) -> str:
    """Go's ``path.Clean``: no empty or ``.`` elements, ``..`` resolved where it can be, ``.`` if empty."""
    rooted = path.startswith("/")
    parts: list[str] = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if parts and parts[-1] != "..":
                parts.pop()
            elif not rooted:
                parts.append(part)
            continue
        parts.append(part)
    joined = "/".join(parts)
    return "/" + joined if rooted else joined or "."


def read_patterns(text: str) -> list[str]:
    """The patterns of a ``.dockerignore`` file, as ``ignorefile.ReadAll`` returns them."""
    patterns = []
    for number, line in enumerate(text.split("\n")):
        line = line.removesuffix("\r")
        if number == 0:
            line = line.removeprefix("\ufeff")
        if line.startswith("#"):
            continue
        line = line.strip()
        if not line:
            continue
        exception = line.startswith("!")
        if exception:
            line = line[1:].strip()
        if line:
            line = clean(line)
            if len(line) > 1 and line.startswith("/"):
                line = line[1:]
        patterns.append("!" + line if exception else line)
    return patterns


@dataclass
class Pattern:
    """One pattern, compiled the way ``Pattern.compile`` does (exact, prefix, suffix or regexp match)."""

    text: str
    exception: bool
    kind: str = field(init=False)
    regexp: re.Pattern | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        expression, kind, position, step = "^", _EXACT, 0, 0
        text = self.text
        while position < len(text):
            char = text[position]
            position += 1
            if char == "*" and text[position : position + 1] == "*":
                position += 1
                if text[position : position + 1] == "/":
                    position += 1
                if position == len(text):
                    # A trailing ``**`` accepts everything below, as in .gitignore.
                    if kind == _EXACT:
                        kind = _PREFIX
                    else:
                        expression, kind = expression + ".*", _REGEXP
                else:
                    expression, kind = expression + "(.*/)?", _REGEXP
                if step == 0:
                    kind = _SUFFIX
            elif char == "*":
                expression, kind = expression + "[^/]*", _REGEXP
            elif char == "?":
                expression, kind = expression + "[^/]", _REGEXP
            elif char in _ESCAPED:
                expression += "\\" + char
            elif char == "\\":
                if position == len(text):
                    raise ValueError(f"bad .dockerignore pattern {text!r}: it ends with a backslash")
                expression, kind = expression + "\\" + text[position], _REGEXP
                position += 1
            elif char in "[]":
                expression, kind = expression + char, _REGEXP
            else:
                expression += char
            step += 1
        if kind == _REGEXP:
            try:
                self.regexp = re.compile(expression + r"\Z")
            except re.error as error:
                raise ValueError(f"bad .dockerignore pattern {text!r}: {error}") from error
        self.kind = kind

    def match(self, path: str) -> bool:
        if self.kind == _EXACT:
            return path == self.text
        if self.kind == _PREFIX:
            return path.startswith(self.text[:-2])
        if self.kind == _SUFFIX:
            suffix = self.text[2:]
            # ``**/foo`` also matches ``foo`` itself.
            return path.endswith(suffix) or (suffix.startswith("/") and path == suffix[1:])
        return self.regexp.match(path) is not None

    def without_trailing_glob(self) -> str:
        return self.text.removesuffix("/**").removesuffix("/*")


class Matcher:
    """``patternmatcher.PatternMatcher`` over the patterns of one ``.dockerignore``."""

    def __init__(self, patterns: list[str]) -> None:
        self.patterns: list[Pattern] = []
        for text in patterns:
            text = clean(text.strip()) if text.strip() else ""
            if not text:
                continue
            exception = text.startswith("!")
            if exception and text == "!":
                raise ValueError('illegal exclusion pattern: "!"')
            self.patterns.append(Pattern(text[1:] if exception else text, exception))

    @property
    def has_exceptions(self) -> bool:
        return any(pattern.exception for pattern in self.patterns)

    def matches(self, path: str, parent: list[bool] | None) -> tuple[bool, list[bool]]:
        """``MatchesUsingParentResults``: is ``path`` excluded, and each pattern's match for its children.

        ``parent`` is the list returned for the parent directory (``None`` at the top level).
        """
        matched = False
        info = [False] * len(self.patterns)
        for index, pattern in enumerate(self.patterns):
            hit = bool(parent) and parent[index]
            if not hit:
                if pattern.exception != matched:
                    continue
                hit = pattern.match(path)
                if not hit and not parent and "/" in path:
                    # Without the parent's results, a pattern matching any parent directory matches too.
                    folders = path.split("/")[:-1]
                    hit = any(pattern.match("/".join(folders[: depth + 1])) for depth in range(len(folders)))
            info[index] = hit
            if hit:
                matched = not pattern.exception
        return matched, info

    def may_reinclude_below(self, folder: str) -> bool:
        """Whether an exception could bring back something inside an excluded ``folder`` (fsutil's check)."""
        if not self.has_exceptions:
            return False
        exceptions = [pattern.without_trailing_glob() for pattern in self.patterns if pattern.exception]
        if any(_PATTERN_CHARS & set(text) for text in exceptions):
            return True
        return any((text + "/").startswith(folder + "/") for text in exceptions)


def context_paths(root: Path, patterns: list[str]) -> list[str]:
    """Every path (``/``-separated, relative to ``root``) the build context holds: files, links, folders."""
    matcher = Matcher(patterns)
    kept: dict[str, None] = {}

    def walk(folder: Path, relative: str, parent: list[bool] | None, excluded_above: list[str]) -> None:
        for entry in sorted(os.scandir(folder), key=lambda item: item.name):
            path = f"{relative}{entry.name}"
            is_dir = entry.is_dir(follow_symlinks=False)
            excluded, info = matcher.matches(path, parent)
            if excluded and is_dir and not matcher.may_reinclude_below(path):
                continue
            if not excluded:
                # An excluded folder is still created when something inside it is kept.
                kept.update(dict.fromkeys(excluded_above))
                kept[path] = None
            if is_dir:
                walk(Path(entry.path), path + "/", info, [*excluded_above, path] if excluded else [])

    walk(root, "", None, [])
    return list(kept)


def patterns_of(root: Path) -> list[str]:
    """The patterns of ``root/.dockerignore`` (none when the file is absent)."""
    path = root / ".dockerignore"
    return read_patterns(path.read_text(encoding="utf-8")) if path.is_file() else []
