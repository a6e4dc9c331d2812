"""One trial: build, train and measure a student for one configuration — and the teacher it is compared with.

`prepare_reference` runs once per search: it prepares (or loads from the cache) the teacher and the encoder states
of the training pairs, gives the teacher a folder that carries the search's decoding (`search_teacher_dir`), and
measures the teacher exactly as trials are measured. `run_configuration` is a whole trial — autoencoder (cached per
width), student, fine-tuning, measurement, checkpoint with the same decoding — and imports no Ray, so it runs and is
tested anywhere; `shrinktune_trial` is the thin Ray Tune wrapper around it. Trial workers import only `shrinktune`.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import transformers

from shrinktune.data.pseudo_sources import check_no_overlap, window_examples
from shrinktune.data.tasks import get_task, load_task_splits
from shrinktune.data.vocabulary import training_token_ids
from shrinktune.errors import ConfigError
from shrinktune.measure.bound import bound_record, measure_bandwidth, spec_bandwidth
from shrinktune.measure.evaluate import (
    batched_latency,
    cost_metrics,
    fixed_length_default,
    generate_with_lengths,
    parameter_counts,
    score_predictions,
    score_summaries,
    timing_inputs,
)
from shrinktune.measure.finetune_memory import MB, full_finetune_peak_bytes
from shrinktune.measure.kinds import get_kind, is_quality_key
from shrinktune.measure.latency import generation_record, time_encoder
from shrinktune.measure.memory import peak_memory_bytes, tensor_bytes
from shrinktune.measure.speed import SpeedRounds, architecture_key, at_length, compare_speed, time_alone
from shrinktune.models.autoencoder import Autoencoder
from shrinktune.models.decoding import check_runtime, compiled_decoder, eager_generation, set_runtime
from shrinktune.models.families import decoder_module, depth, encoder_module, family_of, half_configs
from shrinktune.models.folders import TRIAL_INFO
from shrinktune.models.generation import GenerationSettings
from shrinktune.models.precision import cast_for_measuring, check_dtype
from shrinktune.models.student import LatentEncoderDecoderModel, build_student, shortlist_output, takes_shortlist
from shrinktune.models.summarizer import task_record
from shrinktune.models.teacher import EMBEDDED_TEACHER, load_teacher, source_token_limit
from shrinktune.models.weight_compression import compression_structure
from shrinktune.settings import EvaluationSettings, TrialSettings
from shrinktune.training.autoencoder import pretrain_autoencoder
from shrinktune.training.cache import cached_dir, file_fingerprint, fingerprint
from shrinktune.training.distill import (
    DistillSettings,
    cached_pseudo_labels,
    concat_pairs,
    extra_pseudo_labelled_pairs,
    pseudo_labelled_pairs,
)
from shrinktune.training.encode import EncodedPairs, cached_encoded_pairs
from shrinktune.training.finetune import FinetuneSettings, finetune_on_states, training_step_fn
from shrinktune.training.teacher import prepare_embedded_teacher, search_teacher_dir
from shrinktune.training.weight_compression import WeightCompression, compress_weights

logger = logging.getLogger(__name__)

COSTS_ONLY = "costs_only"  # marks a trial's first report: its costs, measured before training (`draw_costs`)
SCORING_BATCH = 50  # summaries generated at once for ROUGE: on CPU, larger batches spread each step's fixed cost


@dataclass(frozen=True)
class TrialContext:
    """What every trial of a search shares; small and picklable, handed to each trial by Ray."""

    task: str | dict  # a registered task's name or a mapping of its fields (`get_task`)
    teacher_dir: str  # the teacher as the space names it; after `prepare_reference`, the search's teacher folder
    cache_root: str  # where encoder states and autoencoders are cached
    generation: GenerationSettings = field(default_factory=GenerationSettings)  # the teacher's and every student's
    evaluation: EvaluationSettings = field(default_factory=EvaluationSettings)  # how trials are measured
    defaults: TrialSettings = field(default_factory=TrialSettings)  # each trial's settings before the sampler's
    threads: int = 0  # torch threads per trial on CPU (0 = leave torch's default)
    seed: int = 0
    reference: dict = field(default_factory=dict)  # the teacher's metrics, for ratios


def quiet_libraries() -> None:
    """Shows this library's progress lines in a worker and silences load reports and progress bars that would
    drown them."""
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    package = logging.getLogger("shrinktune")
    if not package.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        package.addHandler(handler)
        package.setLevel(logging.INFO)
        package.propagate = False
    logging.getLogger("absl").setLevel(logging.ERROR)  # rouge-score's "Using default tokenizer."


def _device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _load_shared(ctx: TrialContext):
    if ctx.threads:
        torch.set_num_threads(ctx.threads)
    task = get_task(ctx.task)
    splits = load_task_splits(task, ("train", "validation"))
    teacher, tokenizer = load_teacher(ctx.teacher_dir, device=_device())
    task = replace(task, max_source_tokens=source_token_limit(teacher, task.max_source_tokens))
    ctx.generation.apply(teacher)
    pairs = cached_encoded_pairs(
        encoder_module(teacher), tokenizer, splits["train"], max_source_tokens=task.max_source_tokens,
        max_target_tokens=task.max_target_tokens, start_id=teacher.config.decoder_start_token_id,
        root=Path(ctx.cache_root),
    )
    return task, splits, teacher, tokenizer, pairs


def _runtime() -> dict:
    """What besides the architecture decides a latency: device, threads, library versions."""
    device = _device()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu x{os.cpu_count()}"
    return {"device": name, "threads": torch.get_num_threads(), "torch": torch.__version__,
            "transformers": transformers.__version__}


def measured(model, ctx: TrialContext):
    """The model as trials measure it: cast to `evaluation.dtype` (a copy, unless fp32) and timed in
    `evaluation.runtime`. Its summaries for ROUGE and the memory of generating are made eagerly
    (`eager_generation`): the compiled runtime is token-identical, and would compile a step for every batch shape."""
    model = cast_for_measuring(model, ctx.evaluation.dtype)
    set_runtime(model, ctx.evaluation.runtime)
    return model


def check_precision_and_runtime(ctx: TrialContext, teacher) -> None:
    """One line before any work when this device cannot train in `evaluation.dtype` or the teacher's decoding
    cannot run in `evaluation.runtime`."""
    check_dtype(ctx.evaluation.dtype, _device())
    check_runtime(ctx.evaluation.runtime, teacher.generation_config)


_BANDWIDTH: dict[str, float] = {}


def bandwidth(device: torch.device) -> float:
    """The device's memory bandwidth in bytes/s: the datasheet figure on a GPU that reports it, else measured by a
    copy (once per process)."""
    key = str(device)
    if key not in _BANDWIDTH:
        _BANDWIDTH[key] = spec_bandwidth(device) or measure_bandwidth(device)
    return _BANDWIDTH[key]


def bound_metrics(model, inputs: list[dict], new_tokens: int, measured_ms: float) -> dict:
    """The memory-bandwidth bound of this model's batch-1 generation at `new_tokens` (its weights and caches read
    once per token, plus its encoder's measured time), beside the measured time per summary."""
    device = next(model.parameters()).device
    encoder_ms = time_encoder(model, inputs, warmup=1, repeats=3).median_ms
    source = round(float(np.mean([batch["input_ids"].shape[-1] for batch in inputs])))
    prompt = round(float(np.mean([batch["decoder_input_ids"].shape[-1] if "decoder_input_ids" in batch else 1
                                  for batch in inputs])))
    record = bound_record(model, batch_size=1, source_tokens=source, prompt_tokens=prompt, new_tokens=new_tokens,
                          measured_ms=measured_ms, encoder_ms=encoder_ms, bandwidth_bytes_per_s=bandwidth(device))
    return {"bound_ms": record["bound_ms"], "bound_ratio": record["bound_ratio"], "encoder_ms": encoder_ms,
            "bandwidth_gbs": record["bandwidth_gbs"]}


