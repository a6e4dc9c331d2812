"""Reading back the Markdown tables the bench scripts write (import as `markdown_tables`: pytest puts tests/ on the
path)."""

from __future__ import annotations

import itertools


def markdown_tables(text: str) -> dict[str, list[dict[str, str]]]:
    """Each `## ` section's first table, as rows of {column header: cell}."""
    tables = {}
    for section in text.split("\n## ")[1:]:
        title, *lines = section.splitlines()
        first = next((i for i, line in enumerate(lines) if line.startswith("| ")), None)
        if first is None:
            continue
        block = list(itertools.takewhile(lambda line: line.startswith("| "), lines[first:]))
        header, *rows = [[cell.strip() for cell in line.strip().strip("|").split("|")] for line in block]
        tables[title] = [dict(zip(header, row)) for row in rows[1:]]  # rows[0] is the --- line
    return tables
