"""The task registry: what a search-space file's `task:` names.

A task says what kind it is (summarization, translation, classification: `shrinktune.measure.kinds`, which scores
it), where the pairs come from and how long inputs and outputs are. Every kind is text to text: a translation is the
"summary" of its source sentence, a class the name the decoder writes. The embedded defaults, `summarization` and
`classification`, read ACLSum from the installed `aclsum` package and need no network; hub-backed tasks read
`datasets` ids (or a local copy of them) through `shrinktune.data.hub`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace

from shrinktune.data.aclsum import ASPECTS, SENTENCE_LABELS, load_aclsum, load_aclsum_sentences
from shrinktune.data.examples import Example
from shrinktune.data.hub import load_labelled, load_pairs, load_translation_pairs
from shrinktune.errors import UserError

SPLITS = ("train", "validation", "test")


KINDS = ("summarization", "translation", "classification")  # scored by shrinktune.measure.kinds


@dataclass(frozen=True)
class Task:
    """A text-to-text task: summaries, translations or class names."""

    name: str
    description: str
    dataset: str  # "aclsum" / "aclsum-sentences" (embedded) or a `datasets` id / local folder
    dataset_config: str | None = None  # `datasets` configuration, e.g. "3.0.0"
    document_column: str = "document"  # hub datasets: column with the source text (classification: the text)
    summary_column: str = "summary"  # hub datasets: column with the reference (classification: the label)
    max_source_tokens: int = 256  # encoder input is truncated to this many tokens
    max_target_tokens: int = 64  # training targets are truncated to this many tokens
    aspects: tuple[str, ...] = ()  # the facets its summaries are asked for (`Example.aspect`); () = plain summaries
    kind: str = "summarization"  # summarization | translation | classification
    source_language: str | None = None  # translation: the source's language code (a column or `translation` key)
    target_language: str | None = None  # translation: the target's
    labels: tuple[str, ...] = ()  # classification: the class names, when known up front
    source_prefix: str = ""  # put before every source text: a T5 teacher's task, e.g. "translate English to French: "
    splits: tuple[tuple[str, str], ...] = ()  # (split, where it is read) for a dataset without it: "train[:1000]"

    def split_source(self, split: str) -> str:
        """Where the dataset's `split` is read: the task's `splits` entry (datasets' slice syntax), else itself."""
        return dict(self.splits).get(split, split)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise UserError(f"task {self.name!r}: unknown kind {self.kind!r}; kinds: {', '.join(KINDS)}.")


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
            name="classification",
            description="ACLSum sentences (embedded, offline): sentence → challenge / approach / outcome / none, "
                        "from the papers' highlights",
            dataset="aclsum-sentences",
            kind="classification",
            labels=SENTENCE_LABELS,
            max_source_tokens=96,
            max_target_tokens=4,
        ),
        Task(
            name="wmt16-ro-en",
            description="WMT16 Romanian → English news (hub: wmt16 ro-en)",
            dataset="wmt16",
            dataset_config="ro-en",
            kind="translation",
            source_language="ro",
            target_language="en",
            max_source_tokens=128,
            max_target_tokens=128,
        ),
        Task(
            name="opus_books-en-fr",
            description="OPUS books English → French (hub: Helsinki-NLP/opus_books en-fr)",
            dataset="Helsinki-NLP/opus_books",
            dataset_config="en-fr",
            kind="translation",
            source_language="en",
            target_language="fr",
            max_source_tokens=128,
            max_target_tokens=128,
            # One split on the hub, ordered by book: held-out pairs are the first books' (no book in two splits
            # but at the two boundaries).
            splits=(("validation", "train[:1000]"), ("test", "train[1000:2000]"), ("train", "train[2000:]")),
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


# What a space file's `task:` mapping may set: a registered task to start from (`base`), then any of its fields.
# `text_column` / `label_column` are a classification dataset's names for `document_column` / `summary_column`.
SPEC_KEYS = ("base", "name", "kind", "dataset", "dataset_config", "document_column", "summary_column", "text_column",
             "label_column", "source_language", "target_language", "labels", "max_source_tokens", "max_target_tokens",
             "source_prefix", "splits")
_TEXT = ("name", "dataset", "dataset_config", "document_column", "summary_column", "text_column", "label_column",
         "source_language", "target_language")


def task_problems(spec) -> list[str]:
    """Every problem of a space file's `task:` — a registered task's name, or a mapping of a task's fields (on top
    of a registered `base`) — each naming its key and the fix."""
    if isinstance(spec, str):
        return [] if spec in TASKS else [f"task {spec!r} is unknown; known tasks: {', '.join(sorted(TASKS))}"]
    if not isinstance(spec, dict):
        return [f"task must name a task (e.g. summarization) or map a task's fields (kind, dataset, ...), got {spec!r}"]
    problems = [f"task.{key} is not a task field; fields: {', '.join(SPEC_KEYS)}" for key in spec
                if key not in SPEC_KEYS]
    base = spec.get("base")
    if base is not None and base not in TASKS:
        problems.append(f"task.base {base!r} is unknown; known tasks: {', '.join(sorted(TASKS))}")
    if base is None and not spec.get("dataset"):
        problems.append("task needs a dataset (a hub id or a local folder) or a base task to start from")
    for key in _TEXT:
        if key in spec and (not isinstance(spec[key], str) or not spec[key]):
            problems.append(f"task.{key} must be a non-empty string, got {spec[key]!r}")
    splits = spec.get("splits")
    if splits is not None and (not isinstance(splits, dict) or not splits
                               or any(k not in SPLITS or not isinstance(v, str) or not v for k, v in splits.items())):
        problems.append("task.splits must map train / validation / test to where each is read, in datasets' slice "
                        f"syntax (e.g. {{validation: 'train[:1000]', train: 'train[1000:]'}}), got {splits!r}")
    if "source_prefix" in spec and not isinstance(spec["source_prefix"], str):
        problems.append(f"task.source_prefix must be text (a T5 teacher's task, e.g. 'summarize: '), got "
                        f"{spec['source_prefix']!r}")
    for key in ("max_source_tokens", "max_target_tokens"):
        if key in spec and (not isinstance(spec[key], int) or isinstance(spec[key], bool) or spec[key] < 1):
            problems.append(f"task.{key} must be an integer ≥ 1, got {spec[key]!r}")
    if "labels" in spec and (not isinstance(spec["labels"], list) or not spec["labels"]
                             or not all(isinstance(label, str) and label for label in spec["labels"])):
        problems.append(f"task.labels must list the class names, got {spec['labels']!r}")
    kind = spec.get("kind", TASKS[base].kind if base in TASKS else "summarization")
    if kind not in KINDS:
        problems.append(f"task.kind must be one of {', '.join(KINDS)}, got {kind!r}")
    inherited = TASKS[base] if base in TASKS else None
    if kind == "translation":
        for key in ("source_language", "target_language"):
            if not spec.get(key) and not (inherited and getattr(inherited, key)):
                problems.append(f"task.{key} must name the {key.split('_')[0]} language of a translation dataset by "
                                "its code (a column, or a key of its `translation` column), e.g. source_language: ro, "
                                "target_language: en")
    if kind != "classification" and ("text_column" in spec or "label_column" in spec):
        problems.append("task.text_column / task.label_column are a classification dataset's; a "
                        f"{kind} task names document_column / summary_column")
    return problems


def get_task(spec: str | dict) -> Task:
    """The task a space file's `task:` names: a registered task, or a mapping of fields on top of a registered
    `base` (a hub id or local folder, its columns, its language pair ...). One clear error otherwise.

    Raises:
        UserError: An unknown task, or a mapping with problems (all of them, in one message).
    """
    if isinstance(spec, str) and spec not in TASKS:
        raise UserError(f"unknown task {spec!r}; known tasks: {', '.join(sorted(TASKS))}.")
    problems = task_problems(spec)
    if problems:
        raise UserError("; ".join(problems) + ".")
    if isinstance(spec, str):
        return TASKS[spec]
    fields = {k: v for k, v in spec.items() if k not in ("base", "text_column", "label_column")}
    kind = spec.get("kind", TASKS[spec["base"]].kind if spec.get("base") else "summarization")
    if kind == "classification":
        fields["document_column"] = spec.get("text_column", spec.get("document_column", "text"))
        fields["summary_column"] = spec.get("label_column", spec.get("summary_column", "label"))
    if "labels" in fields:
        fields["labels"] = tuple(fields["labels"])
    base = TASKS[spec["base"]] if spec.get("base") else None
    if "splits" in fields:  # on top of the base's: a base reading validation from train keeps its train slice
        fields["splits"] = tuple({**dict(base.splits if base else ()), **fields["splits"]}.items())
    if base is None:
        return Task(**{"name": "custom", "description": f"{kind} on {spec['dataset']}", **fields})
    return replace(base, **{"description": f"{base.description}, as the space file sets it", **fields})


def task_param(spec: str | dict) -> str:
    """A task spec as an MLflow parameter: the registered name, or the mapping as JSON (`task_spec` reads it)."""
    return spec if isinstance(spec, str) else json.dumps(spec, sort_keys=True)


def task_spec(param: str) -> str | dict:
    """The task spec an MLflow parameter holds (`task_param`)."""
    return json.loads(param) if param.lstrip().startswith("{") else param


def task_name(spec: str | dict) -> str:
    """A task spec as one word for logs and MLflow: the registered name, else the mapping's name / base / dataset."""
    if isinstance(spec, str):
        return spec
    return str(spec.get("name") or spec.get("base") or spec.get("dataset") or "custom")


def load_task_splits(
    task: Task, splits: tuple[str, ...] = SPLITS, limit: int | None = None
) -> dict[str, list[Example]]:
    """The task's pairs by split, each cut to its first `limit` pairs when given; each carries the task's
    `source_prefix`, which its `source` (the encoder's input) puts before the document."""
    out = {}
    for split in splits:
        where = task.split_source(split)
        if task.dataset in ("aclsum", "aclsum-sentences"):
            examples = load_aclsum(split) if task.dataset == "aclsum" else load_aclsum_sentences(split)
            out[split] = examples[:limit] if limit else examples
        elif task.kind == "translation":
            out[split] = load_translation_pairs(task.dataset, where, source_language=task.source_language,
                                                target_language=task.target_language, config=task.dataset_config,
                                                limit=limit)
        elif task.kind == "classification":
            out[split] = load_labelled(task.dataset, where, text_column=task.document_column,
                                       label_column=task.summary_column, config=task.dataset_config, limit=limit)
        else:
            out[split] = load_pairs(
                task.dataset,
                where,
                config=task.dataset_config,
                document_column=task.document_column,
                summary_column=task.summary_column,
                limit=limit,
            )
        if task.source_prefix:
            out[split] = [replace(e, prefix=task.source_prefix) for e in out[split]]
    return out
