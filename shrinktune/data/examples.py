"""One document → summary pair, and how its encoder input is written."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Example:
    """A document and its reference summary.

    `aspect` is the facet the summary should cover (ACLSum: challenge / approach / outcome); `None` for plain
    summarization. The encoder reads `format_source(document, aspect)`.
    """

    id: str
    document: str
    summary: str
    aspect: str | None = None

    @property
    def source(self) -> str:
        return format_source(self.document, self.aspect)


def format_source(document: str, aspect: str | None = None) -> str:
    """The encoder's input text: the aspect, if any, leads so that truncation never cuts it off."""
    return f"{aspect}: {document}" if aspect else document
