"""One trial: build, train and measure a student for one configuration — and the teacher it is compared with.

`prepare_reference` runs once per search: it prepares (or loads from the cache) the teacher and the encoder states
of the training pairs, and measures the teacher exactly as trials are measured. `run_configuration` is a whole
trial — autoencoder (cached per width), student, fine-tuning, measurement, checkpoint — and imports no Ray, so
it runs and is tested anywhere; `shrinktune_trial` is the thin Ray Tune wrapper around it. Trial workers import
only `shrinktune`.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

DEFAULT_TRIAL = {
    "batch_size": 16, "ae_epochs": 6, "ae_kind": "mlp", "ae_mode": "frozen", "learning_rate": 3e-4, "epochs": 2,
    "layer_map": "distilbart", "decoder_ffn": "teacher", "method": "sft", "kd_alpha_ce": 0.8, "kd_alpha_mlm": 0.2,
    "kd_alpha_hid": 0.0, "kd_temperature": 2.0, "weight_compression": "none", "weight_ratio": 2.0,
}


@dataclass(frozen=True)
class TrialContext:
    """What every trial of a search shares; small and picklable, handed to each trial by Ray."""

    task: str  # task registry name
    teacher_dir: str  # folder of the (prepared) teacher checkpoint
    cache_root: str  # where encoder states and autoencoders are cached
    generation: dict = field(default_factory=dict)  # GenerationSettings fields
    eval_samples: int = 45  # validation pairs scored
    latency_samples: int = 5  # summaries per timed latency pass
    latency_repeats: int = 3  # timed passes
    latency_batch_size: int = 8  # batch of the batched latency figure (1 = skip it)
    fixed_new_tokens: int | None = None  # fixed-length latency mode: tokens per summary (None = max_new_tokens)
    threads: int = 0  # torch threads per trial on CPU (0 = leave torch's default)
    seed: int = 0
    fixed: dict = field(default_factory=dict)  # trial settings shared by all trials
    reference: dict = field(default_factory=dict)  # the teacher's metrics, for ratios


def quiet_libraries() -> None:
    """Shows this library's progress lines in a worker and silences load reports and progress bars that would
    drown them."""
    import transformers

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
    from shrinktune.data.tasks import get_task, load_task_splits
    from shrinktune.models.generation import GenerationSettings
    from shrinktune.models.families import encoder_module
    from shrinktune.models.teacher import load_teacher, source_token_limit
    from shrinktune.training.encode import cached_encoded_pairs

    if ctx.threads:
        torch.set_num_threads(ctx.threads)
    task = get_task(ctx.task)
    splits = load_task_splits(task, ("train", "validation"))
    teacher, tokenizer = load_teacher(ctx.teacher_dir, device=_device())
    task = replace(task, max_source_tokens=source_token_limit(teacher, task.max_source_tokens))
    GenerationSettings(**ctx.generation).apply(teacher)
    pairs = cached_encoded_pairs(
        encoder_module(teacher), tokenizer, splits["train"], max_source_tokens=task.max_source_tokens,
        max_target_tokens=task.max_target_tokens, start_id=teacher.config.decoder_start_token_id,
        root=Path(ctx.cache_root),
    )
    return task, splits, teacher, tokenizer, pairs


def _measure(model, tokenizer, task, ctx: TrialContext, validation, pairs, settings, weights) -> tuple[dict, list[str]]:
    from shrinktune.measure.evaluate import measure_summarizer
    from shrinktune.training.finetune import training_step_fn

    examples = validation[: ctx.eval_samples]
    model.to(_device())
    return measure_summarizer(
        model, tokenizer, examples, max_source_tokens=task.max_source_tokens,
        latency_examples=ctx.latency_samples, latency_repeats=ctx.latency_repeats,
        latency_batch_size=ctx.latency_batch_size, fixed_new_tokens=ctx.fixed_new_tokens,
        training_step=training_step_fn(model, pairs, settings), training_weights=weights,
    )


def prepare_reference(ctx: TrialContext) -> tuple[str, dict]:
    """Prepares the teacher if it is the embedded one, caches the training states, and measures the teacher.

    Returns:
        (teacher folder, teacher metrics).
    """
    from shrinktune.data.tasks import get_task, load_task_splits
    from shrinktune.models.teacher import EMBEDDED_TEACHER
    from shrinktune.training.finetune import FinetuneSettings
    from shrinktune.training.teacher import prepare_embedded_teacher

    quiet_libraries()
    if ctx.threads:
        torch.set_num_threads(ctx.threads)
    teacher_dir = ctx.teacher_dir
    if teacher_dir == EMBEDDED_TEACHER:
        task = get_task(ctx.task)
        train = load_task_splits(task, ("train",))["train"]
        teacher_dir = str(prepare_embedded_teacher(task, train, root=Path(ctx.cache_root)))
    ctx = TrialContext(**{**asdict(ctx), "teacher_dir": teacher_dir})
    task, splits, teacher, tokenizer, pairs = _load_shared(ctx)
    settings = FinetuneSettings(batch_size=ctx.fixed.get("batch_size", DEFAULT_TRIAL["batch_size"]))
    logger.info("measuring the teacher")
    metrics, _ = _measure(teacher, tokenizer, task, ctx, splits["validation"], pairs, settings, _trained_modules(teacher))
    return teacher_dir, metrics


def _autoencoder(pairs, latent_dim: int, kind: str, epochs: int, seed: int, root: Path):
    """The pre-trained (or PCA-fitted) autoencoder for this width, made once per search (cached by states and
    settings)."""
    from shrinktune.models.autoencoder import Autoencoder
    from shrinktune.training.autoencoder import pretrain_autoencoder
    from shrinktune.training.cache import cached_dir, fingerprint

    key = fingerprint("autoencoder", pairs.key, latent_dim, kind, epochs, seed)

    def produce(folder: Path) -> None:
        result = pretrain_autoencoder(pairs.states, pairs.attention_mask, latent_dim, kind=kind, epochs=epochs, seed=seed)
        torch.save(result.autoencoder.state_dict(), folder / "autoencoder.pt")
        (folder / "autoencoder.json").write_text(json.dumps(
            {"spec": result.autoencoder.spec, "train_mse": result.train_mse, "heldout_mse": result.heldout_mse,
             "explained_variance": result.explained_variance}))

    folder = cached_dir("autoencoders", key, produce, root)
    info = json.loads((folder / "autoencoder.json").read_text())
    ae = Autoencoder(pairs.states.shape[-1], latent_dim, kind=kind)
    ae.load_state_dict(torch.load(folder / "autoencoder.pt", weights_only=True))
    return ae.eval(), info


def ratios(metrics: dict, reference: dict) -> dict:
    """The trial's standing against the teacher: speed-up, memory ratio, relative ROUGE change."""
    out = {}
    if reference.get("latency_ms") and metrics.get("latency_ms"):
        out["speedup"] = reference["latency_ms"] / metrics["latency_ms"]
    if reference.get("train_peak_mb") and metrics.get("train_peak_mb"):
        out["train_memory_ratio"] = metrics["train_peak_mb"] / reference["train_peak_mb"]
    if reference.get("params_decoder") and metrics.get("params_decoder"):
        out["decoder_params_ratio"] = metrics["params_decoder"] / reference["params_decoder"]
    for key in ("rouge1", "rouge2", "rougeL"):
        if reference.get(key):
            out[f"{key}_change"] = (metrics[key] - reference[key]) / reference[key]
    return out


