"""Real-benchmark conventions (paradecode.bench.real): GSM8K extraction and prompts, HumanEval /
MBPP post-processing, and the sandboxed executor. Fixtures under tests/data are written for these
tests (no dataset items); nothing here reaches the network."""

import json
import socket
import threading
from pathlib import Path

import pytest

from paradecode.bench.real import code, gsm8k
from paradecode.bench.real.data import find_file, read_records
from paradecode.bench.real.execution import pass_at_k, run_program

DATA = Path(__file__).parent / "data"


# ---- GSM8K: extraction ------------------------------------------------------------------------
@pytest.mark.parametrize("text, strict, flexible", [
    ("so 48 - 9 = 39.\n#### 39", "39", "39"),
    ("#### 1,234\nQuestion: next", "1,234", "1,234"),
    ("The answer is 42.", gsm8k.INVALID, "42."),
    ("first #### 5 then #### 6", "5", "6"),            # strict takes the first, flexible the last
    ("####7", gsm8k.INVALID, "7"),                      # strict needs the space
    ("It costs $12.50 in total", gsm8k.INVALID, "$12.50"),
    ("I had 3 apples...", gsm8k.INVALID, "..."),        # lm-eval's quirk, kept: '...' is a match
    ("-5 degrees then 7", gsm8k.INVALID, "7"),
    ("#### -9", "-9", "-9"),
    ("no digits at all", gsm8k.INVALID, gsm8k.INVALID),
])
def test_filters_match_lm_eval(text, strict, flexible):
    assert gsm8k.strict_match(text) == strict
    assert gsm8k.flexible_extract(text) == flexible


@pytest.mark.parametrize("raw, norm", [
    ("1,234", "1234"), ("$12", "12"), ("39.", "39"), ("72.0", "72"), ("1.50", "1.5"), ("0.5", "0.5"),
    ("-0.0", "0"), ("100", "100"), ("#### 8", "8"), ("-3.", "-3"),
])
def test_normalize(raw, norm):
    assert gsm8k.normalize(raw) == norm


def test_exact_normalisation_is_lm_evals():
    # lm-eval counts "72.0" wrong against "72"; exact=True reproduces that, the default does not.
    assert gsm8k.is_correct("72.0", "72") and not gsm8k.is_correct("72.0", "72", exact=True)
    assert gsm8k.is_correct("$1,000.", "1000", exact=True)
    assert not gsm8k.is_correct(gsm8k.INVALID, gsm8k.INVALID)
    assert not gsm8k.is_correct("720", "72") and not gsm8k.is_correct("7.2", "72")


def test_score_strict_vs_flexible_and_stop():
    p = gsm8k.GSM8KProblem("q", "... #### 39", "39")
    assert gsm8k.score(p, "48 - 9 = 39\n#### 39") == {"strict": True, "flexible": True,
                                                       "strict_answer": "39", "flexible_answer": "39"}
    s = gsm8k.score(p, "48 - 9 = 39, so she has 39 pencils.")
    assert not s["strict"] and s["flexible"]
    # A generation that runs on into a new question is cut at the stop sequence first.
    s = gsm8k.score(p, "#### 39\n\nQuestion: what is 2 + 5?\nAnswer: #### 7")
    assert s["strict"] and s["flexible"] and s["flexible_answer"] == "39"
    s = gsm8k.score(p, "The answer is 38, not 39... wait")
    assert not s["strict"] and not s["flexible"]  # flexible takes the last match, "..."


def test_gold_answers_score_100_and_corrupted_fail():
    problems = gsm8k.load_gsm8k(DATA / "gsm8k_tiny.jsonl")
    assert [p.target for p in problems] == ["39", "3750", "4", "20", "-9", "23"]
    for p in problems:
        s = gsm8k.score(p, p.answer)
        assert s["strict"] and s["flexible"], p
        final = p.answer.rsplit("#### ", 1)[1]
        wrong = p.answer.replace(f"#### {final}", f"#### {int(p.target) + 1}")
        s = gsm8k.score(p, wrong)
        assert not s["strict"] and not s["flexible"], wrong