def runtime_metrics(model) -> dict:
    """Whether the compiled runtime compiled (1) or fell back to its uncompiled step (0); {} when eager."""
    decoder = compiled_decoder(model)
    if decoder is None:
        return {}
    return {"compiled_step": float(decoder.compiled_shapes > 0 and decoder.fallback is None)}


def full_memory(model, trainable: str) -> dict:
    """Fine-tuning memory the papers' way (whole model; a student's encoder and bottleneck frozen), on CUDA only:
    on a CPU it costs tens of seconds a trial, and the papers' claim is a GPU claim."""
    if _device().type != "cuda":
        return {}
    peak = full_finetune_peak_bytes(model, trainable=trainable, source_tokens=min(512, _source_limit(model)))
    return {"train_full_peak_mb": peak / MB}


def _source_limit(model) -> int:
    config = half_configs(model)[0]
    return int(getattr(config, "max_position_embeddings", 0) or 512)


def _timing(model, tokenizer, task, ctx: TrialContext, validation) -> tuple[list[dict], int]:
    """(batch-1 inputs of the first `latency_samples` validation pairs, tokens every timed summary is forced to)."""
    inputs = timing_inputs(model, tokenizer, validation[: ctx.evaluation.latency_samples],
                           max_source_tokens=task.max_source_tokens)
    return inputs, ctx.evaluation.fixed_new_tokens or fixed_length_default(model)


