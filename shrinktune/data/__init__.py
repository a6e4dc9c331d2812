"""Data room: summarization tasks, their documents and reference summaries."""

from shrinktune.data.examples import Example, format_source
from shrinktune.data.tasks import TASKS, Task, get_task, load_task_splits

__all__ = ["Example", "TASKS", "Task", "format_source", "get_task", "load_task_splits"]
