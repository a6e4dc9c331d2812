"""Every setting of a search, declared once: its type, allowed values or range, default and a one-line doc.

Each group is a frozen dataclass whose fields are made by `integer`, `number`, `choice` or `flag`; the field's
metadata carries its `Rule` and its doc. From that one declaration follow:

- validation: `problems(cls, mapping, where)` names every bad or unknown key of a space file's section, and a
  group built in code checks and converts its values (`TrialSettings(learning_rate=1)` holds the float 1.0);
- defaults: `TrialSettings()` is the trial every search starts from, before its `fixed` settings and the
  sampler's choices;
- MLflow params: `as_params(settings)`;
- the README's tables of settings: `settings_table(cls)` (`python -m shrinktune.settings` prints them all).

Adding a setting is one field here (plus the code that uses it). The search-space file checks what no single
setting can: conditional ranges (`when:`) and limits that depend on the teacher (`shrinktune.search.space`).
"""

from __future__ import annotations

import math
from dataclasses import MISSING, Field, asdict, dataclass, field, fields
from typing import Any

from shrinktune.errors import ConfigError

SAMPLERS = ("tpe", "nsga2", "gp", "random")
DTYPES = ("fp32", "bf16", "fp16")


@dataclass(frozen=True)
class Rule:
    """What values one setting may take."""

    kind: type  # int, float, str or bool
    choices: tuple = ()  # allowed values (str settings)
    low: float | None = None  # lowest allowed ...
    low_open: bool = False  # ... itself excluded
    high: float | None = None  # highest allowed ...
    high_open: bool = False  # ... itself excluded
    optional: bool = False  # None allowed (means: the default described in the doc)

    def problem(self, value) -> str | None:
        """What is wrong with `value`, as the end of a sentence ("must be ..., got ..."); None if it is allowed."""
        if value is None and self.optional:
            return None
        if self.choices:
            ok = value in self.choices
        elif self.kind is bool:
            ok = isinstance(value, bool)
        elif self.kind is int:
            ok = isinstance(value, int) and not isinstance(value, bool) and self._in_range(value)
        else:
            ok = (isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
                  and self._in_range(value))
        return None if ok else f"must be {self.describe()}, got {value!r}"

    def _in_range(self, value) -> bool:
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return False
        return self.high is None or not (value > self.high or (self.high_open and value == self.high))

    def describe(self) -> str:
        """The allowed values as people read them: "one of sft, kd", "an integer ≥ 1", "a number in [0, 1)"."""
        if self.choices:
            return f"one of {', '.join(map(str, self.choices))}"
        if self.kind is bool:
            return "true or false"
        noun = "an integer" if self.kind is int else "a number"
        if self.low is not None and self.high is not None:
            return (f"{noun} in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}"
                    f"{')' if self.high_open else ']'}")
        if self.low is not None:
            return f"{noun} {'>' if self.low_open else '≥'} {self.low:g}"
        if self.high is not None:
            return f"{noun} {'<' if self.high_open else '≤'} {self.high:g}"
        return noun

    def values(self) -> str:
        """Short form for tables: `mlp`, `pca` / integer ≥ 1 / number > 0."""
        if self.choices:
            return ", ".join(f"`{c}`" for c in self.choices)
        if self.kind is bool:
            return "`true`, `false`"
        return self.describe().removeprefix("an ").removeprefix("a ")


def _setting(default, doc: str, rule: Rule) -> Any:
    return field(default=default, metadata={"doc": doc, "rule": rule})


def integer(default: int | None, doc: str, *, low: int | None = None, optional: bool = False) -> Any:
    """An int setting (≥ `low`); `optional`: None allowed (the doc says what None means)."""
    return _setting(default, doc, Rule(int, low=low, optional=optional or default is None))


def number(default: float | None, doc: str, *, low: float | None = None, above: float | None = None,
           below: float | None = None, optional: bool = False) -> Any:
    """A float setting: ≥ `low` or > `above`, and < `below`; an int given for it is held as a float."""
    rule = Rule(float, low=above if above is not None else low, low_open=above is not None, high=below,
                high_open=below is not None, optional=optional or default is None)
    return _setting(default, doc, rule)


def choice(default: str, doc: str, choices: tuple[str, ...]) -> Any:
    """A setting that takes one of `choices`."""
    return _setting(default, doc, Rule(str, choices=tuple(choices)))


def flag(default: bool, doc: str) -> Any:
    """A true / false setting."""
    return _setting(default, doc, Rule(bool))


def rule_of(cls, name: str) -> Rule:
    """The rule of one setting of a group."""
    return _fields(cls)[name].metadata["rule"]


def names(cls) -> tuple[str, ...]:
    """The settings of a group, in declaration order."""
    return tuple(_fields(cls))


def _fields(cls) -> dict[str, Field]:
    return {f.name: f for f in fields(cls) if "rule" in f.metadata}