def test_load_gsm8k_from_directory_limit_and_errors(tmp_path):
    (tmp_path / "gsm8k").mkdir()
    (tmp_path / "gsm8k" / "test.jsonl").write_text((DATA / "gsm8k_tiny.jsonl").read_text())
    assert len(gsm8k.load_gsm8k(tmp_path, limit=2)) == 2
    assert gsm8k.load_gsm8k(tmp_path)[5].index == 5
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q", "answer": "no final line"}\n')
    with pytest.raises(ValueError, match="####"):
        gsm8k.load_gsm8k(bad)
    bad.write_text('{"question": "q", "answer": "#### 1"}\n{not json\n')
    with pytest.raises(ValueError, match=":2:"):
        gsm8k.load_gsm8k(bad)
    with pytest.raises(FileNotFoundError):
        gsm8k.load_gsm8k(tmp_path / "missing")
    with pytest.raises(ValueError, match="hub"):
        gsm8k.load_gsm8k(None, hub=False)


# ---- GSM8K: prompts ---------------------------------------------------------------------------
def test_fewshot_prompt_layout():
    problems = gsm8k.load_gsm8k(DATA / "gsm8k_tiny.jsonl")
    shots, target = problems[:5], problems[5]
    text = gsm8k.build_prompt(target, "fewshot", shots=shots)
    blocks = text.split("\n\n")
    # 5 exemplars then the question; an exemplar's answer has no blank line inside it.
    assert len(blocks) == 6
    for block, shot in zip(blocks, shots):
        assert block == f"Question: {shot.question}\nAnswer: {shot.answer}"
    assert blocks[-1] == f"Question: {target.question}\nAnswer:"
    assert gsm8k.build_prompt(target, "fewshot") == f"Question: {target.question}\nAnswer:"