def teacher_speed(teacher, tokenizer, task, ctx: TrialContext, validation, tokens: float) -> dict:
    """The teacher's own latency at fixed length and at `tokens` per summary (its mean on the evaluation pairs)."""
    inputs, new_tokens = _timing(teacher, tokenizer, task, ctx, validation)
    rounds = time_alone(teacher, inputs, new_tokens=new_tokens, rounds=max(3, ctx.evaluation.latency_repeats))
    return {"latency_ms": rounds.latency("reference", tokens).median,
            "latency_fixed_ms": rounds.latency("reference").median, "latency_short_ms": rounds.reference_short_ms,
            "short_new_tokens": rounds.short_tokens, "fixed_new_tokens": new_tokens, "threads": rounds.threads}


def teacher_latency_at(reference: dict, tokens: float) -> float:
    """The teacher's ms per summary at `tokens` new tokens, from its times at the fixed and the short length."""
    return float(at_length(np.asarray([reference["latency_fixed_ms"]]), reference["latency_short_ms"],
                           int(reference["fixed_new_tokens"]), int(reference["short_new_tokens"]), tokens)[0])


def speed_rounds(teacher, student, tokenizer, task, ctx: TrialContext, validation):
    """Interleaved teacher-vs-student rounds (`compare_speed`), measured once per architecture and runtime and
    cached: a second trial of the same shape re-uses them. Returns (rounds, whether the cache had them)."""
    inputs, new_tokens = _timing(student, tokenizer, task, ctx, validation)
    key = fingerprint("speed-v4", architecture_key(teacher), architecture_key(student), _runtime(),
                      ctx.evaluation.runtime, ctx.evaluation.dtype, new_tokens,
                      [list(batch["input_ids"].shape) for batch in inputs], ctx.evaluation.latency_target_pct / 100,
                      ctx.evaluation.latency_cap_s)
    root = Path(ctx.cache_root)
    hit = (root / "speed" / key / ".complete").exists()

    def produce(folder: Path) -> None:
        rounds = compare_speed(teacher, student, inputs, new_tokens=new_tokens,
                               target=ctx.evaluation.latency_target_pct / 100,
                               time_cap_s=ctx.evaluation.latency_cap_s)
        (folder / "rounds.json").write_text(rounds.to_json())

    folder = cached_dir("speed", key, produce, root)
    if hit:
        logger.info("latency of this architecture measured before (cache speed/%s): not timed again", key)
    return SpeedRounds.from_json((folder / "rounds.json").read_text()), hit


def speed_metrics(rounds, reference: dict, tokens: float) -> dict:
    """A student's latency figures from its rounds against the teacher: speed-ups (median and IQR over rounds) at
    its own summary length (`tokens` per summary; the teacher at its own) and at fixed length; latencies as the
    teacher's ÷ the speed-up, so that every trial is ranked on ratios measured side by side."""
    fixed = rounds.speedup()
    if reference.get("tokens_per_summary") and reference.get("latency_ms"):
        natural = rounds.speedup(reference["tokens_per_summary"], tokens)
        latency, latency_fixed = reference["latency_ms"] / natural.median, reference["latency_fixed_ms"] / fixed.median
    else:  # no teacher measured (a trial run on its own): the student's own times in these rounds
        natural = fixed
        latency, latency_fixed = rounds.latency("candidate", tokens).median, rounds.latency("candidate").median
    return {
        "speedup": natural.median, "speedup_q25": natural.q25, "speedup_q75": natural.q75,
        "speedup_fixed": fixed.median, "speedup_fixed_q25": fixed.q25, "speedup_fixed_q75": fixed.q75,
        "latency_ms": latency, "latency_fixed_ms": latency_fixed,
        "latency_precision_pct": 100 * natural.relative_half_iqr, "latency_rounds": rounds.rounds,
        "latency_converged": float(rounds.converged), "fixed_new_tokens": rounds.new_tokens, "threads": rounds.threads,
    }


def _costs(model, trained, tokenizer, task, ctx: TrialContext, validation, pairs, settings, weights) -> dict:
    """Generation memory of the measured `model` (eager); fine-tuning memory of the fp32 `trained` one (autocast)."""
    with eager_generation():
        return cost_metrics(model, tokenizer, validation[: ctx.evaluation.samples],
                            max_source_tokens=task.max_source_tokens,
                            training_step=training_step_fn(trained, pairs, settings), training_weights=weights)


def _quality(model, tokenizer, task, examples):
    with eager_generation():
        return score_summaries(model, tokenizer, examples, max_source_tokens=task.max_source_tokens,
                               batch_size=SCORING_BATCH, kind=task.kind)


def _batched_latency(model, tokenizer, task, ctx: TrialContext, validation) -> dict:
    """The batched figure (`latency_batch_size` > 1): natural length, one model alone, not interleaved."""
    return batched_latency(model, tokenizer, validation[: ctx.evaluation.samples],
                           max_source_tokens=task.max_source_tokens, batch_size=ctx.evaluation.latency_batch_size,
                           repeats=ctx.evaluation.latency_repeats)


