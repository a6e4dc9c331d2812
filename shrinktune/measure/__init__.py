"""Measurement: summary quality (ROUGE), latency, memory and model size.

Imports only torch, transformers, numpy and rouge_score, so it runs wherever a model does.
"""

from shrinktune.measure.latency import LatencyResult, measure_latency
from shrinktune.measure.memory import peak_memory_bytes, tensor_bytes
from shrinktune.measure.params import checkpoint_size_bytes, count_parameters, unique_tensors
from shrinktune.measure.rouge import ROUGE_KEYS, distinct_fraction, rouge_scores, split_sentences

__all__ = [
    "ROUGE_KEYS",
    "LatencyResult",
    "checkpoint_size_bytes",
    "count_parameters",
    "distinct_fraction",
    "measure_latency",
    "peak_memory_bytes",
    "rouge_scores",
    "split_sentences",
    "tensor_bytes",
    "unique_tensors",
]
