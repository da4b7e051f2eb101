"""The ``paradecode`` command line: sampling from a shipped model with its own canvas, cache
options, per-strategy / per-policy option listings, and one-line errors (exit status 2)."""

from __future__ import annotations

import dataclasses
import json

import pytest

import paradecode
from paradecode import zoo
from paradecode.bench.tasks import Example, get_task
from paradecode.cli import generation_options, main, parse_options
from paradecode.registry import get_cache_class, get_strategy_class


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    try:
        code = main(argv)
    except SystemExit as stop:  # argparse errors
        code = stop.code
    out, err = capsys.readouterr()
    return code, out, err


# ---- sample -------------------------------------------------------------------------------------

def test_sample_uses_the_models_canvas(capsys):
    code, out, err = run(["sample", "--model", "tasks-6m", "--prompt", "words river:"], capsys)
    assert code == 0, err
    text = out.strip()
    assert get_task("words").verify(Example("words river:", "", {"category": "river"}), text), text
    summary = json.loads(err.strip().splitlines()[-1])
    assert summary["tokens"] == zoo.info("tasks-6m")["gen_length"] == 32
    assert summary["nfe"] == 32  # lowconf: steps capped at gen_length, one token per step


def test_sample_from_a_checkpoint_directory(capsys):
    directory = str(zoo.model_dir("tasks-6m"))
    code, out, err = run(["sample", "--model", directory, "--prompt", "12+345=", "--strategy", "threshold"], capsys)
    assert code == 0, err
    assert out.strip() == "357"
    assert json.loads(err.strip().splitlines()[-1])["tokens"] == 32


def test_sample_passes_strategy_and_cache_options(capsys, monkeypatch):
    seen = {}

    def fake_sample(model, ids, **kwargs):
        seen.update(kwargs)
        raise ValueError("stop here")

    monkeypatch.setattr(paradecode, "sample", fake_sample)
    code, _, err = run(["sample", "--model", "tasks-6m", "--prompt", "lists fruit bird tool stone river:",
                        "--strategy", "threshold", "-o", "threshold=0.8", "-o", "gen_length=128",
                        "--cache", "dkv-greedy", "--cache-option", "cache_reloading_step=3",
                        "--cache-option", "window_size=2"], capsys)
    assert code == 2 and err.strip() == "error: stop here"
    assert seen["strategy"] == "threshold" and seen["cache"] == "dkv-greedy"
    assert seen["cache_options"] == {"cache_reloading_step": 3, "window_size": 2}
    assert seen["threshold"] == 0.8 and seen["gen_length"] == 128 and seen["block_length"] == 32


def test_cache_option_reaches_the_policy(capsys):
    # A refresh every step equals no cache; an unknown option is refused by the policy itself.
    base = ["sample", "--model", "tasks-6m", "--prompt", "avoid 2 star pogo dak:", "--strategy", "threshold"]
    code, plain, err = run(base, capsys)
    assert code == 0, err
    code, cached, err = run(base + ["--cache", "dual", "--cache-option", "refresh_every=1"], capsys)
    assert code == 0, err
    assert cached == plain
    code, _, err = run(base + ["--cache", "dual", "--cache-option", "nope=1"], capsys)
    assert code == 2 and "nope" in err and "refresh_every" in err


def test_generation_options():
    defaults = {"gen_length": 32, "block_length": 32}
    assert generation_options("lowconf", defaults, {}) == {"gen_length": 32, "block_length": 32, "steps": 32}
    assert generation_options("lowconf", defaults, {"steps": 8}) == {"gen_length": 32, "block_length": 32, "steps": 8}
    assert generation_options("threshold", defaults, {"gen_length": 128}) == {"gen_length": 128, "block_length": 32}
    assert generation_options("lowconf", {}, {}) == {}  # no info.json: the strategy's own defaults
    assert generation_options("speculative", defaults, {}) == {}  # no canvas fields


def test_zoo_models_carry_their_generation_defaults():
    model, _ = zoo.load("tasks-6m")
    info = zoo.info("tasks-6m")
    expected = {"gen_length": info["gen_length"], "block_length": info["block_length"]}
    assert model.generation_defaults == expected
    assert zoo.generation_defaults("tasks-6m") == zoo.generation_defaults(zoo.model_dir("tasks-6m")) == expected