def problems(cls, mapping: dict, where: str, *, extra: tuple[str, ...] = ()) -> list[str]:
    """Every unknown key and bad value of `mapping` against the group `cls`, each naming `where.key`.

    Args:
        extra: keys allowed besides the group's settings (checked elsewhere).
    """
    declared = _fields(cls)
    out = []
    for key, value in mapping.items():
        if key in extra:
            continue
        if key not in declared:
            out.append(f"{where}.{key} is unknown; allowed: {', '.join((*declared, *extra))}")
            continue
        problem = declared[key].metadata["rule"].problem(value)
        if problem:
            out.append(f"{where}.{key} {problem}")
    return out


def check(settings) -> None:
    """Checks a group's values and holds ints given for float settings as floats; for `__post_init__`.

    Raises:
        ConfigError: one line naming every bad value.
    """
    found = []
    for name, declared in _fields(type(settings)).items():
        value, rule = getattr(settings, name), declared.metadata["rule"]
        problem = rule.problem(value)
        if problem:
            found.append(f"{name} {problem}")
        elif rule.kind is float and value is not None and not isinstance(value, float):
            object.__setattr__(settings, name, float(value))
    if found:
        raise ConfigError(f"{type(settings).__name__}: {'; '.join(found)}.")


def as_params(settings, prefix: str = "") -> dict[str, Any]:
    """The group as MLflow params: every setting with a value (None — "the default the doc names" — left out)."""
    return {f"{prefix}{key}": value for key, value in asdict(settings).items() if value is not None}


def default_text(declared: Field) -> str:
    if declared.default is MISSING:
        return "-"
    value = declared.default
    return "-" if value is None else f"`{str(value).lower() if isinstance(value, bool) else value}`"


def settings_table(cls) -> str:
    """A Markdown table of the group: setting, values, default, what it does."""
    lines = ["| setting | values | default | what it does |", "| --- | --- | --- | --- |"]
    for name, declared in _fields(cls).items():
        rule = declared.metadata["rule"]
        lines.append(f"| `{name}` | {rule.values()} | {default_text(declared)} | {declared.metadata['doc']} |")
    return "\n".join(lines)


@dataclass(frozen=True)
class TrialSettings:
    """What one trial builds and trains. A space fixes any of them for every trial (`fixed:`) or lets the sampler
    choose them (`dimensions:`); the rest keep these defaults."""

    latent_dim: int | None = integer(
        None, "decoder width behind the bottleneck, ≤ the encoder width (default: the encoder width, no bottleneck)",
        low=1)
    decoder_layers: int | None = integer(
        None, "student decoder depth, ≤ the teacher's; kept layers are copied from it (default: the teacher's)", low=1)
    encoder_layers: int | None = integer(
        None, "student encoder depth, ≤ the teacher's: asymmetric pruning (default: the teacher's)", low=1)
    layer_map: str = choice(
        "distilbart", "which teacher layers a shallower student keeps (Shleifer & Rush; Campos & Zhai)",
        ("distilbart", "asymmetric"))
    decoder_ffn: str = choice(
        "teacher", "a narrow decoder keeps the teacher's feed-forward width (as the paper) or shrinks it too",
        ("teacher", "scaled"))
    learning_rate: float = number(3e-4, "fine-tuning peak learning rate (AdamW)", above=0)
    epochs: int = integer(2, "fine-tuning epochs", low=1)
    batch_size: int = integer(16, "pairs per fine-tuning step", low=1)
    batching: str = choice(
        "random", "fine-tuning batches drawn at random, or of inputs of similar length (shuffled within groups of 16 "
        "batches, as transformers' group_by_length): less work on padding when inputs vary (sentences), none when "
        "all fill the window (papers)", ("random", "by_length"))
    label_smoothing: float = number(0.0, "fine-tuning cross-entropy label smoothing (0 = off)", low=0, below=1)
    ae_kind: str = choice(
        "mlp", "bottleneck: the paper's MLP autoencoder, one linear layer, or PCA of the encoder states",
        ("mlp", "linear", "pca"))
    ae_mode: str = choice(
        "frozen", "bottleneck pre-trained and frozen, pre-trained then trained with the student, or trained from "
        "scratch with it", ("frozen", "finetune", "joint"))
    ae_epochs: int = integer(6, "autoencoder pre-training epochs", low=1)
    method: str = choice(
        "sft", "cross-entropy on references, knowledge distillation, or teacher summaries as references (made once "
        "per search)", ("sft", "kd", "pseudo_labels"))
    kd_alpha_ce: float = number(0.8, "KD: weight of the KL divergence to the teacher's logits", low=0)
    kd_alpha_mlm: float = number(0.2, "KD: weight of the cross-entropy on the references", low=0)
    kd_alpha_hid: float = number(0.0, "KD: weight of the decoder hidden-state MSE", low=0)
    kd_temperature: float = number(2.0, "KD: softmax temperature", above=0)
    weight_compression: str = choice(
        "none", "offline low-rank decoder FFN weights after training: truncated SVD or the row autoencoder",
        ("none", "svd", "ae"))
    weight_ratio: float = number(2.0, "weight compression: parameters of the compressed layers before ÷ after",
                                 above=1)
    pseudo_label_windows: int = integer(
        0, "pseudo_labels: also train on the teacher's summaries of up to this many windows of each training "
        "document's text beyond the input (its title + 0.7 words per source token; 0 = off)", low=0)
    output_vocab: str = choice(
        "full", "the student's LM head scores every token, or only the training text's (a shortlist: a smaller "
        "matrix read per step; narrow students and same-width bert2bert ones; same-width BART, T5 and Pegasus "
        "students keep the teacher's head)", ("full", "training"))

    def __post_init__(self):
        check(self)