def teacher_evaluation(teacher, tokenizer, task, ctx: TrialContext, validation, samples: int):
    """The teacher's `Quality` on the first `samples` validation pairs, made once (cached by teacher, decoding and
    pairs): the search's reference and the final re-check share its summaries."""
    examples = validation[:samples]
    key = fingerprint("teacher-eval", file_fingerprint(ctx.teacher_dir), generation_record(teacher),
                      ctx.evaluation.dtype, task.max_source_tokens, [e.id for e in examples])

    def produce(folder: Path) -> None:
        with eager_generation():
            texts, lengths = generate_with_lengths(teacher, tokenizer, examples,
                                                   max_source_tokens=task.max_source_tokens, batch_size=SCORING_BATCH)
        (folder / "predictions.json").write_text(json.dumps({"predictions": texts, "lengths": lengths}))

    folder = cached_dir("teacher-eval", key, produce, Path(ctx.cache_root))
    saved = json.loads((folder / "predictions.json").read_text())
    return lambda n: score_predictions(saved["predictions"][:n], saved["lengths"][:n], examples[:n], kind=task.kind)


def _prepared(ctx: TrialContext) -> TrialContext:
    """The context with the search's teacher folder filled in: the embedded teacher prepared (trained or unpacked,
    cached), then any teacher given the search's decoding and task in a folder of its own (`search_teacher_dir`), so
    that the folder the search records loads and decodes as the search measured it."""
    task, root = get_task(ctx.task), Path(ctx.cache_root)
    teacher = ctx.teacher_dir
    if teacher == EMBEDDED_TEACHER:
        train = load_task_splits(task, ("train",))["train"]
        teacher = str(prepare_embedded_teacher(task, train, root=root))
    return replace(ctx, teacher_dir=str(search_teacher_dir(teacher, ctx.generation, task, root=root)))


def prepare_reference(ctx: TrialContext) -> tuple[str, dict]:
    """Prepares the teacher if it is the embedded one, caches the training states, and measures the teacher as
    trials are measured: ROUGE on the first `eval_samples` validation pairs (its summaries of the re-check's pairs
    are made now too, once), its latency, memory and size.

    Returns:
        (the search's teacher folder — the teacher with the search's decoding and task, see `search_teacher_dir` —,
        teacher metrics).
    """
    quiet_libraries()
    if ctx.threads:
        torch.set_num_threads(ctx.threads)
    ctx = _prepared(ctx)
    task, splits, teacher, tokenizer, pairs = _load_shared(ctx)
    check_precision_and_runtime(ctx, teacher)
    validation = splits["validation"]
    settings = FinetuneSettings(batch_size=ctx.defaults.batch_size, dtype=ctx.evaluation.dtype)
    logger.info("measuring the teacher (%s, %s)", ctx.evaluation.dtype, ctx.evaluation.runtime)
    model = measured(teacher, ctx)
    quality = teacher_evaluation(model, tokenizer, task, ctx, validation,
                                 max(ctx.evaluation.samples, ctx.evaluation.recheck_samples))
    metrics = dict(quality(ctx.evaluation.samples).metrics)
    metrics.update(teacher_speed(model, tokenizer, task, ctx, validation, metrics["tokens_per_summary"]))
    inputs, new_tokens = _timing(model, tokenizer, task, ctx, validation)
    metrics.update(bound_metrics(model, inputs, new_tokens, metrics["latency_fixed_ms"]))
    metrics.update(runtime_metrics(model))
    metrics.update(_batched_latency(model, tokenizer, task, ctx, validation))
    metrics.update(_costs(model, teacher, tokenizer, task, ctx, validation, pairs, settings,
                          _trained_modules(teacher)))
    metrics.update(full_memory(teacher, "all"))
    return ctx.teacher_dir, metrics


def _autoencoder(pairs, latent_dim: int, kind: str, epochs: int, seed: int, root: Path):
    """The pre-trained (or PCA-fitted) autoencoder for this width, made once per search (cached by states and
    settings)."""
    key = fingerprint("autoencoder", pairs.key, latent_dim, kind, epochs, seed)

    def produce(folder: Path) -> None:
        result = pretrain_autoencoder(pairs.states, pairs.attention_mask, latent_dim, kind=kind, epochs=epochs,
                                      seed=seed)
        torch.save(result.autoencoder.state_dict(), folder / "autoencoder.pt")
        (folder / "autoencoder.json").write_text(json.dumps(
            {"spec": result.autoencoder.spec, "train_mse": result.train_mse, "heldout_mse": result.heldout_mse,
             "explained_variance": result.explained_variance}))

    folder = cached_dir("autoencoders", key, produce, root)
    info = json.loads((folder / "autoencoder.json").read_text())
    ae = Autoencoder(pairs.states.shape[-1], latent_dim, kind=kind)
    ae.load_state_dict(torch.load(folder / "autoencoder.pt", weights_only=True))
    return ae.eval(), info