def test_generation_defaults_of_a_directory_without_info(tmp_path):
    assert zoo.generation_defaults(tmp_path) == {}


# ---- strategies NAME / caches NAME ----------------------------------------------------------------

def _expect_listing(out: str, cls: type) -> None:
    lines = out.splitlines()
    assert lines[0].startswith(f"{cls.name}: ")
    described = lines[0].split(": ", 1)[1]
    own_doc = cls.__dict__.get("__doc__")
    assert described == (own_doc.strip().splitlines()[0].strip() if own_doc else cls.description)
    rows = {line.split()[0]: line.split() for line in lines[2:]}
    for f in dataclasses.fields(cls.Config):
        if not f.init:
            continue
        assert f.name in rows, f.name
        if f.default is not dataclasses.MISSING:
            assert rows[f.name][-1] == repr(f.default).split()[-1], (f.name, rows[f.name])


@pytest.mark.parametrize("name", sorted(paradecode.strategies()))
def test_strategy_options(name, capsys):
    code, out, err = run(["strategies", name], capsys)
    assert code == 0, err
    _expect_listing(out, get_strategy_class(name))


@pytest.mark.parametrize("name", sorted(paradecode.cache_policies()))
def test_cache_options(name, capsys):
    code, out, err = run(["caches", name], capsys)
    assert code == 0, err
    _expect_listing(out, get_cache_class(name))


def test_threshold_listing_shows_type_and_default(capsys):
    _, out, _ = run(["strategies", "threshold"], capsys)
    row = next(line.split() for line in out.splitlines() if line.split()[:1] == ["threshold"])
    assert row[1:] == ["float", "0.9"]


def test_lists_without_a_name(capsys):
    code, out, _ = run(["strategies"], capsys)
    assert code == 0 and set(paradecode.strategies()) <= {line.split()[0] for line in out.splitlines()}
    code, out, _ = run(["caches"], capsys)
    assert code == 0 and set(paradecode.cache_policies()) <= {line.split()[0] for line in out.splitlines()}


# ---- bad input -------------------------------------------------------------------------------------

@pytest.mark.parametrize("argv, words", [
    (["strategies", "nope"], ["unknown strategy", "threshold"]),
    (["caches", "nope"], ["unknown cache policy", "dual"]),
    (["sample", "--model", "nope", "--prompt", "x"], ["nope"]),
    (["sample", "--model", "tasks-6m", "--prompt", "x", "-o", "threshold"], ["name=value"]),
    (["sample", "--model", "tasks-6m", "--prompt", "x", "--cache-option", "=1", "--cache", "dual"], ["name=value"]),
    (["sample", "--model", "tasks-6m", "--prompt", "x", "--cache-option", "refresh_every=1"], ["--cache"]),
    (["sample", "--model", "tasks-6m", "--prompt", "x", "--strategy", "nope"], ["unknown strategy"]),
    (["sample", "--model", "tasks-6m", "--prompt", "x", "--cache", "nope"], ["unknown cache policy"]),
    (["sample", "--model", "tasks-6m", "--prompt", "x", "-o", "nope=1"], ["nope", "valid options"]),
    (["sample", "--model", "tasks-6m", "--prompt", ""], ["prompt"]),
    (["sample", "--model", "tasks-6m", "--prompt", "x", "--seed", "abc"], ["--seed"]),
    (["sample", "--prompt", "x"], ["--model"]),
    (["frobnicate"], ["frobnicate"]),
])
def test_bad_input_is_one_line_and_status_2(argv, words, capsys):
    code, out, err = run(argv, capsys)
    assert code == 2
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err and "error" in err
    for word in words:
        assert word in err, (word, err)


def test_parse_options():
    assert parse_options(["steps=64", "threshold=0.9", "remasking=random", "base_options={\"steps\": 8}"]) == {
        "steps": 64, "threshold": 0.9, "remasking": "random", "base_options": {"steps": 8}}
    with pytest.raises(ValueError, match="--cache-option"):
        parse_options(["oops"], "--cache-option")


def test_python_dash_m_paradecode_runs_the_command_line():
    import subprocess
    import sys
    from pathlib import Path

    out = subprocess.run([sys.executable, "-m", "paradecode", "bench", "--help"], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[1], timeout=120)
    assert out.returncode == 0 and "--strategies" in out.stdout
