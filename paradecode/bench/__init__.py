"""Benchmarks that make decoding strategies comparable: verifiable tasks (``tasks``), the
character tokenizer of the shipped models (``tokenizer``) and steps-to-quality sweeps
(``run_bench``, also ``paradecode bench`` on the command line)."""

from .runner import SWEEPS, format_summary, run_bench, summarize, sweep_for
from .tasks import TASKS, Example, Task, get_task

__all__ = ["run_bench", "summarize", "format_summary", "sweep_for", "SWEEPS", "TASKS", "Task", "Example", "get_task"]
