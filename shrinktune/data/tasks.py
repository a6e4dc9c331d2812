"""The task registry: what a search-space file's `task:` names.

A task says where the pairs come from and how long inputs and summaries are. The embedded default,
`summarization`, reads ACLSum from the installed `aclsum` package and needs no network; hub-backed tasks read
`datasets` ids (or a local copy of them) through `shrinktune.data.hub`.
"""

from __future__ import annotations

from dataclasses import dataclass

from shrinktune.data.aclsum import ASPECTS, load_aclsum
from shrinktune.data.examples import Example
from shrinktune.data.hub import load_pairs
from shrinktune.errors import UserError

SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class Task:
    """A summarization task."""

    name: str
    description: str
    dataset: str  # "aclsum" (embedded) or a `datasets` id / local folder
    dataset_config: str | None = None  # `datasets` configuration, e.g. "3.0.0"
    document_column: str = "document"  # hub datasets: column with the source text
    summary_column: str = "summary"  # hub datasets: column with the reference summary
    max_source_tokens: int = 256  # encoder input is truncated to this many tokens
    max_target_tokens: int = 64  # training targets are truncated to this many tokens
    aspects: tuple[str, ...] = ()  # the facets its summaries are asked for (`Example.aspect`); () = plain summaries


TASKS: dict[str, Task] = {
    task.name: task
    for task in (
        Task(
            name="summarization",
            description="ACLSum aspect summaries (embedded, offline): paper → challenge / approach / outcome",
            dataset="aclsum",
            aspects=ASPECTS,
        ),
        Task(
            name="cnn_dailymail",
            description="CNN/DailyMail news highlights (hub: cnn_dailymail 3.0.0)",
            dataset="cnn_dailymail",
            dataset_config="3.0.0",
            document_column="article",
            summary_column="highlights",
            max_source_tokens=1024,
            max_target_tokens=142,
        ),
        Task(
            name="xsum",
            description="XSum one-sentence BBC summaries (hub: EdinburghNLP/xsum)",
            dataset="EdinburghNLP/xsum",
            max_source_tokens=1024,
            max_target_tokens=62,
        ),
    )
}


def get_task(name: str) -> Task:
    """The registered task called `name`; a clear error naming the known ones otherwise."""
    if name not in TASKS:
        raise UserError(f"unknown task {name!r}; known tasks: {', '.join(sorted(TASKS))}.")
    return TASKS[name]


def load_task_splits(
    task: Task, splits: tuple[str, ...] = SPLITS, limit: int | None = None
) -> dict[str, list[Example]]:
    """The task's pairs by split, each cut to its first `limit` pairs when given."""
    out = {}
    for split in splits:
        if task.dataset == "aclsum":
            examples = load_aclsum(split)
            out[split] = examples[:limit] if limit else examples
        else:
            out[split] = load_pairs(
                task.dataset,
                split,
                config=task.dataset_config,
                document_column=task.document_column,
                summary_column=task.summary_column,
                limit=limit,
            )
    return out