@pytest.fixture(scope="module")
def chat_tokenizer():
    """A word-level tokenizer with a ChatML-like template, built here (no download)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["<unk>", "<eos>", "<|user|>", "<|assistant|>", "<|end|>"])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    template = ("{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|end|>\n{% endfor %}"
                "{% if add_generation_prompt %}<|assistant|>\n{% endif %}")
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", unk_token="<unk>",
                                   chat_template=template)


def test_chat_prompts(chat_tokenizer):
    problems = gsm8k.load_gsm8k(DATA / "gsm8k_tiny.jsonl")
    q = problems[0]
    zero = gsm8k.build_prompt(q, "chat", tokenizer=chat_tokenizer)
    assert zero == f"<|user|>\n{q.question}\n\n{gsm8k.DEFAULT_INSTRUCTION}<|end|>\n<|assistant|>\n"
    assert "####" in gsm8k.DEFAULT_INSTRUCTION  # asks for what strict-match reads
    few = gsm8k.build_prompt(q, "chat-fewshot", shots=problems[1:3], tokenizer=chat_tokenizer)
    assert few == f"<|user|>\n{gsm8k.fewshot_prompt(q.question, problems[1:3])}<|end|>\n<|assistant|>\n"
    with pytest.raises(TypeError, match="apply_chat_template"):
        gsm8k.build_prompt(q, "chat", tokenizer=None)
    with pytest.raises(ValueError, match="format"):
        gsm8k.build_prompt(q, "zero")


# ---- HumanEval / MBPP: post-processing --------------------------------------------------------
@pytest.fixture(scope="module")
def humaneval():
    return code.load_humaneval(DATA / "humaneval_tiny.jsonl")


@pytest.fixture(scope="module")
def mbpp():
    return code.load_mbpp(DATA / "mbpp_tiny.jsonl")


def test_humaneval_completion_is_cut_at_stop_sequences(humaneval):
    p = humaneval[0]
    gen = p.solution + "\n\ndef helper():\n    pass\n\nprint(count_vowels('x'))\n"
    assert code.humaneval_solution(p, gen) == p.prompt + p.solution + "\n"
    nested = "    def inner(c):\n        return c in 'aeiou'\n    return sum(inner(c) for c in word.lower())\n#\n"
    assert code.humaneval_solution(p, nested) == p.prompt + nested[:-3]  # an indented def is kept
    assert code.humaneval_prompt(p) == p.prompt


def test_humaneval_chat_extraction(humaneval, chat_tokenizer):
    p = humaneval[2]  # its prompt defines a helper before the function
    prompt = code.humaneval_prompt(p, "chat", chat_tokenizer)
    assert p.prompt in prompt and prompt.endswith("<|assistant|>\n")
    whole = ("Here it is:\n```python\ndef is_palindrome_number(n: int) -> bool:\n"
             "    d = _digits(n)\n    return d == d[::-1]\n```\nDone.")
    sol = code.humaneval_solution(p, whole, "chat")
    assert sol.startswith("def _digits(") and sol.count("def is_palindrome_number") == 1
    assert "Done" not in sol and "```" not in sol
    body = "```python\n    d = _digits(n)\n    return d == d[::-1]\n```"
    assert code.humaneval_solution(p, body, "chat") == p.prompt + "    d = _digits(n)\n    return d == d[::-1]\n"
    unclosed = "```python\ndef is_palindrome_number(n):\n    return str(abs(n)) == str(abs(n))[::-1]\n"
    assert run_program(code.humaneval_program(p, unclosed, "chat")).passed


def test_mbpp_prompts_and_extraction(mbpp, chat_tokenizer):
    shots, p = mbpp[:2], mbpp[2]
    text = code.mbpp_prompt(p, "fewshot", shots)
    assert text.endswith(f"Your code should pass these tests:\n\n{chr(10).join(p.tests)}\n[BEGIN]\n")
    assert text.count("[DONE]") == 2 and text.count("[BEGIN]") == 3
    assert text.startswith(f"You are an expert Python programmer, and here is your task: {shots[0].prompt} ")
    chat = code.mbpp_prompt(p, "chat", tokenizer=chat_tokenizer)
    assert f"task:\n{p.prompt}\nYour code should pass these tests:\n{p.tests[0]}" in chat
    assert code.mbpp_solution("def f():\n    return 1\n[DONE]\nmore text") == "def f():\n    return 1\n"
    assert code.mbpp_solution("Sure:\n```python\ndef f():\n    return 1\n```\nbye") == "def f():\n    return 1\n"
    assert code.mbpp_solution("[BEGIN]\nx = 1\n[DONE]") == "\nx = 1\n"
    assert mbpp[0].setup == "" and mbpp[1].setup == "import math"


# ---- execution --------------------------------------------------------------------------------
def test_reference_solutions_pass_and_corrupted_fail(humaneval, mbpp):
    result = code.evaluate(humaneval + mbpp, [p.solution for p in humaneval + mbpp], workers=4)
    assert result["pass@1"] == 1.0, [r for r in result["results"] if not r.passed]
    broken = [p.solution.replace("return ", "return 1 + ", 1) if "return" in p.solution else "pass"
              for p in humaneval + mbpp]
    result = code.evaluate(humaneval + mbpp, broken, workers=4)
    assert result["pass@1"] == 0.0
    assert [r.status for r in result["results"]] == ["failed"] * 6


def test_mbpp_needs_its_test_imports(mbpp):
    p = mbpp[1]
    assert run_program(code.mbpp_program(p, p.solution)).passed
    no_setup = code.CodeProblem("mbpp", p.task_id, p.prompt, p.solution, tests=p.tests)
    assert not run_program(code.mbpp_program(no_setup, p.solution)).passed


def test_executor_timeout_and_untrusted_exit():
    assert run_program("while True:\n    pass\n", timeout=1).status == "timeout"
    # The verdict does not come from the program: exiting 0 early or printing a pass fails.
    for prog in ["import sys\nsys.exit(0)\nassert False", "import os\nos._exit(0)",
                 "print('passed')\nraise SystemExit", "try:\n    assert False\nexcept BaseException:\n    pass\nassert 0"]:
        assert run_program(prog).status == "failed", prog
    assert run_program("print('x' * 100000)\nassert True").passed


def test_executor_is_isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("PARADECODE_SECRET", "hunter2")
    assert run_program("import os\nassert 'PARADECODE_SECRET' not in os.environ").passed
    # A fresh, empty working directory (only the sandbox's own files) that is not the caller's.
    assert run_program("import os\nassert set(os.listdir('.')) <= {'solution.py', 'harness.py', 'stdout', 'stderr'}\n"
                       f"assert os.getcwd() != {str(Path.cwd())!r}").passed
    assert run_program("x = bytearray(4 << 30)", memory_mb=512).status == "failed"
    assert run_program("import subprocess\nsubprocess.run(['true'])").status == "failed"
    assert run_program("import os\nos.system('true')").status == "failed"


def test_executor_blocks_network():
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(0.5)
    port = server.getsockname()[1]
    got = []

    def accept():
        try:
            conn, _ = server.accept()
            got.append(conn.recv(16))
            conn.close()
        except OSError:
            pass

    t = threading.Thread(target=accept)
    t.start()
    prog = f"import socket\ns = socket.create_connection(('127.0.0.1', {port}))\ns.sendall(b'leak')\n"
    contained = ("import socket\ntry:\n    s = socket.socket()\n    s.connect(('127.0.0.1', %d))\n"
                 "    s.sendall(b'leak')\nexcept OSError:\n    pass\n" % port)
    try:
        assert run_program(prog, timeout=5).status == "failed"
        assert run_program(contained, timeout=5).passed  # the error is raised, caught, nothing sent
    finally:
        t.join()
        server.close()
    assert got == []


def test_pass_at_k():
    assert pass_at_k(1, 1, 1) == 1.0 and pass_at_k(1, 0, 1) == 0.0
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)
    assert pass_at_k(5, 2, 2) == pytest.approx(1 - 3 / 10)  # 1 - C(3,2)/C(5,2)
    assert pass_at_k(4, 3, 2) == 1.0
    with pytest.raises(ValueError):
        pass_at_k(3, 4, 1)


def test_data_files(tmp_path):
    import gzip

    recs = read_records(DATA / "humaneval_tiny.jsonl")
    gz = tmp_path / "HumanEval.jsonl.gz"
    with gzip.open(gz, "wt") as f:
        f.write("".join(json.dumps(r) + "\n" for r in recs))
    assert find_file("humaneval", tmp_path) == gz
    assert [p.task_id for p in code.load_humaneval(tmp_path)] == ["Tiny/0", "Tiny/1", "Tiny/2"]
    listed = tmp_path / "sanitized-mbpp.json"
    listed.write_text(json.dumps(read_records(DATA / "mbpp_tiny.jsonl")))
    assert find_file("mbpp", tmp_path) == listed
    assert code.load_mbpp(tmp_path)[1].setup == "import math"
    full = [{"task_id": 1, "text": "desc", "code": "x = 1", "test_list": ["assert x == 1"], "test_setup_code": ""}]
    (tmp_path / "full.jsonl").write_text(json.dumps(full[0]) + "\n")
    assert code.load_mbpp(tmp_path / "full.jsonl")[0].prompt == "desc"


def test_import_reads_nothing():
    import subprocess
    import sys

    # Importing the package must not import datasets (which may touch the network or a cache).
    out = subprocess.run([sys.executable, "-c", "import sys, paradecode.bench.real; print('datasets' in sys.modules)"],
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_truncate_takes_the_earliest_stop():
    from paradecode.bench.real.data import truncate_at

    assert truncate_at("a\nprint(1)\ndef g", ("\ndef", "\nprint")) == "a"
    assert truncate_at("abc", ()) == "abc" and truncate_at("abc", ("",)) == "abc"
    assert gsm8k.truncate("39</s>Question: x") == "39"
