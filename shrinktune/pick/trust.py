"""Paths read from MLflow, which others can write, checked before the picker uploads, copies or tests what they name.

A trial's checkpoint folder is its run's immutable `checkpoint` param (never the mutable tag), resolved inside its
search's folder (`<storage param>/<search name>`) and holding a whole trial checkpoint with no symbolic link
(`trusted_checkpoint`); the teacher that `--test` scores is its search's `teacher_dir` param, holding a whole model
(`heldout_inputs`); copies take regular files only (`copy_regular_files`).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from shrinktune.errors import UserError
from shrinktune.models.folders import TRIAL_INFO, missing_parts
from shrinktune.tracking.schema import (
    KIND_TAG,
    PARENT_TAG,
    STORAGE_PARAM,
    TEACHER_DIR_PARAM,
    TEACHER_KIND,
    filter_value,
)

if TYPE_CHECKING:
    from shrinktune.pick.runs import Candidate, Selection

logger = logging.getLogger(__name__)


def run_label(run) -> str:
    """How a message names an MLflow run: its name, else its id."""
    return run.info.run_name or run.info.run_id


def _search_folder(search, logged: Path) -> tuple[Path | None, str]:
    """The folder a checkpoint of `search` must resolve inside, and how to name it in a message; (None, why) when
    none can be trusted. `<storage param>/<search name>`; for a search that logged no storage (an older one), the
    logged path's own folder named after the search."""
    name = search.info.run_name or ""
    if name in ("", ".", "..") or Path(name).name != name:
        return None, f"its search's name {name!r} is not a folder name"
    storage = search.data.params.get(STORAGE_PARAM)
    if storage:
        if not Path(storage).is_absolute():
            return None, f"its search's {STORAGE_PARAM} param {storage!r} is not an absolute path"
        root = (Path(storage) / name).resolve()
        return root, f"outside the search's storage {root}"
    # Older searches: the logged path must run through a folder named after the search, and resolve under it.
    at = [i for i, part in enumerate(logged.parts) if part == name]
    if not at or not logged.is_absolute():
        return None, (f"not an absolute path through a folder named after its search {name!r} (the search logged no "
                      f"{STORAGE_PARAM} param)")
    root = Path(*logged.parts[:at[-1] + 1]).resolve()
    return root, f"resolving outside its search's folder {root}"


def trusted_checkpoint(selection: Selection, candidate: Candidate) -> Path | None:
    """The trial's checkpoint folder, resolved, once it may be uploaded, copied or tested: its run's `checkpoint`
    param, inside its search's folder, holding a whole trial checkpoint and no symbolic link. None when nothing is
    at that path (register and export then fall back on what MLflow holds, `has_logged_checkpoint`).

    Raises:
        UserError: something is at that path but fails a check; nothing is to be read from it.
    """
    if not candidate.checkpoint or not os.path.lexists(candidate.checkpoint):
        return None
    logged = Path(candidate.checkpoint)
    resolved = logged.resolve()
    root, where = _search_folder(selection.search_of(candidate), logged)

    def refuse(problem: str, fix: str) -> UserError:
        return UserError(f"trial {candidate.trial}'s checkpoint {logged} (run {candidate.run_id}) is {problem}: not "
                         f"uploaded, copied or tested; {fix}, or pick another trial.")

    if root is None or not resolved.is_relative_to(root):
        raise refuse(where if root is None else f"{where} (it resolves to {resolved})",
                     "check the run's `checkpoint` param and where the search's storage is")
    missing = missing_parts(resolved, TRIAL_INFO)
    if missing:
        raise refuse(f"missing {', '.join(missing)}",
                     "it is not a whole trial checkpoint: restore it from the search's storage")
    links = sorted(p.name for p in resolved.rglob("*") if p.is_symlink())
    if links:
        raise refuse(f"holding symbolic link(s) {', '.join(links[:3])}",
                     "a trial checkpoint holds plain files: replace the links with the files they point to")
    return resolved


@dataclass(frozen=True)
class HeldOutInputs:
    """What --test scores, checked before anything is written (`heldout_inputs`)."""

    checkpoint: Path  # the pick's trusted checkpoint folder
    teacher_dir: Path  # its search's teacher folder
    task: str  # its search's task
    generation: dict | None  # its search's decoding settings


def heldout_inputs(client, selection: Selection, checkpoint: Path | None) -> HeldOutInputs:
    """The pick's checkpoint (`trusted_checkpoint`), and its search's teacher folder — its run's `teacher_dir`
    param, else that of its teacher's run (params: a tag could be rewritten), holding a whole model — task and
    decoding.

    Raises:
        UserError: the checkpoint is gone, no teacher folder or task was logged, or the teacher folder is not whole.
    """
    chosen = selection.chosen
    search = selection.search_of(chosen)
    if checkpoint is None:
        raise UserError(f"trial {chosen.trial} has no checkpoint folder here ({chosen.checkpoint or 'none logged'}); "
                        "--test needs it: run it where the search's storage is, or pick another trial.")
    params = search.data.params
    folder = params.get(TEACHER_DIR_PARAM)
    if not folder:
        found = client.search_runs(
            [search.info.experiment_id], max_results=1, order_by=["attributes.start_time ASC"],
            filter_string=f"tags.`{PARENT_TAG}` = {filter_value(search.info.run_id)} "
                          f"and tags.`{KIND_TAG}` = {filter_value(TEACHER_KIND)}")
        folder = found[0].data.params.get(TEACHER_DIR_PARAM) if found else None
    if not folder:
        raise UserError(f"search {run_label(search)} logged no {TEACHER_DIR_PARAM} param (on its run or its teacher's "
                        "run); --test needs the teacher's folder: rerun the search with this version.")
    if not params.get("task"):
        raise UserError(f"search {run_label(search)} logged no task param; --test needs it: rerun the search with this "
                        "version.")
    missing = missing_parts(folder)
    if missing:
        raise UserError(f"search {run_label(search)}'s teacher folder {folder} is missing {', '.join(missing)}; --test "
                        "needs it whole: run --test where the search prepared its teacher, or rerun the search.")
    generation = json.loads(params["generation"]) if params.get("generation") else None
    return HeldOutInputs(checkpoint, Path(folder).resolve(), params["task"], generation)


def copy_regular_files(source: Path, destination: Path) -> Path:
    """Copies the regular files under `source` into `destination`, keeping their layout; symbolic links are skipped,
    never followed, so nothing outside `source` is copied. Returns `destination`."""
    skipped = []
    for folder, dirs, files in os.walk(source):  # followlinks=False: a linked folder is listed, never entered
        here = Path(folder)
        target = destination / here.relative_to(source)
        target.mkdir(parents=True, exist_ok=True)
        skipped += [here / d for d in dirs if (here / d).is_symlink()]
        for name in files:
            path = here / name
            if path.is_symlink() or not path.is_file():
                skipped.append(path)
                continue
            shutil.copy2(path, target / name, follow_symlinks=False)
    if skipped:
        logger.warning("not copied from %s (not regular files): %s", source, ", ".join(str(p) for p in skipped))
    return destination
