"""A checkpoint as a callable: `load_summarizer(path)("document ...", aspect="approach")` → summary text."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from shrinktune.data.examples import decoder_prompt, format_source
from shrinktune.data.tasks import TASKS
from shrinktune.models.generation import decode_summaries, decoder_start_id, generate, prompt_token_ids
from shrinktune.models.teacher import load_teacher, source_token_limit


class Summarizer:
    """A seq2seq model and its tokenizer, generating with the settings saved in the checkpoint."""

    def __init__(self, model, tokenizer, max_source_tokens: int = 256):
        self.model, self.tokenizer, self.max_source_tokens = model.eval(), tokenizer, max_source_tokens

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str | torch.device | None = None) -> Summarizer:
        """Loads a teacher or student folder (or hub id) written by `save_pretrained`."""
        model, tokenizer = load_teacher(path, device=device)
        max_source_tokens = 256
        info = Path(path) / "shrinktune_trial.json"
        if info.exists():
            task = TASKS.get(json.loads(info.read_text()).get("task"))
            max_source_tokens = task.max_source_tokens if task else max_source_tokens
        return cls(model, tokenizer, source_token_limit(model, max_source_tokens))

    @torch.no_grad()
    def __call__(self, document: str | list[str], aspect: str | None = None) -> str | list[str]:
        """Summarizes one document (→ str) or several (→ list); `aspect` for aspect-conditioned models."""
        documents = [document] if isinstance(document, str) else list(document)
        batch = self.tokenizer(
            [format_source(d, aspect) for d in documents], max_length=self.max_source_tokens, truncation=True,
            padding=True, return_tensors="pt",
        ).to(next(self.model.parameters()).device)
        inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        prompt = prompt_token_ids(self.tokenizer, decoder_prompt(aspect))
        if prompt:  # the decoder is given the aspect after its start token, as in training
            start = [decoder_start_id(self.model)] + prompt
            inputs["decoder_input_ids"] = torch.tensor([start] * len(documents), device=batch["input_ids"].device)
        ids = generate(self.model, **inputs)
        texts = decode_summaries(self.tokenizer, ids[:, len(prompt) + 1:] if prompt else ids)
        return texts[0] if isinstance(document, str) else texts