def _student_pairs(teacher, tokenizer, task, splits, pairs, trial: dict, ctx: TrialContext):
    """Encoder states the student trains on: the teacher's, or — when encoder layers are dropped — those of the
    shallower encoder (cached per encoder like the teacher's)."""
    from shrinktune.models.families import depth, encoder_module, half_configs
    from shrinktune.models.student import build_student
    from shrinktune.training.encode import cached_encoded_pairs

    layers = trial.get("encoder_layers")
    if layers is None or int(layers) == depth(half_configs(teacher)[0], "encoder"):
        return pairs
    shallow = build_student(teacher, encoder_layers=int(layers), layer_map=trial["layer_map"])
    return cached_encoded_pairs(
        encoder_module(shallow), tokenizer, splits["train"], max_source_tokens=task.max_source_tokens,
        max_target_tokens=task.max_target_tokens, start_id=teacher.config.decoder_start_token_id,
        root=Path(ctx.cache_root),
    )


def _bottleneck(pairs, width: int, latent: int, trial: dict, ctx: TrialContext, metrics: dict):
    """(bottleneck module, spec) for a narrower decoder: pre-trained (or fitted) once per width, or — `ae_mode:
    joint` — fresh, to be trained with the student (Falaki & Gras' AE-S)."""
    from shrinktune.errors import ConfigError
    from shrinktune.models.autoencoder import Autoencoder

    kind, mode = trial["ae_kind"], trial["ae_mode"]
    if mode == "joint":
        if kind == "pca":
            raise ConfigError("ae_mode joint trains the bottleneck from scratch, which PCA cannot be; use ae_kind mlp or linear.")
        torch.manual_seed(ctx.seed)
        ae = Autoencoder(width, latent, kind=kind)
        return ae.encoder, ae.spec
    ae, info = _autoencoder(pairs, latent, kind, int(trial["ae_epochs"]), ctx.seed, Path(ctx.cache_root))
    metrics["ae_mse"] = info["heldout_mse"]
    if info.get("explained_variance") is not None:
        metrics["ae_explained_variance"] = info["explained_variance"]
    return ae.encoder, ae.spec