@dataclass(frozen=True)
class EvaluationSettings:
    """How every trial (and the teacher) is measured: the space file's `evaluation:` section."""

    samples: int = integer(45, "validation pairs each trial is scored on with ROUGE", low=1)
    latency_samples: int = integer(5, "summaries per timed pass, batch 1", low=1)
    latency_repeats: int = integer(3, "the teacher's own timed passes", low=1)
    latency_batch_size: int = integer(8, "batch of the batched latency figure, timed alone (1 = skip it)", low=1)
    fixed_new_tokens: int | None = integer(
        None, "tokens of every summary timed at fixed length (default: generation.max_new_tokens)", low=1)
    latency_target_pct: float = number(
        5, "time teacher and student in alternating rounds until the speed-up is known within ± this %", above=0)
    latency_cap_s: float = number(60, "... or for at most this many seconds per architecture", above=0)
    recheck_samples: int = integer(
        500, "validation pairs the final front is re-checked on (the whole split when fewer; 0 = no re-check)", low=0)
    recheck_near: int = integer(
        2, "beside the front, re-check up to this many trials that would be on it were their in-search quality at "
        "the top of its 95 % interval (highest first; 0 = the front alone)", low=0)
    runtime: str = choice(
        "eager", "how generation runs: transformers' `generate`, or greedy with static caches and a compiled decoder "
        "step (a CUDA graph on GPUs; token-identical; greedy only)", ("eager", "compiled"))
    dtype: str = choice(
        "fp32", "precision of fine-tuning (autocast) and of every measurement; bf16 and fp16 need a GPU that has them",
        DTYPES)

    def __post_init__(self):
        check(self)


@dataclass(frozen=True)
class SearchSettings:
    """The sampler and the budget: the space file's `search:` section (besides its `enqueue` list)."""

    sampler: str = choice("tpe", "Optuna sampler: multivariate TPE, NSGA-II, a Gaussian process (log-EHVI), or random",
                          SAMPLERS)
    startup_trials: int | None = integer(
        None, "trials drawn at random (enqueued ones included) before the sampler models the results: TPE's and the "
        "GP's start-up, NSGA-II's population (default: a quarter of `trials`, 2 to 5)", low=1, optional=True)
    trials: int = integer(6, "trials to run", low=1)
    max_concurrent: int = integer(1, "trials at once (more share the cores and distort latency on one machine)",
                                  low=1)
    seed: int = integer(0, "the sampler's seed, and every trial's")
    time_budget_s: float | None = number(None, "end the trials after this many seconds: no trial starts after it, "
                                         "and one still training is stopped and not counted (default: no limit)",
                                         above=0)
    retries: int = integer(0, "restarts of a failed trial before it is recorded as failed", low=0)
    enqueue_teacher: bool = flag(True, "try the teacher-shaped student first, when the teacher's shape is known")
    quality_floor: float = number(
        0.5, "trials with ROUGE-1 below this × the teacher's are degenerate, kept off the front (0 = off)", low=0,
        below=1)
    prescreen: bool = flag(True, "measure each draw's costs before training it, and stop it there if it cannot reach "
                           "the front (see `prescreen_ceiling`)")
    prescreen_ceiling: float = number(
        1.1, "cost pre-screen: a draw is stopped before training when its costs (measured untrained) break a "
        "constraint, or when a trained student dominates it even at this × the teacher's quality (0 = constraints "
        "only)", low=0)

    def __post_init__(self):
        check(self)

    @property
    def random_trials(self) -> int:
        """`startup_trials`, or its default: Optuna's own (10 for TPE and the GP) only pays off in long searches;
        in a 4-trial one it would leave nothing to model. At most 5: a trial here costs minutes, and `trials` is
        often a cap under `time_budget_s` rather than what runs (bench/strategies.md measured TPE after 5)."""
        if self.startup_trials is not None:
            return self.startup_trials
        return max(2, min(5, -(-self.trials // 4)))


def _groups() -> dict[str, type]:
    # Lazy: GenerationSettings lives with the decoding it drives (models/), which imports this module.
    from shrinktune.models.generation import GenerationSettings

    return {"search": SearchSettings, "evaluation": EvaluationSettings, "generation": GenerationSettings,
            "fixed / dimensions": TrialSettings}


def main() -> None:
    """Prints the README's tables of settings."""
    for section, cls in _groups().items():
        print(f"<!-- settings: {section} -->\n{settings_table(cls)}\n<!-- /settings -->\n")


if __name__ == "__main__":
    main()
