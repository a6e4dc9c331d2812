"""One document → summary pair, and how its encoder input is written."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Example:
    """A document and its reference summary.

    `aspect` is the facet the summary should cover (ACLSum: challenge / approach / outcome); `None` for plain
    summarization. The encoder reads `format_source(prefix + document, aspect)`; the decoder starts from `prompt`.
    """

    id: str
    document: str
    summary: str
    aspect: str | None = None
    prefix: str = ""  # the task's `source_prefix` (a T5 teacher's task), put before the document in `source`

    @property
    def source(self) -> str:
        return format_source(self.prefix + self.document, self.aspect)

    @property
    def prompt(self) -> str | None:
        return decoder_prompt(self.aspect)


def format_source(document: str, aspect: str | None = None) -> str:
    """The encoder's input text: the aspect, if any, leads so that truncation never cuts it off."""
    return f"{aspect}: {document}" if aspect else document


def decoder_prompt(aspect: str | None) -> str | None:
    """The words the decoder is given after its start token, before it writes the summary: the aspect, if any.

    In the encoder's input alone, a frozen encoder's states barely tell three aspects of one paper apart, and a
    decoder trained on a few hundred pairs then writes the same summary for all three.
    """
    return f"{aspect}:" if aspect else None
