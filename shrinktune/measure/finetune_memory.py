"""Peak memory of fine-tuning a whole seq2seq model, the way the latent-compression papers compare it.

Falaki & Gras (latent compression of BART) compare the teacher fine-tuned in full — encoder and decoder trainable,
AdamW — against a student whose encoder and bottleneck are frozen: only its decoder trains, and the encoder's
forward runs without gradients. `shrinktune.training.finetune.training_step_fn` measures something narrower (the
decoder trained on cached encoder states, the encoder not in memory at all); this module measures the papers' way:

- `full_finetune_peak_bytes(model, trainable="all" | "decoder")`: resident weights + gradients + AdamW state +
  activations of two full training steps on random tokens, in bytes.
- `finetune_memory_record(teacher, student)`: the student with its decoder trainable against the teacher fully
  trainable, in MiB, and their ratio.

    from shrinktune.measure.finetune_memory import finetune_memory_record
    record = finetune_memory_record(teacher, student, batch_size=8, source_tokens=512, target_tokens=128)
"""

from __future__ import annotations

import copy
import gc
import warnings

import torch
from transformers import EncoderDecoderModel
from transformers.modeling_outputs import BaseModelOutput

from shrinktune.errors import ConfigError
from shrinktune.measure.memory import peak_memory_bytes, tensor_bytes
from shrinktune.models.families import encoder_module, half_configs
from shrinktune.training.finetune import trainable_parameters

MB = 2**20
TRAINABLE = ("all", "decoder")
AUTOCAST_DTYPES = (torch.bfloat16, torch.float16)
_SEED = 0
# EncoderDecoderModel warns on every forward given labels that it computes the loss itself now; that is intended here.
_ENCODER_DECODER_LOSS_WARNING = r"Version v4\.12\.0 introduces a better way to train encoder-decoder models"


def full_finetune_peak_bytes(
    model,
    *,
    batch_size: int = 8,
    source_tokens: int = 512,
    target_tokens: int = 128,
    trainable: str = "all",
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> int:
    """Peak tensor memory of fine-tuning `model` (resident weights included), in bytes, on random token ids.

    A deep copy of `model` is put on `device` in training mode and trained for two full steps with AdamW (default
    settings, lr 1e-5) over its trainable parameters: forward with `labels` → loss, backward, `optimizer.step()`,
    `zero_grad(set_to_none=True)`. The second step is the one that runs with the optimiser state already allocated.
    The result is `tensor_bytes(copy)` + the peak additional memory of the two steps (`peak_memory_bytes`), so it
    counts weights, gradients, AdamW's two moments and the activations kept for backward. The copy is freed before
    returning; `model` itself (weights, `requires_grad`, mode, the global random state) is left as it was.

    Inputs are `batch_size` × `source_tokens` source ids and `batch_size` × `target_tokens` labels, drawn uniformly
    from the vocabulary of the config (pad id excluded), with attention masks of ones; the model shifts the labels
    into decoder inputs itself (BART / Pegasus / T5, and `EncoderDecoderModel`, which needs `decoder_start_token_id`
    and `pad_token_id` in its config).

    trainable:
        "all": every parameter trains (the teacher in the papers' comparison).
        "decoder": the encoder — and a latent student's bottleneck (`LatentEncoderDecoderModel.bottleneck`) — is
            frozen (`requires_grad` False, eval mode) and runs under `torch.no_grad()`; its output goes to the
            model's forward as `encoder_outputs=` (for a latent student `get_encoder()` includes the bottleneck, so
            the states are already the decoder's width). For BART / T5, whose word embeddings the encoder shares with
            the decoder (and a tied LM head), those are frozen too, as in `training.finetune.trainable_parameters`.

    dtype: None trains as the weights are. `torch.bfloat16` / `torch.float16` run the forward passes under
        `torch.autocast` on the device's type with that dtype (mixed precision: weights, gradients and AdamW state
        stay in the weights' dtype, activations are mostly in `dtype`); backward and the optimiser step run outside
        autocast, without a gradient scaler (it would not change the memory). CPU autocast supports both dtypes.

    Memory: on CUDA this is the allocator's peak (`torch.cuda.max_memory_allocated` minus what was allocated before
    the steps, plus the copy's weights) — not what `nvidia-smi` shows, which adds the caching allocator's reserve and
    the CUDA context. On CPU it is read from the torch profiler's allocation events (see `peak_memory_bytes`).

    Raises:
        ConfigError: `trainable` not "all" / "decoder"; a size below 1; `source_tokens` (or `target_tokens`) above
            the encoder's (decoder's) `max_position_embeddings` (T5 has no such limit); an unsupported `dtype`; an
            `EncoderDecoderModel` without `decoder_start_token_id` / `pad_token_id`.
    """
    _validate(model, batch_size, source_tokens, target_tokens, trainable, dtype)
    device = torch.device(device) if device is not None else next(model.parameters()).device
    enc_cfg, dec_cfg = half_configs(model)
    pads = {i for i in (model.config.pad_token_id, enc_cfg.pad_token_id, dec_cfg.pad_token_id) if i is not None}
    generator = torch.Generator().manual_seed(_SEED)
    input_ids = _random_ids(generator, (batch_size, source_tokens), enc_cfg.vocab_size, pads).to(device)
    labels = _random_ids(generator, (batch_size, target_tokens), dec_cfg.vocab_size, pads).to(device)
    attention_mask = torch.ones_like(input_ids)

    clone = _training_copy(model, device)
    try:
        weights = tensor_bytes(clone)
        return weights + _two_steps_peak(clone, input_ids, attention_mask, labels, trainable, device, dtype)
    finally:
        del clone  # the last reference: the copy, its gradients and AdamW state are gone once this returns
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()


def _two_steps_peak(clone, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor,
                    trainable: str, device: torch.device, dtype: torch.dtype | None) -> int:
    """Peak additional memory of two AdamW steps on `clone` (which this freezes as `trainable` says)."""
    frozen = _freeze_encoder(clone) if trainable == "decoder" else []
    optimizer = torch.optim.AdamW([p for p in clone.parameters() if p.requires_grad], lr=1e-5)

    def loss_of_one_batch() -> torch.Tensor:
        autocast = torch.autocast(device_type=device.type, dtype=dtype, enabled=dtype is not None)
        with autocast, warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_ENCODER_DECODER_LOSS_WARNING, category=FutureWarning)
            if not frozen:
                return clone(input_ids=input_ids, attention_mask=attention_mask, labels=labels, use_cache=False).loss
            with torch.no_grad():
                states = clone.get_encoder()(input_ids=input_ids, attention_mask=attention_mask,
                                             return_dict=True).last_hidden_state
            return clone(attention_mask=attention_mask, encoder_outputs=BaseModelOutput(last_hidden_state=states),
                         labels=labels, use_cache=False).loss

    def two_steps() -> None:
        for _ in range(2):
            loss_of_one_batch().backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

    # dropout draws from the global generators: fork them, so measuring leaves the caller's random stream as it was
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        return peak_memory_bytes(two_steps, device)