# Quality metrics whose relative change against the teacher is logged (`<metric>_change`), whatever the task kind.
CHANGED = ("rouge1", "rouge2", "rougeL", "bleu", "chrf", "accuracy", "macro_f1")


def ratios(metrics: dict, reference: dict) -> dict:
    """The trial's standing against the teacher: speed-up, memory ratio, relative quality change (ROUGE, BLEU,
    accuracy: the task kind's)."""
    out = {}
    if reference.get("latency_ms") and metrics.get("latency_ms"):
        out["speedup"] = reference["latency_ms"] / metrics["latency_ms"]
    if reference.get("train_peak_mb") and metrics.get("train_peak_mb"):
        out["train_memory_ratio"] = metrics["train_peak_mb"] / reference["train_peak_mb"]
    if reference.get("train_full_peak_mb") and metrics.get("train_full_peak_mb"):
        out["train_full_memory_ratio"] = metrics["train_full_peak_mb"] / reference["train_full_peak_mb"]
    if reference.get("params_decoder") and metrics.get("params_decoder"):
        out["decoder_params_ratio"] = metrics["params_decoder"] / reference["params_decoder"]
    for key in CHANGED:
        if reference.get(key) and metrics.get(key) is not None:
            out[f"{key}_change"] = (metrics[key] - reference[key]) / reference[key]
    return out


def _student_pairs(teacher, tokenizer, task, splits, pairs, trial: TrialSettings, ctx: TrialContext):
    """Encoder states the student trains on: the teacher's, or — when encoder layers are dropped — those of the
    shallower encoder (cached per encoder like the teacher's)."""
    layers = trial.encoder_layers
    if layers is None or layers == depth(half_configs(teacher)[0], "encoder"):
        return pairs
    shallow = build_student(teacher, encoder_layers=layers, layer_map=trial.layer_map)
    return cached_encoded_pairs(
        encoder_module(shallow), tokenizer, splits["train"], max_source_tokens=task.max_source_tokens,
        max_target_tokens=task.max_target_tokens, start_id=teacher.config.decoder_start_token_id,
        root=Path(ctx.cache_root),
    )


def _bottleneck(pairs, width: int, latent: int, trial: TrialSettings, ctx: TrialContext, metrics: dict):
    """(bottleneck module, spec) for a narrower decoder: pre-trained (or fitted) once per width, or — `ae_mode:
    joint` — fresh, to be trained with the student (Falaki & Gras' AE-S)."""
    kind, mode = trial.ae_kind, trial.ae_mode
    if mode == "joint":
        if kind == "pca":
            raise ConfigError("ae_mode joint trains the bottleneck from scratch, which PCA cannot be; use ae_kind "
                              "mlp or linear.")
        torch.manual_seed(ctx.seed)
        ae = Autoencoder(width, latent, kind=kind)
        return ae.encoder, ae.spec
    ae, info = _autoencoder(pairs, latent, kind, trial.ae_epochs, ctx.seed, Path(ctx.cache_root))
    metrics["ae_mse"] = info["heldout_mse"]
    if info.get("explained_variance") is not None:
        metrics["ae_explained_variance"] = info["explained_variance"]
    return ae.encoder, ae.spec


def _training_pairs(teacher, tokenizer, task, splits, pairs, trial: TrialSettings, ctx: TrialContext):
    """Pseudo-labels (teacher generations, made once per search and cached) replace the references if asked; with
    `pseudo_label_windows`, the teacher's summaries of windows of the training documents are added — checked
    against the validation and test splits every time, encoded by the student's encoder (`_student_pairs`'s)."""
    if trial.method != "pseudo_labels":
        if trial.pseudo_label_windows:
            logger.warning("pseudo_label_windows is %d but method is %r: no extra inputs (they need pseudo_labels)",
                           trial.pseudo_label_windows, trial.method)
        return pairs

    root, start_id = Path(ctx.cache_root), teacher.config.decoder_start_token_id
    extra = window_examples(task, splits["train"], trial.pseudo_label_windows)
    if extra:  # refused before the teacher writes anything
        check_no_overlap(extra, {"validation": splits["validation"], **load_task_splits(task, ("test",))})
    labelled = cached_pseudo_labels(teacher, tokenizer, splits["train"], max_source_tokens=task.max_source_tokens,
                                    root=root)
    relabelled = pseudo_labelled_pairs(pairs, tokenizer, labelled, max_target_tokens=task.max_target_tokens,
                                       start_id=start_id)
    if not extra:
        if trial.pseudo_label_windows:
            logger.warning("no training document has text beyond its input: training on %d pairs, no windows",
                           len(relabelled))
        return relabelled
    encoder = encoder_module(teacher)
    if trial.encoder_layers not in (None, depth(half_configs(teacher)[0], "encoder")):
        encoder = encoder_module(build_student(teacher, encoder_layers=trial.encoder_layers,
                                               layer_map=trial.layer_map))
    windows = extra_pseudo_labelled_pairs(
        teacher, encoder, tokenizer, extra, max_source_tokens=task.max_source_tokens,
        max_target_tokens=task.max_target_tokens, start_id=start_id, root=root,
    )
    logger.info("training on %d pairs + %d windows labelled by the teacher", len(relabelled), len(windows))
    return concat_pairs(relabelled, windows, pad_id=tokenizer.pad_token_id or 0)


