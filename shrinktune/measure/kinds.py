"""How a task's outputs are scored: one `TaskKind` per kind of task (summarization, translation, classification).

Every kind is text to text for the student — the encoder reads the source, the decoder writes the output: a
summary, a translation, or the name of a class (BART's way of classifying with its decoder). Keeping the label a
short target sequence, rather than a head on the decoder's last state, means every compression method (latent
bottleneck, shallow decoders, logit and hidden-state KD, pseudo-labels, weight compression) and every saved-model
path (`generate`, `from_pretrained`, `load_summarizer`) applies to classification unchanged.

A kind names the quality metrics it reports (what a space's objectives and constraints may name), its primary
metric (the one quality floors, "within N %" picks, intervals and paired comparisons use), and scores predictions
against references: corpus figures, plus per-pair additive statistics whose document-resampled sums give the
primary metric again (`shrinktune.measure.intervals.statistic_interval`), so that a corpus metric that is not a
mean of pair scores (BLEU) still gets an exact bootstrap interval.

    from shrinktune.measure.kinds import get_kind
    scored = get_kind("translation").score(["the cat sat"], ["the cat sat down"])
    scored.metrics["bleu"], scored.notes["bleu_signature"]

Metric libraries load on first use (rouge_score, sacrebleu): timing and memory code runs without them.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from shrinktune.errors import UserError
from shrinktune.measure.intervals import Aggregate, mean_of_first, statistic_interval


@dataclass(frozen=True)
class Scores:
    """Predictions scored against references."""

    metrics: dict[str, float]  # corpus figures by metric name, and `<primary>_low` / `<primary>_high`
    pair_stats: np.ndarray  # (pairs, k) additive statistics: the kind's `aggregate` of their sum is the primary metric
    notes: dict[str, str] = field(default_factory=dict)  # how the figures were computed (sacreBLEU's signature)


@dataclass(frozen=True)
class TaskKind:
    """What one kind of task is scored with."""

    name: str
    metrics: tuple[str, ...]  # the quality metrics `score` reports, the primary first
    scorer: Callable[[Sequence[str], Sequence[str], Sequence[str]], Scores]  # (predictions, references, groups)
    aggregate: Aggregate = mean_of_first  # summed pair statistics → the primary metric
    description: str = ""
    signed: bool = False  # its scores carry signatures of how they were computed (`Scores.notes`)

    @property
    def primary(self) -> str:
        """The metric quality floors, picks and intervals are about."""
        return self.metrics[0]

    def signatures(self) -> dict[str, str]:
        """How the kind's metrics are computed, to log beside them (sacreBLEU's signatures; {} for the others).

        Kinds without signatures import nothing here: a submitted job's driver calls this while another node may be
        unpacking the job's files under it, so it must not load a module of the project for the first time."""
        return dict(self.scorer(["a"], ["a"], ["0"]).notes) if self.signed else {}

    def score(self, predictions: Sequence[str], references: Sequence[str],
              groups: Sequence[str] | None = None) -> Scores:
        """Scores `predictions[i]` against `references[i]`; `groups` (each pair's document) make the primary
        metric's interval resample whole documents (default: every pair its own).

        Raises:
            ValueError: If the lists differ in length or are empty.
        """
        if len(predictions) != len(references):
            raise ValueError(f"{self.name} scoring needs one reference per prediction, got {len(predictions)} "
                             f"predictions and {len(references)} references.")
        if not predictions:
            raise ValueError(f"{self.name} scoring needs at least one prediction/reference pair.")
        groups = list(groups) if groups is not None else [str(i) for i in range(len(predictions))]
        return self.scorer(predictions, references, groups)


def _with_interval(kind_primary: str, metrics: dict[str, float], stats: np.ndarray, groups: Sequence[str],
                   aggregate: Aggregate) -> dict[str, float]:
    interval = statistic_interval(stats, groups, aggregate)
    return {**metrics, f"{kind_primary}_low": interval.low, f"{kind_primary}_high": interval.high}


# --- summarization: ROUGE -------------------------------------------------------------------------------------------


def _score_summaries(predictions: Sequence[str], references: Sequence[str], groups: Sequence[str]) -> Scores:
    from shrinktune.measure.rouge import ROUGE_KEYS, rouge_pair_scores  # lazy: rouge_score and nltk load here

    pairs = rouge_pair_scores(list(predictions), list(references))
    metrics = {key: float(np.mean(pairs[key])) for key in ROUGE_KEYS}
    stats = np.asarray(pairs["rouge1"], dtype=float)[:, None]
    metrics = _with_interval("rouge1", metrics, stats, groups, mean_of_first)
    second = statistic_interval(np.asarray(pairs["rouge2"], dtype=float)[:, None], groups, mean_of_first)
    metrics.update(rouge2_low=second.low, rouge2_high=second.high)
    return Scores(metrics, stats)


