"""Matching a device's MODALIAS (or a kernel request such as fs-xfs) against the patterns
of modules.alias, as kmod does: fnmatch(3) patterns, every module whose pattern matches.

The image's modules.alias holds thousands of patterns (a generic image: about 25,000), and
pyinit matches every MODALIAS of the machine against them at boot; the builder resolves
names the same way. `AliasIndex` indexes the patterns by their literal prefix (the text
before the first wildcard), so a lookup tries a handful of them, not all. Pure.
"""
from __future__ import annotations

TYPE_CHECKING = False  # not typing's: PID 1 does not import typing (pyinit/context.py)
if TYPE_CHECKING:
    from collections.abc import Iterable

_WILD = "*?[\\"


def _first_wild(pattern: str) -> int:
    # Four str.find() calls in C rather than a Python loop over every character: a generic
    # image's modules.alias has ~3,200 patterns to index at boot.
    n = len(pattern)
    for c in _WILD:
        i = pattern.find(c, 0, n)
        if i >= 0:
            n = i
    return n


def glob_match(pattern: str, text: str) -> bool:
    """fnmatch(3) without flags: * ? [set] [!set] and backslash escapes; whole-string match.
    (The fnmatch module compiles each pattern into a regular expression: `re` costs PID 1
    its import, and compiling thousands of patterns took the builder over a second.)"""
    p = t = 0
    star_p = star_t = -1
    np, nt = len(pattern), len(text)
    while t < nt:
        if p < np:
            c = pattern[p]
            if c == "*":
                star_p, star_t = p, t
                p += 1
                continue
            if c == "?":
                p += 1
                t += 1
                continue
            if c == "[":
                end, ok = _match_class(pattern, p, text[t])
                if end is not None:
                    if ok:
                        p, t = end, t + 1
                        continue
                elif text[t] == "[":  # an unclosed [ is a literal
                    p += 1
                    t += 1
                    continue
            else:
                if c == "\\" and p + 1 < np:
                    p += 1
                    c = pattern[p]
                if c == text[t]:
                    p += 1
                    t += 1
                    continue
        if star_p < 0:
            return False
        star_t += 1
        p, t = star_p + 1, star_t
    while p < np and pattern[p] == "*":
        p += 1
    return p == np


def _match_class(pattern: str, p: int, ch: str) -> tuple[int | None, bool]:
    """Match ch against the [set] at pattern[p]; returns (index after it, matched) or
    (None, False) when the set is not closed."""
    i = p + 1
    negate = i < len(pattern) and pattern[i] in "!^"
    if negate:
        i += 1
    matched = False
    first = True
    while i < len(pattern) and (pattern[i] != "]" or first):
        first = False
        lo = pattern[i]
        if i + 2 < len(pattern) and pattern[i + 1] == "-" and pattern[i + 2] != "]":
            if lo <= ch <= pattern[i + 2]:
                matched = True
            i += 3
        else:
            if lo == ch:
                matched = True
            i += 1
    if i >= len(pattern):
        return None, False
    return i + 1, matched != negate


# Aliases with a colon that are not a device's MODALIAS: names the kernel asks for.
_NAME_ALIASES = ("devname:", "symbol:")


def is_device_alias(pattern: str) -> bool:
    """A bus device's MODALIAS pattern ("pci:v...", "virtio:d...", "acpi*:PNP0700:*"), not a
    name the kernel requests by itself ("fs-ext4", "crypto-crc32c", "char-major-10-229",
    "devname:btrfs-control")."""
    return ":" in pattern and not pattern.startswith(_NAME_ALIASES)


class AliasIndex:
    """modules.alias, indexed by each pattern's literal prefix (see the module doc)."""

    __slots__ = ("by_prefix", "count", "lengths")

    def __init__(self, pairs: Iterable[tuple[str, str]] = ()) -> None:
        self.by_prefix: dict[str, list[tuple[str, str]]] = {}
        self.lengths: list[int] = []
        self.count = 0
        for pattern, module in pairs:
            self.add(pattern, module)

    def add(self, pattern: str, module: str) -> None:
        n = _first_wild(pattern)
        key = pattern[:n]
        bucket = self.by_prefix.get(key)
        if bucket is None:
            self.by_prefix[key] = bucket = []
            if n not in self.lengths:
                self.lengths.append(n)
                self.lengths.sort()
        bucket.append((pattern, module))
        self.count += 1

    def lookup(self, alias: str) -> list[str]:
        """Modules whose pattern matches `alias`, in file order within a prefix, no repeats."""
        out: list[str] = []
        for n in self.lengths:
            if n > len(alias):
                break
            bucket = self.by_prefix.get(alias[:n])
            if not bucket:
                continue
            for pattern, module in bucket:
                if module not in out and ((len(pattern) == n and pattern == alias) or glob_match(pattern, alias)):
                    out.append(module)
        return out
