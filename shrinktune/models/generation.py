"""How summaries are generated: one frozen record, applied to `model.generation_config` and logged with results."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from shrinktune.errors import ConfigError


@dataclass(frozen=True)
class GenerationSettings:
    """Decoding settings shared by the teacher and every student of a search, so their ROUGE compares."""

    num_beams: int = 1  # 1 = greedy
    max_new_tokens: int = 48  # longest summary, in tokens
    min_new_tokens: int = 0  # shortest summary, in tokens
    no_repeat_ngram_size: int = 3  # 0 turns repetition blocking off
    length_penalty: float = 1.0  # > 1 favours longer beams (beam search only)

    def __post_init__(self):
        if self.num_beams < 1:
            raise ConfigError(f"generation num_beams must be ≥ 1, got {self.num_beams}.")
        if not 0 <= self.min_new_tokens <= self.max_new_tokens or self.max_new_tokens < 1:
            raise ConfigError(
                f"generation lengths need 0 ≤ min_new_tokens ≤ max_new_tokens and max_new_tokens ≥ 1, got "
                f"{self.min_new_tokens} and {self.max_new_tokens}."
            )

    def apply(self, model) -> None:
        """Writes these settings into `model.generation_config` (transformers 5 keeps them there, not in config)."""
        for key, value in asdict(self).items():
            setattr(model.generation_config, key, value)
        if self.num_beams == 1:
            model.generation_config.length_penalty = 1.0  # only meaningful for beams; avoids a warning

    def as_dict(self) -> dict:
        return asdict(self)


def decode_summaries(tokenizer, ids) -> list[str]:
    """Generated ids → text, with WordPiece's spaced hyphens rejoined (`state - of - the - art` → `state-of-the-art`)."""
    import re

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