def _training_pairs(teacher, tokenizer, task, splits, pairs, trial: dict, ctx: TrialContext):
    """Pseudo-labels (teacher generations, made once per search and cached) replace the references if asked."""
    if trial["method"] != "pseudo_labels":
        return pairs
    from shrinktune.training.distill import cached_pseudo_labels, pseudo_labelled_pairs

    labelled = cached_pseudo_labels(teacher, tokenizer, splits["train"], max_source_tokens=task.max_source_tokens,
                                    root=Path(ctx.cache_root))
    return pseudo_labelled_pairs(pairs, tokenizer, labelled, max_target_tokens=task.max_target_tokens,
                                 start_id=teacher.config.decoder_start_token_id)


def _compress_weights(student, trial: dict, ctx: TrialContext, metrics: dict) -> None:
    """Offline low-rank weights (Banaei et al.), after training and before measuring, recorded in the config so
    that the checkpoint loads with its structure."""
    if trial["weight_compression"] == "none":
        return
    from shrinktune.models.weight_compression import WeightCompression, compress_weights, compression_structure

    report = compress_weights(student, WeightCompression(
        method=trial["weight_compression"], ratio=float(trial["weight_ratio"]), seed=ctx.seed))
    metrics.update(weight_params_before=report["params_before"], weight_params_after=report["params_after"])
    student.config.student = {**student.config.student, "weight_compression": compression_structure(student)}


def _trained_modules(model) -> list:
    """What a fine-tuning step holds in memory besides activations: decoder, LM head and bottleneck (the encoder is
    not needed when training on cached states)."""
    from shrinktune.models.families import decoder_module

    decoder, head = decoder_module(model), model.get_output_embeddings()
    if head is not None and any(p.data_ptr() == head.weight.data_ptr() for p in decoder.parameters()):
        head = None  # tied to the decoder's embeddings: already counted
    return [m for m in (decoder, head, getattr(model, "bottleneck", None)) if m is not None]


