"""BENCHMARKS.md is shared by the bench scripts: each owns the section between its own
`<!-- NAME: begin -->` / `<!-- NAME: end -->` markers and rewrites only that."""

from __future__ import annotations

from pathlib import Path


def markers(name: str) -> tuple[str, str]:
    return f"<!-- {name}: begin -->", f"<!-- {name}: end -->"


def replace_section(path: Path, name: str, body: str) -> None:
    """Put `body` between the markers of section `name` in `path` (appended, with its
    markers, when the file or the section does not exist yet)."""
    begin, end = markers(name)
    section = f"{begin}\n{body}\n{end}"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    if begin in text and end in text:
        before, rest = text.split(begin, 1)
        text = before + section + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    path.write_text(text)


def publish(path: Path, name: str, body: str, write: bool = True) -> None:
    """Print a bench's section and, when `write`, put it in `path` (`replace_section`)."""
    print(body)
    if write:
        replace_section(path, name, body)
