"""The command line's one error path: every failure becomes one line on stderr and an exit status.

- Expected failures (bad input, a missing or malformed file, a refused run, an OS error such as a
  full disk, a file-size limit or a permission) -> `splatseg: error: <one line naming the file or
  flag>`, exit 2. Expected means: ValueError (every splatseg error class derives from it),
  OSError, ImportError (a missing optional package), MemoryError and torch's OutOfMemoryError.
- tyro's boxed parse errors -> the same one line, exit 2 (`--help` output is left as it is).
- Anything else is a bug -> `splatseg: internal error: <type>: <message> (rerun with --debug ...)`,
  exit 1. `--debug` (anywhere on the command line) or SPLATSEG_DEBUG=1 prints the traceback too.
"""

from __future__ import annotations

import errno
import os
import re
import sys
import traceback

__all__ = ["EXIT_ERROR", "EXIT_BUG", "EXIT_INTERRUPTED", "debug_requested", "describe", "report", "parse_error_line",
           "empty_value_error"]

EXIT_ERROR = 2
EXIT_BUG = 1
EXIT_INTERRUPTED = 130
DEBUG_FLAG = "--debug"

_OS_HINTS = {
    errno.ENOSPC: "the disk is full: free some space or write elsewhere",
    errno.EDQUOT: "disk quota exceeded: free some space or write elsewhere",
    errno.EFBIG: "file too large for this file system or for the process's file-size limit (ulimit -f)",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EROFS: "read-only file system: write elsewhere",
    errno.ENOENT: "no such file or directory",
    errno.ENOTDIR: "a part of the path is not a directory",
    errno.EISDIR: "is a directory",
    errno.EEXIST: "already exists",
    errno.ENAMETOOLONG: "file name too long",
    errno.EMFILE: "too many open files (ulimit -n)",
    errno.EIO: "input/output error (failing disk or network file system?)",
}
_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")


def debug_requested(args: list[str]) -> tuple[bool, list[str]]:
    """(debug?, args without `--debug`): the flag may stand anywhere; SPLATSEG_DEBUG=1 also counts."""
    debug = DEBUG_FLAG in args or os.environ.get("SPLATSEG_DEBUG", "") not in ("", "0")
    return debug, [a for a in args if a != DEBUG_FLAG]


def _first_line(text: str) -> str:
    for line in str(text).splitlines():
        if line.strip():
            return " ".join(line.split())
    return ""


def _os_error_line(e: OSError) -> str:
    reason = e.strerror or _first_line(str(e)) or type(e).__name__
    hint = _OS_HINTS.get(e.errno)
    if hint and hint.lower() != reason.lower():
        reason = f"{reason} ({hint})"
    names = [str(n) for n in (e.filename, e.filename2) if n is not None]
    return f"{' -> '.join(names)}: {reason}" if names else reason


def describe(e: BaseException) -> tuple[int, str]:
    """(exit status, one-line message without the `splatseg: ...` prefix) for an exception."""
    if isinstance(e, OSError):
        return EXIT_ERROR, _os_error_line(e)
    if isinstance(e, MemoryError) or type(e).__name__ == "OutOfMemoryError":  # torch's (CUDA) OOM is a RuntimeError
        detail = _first_line(str(e))
        return EXIT_ERROR, "out of memory" + (f" ({detail})" if detail else "") + ": try smaller inputs or settings"
    if isinstance(e, (ValueError, ImportError)):
        return EXIT_ERROR, _first_line(str(e)) or type(e).__name__
    detail = _first_line(str(e))
    return EXIT_BUG, f"{type(e).__name__}" + (f": {detail}" if detail else "")


def report(e: BaseException, debug: bool, stream=None) -> int:
    """Prints `e` as one line (plus the traceback when `debug`) and returns the exit status."""
    stream = sys.stderr if stream is None else stream
    code, message = describe(e)
    if debug:
        traceback.print_exception(type(e), e, e.__traceback__, file=stream)
    if code == EXIT_BUG:
        hint = "" if debug else " (unexpected: rerun with --debug or SPLATSEG_DEBUG=1 for the traceback)"
        print(f"splatseg: internal error: {message}{hint}", file=stream)
    else:
        print(f"splatseg: error: {message}", file=stream)
    return code


def parse_error_line(text: str) -> str:
    """tyro's boxed parse error (several lines of box drawing) -> one line.

    The box's first section holds the problem; its title says what kind ("Value error",
    "Required options", "Unrecognized options", "Missing argument"). Missing options are listed
    by flag (the lines indented one level); wrapped lines are joined; the footer ("For full
    helptext, run X --help") becomes a short hint.
    """
    lines = [_ANSI.sub("", line).rstrip() for line in text.splitlines()]
    title, contents = "", []
    if any(line.lstrip().startswith("╭") for line in lines):  # UTF-8 box
        for line in lines:
            stripped = line.strip()
            if stripped.startswith("╭"):
                title = stripped.strip("╭╮─ ").strip()
            elif stripped.startswith("│"):
                content = stripped[1:].rstrip("│").rstrip()
                contents.append(content[1:] if content.startswith(" ") else content)
    else:  # tyro's ASCII layout (stdout not UTF-8): title, a dashed rule, contents indented by two
        rest = [line for line in lines if line.strip()]
        if len(rest) >= 2 and set(rest[1].strip()) == {"-"}:
            title, contents = rest[0].strip(), [line[2:] if line.startswith("  ") else line.strip() for line in rest[2:]]
    sections, current, footer = [], [], []
    in_footer = False
    for content in contents:
        body = content.strip()
        if not body or set(body) <= set("─━-"):
            if current:
                sections.append(current)
                current = []
            continue
        if body.startswith("For full helptext") or in_footer:
            in_footer = True
            footer.append(body)
            continue
        current.append((len(content) - len(content.lstrip()), body))
    if current:
        sections.append(current)
    if not sections:  # a layout this parser does not know: the text, joined
        return " ".join(" ".join(line.split()) for line in lines if line.strip())[:300] or "invalid command line"
    first = sections[0]
    if title.lower().startswith("required"):
        where = next((b[:-1].replace("Missing from ", "") for _, b in first if b.startswith("Missing from")), "")
        indents = sorted({i for i, b in first if b.startswith("-")})
        flags = [b.split()[0] for i, b in first if indents and i == indents[0] and b.startswith("-")]
        message = f"missing {'option' if len(flags) == 1 else 'options'} {', '.join(flags)}" + (f" for `{where}`" if where else "")
    else:
        message = " ".join(b for _, b in first)
    message = " ".join(message.split())
    m = re.search(r"(\S+(?: \S+)*? --help)", " ".join(footer).replace("For full helptext, run:", "").replace(
        "For full helptext, run", "").replace("For full helptext, see", ""))
    if m:
        message += f" (see `{m.group(1).strip()}`)"
    return message


def empty_value_error(args: list[str]) -> str | None:
    """The one-line message for a flag given an empty value (`--out ''`, `--out=`), else None.
    tyro would turn an empty path into Path('.'), the current directory, silently."""
    for i, arg in enumerate(args):
        if arg.startswith("--") and "=" in arg and arg.split("=", 1)[1].strip() == "":
            return f"{arg.split('=', 1)[0]} was given an empty value"
        if arg.strip() == "" and i > 0 and args[i - 1].startswith("--"):
            return f"{args[i - 1]} was given an empty value"
    return None
