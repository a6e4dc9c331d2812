"""How generation runs: `eager` (transformers' `generate`) or `compiled` (static caches and a compiled decoder step).

At batch 1 on a GPU a decoder step of BART-base costs a few milliseconds of host work (Python, kernel launches)
while its weights take a tenth of a millisecond to read: eager generation is bound by the host, so a decoder's
width hardly changes its latency and only its depth does. The `compiled` runtime takes the host out of the loop:

- the encoder runs once; its states, padded to a multiple of `SOURCE_BUCKET` positions (the padding masked), fill a
  static cross-attention cache; the decoder's self-attention cache is static too (transformers' `StaticCache` in an
  `EncoderDecoderCache`, which every supported family takes: BART, mBART, Pegasus, T5, bert2bert and the latent
  students);
- one decoder step — the model's forward on the last token, the logits processors of greedy search rewritten as
  tensor operations (no-repeat n-grams, minimum lengths, forced first and last tokens, the source-copy bias), the
  argmax, the end-of-sequence bookkeeping — reads and writes only fixed buffers, so it is compiled once per shape
  (`torch.compile`; on CUDA with `mode="reduce-overhead"`, which captures it as a CUDA graph) and replayed;
- the loop checks whether every row has ended only every `DONE_CHECK_EVERY` steps, the one host synchronisation.

Outputs are token-identical to `generate` with greedy search (the tests compare them on every family). What it does
not cover — beam search, sampling, and the rarer logits processors (`unsupported`) — is refused with one line
before a search starts. A decoder step is compiled once per (batch, source bucket, prompt length, cache length),
so a long run of varied shapes pays for several compilations; the latency measurement reuses a handful of shapes.

    from shrinktune.models.decoding import set_runtime
    set_runtime(model, "compiled")  # shrinktune.models.generation.generate now uses it
"""

from __future__ import annotations

import contextlib
import contextvars
import copy
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

import torch
from transformers import EncoderDecoderCache, StaticCache
from transformers.modeling_outputs import BaseModelOutput

from shrinktune.errors import ConfigError
from shrinktune.models.student import output_vocab_size

logger = logging.getLogger(__name__)

RUNTIMES = ("eager", "compiled")
SOURCE_BUCKET = 64  # encoder states are padded to a multiple of this many positions (fewer shapes to compile)
CACHE_BUCKET = 32  # the self-attention cache holds prompt + max_new_tokens, rounded up to a multiple of this
DONE_CHECK_EVERY = 8  # decoder steps between checks that every row has ended (a host synchronisation)

# Generation settings the compiled loop does not implement, with the value that leaves them off.
_OFF = {
    "do_sample": False, "num_beams": 1, "repetition_penalty": 1.0, "encoder_repetition_penalty": 1.0,
    "encoder_no_repeat_ngram_size": 0, "bad_words_ids": None, "suppress_tokens": None,
    "begin_suppress_tokens": None, "sequence_bias": None, "exponential_decay_length_penalty": None,
    "guidance_scale": None, "remove_invalid_values": False, "renormalize_logits": False, "max_time": None,
    "stop_strings": None, "watermarking_config": None, "num_return_sequences": 1, "penalty_alpha": None,
    "dola_layers": None, "assistant_model": None, "prompt_lookup_num_tokens": None,
}


def unsupported(generation_config) -> list[str]:
    """The settings of `generation_config` that the compiled runtime does not implement ("num_beams=4", ...)."""
    found = []
    for key, off in _OFF.items():
        value = getattr(generation_config, key, off)
        if value is not None and value != off and not (off is None and value in ((), [])):
            found.append(f"{key}={value!r}")
    return found


def check_runtime(runtime: str, generation_config=None) -> None:
    """Raises `ConfigError` (one line) if `runtime` is unknown or cannot decode with `generation_config`."""
    if runtime not in RUNTIMES:
        raise ConfigError(f"runtime {runtime!r} is unknown; use one of {', '.join(RUNTIMES)}.")
    if runtime == "compiled" and generation_config is not None:
        found = unsupported(generation_config)
        if found:
            raise ConfigError(
                f"the compiled runtime decodes greedily with the common logits processors only, and this model's "
                f"generation settings ask for {', '.join(found)}; use runtime: eager, or set "
                f"{' and '.join(k.split('=')[0] for k in found)} off.")


