"""README.md is a manual that must stay true: every ```python block runs as written (CPU, the
shipped models), the command lines parse, and every results file it or benchmarks/README.md
names exists.

Blocks run in order, one namespace per ``## `` section (a section reads on its own). A block
whose first line is ``# needs weights: ...`` (a checkpoint we cannot have here) is only
compiled."""

from __future__ import annotations

import ast
import sys
import types
import re
import shlex
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
BENCH_README = ROOT / "benchmarks" / "README.md"
RESULTS = ROOT / "benchmarks" / "results"
NEEDS_WEIGHTS = "# needs weights:"
RESULT_NAME = re.compile(r"^[a-z0-9_]+?_\d{4}-\d{2}-\d{2}_[a-z0-9]+(_[a-z0-9-]+)?\.[a-z]+$")


def code_blocks(text: str) -> list[tuple[str, str, int, str]]:
    """``(section heading, language, first line number, code)`` of every fenced block."""
    blocks, section, lang, start, lines = [], "", None, 0, []
    for number, line in enumerate(text.splitlines(), 1):
        if lang is None and line.startswith("## "):
            section = line[3:].strip()
        elif lang is None and line.startswith("```"):
            lang, start, lines = line[3:].strip(), number + 1, []
        elif lang is not None and line.startswith("```"):
            blocks.append((section, lang, start, "\n".join(lines) + "\n"))
            lang = None
        elif lang is not None:
            lines.append(line)
    assert lang is None, "README.md has an unclosed code fence"
    return blocks


def python_sections() -> dict[str, list[tuple[int, str]]]:
    out: dict[str, list[tuple[int, str]]] = {}
    for section, lang, start, code in code_blocks(README.read_text()):
        if lang == "python":
            out.setdefault(section, []).append((start, code))
    return out


def run_section(section: str) -> dict:
    """Execute the section's python blocks in order in one namespace; compile the ones that
    need weights. Tracebacks point at README.md's own line numbers."""
    module = types.ModuleType("__readme__")  # a real module: dataclasses look their class's module up
    sys.modules["__readme__"] = module
    namespace: dict = module.__dict__
    for start, code in python_sections()[section]:
        compiled = compile("\n" * (start - 1) + code, str(README), "exec")
        if code.lstrip().startswith(NEEDS_WEIGHTS):
            continue
        exec(compiled, namespace)
    return namespace


def commented_output(section: str, marker: str):
    """What the comment on the section's line containing ``marker`` says it prints: a Python
    literal (a list printed by ``print``) or, when it is none, the comment's text."""
    for _, code in python_sections()[section]:
        for line in code.splitlines():
            if marker in line and "#" in line:
                comment = line.split("#", 1)[1].strip()
                try:
                    return ast.literal_eval(comment)
                except (ValueError, SyntaxError):
                    return comment
    raise AssertionError(f"no commented line with {marker!r} in section {section!r}")


def test_sections_with_code_are_the_expected_ones():
    assert set(python_sections()) == {
        "Use", "Caches", "Speculative decoding", "Images: VAR, CoDe, ScaleKV", "Use with diffusers",
        "Extending paradecode",
    }


def test_extending():
    """The README's new strategy and new cache policy register and decode on the shipped model."""
    import paradecode

    from paradecode import registry

    try:
        run_section("Extending paradecode")
        assert "top-k-example" in paradecode.strategies()
        assert "dual-every-2-example" in paradecode.cache_policies()
    finally:  # the examples are the README's, not the package's: later tests see the built-ins only
        registry._STRATEGIES.pop("top-k-example", None)
        registry._CACHES.pop("dual-every-2-example", None)


def test_weight_blocks_are_marked_and_compile():
    marked = [(s, code) for s, lang, _, code in code_blocks(README.read_text())
              if lang == "python" and code.lstrip().startswith(NEEDS_WEIGHTS)]
    assert len(marked) == 2  # LLaDA-8B, official VAR: the only blocks that do not run
    for section, code in marked:
        compile(code, f"README.md ({section})", "exec")


def test_use():
    ns = run_section("Use")
    from paradecode.bench.tasks import Example, get_task

    texts = ns["tok"].batch_decode(ns["out"].generated, skip_special_tokens=True)
    assert texts == commented_output("Use", "print(tok.batch_decode(")
    prompts = ["words river:", "12+345=", "perm abcd:"]
    data = [{"category": "river"}, {"a": 12, "b": 345}, {"letters": "abcd"}]
    for task, prompt, d, text in zip(["words", "add", "perm"], prompts, data, texts):
        assert get_task(task).verify(Example(prompt, "", d), text), (task, text)


