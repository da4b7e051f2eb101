"""Real benchmarks with the conventions of the field's published numbers: GSM8K (lm-eval's
5-shot and chat formats, its strict and flexible answer filters), HumanEval and MBPP (prompt
layouts, completion post-processing, a sandboxed executor, pass@1).

Problems come from local files (``--data-dir``) or, only when asked, the hub through
``datasets``; importing this package reads and downloads nothing. The synthetic tasks of
:mod:`paradecode.bench.tasks` are separate and unchanged.
"""

from . import code, gsm8k
from .code import CodeProblem, load_humaneval, load_mbpp
from .data import load_records, read_records
from .execution import ExecResult, pass_at_k, run_program, run_programs
from .gsm8k import GSM8KProblem, load_gsm8k

__all__ = ["gsm8k", "code", "GSM8KProblem", "load_gsm8k", "CodeProblem", "load_humaneval", "load_mbpp",
           "load_records", "read_records", "ExecResult", "run_program", "run_programs", "pass_at_k"]
