"""Measurement: summary quality (ROUGE), latency, memory and model size.

Imports only torch, transformers, numpy and rouge_score, so it runs wherever a model does. The ROUGE names load
rouge_score on first use, so timing and memory measurement work where it is not installed.
"""

from shrinktune.measure.latency import (
    LatencyResult,
    generation_record,
    measure_latency,
    time_encoder,
    time_generation,
)
from shrinktune.measure.memory import peak_memory_bytes, tensor_bytes
from shrinktune.measure.params import checkpoint_size_bytes, count_parameters, unique_tensors

_ROUGE_NAMES = ("ROUGE_KEYS", "distinct_fraction", "rouge_scores", "split_sentences")


def __getattr__(name: str):
    if name in _ROUGE_NAMES:
        from shrinktune.measure import rouge  # lazy on purpose: rouge_score (and nltk) load on first ROUGE use

        return getattr(rouge, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ROUGE_KEYS",
    "LatencyResult",
    "checkpoint_size_bytes",
    "count_parameters",
    "distinct_fraction",
    "generation_record",
    "measure_latency",
    "peak_memory_bytes",
    "rouge_scores",
    "split_sentences",
    "tensor_bytes",
    "time_encoder",
    "time_generation",
    "unique_tensors",
]