def test_caches(capsys):
    run_section("Caches")
    from paradecode.bench.tasks import Example, get_task

    lines = [line.split(" ", 2) for line in capsys.readouterr().out.splitlines()]
    answers = {cache: (int(nfe), text) for cache, nfe, text in lines[:3]}
    assert list(answers) == ["None", "dual", "dkv-decode"]
    example = Example("lists fruit bird tool stone river:", "",
                      {"categories": ["fruit", "bird", "tool", "stone", "river"]})
    for cache, (nfe, text) in answers.items():
        assert get_task("lists").verify(example, text), (cache, text)
        assert nfe <= 80, (cache, nfe)  # "in about 72 forwards" (one token per forward would be 128)


def test_speculative(capsys):
    ns = run_section("Speculative decoding")
    first_print = ast.literal_eval(capsys.readouterr().out.splitlines()[0])
    assert first_print == commented_output("Speculative decoding", "print([decode(row)")
    assert ns["trim"].size == 48
    assert ns["out"].trace.nfe_by_role["target"] < 32


def test_images():
    ns = run_section("Images: VAR, CoDe, ScaleKV")
    assert tuple(ns["out"].images.shape) == (3, 3, 32, 32)


def test_use_with_diffusers():
    ns = run_section("Use with diffusers")
    assert ns["out"].texts[0] == commented_output("Use with diffusers", "print(out.texts[0])")


def test_command_lines_parse():
    from paradecode.cli import build_parser

    parser = build_parser()
    commands = []
    for _, lang, _, code in code_blocks(README.read_text()):
        if lang == "bash":
            commands += [shlex.split(line, comments=True) for line in code.splitlines()]
    paradecode_commands = [c[1:] for c in commands if c and c[0] == "paradecode"]
    assert len(paradecode_commands) >= 5
    for argv in paradecode_commands:
        parser.parse_args(argv)  # argparse exits on an unknown command or flag
    for c in commands:
        scripts = [a for a in c if a.endswith(".py")]
        for script in scripts:
            assert (ROOT / script).is_file(), script


def _named_results(text: str) -> set[str]:
    names = set()
    for stem, exts, ext in re.findall(r"results/([\w.-]+?)\.(?:\{([a-z,]+)\}|([a-z]+)\b)", text):
        for e in (exts.split(",") if exts else [ext]):
            names.add(f"{stem}.{e}")
    return names


def test_result_files_are_named_and_referenced():
    on_disk = {p.name for p in RESULTS.iterdir() if p.is_file()}
    bad = sorted(n for n in on_disk if not RESULT_NAME.match(n))
    assert not bad, f"result files not named <benchmark>_<YYYY-MM-DD>_<machine>[_variant].<ext>: {bad}"
    for doc in (README, BENCH_README):
        # a brace list inside a name (results/x_{a,b}.json) is not read as names: write each out
        braced = re.findall(r"results/[\w.-]*\{[^}]*\}[\w.-]", doc.read_text())
        assert not braced, f"{doc.name}: name each result file in full, not {braced}"
        missing = sorted(_named_results(doc.read_text()) - on_disk)
        assert not missing, f"{doc.name} names result files that do not exist: {missing}"
    unreferenced = sorted(on_disk - _named_results(BENCH_README.read_text()))
    assert not unreferenced, f"benchmarks/README.md does not mention {unreferenced}"


def test_prompt_table_shows_what_the_shipped_model_decodes():
    """The "Use" section's table of tasks-6m prompts: each answer is what greedy threshold 0.9
    decodes on the task's canvas (the one the table gives and info.json holds)."""
    import paradecode
    from paradecode import zoo
    from paradecode.bench.tasks import TASKS

    rows = re.findall(r"^\| `(\w+)` \| `([^`]+)` \| `([^`]+)`[^|]*\| (\d+) / (\d+) \|$", README.read_text(), flags=re.M)
    info = zoo.info("tasks-6m")
    assert {task for task, *_ in rows} == set(TASKS) == set(info["tasks"])
    by_canvas: dict[tuple[int, int], list[tuple[str, str, str]]] = {}
    for task, prompt, answer, gen, block in rows:
        assert (int(gen), int(block)) == (info["task_gen_length"][task], info["task_block_length"][task]), task
        by_canvas.setdefault((int(gen), int(block)), []).append((task, prompt, answer))
    model, tok = zoo.load("tasks-6m")
    for (gen, block), group in by_canvas.items():
        out = paradecode.sample(model, [tok.encode(p) for _, p, _ in group], "threshold", threshold=0.9,
                                gen_length=gen, block_length=block)
        decoded = tok.batch_decode(out.generated, skip_special_tokens=True)
        assert decoded == [answer for *_, answer in group]
