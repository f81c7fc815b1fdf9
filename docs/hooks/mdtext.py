"""Text for the generated pages: what the reference hooks of this folder share (not a hook).

MkDocs puts a hook's folder on ``sys.path`` while it loads the hook, so the hooks import this
module as ``mdtext``.
"""

from __future__ import annotations

import re

_CODE_SPAN = re.compile(r"(`[^`]*`)")


def cell(text: str) -> str:
    """``text`` on one line, safe in a Markdown table cell or paragraph.

    Outside code spans, ``<`` and ``>`` become entities (``/retrain/<job_id>`` is text, not an
    HTML tag) and ``|`` is escaped (not a column break); code spans are left as they are.
    """
    parts = _CODE_SPAN.split(" ".join(text.split()))
    return "".join(part if part.startswith("`") else _escape(part) for part in parts)


def _escape(text: str) -> str:
    return text.replace("<", "&lt;").replace(">", "&gt;").replace("|", "\\|")
