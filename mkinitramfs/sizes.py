"""The size table a build prints: entries and bytes by part (in parts.ORDER), what strip
removed by part, then the sizes of the archives; and the one way sizes are written."""
from __future__ import annotations

from mkinitramfs import parts
from mkinitramfs.build import BuildResult


def size_table(result: BuildResult) -> str:
    """Entries and bytes by part; with stripping on, the bytes strip removed by part too."""
    sizes = result.image.size_by_part()
    names = [p for p in parts.ORDER if p in sizes] + sorted(p for p in sizes if p not in parts.ORDER)
    removed = result.stripped.removed if result.stripped is not None else None
    header = ("part", "entries", "bytes") + (("stripped",) if removed is not None else ())

    def row(*cells: str, strip_removed: int | None = None) -> tuple[str, ...]:
        if removed is None:
            return cells
        return (*cells, human(strip_removed) if strip_removed else "-")

    rows = [header]
    for name in names:
        n, b = sizes[name]
        rows.append(row(name, str(n), human(b), strip_removed=removed.get(name, 0) if removed is not None else None))
    total_n = sum(n for n, _ in sizes.values())
    total_b = sum(b for _, b in sizes.values())
    rows.append(row("total (content)", str(total_n), human(total_b),
                    strip_removed=result.stripped.total if result.stripped is not None else None))
    width = len(header)
    for label, size in ([("early microcode cpio", result.early_size)] if result.early_size else []) + \
            [("cpio archive", result.cpio_size), ("compressed", result.compressed_size)]:
        rows.append((label, "", human(size)) + ("",) * (width - 3))
    widths = [max(len(r[i]) for r in rows) for i in range(width)]
    lines = []
    for i, r in enumerate(rows):
        cells = [f"{r[0]:<{widths[0]}}"] + [f"{c:>{w}}" for c, w in zip(r[1:], widths[1:], strict=True)]
        lines.append("  ".join(cells).rstrip())
        if i == 0:
            lines.append("-" * (sum(widths) + 2 * (width - 1)))
    if result.stripped is None:
        lines.append("ELF files packed as they are (--no-strip)")
    elif result.stripped.stripped:
        lines.append(f"strip: {len(result.stripped.stripped)} of {result.stripped.checked} ELF files had symbol "
                     f"tables or debug sections, {human(result.stripped.total)} removed")
    else:
        lines.append(f"strip: none of the {result.stripped.checked} ELF files had symbol tables or debug "
                     "sections (already stripped)")
    return "\n".join(lines)


def human(n: int) -> str:
    """Bytes as a person reads them: 512 B, 3.4 KiB, 5.22 MiB."""
    if n < 1024:
        return f"{n} B"
    if n < 1024 * 1024:
        return f"{n / 1024:.1f} KiB"
    return f"{n / 1024 / 1024:.2f} MiB"