def set_runtime(model, runtime: str) -> None:
    """Makes `shrinktune.models.generation.generate(model, ...)` use `runtime` ("eager" or "compiled")."""
    check_runtime(runtime, getattr(model, "generation_config", None))
    if runtime == "compiled":
        if not isinstance(getattr(model, "_shrinktune_decoder", None), StaticGreedy):
            model._shrinktune_decoder = StaticGreedy(model)
    elif hasattr(model, "_shrinktune_decoder"):
        del model._shrinktune_decoder


def runtime_of(model) -> str:
    return "eager" if compiled_decoder(model) is None else "compiled"


def compiled_decoder(model) -> StaticGreedy | None:
    """The compiled runtime `set_runtime` gave `model`, or None (eager, or inside `eager_generation()`)."""
    decoder = getattr(model, "_shrinktune_decoder", None)
    return decoder if isinstance(decoder, StaticGreedy) and not _EAGER.get() else None


_EAGER: contextvars.ContextVar[bool] = contextvars.ContextVar("shrinktune_eager_generation", default=False)


@contextlib.contextmanager
def eager_generation() -> Iterator[None]:
    """Every model generates eagerly inside: for many summaries of varied shapes (ROUGE), where compiling a step
    per shape would cost more than it saves; the summaries are the same either way."""
    token = _EAGER.set(True)
    try:
        yield
    finally:
        _EAGER.reset(token)


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def _ids(value) -> list[int]:
    if value is None:
        return []
    if isinstance(value, torch.Tensor):
        return [int(v) for v in value.flatten().tolist()]
    return [int(v) for v in value] if isinstance(value, list | tuple) else [int(value)]


@dataclass(frozen=True)
class _Plan:
    """The lengths and special tokens of one `generate` call, as transformers would derive them."""

    max_new: int
    min_new: int  # end tokens are masked while fewer new tokens than this were made (min_length folded in)
    no_repeat: int
    forced_bos: int | None
    forced_eos: int | None
    eos: tuple[int, ...]
    pad: int


def _plan(config, prompt_len: int) -> _Plan:
    if config.max_new_tokens is not None:
        max_new = int(config.max_new_tokens)
    else:
        max_new = int(config.max_length) - prompt_len
    if max_new < 1:
        raise ConfigError(f"nothing to generate: max_new_tokens is {max_new}; raise max_new_tokens.")
    eos = tuple(_ids(config.eos_token_id))
    min_new = 0
    if eos:
        min_new = max(int(config.min_new_tokens or 0), int(config.min_length or 0) - prompt_len)
    pad = config.pad_token_id if config.pad_token_id is not None else (eos[0] if eos else 0)
    return _Plan(max_new, min_new, int(config.no_repeat_ngram_size or 0),
                 None if config.forced_bos_token_id is None else int(config.forced_bos_token_id),
                 None if config.forced_eos_token_id is None else int(_ids(config.forced_eos_token_id)[0]),
                 eos, int(pad))


class _Buffers:
    """The fixed tensors one decoder-step graph reads and writes, for one shape."""

    def __init__(self, model, batch: int, source_len: int, width: int, cache_len: int, dtype, device, vocab: int,
                 eos: tuple[int, ...]):
        self.cache = EncoderDecoderCache(StaticCache(config=model.config, max_cache_len=cache_len),
                                         StaticCache(config=model.config, max_cache_len=source_len))
        self.states = torch.zeros(batch, source_len, width, dtype=dtype, device=device)  # (batch, src, d_dec)
        self.source_mask = torch.zeros(batch, source_len, dtype=torch.long, device=device)
        self.tokens = torch.zeros(batch, cache_len + 1, dtype=torch.long, device=device)  # prompt, then new tokens
        self.current = torch.zeros(batch, 1, dtype=torch.long, device=device)  # the token the next step reads
        self.length = torch.zeros((), dtype=torch.long, device=device)  # tokens in `tokens` so far
        self.unfinished = torch.ones(batch, dtype=torch.bool, device=device)
        self.positions = torch.arange(cache_len + 1, device=device)
        # lengths of the current call, as data: one compiled step serves every length that fits the cache
        self.prompt_len = torch.zeros((), dtype=torch.long, device=device)
        self.min_new = torch.zeros((), dtype=torch.long, device=device)
        self.last = torch.zeros((), dtype=torch.long, device=device)  # index of the last token `max_new` allows
        # the source-copy bias's tables for this call's sources (`SourceCopyBias.rows`), padded
        self.bias_source = torch.zeros(batch, source_len, dtype=torch.long, device=device)
        self.bias_static = torch.zeros(batch, vocab, dtype=torch.float32, device=device)
        self.eos = torch.tensor(eos, dtype=torch.long, device=device)  # made here: no host copies inside a step
        self.minus_inf = torch.tensor(float("-inf"), device=device)
        for tensor in (self.states, self.source_mask, self.tokens, self.current, self.length, self.unfinished,
                       self.positions, self.prompt_len, self.min_new, self.last, self.bias_source, self.bias_static,
                       self.eos, self.minus_inf):
            torch._dynamo.mark_static_address(tensor)


