"""ROUGE for generated summaries, and how often a model repeats itself.

`rouge_scores` gives the mean F1 of ROUGE-1, ROUGE-2, ROUGE-L and ROUGE-Lsum over a batch of
prediction/reference pairs, with Porter stemming, as `rouge_score` computes them. ROUGE-Lsum treats every
sentence as its own line, so both sides are split into sentences first with `split_sentences`, a small regex
splitter (nltk's punkt would need a download that offline machines cannot make).

    from shrinktune.measure import rouge_scores
    rouge_scores(["the cat sat."], ["a cat sat."])["rouge1"]
"""

import logging
import re

from rouge_score import rouge_scorer

logger = logging.getLogger(__name__)

ROUGE_KEYS = ("rouge1", "rouge2", "rougeL", "rougeLsum")

# Words whose trailing period rarely ends a sentence; compared lower-cased, without that period.
_ABBREVIATIONS = frozenset(
    {"mr", "mrs", "ms", "dr", "prof", "st", "vs", "etc", "e.g", "i.e", "al", "fig", "eq", "cf", "approx", "u.s"}
)
# A sentence ends at . ! or ?, possibly followed by closing quotes or brackets, then whitespace.
_BOUNDARY = re.compile(r"(?<=[.!?])[\"')\]]*\s+")


def split_sentences(text: str) -> list[str]:
    """Splits text into sentences at terminal punctuation and at existing line breaks.

    A period after a common abbreviation ("e.g.", "Dr.") or a single-letter initial ("J.") does not end a
    sentence. Good enough for ROUGE-Lsum, which only needs sentence boundaries to be roughly right.

    Args:
        text: Any text, possibly already holding one sentence per line.

    Returns:
        The non-empty sentences, stripped, in order.
    """
    sentences: list[str] = []
    for line in text.splitlines():
        start = 0
        for match in _BOUNDARY.finditer(line):
            words = line[start : match.start()].split()
            last_word = words[-1] if words else ""
            stem = last_word.rstrip(".").lower()
            if last_word.endswith(".") and (stem in _ABBREVIATIONS or len(stem) == 1):
                continue
            sentences.append(line[start : match.start()] + match.group().strip())
            start = match.end()
        sentences.append(line[start:])
    return [s.strip() for s in sentences if s.strip()]


def _check_pairs(predictions: list[str], references: list[str]) -> None:
    if len(predictions) != len(references):
        raise ValueError(
            f"rouge_scores needs one reference per prediction, got {len(predictions)} predictions and "
            f"{len(references)} references; pass lists of equal length."
        )
    if not predictions:
        raise ValueError("rouge_scores needs at least one prediction/reference pair, got empty lists.")


def rouge_pair_scores(predictions: list[str], references: list[str]) -> dict[str, list[float]]:
    """ROUGE F1 of each prediction against its reference.

    Args:
        predictions: Generated summaries.
        references: Gold summaries, `references[i]` belonging to `predictions[i]`.

    Returns:
        For each of "rouge1", "rouge2", "rougeL" and "rougeLsum", the F1 in [0, 1] of every pair, in order.

    Raises:
        ValueError: If the lists differ in length or are empty.
    """
    _check_pairs(predictions, references)
    scorer = rouge_scorer.RougeScorer(list(ROUGE_KEYS), use_stemmer=True)
    out: dict[str, list[float]] = {key: [] for key in ROUGE_KEYS}
    for prediction, reference in zip(predictions, references):
        # rougeLsum reads one sentence per line; the other keys ignore line breaks.
        scores = scorer.score(
            "\n".join(split_sentences(reference)), "\n".join(split_sentences(prediction))
        )
        for key in ROUGE_KEYS:
            out[key].append(float(scores[key].fmeasure))
    return out


def rouge_scores(predictions: list[str], references: list[str]) -> dict[str, float]:
    """Mean ROUGE F1 of predictions against their references.

    Args:
        predictions: Generated summaries.
        references: Gold summaries, `references[i]` belonging to `predictions[i]`.

    Returns:
        Mean F1 in [0, 1] under each of "rouge1", "rouge2", "rougeL" and "rougeLsum".

    Raises:
        ValueError: If the lists differ in length or are empty.
    """
    pairs = rouge_pair_scores(predictions, references)
    means = {key: float(sum(values) / len(values)) for key, values in pairs.items()}
    logger.debug("ROUGE over %d pairs: %s", len(predictions), means)
    return means


def distinct_fraction(predictions: list[str]) -> float:
    """Share of predictions that are distinct strings; low values flag a model that says the same thing.

    Args:
        predictions: Generated summaries.

    Returns:
        Number of distinct predictions divided by the number of predictions, in (0, 1].

    Raises:
        ValueError: If `predictions` is empty.
    """
    if not predictions:
        raise ValueError("distinct_fraction needs at least one prediction, got an empty list.")
    return len(set(predictions)) / len(predictions)