def _compress_weights(student, trial: TrialSettings, ctx: TrialContext, metrics: dict) -> None:
    """Offline low-rank weights (Banaei et al.), after training and before measuring, recorded in the config so
    that the checkpoint loads with its structure."""
    if trial.weight_compression == "none":
        return

    report = compress_weights(student, WeightCompression(
        method=trial.weight_compression, ratio=trial.weight_ratio, seed=ctx.seed))
    metrics.update(weight_params_before=report["params_before"], weight_params_after=report["params_after"])
    student.config.student = {**student.config.student, "weight_compression": compression_structure(student)}


def _trained_modules(model) -> list:
    """What a fine-tuning step holds in memory besides activations: decoder, LM head and bottleneck (the encoder is
    not needed when training on cached states)."""
    decoder, head = decoder_module(model), model.get_output_embeddings()
    if head is not None and any(p.data_ptr() == head.weight.data_ptr() for p in decoder.parameters()):
        head = None  # tied to the decoder's embeddings: already counted
    return [m for m in (decoder, head, getattr(model, "bottleneck", None)) if m is not None]


def train_step_mb(model, pairs, settings: FinetuneSettings) -> float:
    """`train_peak_mb`: the weights a fine-tuning step trains (`_trained_modules`) plus the peak of one step
    (`training_step_fn`), in MiB."""
    step = training_step_fn(model, pairs, settings)
    return (sum(tensor_bytes(m) for m in _trained_modules(model)) + peak_memory_bytes(step, _device())) / MB


def draw_costs(teacher, student, tokenizer, task, ctx: TrialContext, validation, pairs, settings) -> dict:
    """What a draw costs, measured on its untrained weights before it trains, at its best: speed from the
    architecture's interleaved rounds (`speed_rounds`, cached: the trained student re-uses them) with the natural
    length at its shortest (one token: `latency_ms` a lower bound, `speedup` an upper one; fixed-length figures
    exact), and — exact too, properties of the shapes — parameters and the memory of a fine-tuning step."""
    model = measured(student, ctx)
    rounds, _ = speed_rounds(measured(teacher, ctx), model, tokenizer, task, ctx, validation)
    costs: dict[str, float] = speed_metrics(rounds, ctx.reference, 1)
    costs["train_peak_mb"] = train_step_mb(student, pairs, settings)
    costs.update(parameter_counts(student))
    teacher_costs = {k: v for k, v in ctx.reference.items() if not is_quality_key(k)}
    costs.update(ratios(costs, teacher_costs))
    return costs


def _outside(labels: torch.Tensor, ids: list[int]) -> float:
    """The share of label tokens outside an output shortlist (not trained on; a teacher summary's rare word)."""
    labelled = labels[labels >= 0]
    outside = ~torch.isin(labelled, torch.tensor(ids))
    if outside.any():
        logger.warning("%d of %d training label tokens lie outside the output shortlist and are not trained on",
                       int(outside.sum()), labelled.numel())
    return float(outside.float().mean()) if labelled.numel() else 0.0


@dataclass
class Trained:
    """A student after `train_student`, with what it was trained on."""

    student: transformers.PreTrainedModel
    history: list[float]  # mean training loss of each epoch
    student_pairs: EncodedPairs  # the encoder states the student reads (its own encoder's)
    train_pairs: EncodedPairs  # what it trained on (pseudo-labels and windows included)
    settings: FinetuneSettings


