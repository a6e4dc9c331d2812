"""The Pareto table both commands print — the search's (`shrinktune.cli.format_front`) and the picker's
(`shrinktune.pick.cli.format_selection`) — in one shape, at most 120 characters wide.

Columns: the trial; the settings the search sampled (its dimensions, not its fixed settings); ROUGE-1 with its 95 %
interval, ROUGE-2, the speed-up with its IQR, ms/summary, any other objective, train MB, the memory ratio, ΔR-1
and a note. The teacher's row comes first. When the columns are wider than the terminal's 120 characters, the
least useful go first (`SHED`): the memory ratio, the note, the IQR, R-2, the interval, ...; an objective's column
goes last. Checkpoint paths, too long for any table, are listed under it (`checkpoint_lines`).

Pure functions over metric dicts: no MLflow, no Ray.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

WIDTH = 120  # a terminal's usual width: no row may wrap
ID_LENGTH = 8  # trial ids are cut to this when that keeps them apart (Ray Tune's own are 8 characters)

# Column headers of the trial settings (`shrinktune.settings`); a setting not named here is shown by its own name.
SETTING_LABELS = {
    "latent_dim": "latent", "decoder_layers": "dec", "encoder_layers": "enc", "layer_map": "map",
    "decoder_ffn": "ffn", "learning_rate": "lr", "epochs": "epochs", "batch_size": "batch",
    "label_smoothing": "smooth", "ae_kind": "ae", "ae_mode": "ae mode", "ae_epochs": "ae ep", "method": "method",
    "kd_alpha_ce": "kd ce", "kd_alpha_mlm": "kd mlm", "kd_alpha_hid": "kd hid", "kd_temperature": "kd T",
    "weight_compression": "weights", "weight_ratio": "w ratio",
}
# Column headers of metrics shown as objectives beyond the fixed columns; others are shown by their own names.
METRIC_LABELS = {
    "rouge1": "R-1", "rouge2": "R-2", "rougeL": "R-L", "rougeLsum": "R-Lsum", "bleu": "BLEU", "chrf": "chrF",
    "accuracy": "acc", "macro_f1": "macro-F1", "invalid_fraction": "invalid", "latency_ms": "ms/summary",
    "latency_fixed_ms": "fixed ms", "latency_batch_ms": "batch ms", "train_peak_mb": "train MB",
    "generate_peak_mb": "gen MB", "params_total": "params", "params_decoder": "dec params", "speedup": "speed-up",
    "speedup_fixed": "fixed speed-up", "train_memory_ratio": "mem ratio",
}
# What goes when the table is too wide, first to last: a column dropped, or ("compact") narrowed. Columns of the
# objectives are kept until only the settings are left to drop (last first), then they go too, last first.
# The notes go early: the commands also say them under the table.
# "quality" / "quality2" / "quality_change" stand for the task kind's first two metrics and the first's change.
SHED = (("train_memory_ratio", "drop"), ("note", "drop"), ("speedup", "compact"), ("quality2", "drop"),
        ("quality", "compact"), ("train_peak_mb", "drop"), ("latency_ms", "drop"), ("quality_change", "drop"),
        ("search", "drop"), ("speedup", "drop"))


def _kind_metrics(kind: str) -> tuple[str, str]:
    """The kind's first two quality metrics. Imported here: `shrinktune.measure` loads torch, and the picker's
    `--help` answers without it."""
    from shrinktune.measure.kinds import get_kind

    first, second = get_kind(kind).metrics[:2]
    return first, second


def _qualities(kind: str) -> dict[str, str]:
    """SHED's stand-ins → the kind's column keys (summarization: rouge1, rouge2, rouge1_change)."""
    first, second = _kind_metrics(kind)
    return {"quality": first, "quality2": second, "quality_change": f"{first}_change"}


@dataclass(frozen=True)
class Row:
    """One trial as the table shows it."""

    trial: str  # its id
    config: dict  # its settings (only those named in `settings` are shown)
    metrics: dict  # its metrics
    note: str = ""  # e.g. "≈ 3f2a" (not told apart from a cheaper trial), "±12 % time", "off front"
    mark: str = ""  # "*" on the pick
    search: str = ""  # its search's run id, shown when the rows come from several searches
    checkpoint: str | None = None  # listed under the table


@dataclass
class Column:
    """One column: its key (a metric, `setting:<name>`, `trial`, ...), its header and cells (the teacher's first),
    and a narrower form to fall back to before it is dropped."""

    key: str
    header: str
    cells: list[str]
    compact: tuple[str, list[str]] | None = None

    @property
    def width(self) -> int:
        return max(len(cell) for cell in [self.header, *self.cells])


def pareto_table(rows: Sequence[Row], reference: dict, objectives: dict[str, str], settings: Sequence[str],
                 width: int = WIDTH, kind: str = "summarization") -> str:
    """The table: header, rule, the teacher (`reference`), then `rows` in their order, at most `width` wide; its
    quality columns are the task `kind`'s first two metrics (R-1 and R-2; BLEU and chrF; accuracy and macro-F1)."""
    columns = fit([c for c in _columns(rows, reference, objectives, settings, kind) if _shown(c)], objectives, width,
                  kind)
    widths = [c.width for c in columns]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(cells, widths)).rstrip()
             for cells in zip(*[[c.header, *c.cells] for c in columns])]
    lines.insert(1, "  ".join(("-" if c.header else " ") * w for c, w in zip(columns, widths)).rstrip())
    return "\n".join(lines)