def finetune_memory_record(teacher, student, **kwargs) -> dict[str, float]:
    """Full fine-tuning peaks of `student` (encoder and bottleneck frozen, `trainable="decoder"`) and of `teacher`
    (every parameter trainable, `trainable="all"`), in MiB (2**20 bytes), and student ÷ teacher.

    Args:
        teacher, student: the two models; neither is changed.
        **kwargs: passed to both `full_finetune_peak_bytes` calls (batch_size, source_tokens, target_tokens,
            device, dtype); not `trainable`, which this comparison fixes.

    Returns:
        {"train_full_peak_mb": ..., "teacher_train_full_peak_mb": ..., "train_full_ratio": ...}
    """
    if "trainable" in kwargs:
        raise TypeError("finetune_memory_record fixes trainable (student: 'decoder', teacher: 'all'); do not pass it.")
    student_bytes = full_finetune_peak_bytes(student, trainable="decoder", **kwargs)
    teacher_bytes = full_finetune_peak_bytes(teacher, trainable="all", **kwargs)
    return {
        "train_full_peak_mb": student_bytes / MB,
        "teacher_train_full_peak_mb": teacher_bytes / MB,
        "train_full_ratio": student_bytes / teacher_bytes,
    }


def _validate(model, batch_size: int, source_tokens: int, target_tokens: int, trainable: str,
              dtype: torch.dtype | None) -> None:
    if trainable not in TRAINABLE:
        raise ConfigError(f"trainable must be one of {', '.join(TRAINABLE)}, got {trainable!r}.")
    for name, value in (("batch_size", batch_size), ("source_tokens", source_tokens),
                        ("target_tokens", target_tokens)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name} must be an integer ≥ 1, got {value!r}.")
    if dtype is not None and dtype not in AUTOCAST_DTYPES:
        raise ConfigError(f"dtype must be None, torch.bfloat16 or torch.float16 (autocast), got {dtype}.")
    enc_cfg, dec_cfg = half_configs(model)
    for name, value, config, side in (("source_tokens", source_tokens, enc_cfg, "encoder"),
                                      ("target_tokens", target_tokens, dec_cfg, "decoder")):
        limit = getattr(config, "max_position_embeddings", None)  # BART, Pegasus, BERT; T5 has none
        if limit is not None and value > limit:
            raise ConfigError(f"{name} ({value}) is above the {side}'s max_position_embeddings ({limit}); "
                              f"lower it to {limit} or less.")
    if isinstance(model, EncoderDecoderModel):
        missing = [k for k in ("decoder_start_token_id", "pad_token_id") if getattr(model.config, k, None) is None]
        if missing:
            raise ConfigError(f"the encoder-decoder model's config lacks {' and '.join(missing)}, needed to shift the "
                              "labels into decoder inputs; set them (e.g. from the tokenizer).")


def _random_ids(generator: torch.Generator, shape: tuple[int, int], vocab: int, skip: set[int]) -> torch.Tensor:
    """Uniform ids in 0..vocab-1 that avoid the ids in `skip` (the pad ids)."""
    skipped = sorted(i for i in skip if 0 <= i < vocab)
    ids = torch.randint(0, vocab - len(skipped), shape, generator=generator)
    for pad in skipped:  # ascending: maps 0..n-1 onto the vocabulary minus the skipped ids
        ids += (ids >= pad).long()
    return ids


def _training_copy(model, device: torch.device):
    """A deep copy of `model` on `device`, in training mode, every parameter trainable and without gradients."""
    clone = copy.deepcopy(model).to(device).train()
    for p in clone.parameters():
        p.requires_grad_(True)
        p.grad = None
    return clone


def _freeze_encoder(clone) -> list[torch.nn.Module]:
    """Freezes the encoder and the bottleneck (if any) of `clone` as fine-tuning does (`trainable_parameters`: the
    word embeddings BART and T5 share with the encoder too) and puts them in eval mode; returns them."""
    trainable_parameters(clone, train_bottleneck=False)
    frozen = [encoder_module(clone)]
    bottleneck = getattr(clone, "bottleneck", None)
    if isinstance(bottleneck, torch.nn.Module):
        frozen.append(bottleneck)
    for module in frozen:
        module.eval()
    return frozen
