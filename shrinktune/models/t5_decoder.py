"""A T5 decoder with its LM head, alone: what `BartForCausalLM` is to BART, which transformers lacks for T5.

A latent student of a T5 teacher needs a narrow T5 decoder that reads the bottleneck's states through
cross-attention; `EncoderDecoderModel` takes it as its `decoder` like any causal LM with cross-attention.
"""

from __future__ import annotations

import copy

from torch import nn
from transformers import GenerationMixin
from transformers.modeling_outputs import CausalLMOutputWithCrossAttentions
from transformers.models.t5.modeling_t5 import T5PreTrainedModel, T5Stack


class T5DecoderLM(T5PreTrainedModel, GenerationMixin):
    """T5 decoder stack (self-attention, cross-attention, FFN) + LM head, scaled as `T5ForConditionalGeneration`."""

    _keys_to_ignore_on_load_unexpected = ["decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight"]

    def __init__(self, config):
        config = copy.deepcopy(config)
        # is_encoder_decoder: T5Stack then caches cross-attention too
        config.is_decoder, config.is_encoder_decoder = True, True
        config.num_layers = config.num_decoder_layers or config.num_layers
        super().__init__(config)
        self.decoder = T5Stack(config)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        if config.tie_word_embeddings:
            self._tied_weights_keys = {"lm_head.weight": "decoder.embed_tokens.weight"}
        self.post_init()

    def get_input_embeddings(self):
        return self.decoder.embed_tokens

    def set_input_embeddings(self, value):
        self.decoder.set_input_embeddings(value)

    def get_output_embeddings(self):
        return self.lm_head

    def get_decoder(self):
        return self.decoder

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        encoder_hidden_states=None,
        encoder_attention_mask=None,
        inputs_embeds=None,
        past_key_values=None,
        use_cache=None,
        labels=None,
        return_dict=None,
        **kwargs,
    ) -> CausalLMOutputWithCrossAttentions:
        out = self.decoder(
            input_ids=input_ids, attention_mask=attention_mask, encoder_hidden_states=encoder_hidden_states,
            encoder_attention_mask=encoder_attention_mask, inputs_embeds=inputs_embeds, past_key_values=past_key_values,
            use_cache=use_cache, **kwargs,
        )
        hidden = out.last_hidden_state  # (batch, tgt_len, d_model)
        if getattr(self.config, "scale_decoder_outputs", self.config.tie_word_embeddings):
            hidden = hidden * (self.config.d_model**-0.5)
        logits = self.lm_head(hidden)  # (batch, tgt_len, vocab)
        loss = None
        if labels is not None:
            loss = nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100)
        return CausalLMOutputWithCrossAttentions(
            loss=loss, logits=logits, past_key_values=out.past_key_values, hidden_states=out.hidden_states,
            attentions=out.attentions, cross_attentions=getattr(out, "cross_attentions", None),
        )