def table_width(columns: Sequence[Column]) -> int:
    """Characters of the widest line the columns make (two spaces between columns)."""
    return sum(c.width for c in columns) + 2 * max(len(columns) - 1, 0)


def fit(columns: list[Column], objectives: dict[str, str], width: int = WIDTH,
        kind: str = "summarization") -> list[Column]:
    """`columns`, narrowed and thinned (see `SHED`) until they are at most `width` wide; the trial's column stays."""
    columns = list(columns)
    keys = _qualities(kind)
    shed = [(keys.get(key, key), how) for key, how in SHED]
    steps = [(key, how) for key, how in shed if key not in objectives or how == "compact"]
    steps += [(c.key, "drop") for c in reversed(columns) if c.key.startswith("setting:")]
    steps += [(c.key, "drop") for c in reversed(columns) if c.key in objectives and c.key != next(iter(objectives))]
    for key, how in steps:
        if table_width(columns) <= width:
            break
        for index, column in enumerate(columns):
            if column.key != key:
                continue
            if how == "drop":
                del columns[index]
            elif column.compact:
                columns[index] = Column(key, *column.compact)
            break
    return columns


def _shown(column: Column) -> bool:
    """A column is shown when some trial (not only the teacher) has a value in it."""
    return column.key == "trial" or any(cell not in ("", "-") for cell in column.cells[1:])


def _columns(rows: Sequence[Row], reference: dict, objectives: dict[str, str], settings: Sequence[str],
             kind: str = "summarization") -> list[Column]:
    """Every column the table could show, in their order."""
    ms = [r.metrics for r in rows]
    first, second = _kind_metrics(kind)
    label = METRIC_LABELS.get(first, first)
    columns = []
    if any(r.mark for r in rows):
        columns.append(Column("mark", "", ["", *(r.mark for r in rows)]))
    columns.append(Column("trial", "trial", ["teacher", *short_ids([r.trial for r in rows])]))
    if len({r.search for r in rows}) > 1:
        columns.append(Column("search", "search", ["-", *(r.search[:ID_LENGTH] or "-" for r in rows)]))
    for name in dict.fromkeys(settings):
        columns.append(Column(f"setting:{name}", SETTING_LABELS.get(name, name),
                              ["-", *(setting_text(r.config.get(name)) for r in rows)]))
    columns.append(Column(first, f"{label} [95 % interval]", [interval(m, first) for m in [reference, *ms]],
                          compact=(label, [metric_text(first, m.get(first)) for m in [reference, *ms]])))
    columns.append(_metric_column(second, reference, ms))
    columns.append(Column("speedup", "speed-up (IQR)", ["1.00x", *(speedup(m) for m in ms)],
                          compact=("speed-up", ["1.00x", *(metric_text("speedup", m.get("speedup")) for m in ms)])))
    columns.append(_metric_column("latency_ms", reference, ms))
    shown = {first, second, "latency_ms", "speedup", "train_peak_mb", "train_memory_ratio"}
    columns += [_metric_column(metric, reference, ms) for metric in objectives if metric not in shown]
    columns.append(_metric_column("train_peak_mb", reference, ms))
    columns.append(Column("train_memory_ratio", "mem ratio",
                          ["1.00", *(metric_text("train_memory_ratio", m.get("train_memory_ratio")) for m in ms)]))
    columns.append(Column(f"{first}_change", f"Δ{label}", ["-", *(rouge_change(m, reference, first) for m in ms)]))
    columns.append(Column("note", "note", ["", *(r.note for r in rows)]))
    return columns


def _metric_column(metric: str, reference: dict, ms: list[dict]) -> Column:
    return Column(metric, METRIC_LABELS.get(metric, metric),
                  [metric_text(metric, m.get(metric)) for m in [reference, *ms]])


def short_ids(ids: Sequence[str], length: int = ID_LENGTH) -> list[str]:
    """The ids cut to `length` characters when that keeps them apart, else whole."""
    cut = [i[:length] for i in ids]
    return cut if len(set(cut)) == len(set(ids)) else list(ids)


