"""The one rule for showing text that dockd did not write itself.

Clip paths and labels come from cameras, names and values from config files,
messages from storage servers: all hostile. Wherever such text is shown to a
person (rich tables, plain lines, console logs, ``status --watch``, error
lines) it goes through :func:`printable` or :func:`text`, at display time,
even if it was escaped when it was stored:

* every character that is not printable (``str.isprintable``: C0 controls
  including ESC, CR, LF and TAB, DEL, C1 controls, bidi overrides and
  isolates, zero-width characters, BOM, line/paragraph separators, lone
  surrogates from undecodable bytes, unassigned code points) is shown as its
  visible Python escape (``\\x1b``, ``\\u202e``), so a name cannot move the
  cursor, recolour the terminal, reorder what is shown or hide itself;
* nothing is ever interpreted as rich markup: :func:`text` returns a
  ``rich.text.Text``, which rich renders literally (``[red]`` stays ``[red]``).

It is the same rule as :func:`dockd.camera.volume.escape` applies to names at scan
time (``isprintable`` + ``unicode_escape``), so applying it to an already
escaped name changes nothing. Backslashes are kept as they are, for that reason.

Pure: no I/O.
"""

from __future__ import annotations

# Error lines quote values from config files and the command line; a 10 MB value must not become a 10 MB line.
MAX_LINE_CHARS = 1000


def _escape_char(c: str) -> str:
    return c.encode("unicode_escape", "backslashreplace").decode("ascii")


def printable(value: object) -> str:
    """``value`` as a string in which every non-printable character is a visible escape."""
    s = value if isinstance(value, str) else str(value)
    if s.isprintable():  # the common case, in C
        return s
    return "".join(c if c.isprintable() else _escape_char(c) for c in s)


def clip(s: str, limit: int = MAX_LINE_CHARS) -> str:
    """``s`` cut to about ``limit`` characters, saying how much was left out."""
    if len(s) <= limit:
        return s
    return f"{s[:limit]}... ({len(s) - limit} more characters)"


def one_line(value: object, limit: int = MAX_LINE_CHARS) -> str:
    """One bounded, printable line (for error messages)."""
    return clip(printable(value), limit)


def json_text(dumped: str) -> str:
    """Escape the non-printable characters left in ``json.dumps(..., ensure_ascii=False)`` output.

    The result is the same JSON value (``\\uXXXX`` escapes, surrogate pairs above the BMP); only
    the newlines and spaces of indentation, which lie outside strings, are kept as they are.
    """
    if dumped.isprintable():
        return dumped
    out = []
    for c in dumped:
        if c.isprintable() or c in "\n ":
            out.append(c)
            continue
        cp = ord(c)
        if cp > 0xFFFF:
            cp -= 0x10000
            out.append(f"\\u{0xD800 + (cp >> 10):04x}\\u{0xDC00 + (cp & 0x3FF):04x}")
        else:
            out.append(f"\\u{cp:04x}")
    return "".join(out)