class StaticGreedy:
    """Greedy generation of one model with static caches and a compiled decoder step (see the module docstring).

    The first call of each shape runs the step both compiled and uncompiled and compares the tokens: a compiler
    that changed them (inductor miscompiled this step on CPU in torch 2.13) is given up, the reason kept in
    `fallback`, and the step runs uncompiled from then on, so outputs never depend on the compiler.

    Args:
        model: an encoder-decoder with `get_encoder` and a transformers `generation_config`.
        compile: compile the decoder step (`torch.compile`; on CUDA as a CUDA graph). None (default): on CUDA only —
            on a CPU, inductor takes 15-40 s per shape and the step is not launch-bound, so the uncompiled loop
            with static caches is the CPU's `compiled` runtime.
        backend: a `torch.compile` backend to use instead of inductor with CUDA graphs (tests: "aot_eager").
    """

    def __init__(self, model, compile: bool | None = None, backend: str | None = None):
        self.model, self.compile, self.backend = model, compile, backend
        self._steps: dict[tuple, tuple] = {}  # shape → (buffers, step)
        self._plans: dict[tuple, tuple] = {}  # shape → (plan, bias) its step was made with
        self._verified: set[tuple] = set()  # shapes whose compiled step gave the uncompiled step's tokens
        self.compiled_shapes = 0  # decoder-step compilations so far
        self.fallback: str | None = None  # why compilation was given up (then the step runs eagerly)

    def __deepcopy__(self, memo) -> StaticGreedy:
        """A copy of the model (`copy.deepcopy(model)`, e.g. to train it) gets a fresh runtime of its own, not the
        buffers and compiled steps that read the original's weights."""
        model = memo.get(id(self.model), self.model)
        return StaticGreedy(model, self.compile, self.backend)

    # ---- the step -------------------------------------------------------------------------------------------

    def _choose(self, buffers: _Buffers, logits: torch.Tensor, plan: _Plan, bias) -> None:
        """Logits processors as greedy `generate` applies them, argmax, and the end-of-sequence bookkeeping; writes
        the chosen tokens into `buffers` (no host synchronisation)."""
        scores = logits.float()  # (batch, vocab); transformers processes the last position's logits in float32
        length, new = buffers.length, buffers.length - buffers.prompt_len  # tokens so far, new ones among them
        if plan.no_repeat:
            scores = scores.masked_fill(self._repeats(buffers, plan.no_repeat, scores.shape[-1]), float("-inf"))
        if plan.eos:
            scores = scores.index_copy(1, buffers.eos, torch.where(new < buffers.min_new, buffers.minus_inf,
                                                                   scores.index_select(1, buffers.eos)))
        if plan.forced_bos is not None:
            forced = torch.full_like(scores, float("-inf"))
            forced[:, plan.forced_bos] = 0
            scores = torch.where(length == 1, forced, scores)
        if plan.forced_eos is not None:
            forced = torch.full_like(scores, float("-inf"))
            forced[:, plan.forced_eos] = 0
            scores = torch.where(length == buffers.last, forced, scores)
        if bias is not None:
            scores = bias.apply(scores, buffers.bias_source, buffers.bias_static, buffers.current)
        chosen = scores.argmax(dim=-1)  # (batch,)
        chosen = torch.where(buffers.unfinished, chosen, torch.full_like(chosen, plan.pad))
        if plan.eos:
            buffers.unfinished &= ~torch.isin(chosen, buffers.eos)
        buffers.tokens.index_copy_(1, length.reshape(1), chosen.unsqueeze(1))
        buffers.current.copy_(chosen.unsqueeze(1))
        buffers.length.add_(1)

    def _repeats(self, buffers: _Buffers, n: int, vocab: int) -> torch.Tensor:
        """(batch, vocab) True where a token would complete an n-gram already in the row (NoRepeatNGram)."""
        tokens, length = buffers.tokens, buffers.length  # (batch, T); n-grams start at 0 .. length - n
        starts = tokens.shape[1] - n + 1
        last = tokens.gather(1, (length - n + 1 + torch.arange(n - 1, device=tokens.device)).clamp(min=0)
                             .expand(tokens.shape[0], n - 1))  # (batch, n - 1): the row's last n - 1 tokens
        match = buffers.positions[:starts] <= length - n  # (starts,): n-grams wholly inside the row
        for j in range(n - 1):
            match = match & (tokens[:, j : j + starts] == last[:, j : j + 1])  # (batch, starts)
        banned = torch.where(match, tokens[:, n - 1 : n - 1 + starts], vocab)  # vocab: a spare column
        mask = torch.zeros(tokens.shape[0], vocab + 1, dtype=torch.bool, device=tokens.device)
        return mask.scatter_(1, banned, True)[:, :vocab]

    def _forward(self, buffers: _Buffers, tokens: torch.Tensor) -> torch.Tensor:
        out = self.model(attention_mask=buffers.source_mask, encoder_outputs=BaseModelOutput(
            last_hidden_state=buffers.states), decoder_input_ids=tokens, past_key_values=buffers.cache, use_cache=True)
        return out.logits[:, -1]  # (batch, vocab)

    def _make_step(self, buffers: _Buffers, plan: _Plan, bias, compiled: bool = True) -> Callable[[], None]:
        def step() -> None:
            self._choose(buffers, self._forward(buffers, buffers.current), plan, bias)

        if not (compiled and self._compiles(buffers.tokens.device)):
            return step
        self.compiled_shapes += 1
        # every model's step shares one code object, so dynamo counts their shapes together (default limit 8)
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 256)
        torch._dynamo.config.accumulated_recompile_limit = max(torch._dynamo.config.accumulated_recompile_limit, 1024)
        if self.backend is not None:
            return torch.compile(step, backend=self.backend, dynamic=False)
        graphed = torch.compile(step, mode="reduce-overhead", dynamic=False)

        def replay() -> None:
            # each call is a new step of CUDA-graph trees: nothing of the last replay is read back
            torch.compiler.cudagraph_mark_step_begin()
            graphed()

        return replay

    def _compiles(self, device: torch.device) -> bool:
        return self.fallback is None and (self.compile if self.compile is not None else device.type == "cuda")

    # ---- generate ---------------------------------------------------------------------------------------------

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                 decoder_input_ids: torch.Tensor | None = None, logits_processor=None, **settings) -> torch.Tensor:
        """Greedy generation as `model.generate(input_ids, ...)` would, token for token.

        Args:
            input_ids, attention_mask: the source batch (batch, src_len).
            decoder_input_ids: the decoder's start (and prompt), one length for the batch; default: the start token.
            logits_processor: at most one extra processor, the source-copy bias (`SourceCopyBias`).
            **settings: generation settings overriding `model.generation_config` (e.g. `min_new_tokens`).

        Returns:
            (batch, prompt + new tokens) ids, as `generate` returns them.

        Raises:
            ConfigError: if the settings ask for something the compiled runtime does not implement.
        """
        from shrinktune.models.generation import SourceCopyBias, decoder_start_id

        model = self.model
        config = copy.deepcopy(model.generation_config)
        for name, value in settings.items():
            setattr(config, name, value)
        check_runtime("compiled", config)
        extra = list(logits_processor or [])
        if any(not isinstance(p, SourceCopyBias) for p in extra) or len(extra) > 1:
            raise ConfigError("the compiled runtime takes no logits processors besides the source-copy bias; "
                              "use runtime: eager.")
        bias = extra[0] if extra else None
        device = input_ids.device
        mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
        states = model.get_encoder()(input_ids=input_ids, attention_mask=mask).last_hidden_state  # (b, src, d)
        if decoder_input_ids is None:
            start = decoder_start_id(model)
            if start is None:
                raise ConfigError("the model names no decoder_start_token_id; set it in its config.")
            decoder_input_ids = torch.full((input_ids.shape[0], 1), start, device=device)
        batch, prompt_len = decoder_input_ids.shape
        plan = _plan(config, prompt_len)
        source_len = _round_up(states.shape[1], SOURCE_BUCKET)  # padded states: the decoder has no source positions
        default_new = int(model.generation_config.max_new_tokens or 0)  # shorter calls share the default's cache
        cache_len = _round_up(prompt_len + max(plan.max_new, default_new), CACHE_BUCKET)
        shape = (batch, source_len, prompt_len, cache_len, states.shape[-1], states.dtype, str(device))
        key = (*shape, replace(plan, max_new=0, min_new=0), None if bias is None else bias.constants())
        if key not in self._steps:
            vocab = output_vocab_size(model)
            buffers = _Buffers(model, batch, source_len, states.shape[-1], cache_len, states.dtype, device, vocab,
                               plan.eos)
            self._steps[key] = (buffers, self._make_step(buffers, plan, bias))
            self._plans[key] = (plan, bias)
        buffers, step = self._steps[key]

        def run() -> torch.Tensor:
            return self._decode(buffers, step, states, mask, decoder_input_ids, plan, bias, input_ids)

        if key in self._verified or not self._compiles(device):
            return run()
        try:
            compiled = run()
        except Exception as error:  # noqa: BLE001 — whatever the compiler raised: recorded, then uncompiled
            return self._fall_back(f"{type(error).__name__}: {str(error).splitlines()[0][:200]}", run)
        plain_step = self._make_step(buffers, plan, bias, compiled=False)
        plain = self._decode(buffers, plain_step, states, mask, decoder_input_ids, plan, bias, input_ids)
        if not torch.equal(compiled, plain):
            return self._fall_back("the compiled step's tokens differed from the uncompiled step's", lambda: plain)
        self._verified.add(key)
        return compiled

    def _decode(self, buffers: _Buffers, step, states, mask, prompt, plan: _Plan, bias, source_ids) -> torch.Tensor:
        self._start(buffers, states, mask, prompt, plan)
        if bias is not None:
            self._bias_tables(buffers, bias, source_ids)
        prompt_len, device = prompt.shape[1], prompt.device
        # the prompt: one uncompiled forward fills both caches and gives the first token
        self._choose(buffers, self._forward(buffers, prompt), plan, bias)
        made = 1
        while made < plan.max_new:
            if plan.eos and made % DONE_CHECK_EVERY == 0 and not bool(buffers.unfinished.any()):
                break
            step()
            made += 1
        out = buffers.tokens[:, : prompt_len + made].clone()
        if plan.eos:  # `generate` stops at the step where the last row ended: drop the all-padding tail
            ended = torch.isin(out[:, prompt_len:], torch.tensor(plan.eos, device=device))
            seen = ended.cumsum(dim=1) > 0  # (batch, new): at or after the row's end token
            done = seen.all(dim=0)
            if bool(done.any()):
                out = out[:, : prompt_len + int(done.float().argmax()) + 1]
        return out

    def _start(self, buffers: _Buffers, states, mask, prompt, plan: _Plan) -> None:
        buffers.cache.reset()
        for layer in buffers.cache.is_updated:
            buffers.cache.is_updated[layer] = False  # the cross-attention cache is filled again from `states`
        buffers.states.zero_()
        buffers.states[:, : states.shape[1]].copy_(states)
        buffers.source_mask.zero_()
        buffers.source_mask[:, : mask.shape[1]].copy_(mask)
        buffers.tokens.zero_()
        buffers.tokens[:, : prompt.shape[1]].copy_(prompt)
        buffers.current.copy_(prompt[:, -1:])
        buffers.length.fill_(prompt.shape[1])
        buffers.prompt_len.fill_(prompt.shape[1])
        buffers.min_new.fill_(plan.min_new)
        buffers.last.fill_(prompt.shape[1] + plan.max_new - 1)
        buffers.unfinished.fill_(True)

    @staticmethod
    def _bias_tables(buffers: _Buffers, bias, source_ids: torch.Tensor) -> None:
        """Fills the bias's tables for `source_ids`, padded with a token it ignores (its bias and its continuations
        are zeroed, so the padding changes nothing)."""
        filler = bias.ignore_ids[0] if bias.ignore_ids else None
        if filler is None and source_ids.shape[1] != buffers.bias_source.shape[1]:
            raise ConfigError("the compiled runtime needs a pad, start or end token to pad the source-copy bias's "
                              "sources; set pad_token_id in the generation settings or use runtime: eager.")
        buffers.bias_source.fill_(filler or 0)
        buffers.bias_source[:, : source_ids.shape[1]].copy_(source_ids)
        source, static = bias.rows(buffers.bias_source, buffers.tokens.shape[0], buffers.bias_static.shape[1],
                                   buffers.bias_static.device)
        buffers.bias_static.copy_(static)

    def _fall_back(self, reason: str, run: Callable[[], torch.Tensor]) -> torch.Tensor:
        """Gives compilation up for good (`fallback` says why) and returns `run()` decoded uncompiled."""
        self.fallback = reason
        logger.warning("compiled decoding given up (%s); decoding with static caches, uncompiled", reason)
        for key, (buffers, _) in self._steps.items():
            plan, bias = self._plans[key]
            self._steps[key] = (buffers, self._make_step(buffers, plan, bias, compiled=False))
        return run()