# --- translation: sacreBLEU's BLEU and chrF, on detokenized text ------------------------------------------------------


def _bleu():
    from sacrebleu.metrics import BLEU  # lazy: only translation tasks need sacrebleu

    return BLEU()


def _bleu_aggregate(sums: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Corpus BLEU from summed sentence statistics (sys_len, ref_len, matches × 4, totals × 4), as sacreBLEU's own
    paired bootstrap computes it."""
    bleu = _bleu()
    return np.array([bleu._compute_score_from_stats(list(row)).score for row in sums])


def _score_translations(predictions: Sequence[str], references: Sequence[str], groups: Sequence[str]) -> Scores:
    from sacrebleu.metrics import CHRF

    bleu, chrf = _bleu(), CHRF()
    hypotheses, refs = [p.strip() for p in predictions], [[r.strip() for r in references]]
    corpus_bleu, corpus_chrf = bleu.corpus_score(hypotheses, refs), chrf.corpus_score(hypotheses, refs)
    # the per-sentence statistics sacreBLEU's significance tests resample: their sum gives the corpus BLEU exactly
    stats = np.asarray(bleu._extract_corpus_statistics(hypotheses, refs), dtype=float)
    metrics = _with_interval("bleu", {"bleu": float(corpus_bleu.score), "chrf": float(corpus_chrf.score)}, stats,
                             groups, _bleu_aggregate)
    return Scores(metrics, stats, {"bleu_signature": str(bleu.get_signature()),
                                   "chrf_signature": str(chrf.get_signature())})


# --- classification: the decoder writes the label's name ------------------------------------------------------------


def normalize_label(text: str) -> str:
    """A generated or reference label compared loosely: case, accents, punctuation and spacing ignored."""
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode().lower()
    return " ".join(re.sub(r"[^a-z0-9]+", " ", text).split())


def _score_labels(predictions: Sequence[str], references: Sequence[str], groups: Sequence[str]) -> Scores:
    gold = [normalize_label(r) for r in references]
    guess = [normalize_label(p) for p in predictions]
    labels = sorted(set(gold))
    correct = np.array([g == p for g, p in zip(gold, guess)], dtype=float)
    f1s = []
    for label in labels:  # macro-F1 over the classes the references hold
        tp = sum(1 for g, p in zip(gold, guess) if g == label and p == label)
        predicted, actual = sum(1 for p in guess if p == label), sum(1 for g in gold if g == label)
        f1s.append(2 * tp / (predicted + actual) if predicted + actual else 0.0)
    known = set(labels)
    metrics = {"accuracy": float(correct.mean()), "macro_f1": float(np.mean(f1s)),
               "invalid_fraction": float(np.mean([p not in known for p in guess]))}
    stats = correct[:, None]
    return Scores(_with_interval("accuracy", metrics, stats, groups, mean_of_first), stats)


KINDS: dict[str, TaskKind] = {
    kind.name: kind
    for kind in (
        TaskKind("summarization", ("rouge1", "rouge2", "rougeL", "rougeLsum"), _score_summaries,
                 description="ROUGE-1/2/L/Lsum F1 (rouge-score, Porter stemming), mean over pairs"),
        TaskKind("translation", ("bleu", "chrf"), _score_translations, _bleu_aggregate,
                 description="sacreBLEU corpus BLEU and chrF (0-100) on detokenized text; signatures logged",
                 signed=True),
        TaskKind("classification", ("accuracy", "macro_f1", "invalid_fraction"), _score_labels,
                 description="accuracy and macro-F1 of the label the decoder writes (a name outside the label set "
                             "counts as wrong; its share is invalid_fraction)"),
    )
}


QUALITY_METRICS = frozenset(metric for kind in KINDS.values() for metric in kind.metrics)


def is_quality_key(key: str) -> bool:
    """Whether a metric name is a quality figure of some kind (its interval bounds included), not a cost."""
    base = key.removesuffix("_low").removesuffix("_high")
    return key in QUALITY_METRICS or (base != key and base in QUALITY_METRICS)


def get_kind(name: str) -> TaskKind:
    """The task kind called `name`; one clear error naming the known ones otherwise."""
    if name not in KINDS:
        raise UserError(f"unknown task kind {name!r}; known kinds: {', '.join(KINDS)}.")
    return KINDS[name]
