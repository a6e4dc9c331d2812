"""The names a search writes into MLflow, in one place: tags, run kinds and metric prefixes.

Every reader and writer (the runner, the Tune callback, the picker, the benchmarks) uses these constants; a name
changed here changes everywhere. Runs of a search:

- the search's run (`kind = search`): the space, budget, decoding and evaluation settings as params, the teacher's
  metrics as `teacher_*`;
- one child run per ended trial (`kind = trial`, `mlflow.parentRunId` = the search's run): named from its settings
  (`384x5 lr8.1e-4 sft · <Tune id>`), its effective settings and the search's decoding and evaluation settings as
  params, its metrics under their own names, its checkpoint folder as a tag, its real start and end;
- one child run for the teacher (`kind = teacher`, named "teacher"): the teacher's metrics under the students' names
  (and its standing against itself under those of the trials' ratios: speed-up 1, ...), so MLflow's compare and
  chart views put it beside them (its `teacher_*` copy on the search's run stays for readers).

After the final re-check the re-checked figures carry the plain names and the in-search ones `search_*`
(`search_teacher_*` on the search's run).

The experiment carries a description and MLflow's experiment-type tag for classic ML (the UI of MLflow 3.17 opens
GenAI views by default; `RUNS_VIEW_QUERY` opens the runs table of the classic view directly).
"""

from __future__ import annotations

PARENT_TAG = "mlflow.parentRunId"  # MLflow's own: nests a trial's run under its search's in the UI

KIND_TAG = "shrinktune.kind"  # which kind of run: SEARCH_KIND, TRIAL_KIND or TEACHER_KIND
SEARCH_KIND = "search"
TRIAL_KIND = "trial"
TEACHER_KIND = "teacher"  # the search's teacher as a run beside the trials; readers of trials filter it out
TEACHER_RUN_NAME = "teacher"

NOTE_TAG = "mlflow.note.content"  # MLflow's own: an experiment's (or run's) description in the UI
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"  # MLflow's own: the experiment's type, as the UI's type selector sets it
ML_EXPERIMENT_KIND = "custom_model_development"  # the UI's "Machine learning" type (not "genai_development")
RUNS_VIEW_QUERY = "workflowType=machine_learning"  # the UI's URL switch to its classic (non-GenAI) views

SEARCH_NAME_TAG = "shrinktune.search_name"  # on the search's run: how a resumed search finds it again
TEACHER_DIR_TAG = "shrinktune.teacher_dir"  # on the search's run: the prepared teacher's folder
# Params, not tags, for paths the picker and resume trust: a param cannot be changed once logged.
TEACHER_DIR_PARAM = "teacher_dir"  # on the search's (and its teacher's) run: the teacher's folder as first logged
STORAGE_PARAM = "storage"  # on the search's run: Ray Tune's storage path; the search's folder is <storage>/<its name>
CHECKPOINT_PARAM = "checkpoint"  # on a trial's run: its checkpoint folder (also the tag CHECKPOINT_TAG, for filters)
STATE_TAG = "shrinktune.state"  # on the search's run: how it ended, when not in the usual way (NO_TRIALS_STATE)
NO_TRIALS_STATE = "no-trials"  # the search ended before any trial ran

TRIAL_TAG = "shrinktune.trial"  # on a trial's run: its Ray Tune trial id
CHECKPOINT_TAG = "shrinktune.checkpoint"  # on a trial's run: its checkpoint folder
ERROR_TAG = "shrinktune.error"  # on a failed trial's run: the reason, then Ray's record of every attempt
INFEASIBLE_TAG = "shrinktune.infeasible"  # "true" on a trial that failed as an impossible configuration
SCREENED_TAG = "shrinktune.screened"  # "true" on a draw the cost pre-screen stopped before training (run KILLED)
PARETO_TAG = "shrinktune.pareto"  # "true" on the final front's members
INDISTINCT_TAG = "shrinktune.indistinct"  # on a front member whose R-1 is not told apart from a cheaper member's
DEGENERATE_TAG = "shrinktune.degenerate"  # on a trial below the quality floor (kept off the front)
FEASIBLE_TAG = "shrinktune.feasible"  # "true" / "false" under the space's constraints (when it has any)
RECHECKED_TAG = "shrinktune.rechecked"  # on a re-checked member: the number of validation pairs

SELECTION_TAG = "shrinktune.pareto_selection"  # on a run the picker selected (picker's own front)
SEARCH_TAG = "shrinktune.search"  # on a registered model version: the search's run id
PICK_TAG = "shrinktune.pick"  # on a registered model version: the pick rule that chose it

TEACHER_PREFIX = "teacher_"  # the teacher's metrics on the search's run
SEARCH_PREFIX = "search_"  # in-search figures kept after the re-check replaced them
SEARCH_TEACHER_PREFIX = SEARCH_PREFIX + TEACHER_PREFIX


def prefixed(prefix: str, metrics: dict) -> dict:
    """`metrics` with every name prefixed."""
    return {f"{prefix}{key}": value for key, value in metrics.items()}


def unprefixed(prefix: str, metrics: dict) -> dict:
    """The metrics whose names start with `prefix`, without it."""
    return {key[len(prefix):]: value for key, value in metrics.items() if key.startswith(prefix)}


def filter_value(value: str) -> str:
    """`value` as a string literal of an MLflow filter string: in single quotes, or in double quotes when it holds
    a single quote (MLflow's parser has no escape inside a literal).

    Raises:
        ValueError: the value holds both kinds of quote, which no MLflow literal can express.
    """
    text = str(value)
    if "'" not in text:
        return f"'{text}'"
    if '"' not in text:
        return f'"{text}"'
    raise ValueError(f"{text!r} holds both ' and \": MLflow cannot search for it")
