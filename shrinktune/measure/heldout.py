"""A picked checkpoint against its teacher on pairs no choice of the search saw: the task's test split.

`heldout_comparison` scores both on the first `samples` test pairs — ROUGE with paper-level 95 % intervals, and
the paired interval of their R-1 difference — and times them the way the search does (interleaved rounds at fixed
length, `compare_speed`, scaled to each model's summary length on these pairs). It imports torch, transformers and
the project's data and model code only; `python -m platform.pareto ... --pick NAME --test` logs what it returns.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, fields
from pathlib import Path

import torch

from shrinktune.data.tasks import get_task, load_task_splits, task_spec
from shrinktune.errors import UserError
from shrinktune.measure.evaluate import fixed_length_default, score_summaries, timing_inputs
from shrinktune.measure.intervals import paired_statistic_difference
from shrinktune.measure.kinds import get_kind
from shrinktune.measure.speed import compare_speed
from shrinktune.models.generation import GenerationSettings
from shrinktune.models.teacher import load_teacher, source_token_limit

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class HeldOut:
    """Both models on the test pairs."""

    samples: int  # test pairs scored
    student: dict  # rouge1/2/L, rouge1_low/high, ..., tokens_per_summary
    teacher: dict
    difference: tuple[float, float, float]  # student R-1 - teacher R-1: mean, 95 % interval low, high
    speedup: tuple[float, float, float]  # natural-length speed-up: median, q25, q75 over interleaved rounds
    speedup_fixed: float  # at fixed length
    converged: bool  # the rounds reached ±5 % (else the time cap ended them)

    def metrics(self) -> dict[str, float]:
        """As MLflow metrics of the pick's run: `test_*` for the student, `test_teacher_*` for the teacher."""
        out = {f"test_{k}": v for k, v in self.student.items()}
        out.update({f"test_teacher_{k}": v for k, v in self.teacher.items()})
        out.update(test_rouge1_difference=self.difference[0], test_rouge1_difference_low=self.difference[1],
                   test_rouge1_difference_high=self.difference[2], test_speedup=self.speedup[0],
                   test_speedup_q25=self.speedup[1], test_speedup_q75=self.speedup[2],
                   test_speedup_fixed=self.speedup_fixed, test_samples=self.samples)
        if self.teacher.get("rouge1"):
            out["test_rouge1_change"] = (self.student["rouge1"] - self.teacher["rouge1"]) / self.teacher["rouge1"]
        return out


def heldout_pairs(task_name: str, samples: int):
    """The first `samples` pairs of the task's test split; one UserError line if it has none."""
    task = get_task(task_spec(task_name))
    try:
        pairs = load_task_splits(task, ("test",), limit=samples)["test"]
    except UserError as error:
        raise UserError(f"task {task.name!r} has no usable test split ({error}); --test needs one: score a copy of the "
                        "data with a test split, or leave --test out.") from None
    if not pairs:
        raise UserError(f"task {task.name!r} has an empty test split; --test needs test pairs.")
    return task, pairs


def _search_decoding(model, generation: dict | None) -> None:
    """The search's decoding settings on a model (the teacher's folder does not carry them)."""
    if generation is None:
        return
    known = {f.name for f in fields(GenerationSettings)}
    GenerationSettings(**{k: v for k, v in generation.items() if k in known}).apply(model)


def heldout_comparison(checkpoint: str | Path, teacher_dir: str | Path, task_name: str, *, generation: dict | None,
                         samples: int = 500, timed: int = 4, time_cap_s: float = 90.0) -> HeldOut:
    """Scores and times `checkpoint` against `teacher_dir` on the task's test split.

    Args:
        checkpoint: the picked student's folder.
        teacher_dir: the search's teacher folder.
        task_name: the search's task.
        generation: the search's decoding settings (given to the teacher; the student carries its own). None: the
            teacher decodes with the student's settings.
        samples: test pairs scored (the whole split when fewer).
        timed: test pairs per timed pass.
        time_cap_s: cap on the interleaved timing rounds.

    Raises:
        UserError: no test split, or a folder that does not load.
    """
    task, pairs = heldout_pairs(task_name, samples)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    models = []
    for name, folder in (("checkpoint", checkpoint), ("teacher", teacher_dir)):
        try:
            models.append(load_teacher(folder, device=device))
        except (OSError, ValueError) as error:
            raise UserError(f"the {name} {folder} does not load ({str(error).splitlines()[0][:160]}); rerun the "
                            "search or pick another trial.") from None
    (student, tokenizer), (teacher, _) = models
    if generation is None:
        generation = {f.name: getattr(student.generation_config, f.name) for f in fields(GenerationSettings)
                      if getattr(student.generation_config, f.name, None) is not None}
    _search_decoding(teacher, generation)
    max_source = source_token_limit(teacher, task.max_source_tokens)
    logger.info("scoring the pick and the teacher on %d test pairs", len(pairs))
    scored = {name: score_summaries(model, tokenizer, pairs, max_source_tokens=max_source, batch_size=50,
                                    kind=task.kind)
              for name, model in (("student", student), ("teacher", teacher))}
    difference = paired_statistic_difference(scored["student"].pair_stats, scored["teacher"].pair_stats,
                                             scored["student"].groups, get_kind(task.kind).aggregate)
    inputs = timing_inputs(student, tokenizer, pairs[:timed], max_source_tokens=max_source)
    rounds = compare_speed(teacher, student, inputs, new_tokens=fixed_length_default(teacher), time_cap_s=time_cap_s)
    natural = rounds.speedup(scored["teacher"].metrics["tokens_per_summary"],
                             scored["student"].metrics["tokens_per_summary"])
    return HeldOut(
        samples=len(pairs), student=scored["student"].metrics, teacher=scored["teacher"].metrics,
        difference=(difference.mean, difference.low, difference.high),
        speedup=(natural.median, natural.q25, natural.q75), speedup_fixed=rounds.speedup().median,
        converged=rounds.converged,
    )
