"""The one table renderer of the command line: tables that fit the terminal.

Stage: CLI (formats text; prints nothing itself). A table is a list of
:class:`Column` and rows of strings. :func:`render` fits it into the terminal
width (``COLUMNS``, else the terminal, else 100 when the output is piped):
first it wraps the free-text columns down to their minimum width, then it
drops optional columns, least important first, and says which it dropped and
that ``--wide`` shows them. ``wide=True`` prints every column unwrapped,
however wide. The output is plain text, no colour or box drawing, so it reads
the same in a terminal, a pipe or a log file.
"""

from __future__ import annotations

import shutil
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass

#: Width assumed when the output is not a terminal and COLUMNS is not set.
DEFAULT_WIDTH_COLUMNS = 100

_GAP = "  "


@dataclass(frozen=True)
class Column:
    """One column: its header, alignment, whether it may wrap, and how readily it is dropped.

    ``drop_order`` 0 means the column is always shown; among the others, the
    highest is dropped first when the table does not fit. ``wrap`` marks free
    text that may be wrapped onto several lines, down to ``min_width``.
    """

    header: str
    right: bool = False
    wrap: bool = False
    min_width: int = 12
    drop_order: int = 0


def terminal_width_columns() -> int:
    """The width to fit: ``COLUMNS`` when set, else the terminal's, else :data:`DEFAULT_WIDTH_COLUMNS`."""
    return max(40, shutil.get_terminal_size((DEFAULT_WIDTH_COLUMNS, 24)).columns)


def _natural(columns: Sequence[Column], rows: Sequence[Sequence[str]]) -> list[int]:
    return [max([len(col.header)] + [len(row[i]) for row in rows]) for i, col in enumerate(columns)]


def _total(widths: Sequence[int], indent: int) -> int:
    return indent + sum(widths) + len(_GAP) * max(0, len(widths) - 1)


def _squeeze(columns: Sequence[Column], natural: Sequence[int], width: int, indent: int,
             wrap_all: bool = False) -> list[int]:
    """Column widths with the wrappable columns narrowed, each in proportion to its natural width.

    Each wrappable column keeps at least its ``min_width`` (or 6 when ``wrap_all``);
    the others keep their natural width.
    """
    can = [col.wrap or wrap_all for col in columns]
    floors = [min(n, 6 if wrap_all else col.min_width) if ok else n
              for n, col, ok in zip(natural, columns, can, strict=True)]
    if _total(natural, indent) <= width:
        return list(natural)

    def widths_at(scale: float) -> list[int]:
        return [max(f, min(n, int(scale * n))) if ok else n for n, f, ok in zip(natural, floors, can, strict=True)]

    low, high = 0.0, 1.0
    for _ in range(40):  # the largest scale whose table fits
        mid = (low + high) / 2
        if _total(widths_at(mid), indent) <= width:
            low = mid
        else:
            high = mid
    widths = widths_at(low)
    spare = width - _total(widths, indent)
    for i in sorted(range(len(widths)), key=lambda j: natural[j] - widths[j], reverse=True):
        if spare <= 0:
            break
        grow = min(spare, natural[i] - widths[i])
        widths[i] += grow
        spare -= grow
    return widths


def _cell_lines(text: str, width: int) -> list[str]:
    if len(text) <= width:
        return [text]
    return textwrap.wrap(text, width, break_long_words=True, break_on_hyphens=True) or [""]


def render(columns: Sequence[Column], rows: Sequence[Sequence[str]], *, width: int | None = None,
           wide: bool = False, indent: int = 2, rule: bool = False) -> list[str]:
    """The table as lines, each at most ``width`` characters unless ``wide``.

    ``rule`` underlines the header with dashes. A note after the table names
    the columns left out to fit, and ``--wide`` to see them.
    """
    width = terminal_width_columns() if width is None else width
    keep = list(range(len(columns)))
    natural = _natural(columns, rows)
    if wide:
        widths = natural
    else:
        widths = _squeeze(columns, natural, width, indent)
        droppable = sorted((c.drop_order, i) for i, c in enumerate(columns) if c.drop_order > 0)
        while _total(widths, indent) > width and droppable:
            _, gone = droppable.pop()
            keep.remove(gone)
            widths = _squeeze([columns[i] for i in keep], [natural[i] for i in keep], width, indent)
        if _total(widths, indent) > width:  # the last resort: every column may wrap
            widths = _squeeze([columns[i] for i in keep], [natural[i] for i in keep], width, indent,
                              wrap_all=True)
    shown = [columns[i] for i in keep]
    lines: list[str] = []

    def emit(cells: Sequence[str]) -> None:
        wrapped = [_cell_lines(cell, w) for cell, w in zip(cells, widths, strict=True)]
        for n in range(max(len(c) for c in wrapped)):
            parts = []
            for col, cell, w in zip(shown, wrapped, widths, strict=True):
                text = cell[n] if n < len(cell) else ""
                parts.append(text.rjust(w) if col.right else text.ljust(w))
            lines.append((" " * indent + _GAP.join(parts)).rstrip())

    emit([c.header for c in shown])
    if rule:
        lines.append(" " * indent + _GAP.join("-" * w for w in widths))
    for row in rows:
        emit([row[i] for i in keep])
    dropped = [columns[i].header for i in range(len(columns)) if i not in keep]
    if dropped:
        note = f"({len(dropped)} columns left out to fit {width} characters: {', '.join(dropped)}; --wide shows them)"
        lines += fit_text(note, width=width, indent=indent)
    return lines


def fit_text(text: str, *, width: int | None = None, indent: int = 0, hang: int = 2) -> list[str]:
    """A line of prose wrapped to the terminal; continuation lines indented ``hang`` more."""
    width = terminal_width_columns() if width is None else width
    lead = " " * indent
    if len(lead) + len(text.strip()) <= width:
        return [lead + text.strip()]
    return textwrap.wrap(text.strip(), width, initial_indent=lead, subsequent_indent=lead + " " * hang,
                         break_long_words=True, break_on_hyphens=False)


def fit_lines(lines: Sequence[str], *, width: int | None = None, hang: int = 2) -> list[str]:
    """Lines of prose, each longer one wrapped under its own indentation."""
    width = terminal_width_columns() if width is None else width
    out: list[str] = []
    for line in lines:
        if len(line) <= width:
            out.append(line)
            continue
        indent = len(line) - len(line.lstrip(" "))
        out += fit_text(line, width=width, indent=indent, hang=hang)
    return out
