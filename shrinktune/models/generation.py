"""How summaries are generated: one frozen record, applied to `model.generation_config` and logged with results.

Every summary the project generates goes through `generate(model, **inputs)`: `model.generate` with, when the
settings ask for it, a source-copy bias (`SourceCopyBias`) — a decoding prior toward the source's words and word
sequences, for small decoders that have not learned to copy (the embedded teacher, trained on 300 pairs). The bias
is part of the settings, so the teacher and every student of a search decode alike, and it is saved with each
checkpoint's `generation_config`.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

import torch
from transformers import LogitsProcessor, LogitsProcessorList

from shrinktune.errors import ConfigError
from shrinktune.settings import check, integer, number


@dataclass(frozen=True)
class GenerationSettings:
    """Decoding settings shared by the teacher and every student of a search, so their ROUGE compares."""

    num_beams: int = integer(1, "beams of beam search (1 = greedy)", low=1)
    max_new_tokens: int = integer(48, "longest summary, in tokens", low=1)
    min_new_tokens: int = integer(0, "shortest summary, in tokens", low=0)
    no_repeat_ngram_size: int = integer(3, "no n-gram of this size twice in a summary (0 = off)", low=0)
    length_penalty: float = number(1.0, "> 1 favours longer beams (beam search only)")
    source_token_bias: float = number(
        0.0, "added to the log-probability of every word of the source (0 = off; see `SourceCopyBias`)", low=0)
    source_continuation_bias: float = number(
        0.0, "added to that of each word that follows the last generated one somewhere in the source (0 = off)",
        low=0)

    def __post_init__(self):
        check(self)
        if self.min_new_tokens > self.max_new_tokens:
            raise ConfigError(f"generation min_new_tokens ({self.min_new_tokens}) must be ≤ max_new_tokens "
                              f"({self.max_new_tokens}).")

    def apply(self, model) -> None:
        """Writes these settings into `model.generation_config` (transformers 5 keeps them there, not in config)."""
        for key, value in asdict(self).items():
            setattr(model.generation_config, key, value)
        # A config derived from the model's config drops attributes transformers does not know when reloaded (the
        # source biases); these settings are the user's, so it is no longer that.
        model.generation_config._from_model_config = False
        if self.num_beams == 1:
            model.generation_config.length_penalty = 1.0  # only meaningful for beams; avoids a warning

    def as_dict(self) -> dict:
        return asdict(self)


def decode_summaries(tokenizer, ids) -> list[str]:
    """Generated ids → text, with WordPiece's spaced hyphens rejoined (`state - of - the - art` →
    `state-of-the-art`)."""
    texts = tokenizer.batch_decode(ids, skip_special_tokens=True)
    return [re.sub(r"(?<=\w) - (?=\w)", "-", text).strip() for text in texts]


def prompt_token_ids(tokenizer, prompt: str | None) -> list[int]:
    """The token ids of a decoder prompt (see `shrinktune.data.examples.decoder_prompt`), without special tokens."""
    return tokenizer(prompt, add_special_tokens=False)["input_ids"] if prompt else []


def decoder_start_id(model) -> int | None:
    """The token an encoder-decoder's generation starts from (None if the model names none)."""
    start = getattr(model.generation_config, "decoder_start_token_id", None)
    start = getattr(model.config, "decoder_start_token_id", None) if start is None else start
    return None if start is None else int(start)