def train_student(trial: TrialSettings, ctx: TrialContext, shared: tuple, metrics: dict, on_epoch=None,
                  on_costs=None) -> Trained:
    """Builds the student `trial` describes and trains it as every trial does: encoder states, bottleneck, student,
    distillation method, pseudo-labels and their windows. `shared` is `_load_shared(ctx)`; the bottleneck's
    figures go into `metrics`; `on_costs` gets the draw's `draw_costs` before it trains."""
    task, splits, teacher, tokenizer, pairs = shared
    encoder_config = half_configs(teacher)[0]
    width = getattr(encoder_config, family_of(encoder_config).width)
    latent = trial.latent_dim or width
    distill = DistillSettings(
        method=trial.method, alpha_ce=trial.kd_alpha_ce, alpha_mlm=trial.kd_alpha_mlm, alpha_hid=trial.kd_alpha_hid,
        temperature=trial.kd_temperature,
    )
    student_pairs = _student_pairs(teacher, tokenizer, task, splits, pairs, trial, ctx)
    bottleneck = spec = None
    if latent < width:
        bottleneck, spec = _bottleneck(student_pairs, width, latent, trial, ctx, metrics)
    torch.manual_seed(ctx.seed)  # a fresh decoder's initial weights are drawn in build_student
    student = build_student(
        teacher, latent_dim=latent, decoder_layers=trial.decoder_layers, encoder_layers=trial.encoder_layers,
        bottleneck=bottleneck, bottleneck_spec=spec, layer_map=trial.layer_map, decoder_ffn=trial.decoder_ffn,
        teacher_name=ctx.teacher_dir,
    ).to(_device())
    if trial.output_vocab == "training" and takes_shortlist(student):
        student = shortlist_output(student, training_token_ids(task, tokenizer, splits["train"]))
        metrics["output_vocab"] = len(student.config.output_vocab)
    ctx.generation.apply(student)  # measured with the search's decoding, and saved with it
    settings = FinetuneSettings(
        epochs=trial.epochs, learning_rate=trial.learning_rate, batch_size=trial.batch_size,
        label_smoothing=trial.label_smoothing, seed=ctx.seed, dtype=ctx.evaluation.dtype, batching=trial.batching,
    )
    if on_costs is not None:
        on_costs(draw_costs(teacher, student, tokenizer, task, ctx, splits["validation"], student_pairs, settings))
    train_pairs = _training_pairs(teacher, tokenizer, task, splits, student_pairs, trial, ctx)
    if isinstance(student, LatentEncoderDecoderModel) and student.config.output_vocab:
        metrics["labels_outside_vocab"] = _outside(train_pairs.labels, student.config.output_vocab)
    history = finetune_on_states(
        student, train_pairs, settings, on_epoch=on_epoch, train_bottleneck=trial.ae_mode != "frozen",
        teacher=teacher if distill.method == "kd" else None, distill=distill,
        teacher_pairs=pairs if distill.method == "kd" and student_pairs is not pairs else None,
    )
    return Trained(student, history, student_pairs, train_pairs, settings)


def run_configuration(config: dict, ctx: TrialContext, checkpoint_dir: Path, on_epoch=None,
                      on_costs=None) -> dict:
    """A whole trial: returns its metrics and leaves the student (with tokenizer) in `checkpoint_dir`.

    `on_costs`, if given, is called with the draw's `draw_costs` before it trains (the search's cost pre-screen
    may stop the trial there).

    Raises:
        ConfigError: the configuration is impossible for this teacher (the search records it as failed).
    """
    quiet_libraries()
    trial = replace(ctx.defaults, **config)
    kind = get_task(ctx.task).kind
    if trial.pseudo_label_windows and kind != "summarization":
        raise ConfigError(f"pseudo_label_windows is for summarization (the teacher's summaries of windows of long "
                          f"documents); this is a {kind} task: leave pseudo_label_windows out.")
    task, splits, teacher, tokenizer, pairs = _load_shared(ctx)
    check_precision_and_runtime(ctx, teacher)
    metrics: dict[str, float] = {}
    trained = train_student(trial, ctx, (task, splits, teacher, tokenizer, pairs), metrics, on_epoch=on_epoch,
                            on_costs=on_costs)
    student, history, student_pairs, settings = (trained.student, trained.history, trained.student_pairs,
                                                 trained.settings)
    metrics["train_loss"] = history[-1]
    _compress_weights(student, trial, ctx, metrics)
    model = measured(student, ctx)
    quality = _quality(model, tokenizer, task, splits["validation"][: ctx.evaluation.samples])
    metrics.update(quality.metrics)
    rounds, cached = speed_rounds(measured(teacher, ctx), model, tokenizer, task, ctx, splits["validation"])
    metrics.update(speed_metrics(rounds, ctx.reference, quality.metrics["tokens_per_summary"]))
    metrics["latency_cached"] = float(cached)
    inputs, new_tokens = _timing(model, tokenizer, task, ctx, splits["validation"])
    metrics.update(bound_metrics(model, inputs, new_tokens, rounds.latency("candidate").median))
    metrics.update(runtime_metrics(model))
    metrics.update(_batched_latency(model, tokenizer, task, ctx, splits["validation"]))
    metrics.update(_costs(model, student, tokenizer, task, ctx, splits["validation"], student_pairs, settings,
                          _trained_modules(student)))
    metrics.update(full_memory(student, "decoder"))
    predictions = quality.predictions
    metrics.update(ratios(metrics, ctx.reference))
    checkpoint_dir = Path(checkpoint_dir)
    student.save_pretrained(checkpoint_dir)
    tokenizer.save_pretrained(checkpoint_dir)
    (checkpoint_dir / TRIAL_INFO).write_text(json.dumps(
        {"config": asdict(trial), **task_record(task, student), "generation": ctx.generation.as_dict(),
         "runtime": {**_runtime(), "decoding": ctx.evaluation.runtime, "dtype": ctx.evaluation.dtype},
         "metrics": metrics, "train_loss": history, "sample_predictions": predictions[:6]}, indent=2, default=float))
    bad = [k for k, v in metrics.items() if isinstance(v, float) and not math.isfinite(v)]
    if bad:
        raise FloatingPointError(f"trial produced non-finite metrics: {bad}")
    return metrics


