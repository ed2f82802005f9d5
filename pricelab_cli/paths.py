"""What a path names, before anything is read: standard input, a local path, a glob.

The glob rules are one set for local paths and object-store keys: ``*`` and ``?`` stay
within a path segment, ``**`` crosses segments, ``[...]`` is a character class.
"""

from __future__ import annotations

import fnmatch
import re

STDIO = "-"
GLOB_CHARS = "*?["


def is_local(path: str) -> bool:
    """A path on this machine's file system (not standard input, not a URI)."""
    return path != STDIO and "://" not in path


def has_glob(path: str) -> bool:
    """Whether ``path`` holds a wildcard (``*``, ``?`` or ``[``)."""
    return any(ch in path for ch in GLOB_CHARS)


def glob_root(pattern: str) -> str:
    """The folder a pattern starts from: its leading segments without wildcards (``/`` for
    an absolute pattern whose first segment has one, ``""`` for a relative one)."""
    fixed: list[str] = []
    for part in pattern.split("/")[:-1]:
        if has_glob(part):
            break
        fixed.append(part)
    root = "/".join(fixed)
    return "/" if not root and pattern.startswith("/") else root


def glob_regex(pattern: str) -> re.Pattern[str]:
    """A glob over keys: ``**`` crosses ``/``, ``*`` and ``?`` stay within a segment."""
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[" and "]" in pattern[i + 1 :]:
            end = pattern.index("]", i + 1)
            out.append(fnmatch.translate(pattern[i : end + 1])[4:-3])  # the class only
            i = end + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out))