class SourceCopyBias(LogitsProcessor):
    """A source-copy prior that leaves the model's own chance of stopping alone.

    Among the words (every token but the end tokens `stop_ids`), a token of the row's source gets `token_bias` added
    to its log-probability, and a token that follows an occurrence of the last generated token in the source
    (a source bigram) gets `continuation_bias` more; the words are then renormalised to the probability the model
    left them. The end tokens keep the model's log-probability, so a summary stops when its model would stop: a bias
    on the words alone would keep weak models from stopping, and make them slow as well as poor.

    A decoder that cannot copy (its cross-attention too diffuse to point at a source word) still ranks source words
    high among its candidates; the bias tips it toward them. Tokens in `ignore_ids` (padding, start) are never
    biased. Rows of beam search (`batch × beams`) are matched to their source by `repeat_interleave`, the order in
    which `generate` expands its inputs. Returns log-probabilities, which greedy search and beam search use as is.
    """

    def __init__(self, source_ids: torch.Tensor, token_bias: float, continuation_bias: float, ignore_ids=(),
                 stop_ids=()):
        self.source_ids = source_ids  # (batch, source_len)
        self.token_bias, self.continuation_bias = float(token_bias), float(continuation_bias)
        self.stop_ids = sorted({int(i) for i in stop_ids if i is not None})
        self.ignore_ids = sorted({int(i) for i in ignore_ids if i is not None} | set(self.stop_ids))
        # (source per score row, token bias per score row), built at the first step
        self._rows: tuple[torch.Tensor, torch.Tensor] | None = None

    def rows(self, source_ids: torch.Tensor, rows: int, vocab: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        """(each score row's source (rows, source_len), its token bias (rows, vocab)) for `source_ids`."""
        if rows % source_ids.shape[0]:
            raise ValueError(f"SourceCopyBias: {rows} score rows do not expand {source_ids.shape[0]} sources")
        source = source_ids.to(device).repeat_interleave(rows // source_ids.shape[0], dim=0)
        static = torch.zeros(rows, vocab, dtype=torch.float32, device=device).scatter_(1, source, self.token_bias)
        static[:, self.ignore_ids] = 0
        return source, static

    def _per_row(self, scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self._rows is None or self._rows[0].shape[0] != scores.shape[0]:
            self._rows = self.rows(self.source_ids, scores.shape[0], scores.shape[1], scores.device)
        return self._rows

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        source, bias = self._per_row(scores)
        return self.apply(scores, source, bias, input_ids[:, -1:])

    def apply(self, scores: torch.Tensor, source: torch.Tensor, bias: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
        """The biased log-probabilities, from the rows' sources and token biases (`rows`) and their last generated
        token `last` (rows, 1): tensor operations only, so that a compiled decoder step can run it."""
        if self.continuation_bias:
            follows = (source[:, :-1] == last).float() * self.continuation_bias
            continuation = torch.zeros_like(bias).scatter_reduce_(1, source[:, 1:], follows, reduce="amax")
            continuation[:, self.ignore_ids] = 0
            bias = bias + continuation
        log_probs = torch.log_softmax(scores.float(), dim=-1)
        words = log_probs + bias
        if not self.stop_ids:
            return torch.log_softmax(words, dim=-1).to(scores.dtype)
        stop = log_probs[:, self.stop_ids]  # (rows, stops): kept as the model gave them
        words[:, self.stop_ids] = float("-inf")
        word_mass = torch.log1p(-torch.logsumexp(stop, dim=-1, keepdim=True).exp().clamp(max=1.0))
        words = words - torch.logsumexp(words, dim=-1, keepdim=True).clamp(min=torch.finfo(words.dtype).min) + word_mass
        words[:, self.stop_ids] = stop
        return words.to(scores.dtype)

    def constants(self) -> tuple:
        """What besides the sources decides the bias (equal for every call of one model's settings)."""
        return self.token_bias, self.continuation_bias, tuple(self.ignore_ids), tuple(self.stop_ids)


def source_copy_bias(model, source_ids: torch.Tensor) -> SourceCopyBias | None:
    """The `SourceCopyBias` that `model.generation_config` asks for on these sources, or None when it asks none."""
    config = getattr(model, "generation_config", None)  # None: anything with a `generate` (a test double)
    token_bias = getattr(config, "source_token_bias", 0.0) or 0.0
    continuation_bias = getattr(config, "source_continuation_bias", 0.0) or 0.0
    if not (token_bias or continuation_bias):
        return None
    ignore = [getattr(config, key, None) for key in ("pad_token_id", "bos_token_id", "decoder_start_token_id")]
    eos = getattr(config, "eos_token_id", None)
    return SourceCopyBias(source_ids, token_bias, continuation_bias, ignore, eos if isinstance(eos, list) else [eos])


def generate(model, **inputs) -> torch.Tensor:
    """`model.generate(**inputs)` under `model.generation_config`, including its source-copy bias if it sets one,
    in the model's runtime: transformers' `generate`, or the compiled greedy loop that
    `shrinktune.models.decoding.set_runtime(model, "compiled")` gave it (token-identical).

    Every generation the project measures or serves goes through here, so a setting decodes the same everywhere.
    """
    from shrinktune.models.decoding import compiled_decoder  # decoding imports this module

    bias = source_copy_bias(model, inputs["input_ids"]) if "input_ids" in inputs else None
    if bias is not None:
        processors = LogitsProcessorList(inputs.pop("logits_processor", None) or [])
        processors.append(bias)
        inputs["logits_processor"] = processors
    runtime = compiled_decoder(model)
    return model.generate(**inputs) if runtime is None else runtime.generate(**inputs)