@dataclass
class Recheck:
    """The final front re-measured at high fidelity: every member and the teacher on the same validation pairs."""

    teacher: dict  # the teacher's metrics on them (ROUGE with intervals, latency at its length there)
    members: dict[str, dict]  # trial id → its new quality and speed metrics (memory and size do not change)
    pair_stats: dict[str, list[list[float]]]  # "teacher" and each trial id → each pair's statistics of the task
    # kind's primary metric (R-1 for summaries), for paired comparisons
    groups: list[str]  # each pair's document
    kind: str = "summarization"  # the task kind, whose aggregate turns summed pair statistics into its metric


def recheck_front(ctx: TrialContext, checkpoints: dict[str, str]) -> Recheck:
    """Re-scores the teacher and each checkpoint on the first `recheck_samples` validation pairs (all of them when
    fewer) and re-derives their speed from the architecture's rounds (cached during the search; timed now if not).
    Needs the context as trials had it: the prepared teacher and its metrics."""
    quiet_libraries()
    if ctx.threads:
        torch.set_num_threads(ctx.threads)
    task = get_task(ctx.task)
    validation = load_task_splits(task, ("validation",))["validation"]
    teacher, tokenizer = load_teacher(ctx.teacher_dir, device=_device())
    task = replace(task, max_source_tokens=source_token_limit(teacher, task.max_source_tokens))
    ctx.generation.apply(teacher)
    teacher = measured(teacher, ctx)
    samples = min(len(validation), ctx.evaluation.recheck_samples)
    logger.info("re-checking the front: the teacher and %d trial(s) on %d validation pairs", len(checkpoints), samples)
    made = teacher_evaluation(teacher, tokenizer, task, ctx, validation, max(ctx.evaluation.samples, samples))
    quality = made(samples)
    reference = {**ctx.reference, **quality.metrics}
    reference["latency_ms"] = teacher_latency_at(ctx.reference, quality.metrics["tokens_per_summary"])
    pair_stats, members = {"teacher": quality.pair_stats}, {}
    for trial_id, checkpoint in checkpoints.items():
        student, _ = load_teacher(checkpoint, device=_device(), role="checkpoint")
        student = measured(student, ctx)
        scored = _quality(student, tokenizer, task, validation[:samples])
        rounds, cached = speed_rounds(teacher, student, tokenizer, task, ctx, validation)
        metrics = {**scored.metrics, **speed_metrics(rounds, reference, scored.metrics["tokens_per_summary"]),
                   "latency_cached": float(cached)}
        members[trial_id] = metrics
        pair_stats[trial_id] = scored.pair_stats
        primary = get_kind(task.kind).primary
        logger.info("trial %s: %s %.3f [%.3f, %.3f], speed-up %.2fx", trial_id, primary, metrics[primary],
                    metrics[f"{primary}_low"], metrics[f"{primary}_high"], metrics["speedup"])
    return Recheck(reference, members, pair_stats, quality.groups, task.kind)


def shrinktune_trial(config: dict, context: TrialContext, prescreen: bool = False) -> None:
    """Ray Tune function trainable: runs the configuration and reports metrics with the checkpoint; with
    `prescreen`, reports the draw's costs first (`COSTS_ONLY`), for the `CostPreScreen` scheduler."""
    from ray import tune  # lazy on purpose: this module runs without Ray; only the Tune wrapper needs it

    def report_costs(costs: dict) -> None:  # the cost pre-screen (`search.prescreen`) may stop the trial here
        tune.report({**costs, COSTS_ONLY: 1.0})

    with tempfile.TemporaryDirectory(prefix="shrinktune-trial-") as folder:
        metrics = run_configuration(config, context, Path(folder), on_costs=report_costs if prescreen else None)
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))