def setting_text(value) -> str:
    """A setting's value in a few characters: 384, 1.0e-03, 0.25, sft; "-" when the trial has none."""
    if value is None or value == "":
        return "-"
    number = _number(value)
    if number is None:
        return str(value)
    if number.is_integer() and abs(number) < 1e6:
        return str(int(number))
    return f"{number:.1e}" if abs(number) < 0.01 else f"{number:.3g}"


def metric_text(metric: str, value) -> str:
    """A metric's value as the table shows it: ROUGE to 3 places, ms to 1, MB whole, parameters in millions,
    speed-ups with an x, ratios to 2 places."""
    number = _number(value)
    if number is None:
        return "-"
    if metric.startswith("rouge") or metric in ("accuracy", "macro_f1", "invalid_fraction"):
        return f"{number:.3f}"
    if metric in ("bleu", "chrf"):
        return f"{number:.2f}"
    if metric.startswith("speedup"):
        return f"{number:.2f}x"
    if metric.endswith("_ms"):
        return f"{number:.1f}"
    if metric.endswith("_mb"):
        return f"{number:.0f}"
    if metric.startswith("params"):
        return f"{number / 1e6:.1f}M" if number >= 1e5 else f"{number:.0f}"
    if metric.endswith("ratio"):
        return f"{number:.2f}"
    return f"{number:.4g}"


def interval(m: dict, key: str = "rouge1") -> str:
    """`0.257 [0.241, 0.272]`: a figure and its 95 % interval, when the trial has one."""
    if _number(m.get(key)) is None:
        return "-"
    if _number(m.get(f"{key}_low")) is None or _number(m.get(f"{key}_high")) is None:
        return metric_text(key, m[key])
    return f"{metric_text(key, m[key])} [{metric_text(key, m[f'{key}_low'])}, {metric_text(key, m[f'{key}_high'])}]"


def speedup(m: dict) -> str:
    """`1.62x (1.58-1.66)`: the median speed-up and its interquartile range over the timed rounds."""
    if _number(m.get("speedup")) is None:
        return "-"
    if _number(m.get("speedup_q25")) is None or _number(m.get("speedup_q75")) is None:
        return f"{m['speedup']:.2f}x"
    return f"{m['speedup']:.2f}x ({m['speedup_q25']:.2f}-{m['speedup_q75']:.2f})"


def rouge_change(m: dict, reference: dict, key: str = "rouge1") -> str:
    """A quality metric (ROUGE-1) against the teacher's, in %: the trial's `<key>_change`, else worked out from
    both."""
    change = _number(m.get(f"{key}_change"))
    teacher, own = _number(reference.get(key)), _number(m.get(key))
    if change is None and teacher and own is not None:
        change = (own - teacher) / teacher
    return "-" if change is None else f"{round(100 * change, 1) + 0.0:+.1f}%"  # + 0.0: no "-0.0%"


def time_note(m: dict) -> str:
    """`±12 % time` when the timing rounds hit their cap before the speed-up was within its target."""
    if m.get("latency_converged") == 0:
        return f"±{m.get('latency_precision_pct', 0):.0f} % time"
    return ""


def setting_names(configs: Sequence[dict]) -> list[str]:
    """Every setting named in `configs`, in the order first met (the search's trial configs hold exactly the
    settings it sampled)."""
    return list(dict.fromkeys(name for config in configs for name in config))


def differing_settings(configs: Sequence[dict]) -> list[str]:
    """The settings whose values differ between `configs` (a missing one counts as a value of its own): when only
    the full settings of each trial are known, these are the ones that were sampled."""
    return [name for name in setting_names(configs) if len({str(c.get(name)) for c in configs}) > 1]


def checkpoint_lines(rows: Sequence[Row]) -> list[str]:
    """The rows' checkpoint folders, one a line under the table (relative to the working directory when inside
    it): `load_summarizer(folder)` loads any of them."""
    listed = [(trial, r.checkpoint) for trial, r in zip(short_ids([r.trial for r in rows]), rows) if r.checkpoint]
    if not listed:
        return []
    width = max(len(trial) for trial, _ in listed)
    return (["Checkpoints (shrinktune.load_summarizer(folder) loads one):"]
            + [f"  {trial.ljust(width)}  {_near(path)}" for trial, path in listed])


def _near(path: str) -> str:
    """`path` relative to the working directory when it lies inside it, else as given."""
    try:
        relative = os.path.relpath(Path(path).resolve(), Path.cwd())
    except ValueError:  # another drive
        return path
    return path if relative.startswith("..") else relative


def _number(value) -> float | None:
    """`value` as a finite number (MLflow params are strings), else None."""
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None
