"""MkDocs hook: the list of Makefile targets, generated from the Makefile at build time.

``docs/reference/make.md`` holds the marker ``<!-- make-targets -->``; this hook replaces it
with every target that documents itself with a ``## comment`` (what ``make help`` prints), in
the Makefile's order.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from mdtext import cell

MARKER = "<!-- make-targets -->"
#: ``target: prerequisites ## help``, the lines ``make help`` lists.
TARGET = re.compile(r"^([a-zA-Z_-]+):[^\n#]*## (.+)$", re.MULTILINE)


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    """Replace the marker, where a page has it, with the table of targets."""
    del page, files
    if MARKER not in markdown:
        return markdown
    makefile = Path(config["config_file_path"]).resolve().parent / "Makefile"
    return markdown.replace(MARKER, render(makefile.read_text(encoding="utf-8")))


def render(makefile: str) -> str:
    """One row per documented target: its name and its ``##`` help text."""
    rows = [f"| `make {name}` | {cell(text)} |" for name, text in TARGET.findall(makefile)]
    return "\n".join(["| target | what it does |", "|---|---|", *rows])