def run_configuration(config: dict, ctx: TrialContext, checkpoint_dir: Path, on_epoch=None) -> dict:
    """A whole trial: returns its metrics and leaves the student (with tokenizer) in `checkpoint_dir`.

    Raises:
        ConfigError: the configuration is impossible for this teacher (the search records it as failed).
    """
    from shrinktune.models.families import family_of, half_configs
    from shrinktune.models.student import build_student
    from shrinktune.training.distill import DistillSettings
    from shrinktune.training.finetune import FinetuneSettings, finetune_on_states

    quiet_libraries()
    trial = {**DEFAULT_TRIAL, **ctx.fixed, **config}
    task, splits, teacher, tokenizer, pairs = _load_shared(ctx)
    encoder_config = half_configs(teacher)[0]
    width = getattr(encoder_config, family_of(encoder_config).width)
    latent = int(trial.get("latent_dim", width))
    metrics: dict[str, float] = {}
    distill = DistillSettings(
        method=trial["method"], alpha_ce=float(trial["kd_alpha_ce"]), alpha_mlm=float(trial["kd_alpha_mlm"]),
        alpha_hid=float(trial["kd_alpha_hid"]), temperature=float(trial["kd_temperature"]),
    )
    student_pairs = _student_pairs(teacher, tokenizer, task, splits, pairs, trial, ctx)
    bottleneck = spec = None
    if latent < width:
        bottleneck, spec = _bottleneck(student_pairs, width, latent, trial, ctx, metrics)
    torch.manual_seed(ctx.seed)  # a fresh decoder's initial weights are drawn in build_student
    student = build_student(
        teacher, latent_dim=latent, decoder_layers=trial.get("decoder_layers"), encoder_layers=trial.get("encoder_layers"),
        bottleneck=bottleneck, bottleneck_spec=spec, layer_map=trial["layer_map"], decoder_ffn=trial["decoder_ffn"],
        teacher_name=ctx.teacher_dir,
    ).to(_device())
    settings = FinetuneSettings(
        epochs=int(trial["epochs"]), learning_rate=float(trial["learning_rate"]),
        batch_size=int(trial["batch_size"]), seed=ctx.seed,
    )
    train_pairs = _training_pairs(teacher, tokenizer, task, splits, student_pairs, trial, ctx)
    history = finetune_on_states(
        student, train_pairs, settings, on_epoch=on_epoch, train_bottleneck=trial["ae_mode"] != "frozen",
        teacher=teacher if distill.method == "kd" else None, distill=distill,
        teacher_pairs=pairs if distill.method == "kd" and student_pairs is not pairs else None,
    )
    metrics["train_loss"] = history[-1]
    _compress_weights(student, trial, ctx, metrics)
    measured, predictions = _measure(
        student, tokenizer, task, ctx, splits["validation"], student_pairs, settings,
        _trained_modules(student),
    )
    metrics.update(measured)
    metrics.update(ratios(metrics, ctx.reference))
    checkpoint_dir = Path(checkpoint_dir)
    student.save_pretrained(checkpoint_dir)
    tokenizer.save_pretrained(checkpoint_dir)
    (checkpoint_dir / "shrinktune_trial.json").write_text(json.dumps(
        {"config": trial, "task": ctx.task, "metrics": metrics, "train_loss": history,
         "sample_predictions": predictions[:6]}, indent=2, default=float))
    bad = [k for k, v in metrics.items() if isinstance(v, float) and not math.isfinite(v)]
    if bad:
        raise FloatingPointError(f"trial produced non-finite metrics: {bad}")
    return metrics


def shrinktune_trial(config: dict, context: TrialContext) -> None:
    """Ray Tune function trainable: runs the configuration and reports metrics with the checkpoint."""
    import tempfile

    from ray import tune

    with tempfile.TemporaryDirectory(prefix="shrinktune-trial-") as folder:
        metrics = run_configuration(config, context, Path(folder))
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))
