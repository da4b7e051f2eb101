"""Free choices of the chain-of-thought data (``CotSpec.free_choice``, the ``cot-free*`` tasks):
off by default; with it on, every reference passes both verifiers, either form of each free choice
is valid with every other token of the answer kept (nothing pins it and no length changes), the
minority forms appear at the set rate, and broken chains are still rejected."""

import math
import random

import pytest

from paradecode.bench.cot_tasks import (FREE_CHOICE_SHARE, FREE_CHOICE_TASKS, CotSpec, _draw_step, _step_variants,
                                        check_chain, diagnose, step_distribution, valid_chains)
from paradecode.bench.tasks import get_task

from .conftest import load_script

FREE = get_task("cot-free")


def _steps(answer: str) -> tuple[list[list[str]], str]:
    head, _, value = answer.rpartition(" the answer is ")
    return [(s.strip() + " .").split(" ") for s in head.split(" .") if s.strip()], "the answer is " + value


def _join(steps: list[list[str]], final: str) -> str:
    return " ".join([" ".join(s) for s in steps] + [final])


def _flips(words: list[str], kind: str) -> list[list[str]]:
    """The step with its verb flipped, and (a commutative step) with its operand order flipped."""
    short = len(words) == 8  # "x has va + vb = v ." (else "x = a + b = va + vb = v .")
    out = [[words[0], "is" if words[1] != "is" else "has" if short else "="] + words[2:]]
    if kind in ("plus", "sum"):
        w = list(words)
        if short:
            w[2], w[4] = w[4], w[2]
        else:
            w[2], w[4], w[6], w[8] = w[4], w[2], w[8], w[6]
        out.append(w)
    return out


def test_the_option_is_off_by_default_and_validated():
    assert CotSpec().free_choice == 0.0
    for name in FREE_CHOICE_TASKS:
        for ex in get_task(name).examples(30, seed=1):
            assert "free_choice" not in ex.data
            assert all(s[1] in ("has", "=") for s in _steps(ex.answer)[0])
    for bad in (-0.1, 0.6, math.nan):
        with pytest.raises(ValueError, match="free_choice must lie in"):
            CotSpec(free_choice=bad)
    # with the option off, the free-choice forms are errors
    ex = get_task("cot").examples(1, seed=2)[0]
    steps, final = _steps(ex.answer)
    steps[0][1] = "is"
    assert "not a valid computation" in diagnose(ex.data, _join(steps, final))


def test_either_form_of_every_free_choice_is_valid_with_the_rest_of_the_answer_kept():
    flipped = 0
    for ex in FREE.examples(40, seed=3):
        assert ex.data["free_choice"] == FREE_CHOICE_SHARE
        for strict in (False, True):
            assert check_chain(ex.data, ex.answer, strict=strict), diagnose(ex.data, ex.answer, strict)
        steps, final = _steps(ex.answer)
        for k, words in enumerate(steps):
            for alt in _flips(words, ex.data["relations"][words[0]][0]):
                other = _join(steps[:k] + [alt] + steps[k + 1 :], final)
                assert len(other.split(" ")) == len(ex.answer.split(" "))  # no length changes
                assert check_chain(ex.data, other, strict=True), diagnose(ex.data, other, strict=True)
                flipped += 1
    assert flipped >= 150


def test_valid_chains_with_the_option_pass_both_verifiers():
    for ex in FREE.examples(6, seed=4) + get_task("cot-free-short-train").examples(20, seed=4):
        chains = valid_chains(ex.data, limit=400)
        assert len(set(chains)) == len(chains)
        assert all(check_chain(ex.data, c, strict=True) and check_chain(ex.data, c) for c in chains)
        if len(_steps(ex.answer)[0]) <= 2:  # all of them listed: the reference is one
            assert ex.answer in chains


def test_minority_forms_appear_at_the_set_rate():
    verbs = alt_verbs = commutative = swapped = 0
    for ex in get_task("cot-free-train").examples(400, seed=5):
        rels = ex.data["relations"]
        for words in _steps(ex.answer)[0]:
            verbs += 1
            alt_verbs += words[1] == "is"
            kind, a, b = rels[words[0]]
            if kind in ("plus", "sum") and len(words) > 8:  # the long form names its operands
                commutative += 1
                swapped += words[2] == str(b)
    assert verbs > 1000 and abs(alt_verbs / verbs - FREE_CHOICE_SHARE) < 0.04
    assert commutative > 300 and abs(swapped / commutative - FREE_CHOICE_SHARE) < 0.06


@pytest.mark.parametrize("rel", [("sum", "ann", "bob"), ("plus", "ann", 3), ("minus", "ann", 2), ("sum", "ann", "cal")])
def test_step_distribution_is_what_the_generator_draws(rel):
    values = {"ann": 7, "bob": 9, "cal": 7}
    dist = step_distribution("dan", rel, values, FREE_CHOICE_SHARE)
    assert set(dist) == set(_step_variants("dan", rel, values, free=True)) and math.isclose(sum(dist.values()), 1.0)
    rng, n = random.Random(0), 6000
    seen: dict[str, int] = {}
    for _ in range(n):
        text = _draw_step(rng, "dan", rel, values, FREE_CHOICE_SHARE)
        seen[text] = seen.get(text, 0) + 1
    assert all(abs(seen.get(t, 0) / n - p) < 0.02 for t, p in dist.items())
    assert set(step_distribution("dan", rel, values)) == set(_step_variants("dan", rel, values))  # off: uniform


def test_broken_chains_with_the_option_are_rejected():
    rng = random.Random(0)
    checked = 0
    for ex in FREE.examples(40, seed=6):
        steps, final = _steps(ex.answer)
        value = int(final.rsplit(" ", 1)[1])
        bad = []
        w = [list(s) for s in steps]
        w[0][-2] = str(int(w[0][-2]) + 1)  # wrong result
        bad.append(_join(w, final))
        w = [list(s) for s in steps]
        w[-1][-3] = "is"  # the free verb in a place that is no verb
        bad.append(_join(w, final))
        w = [list(s) for s in steps]
        w[rng.randrange(len(w))][1] = "than"  # a verb that is no synonym
        bad.append(_join(w, final))
        bad.append(_join(steps, f"the answer is {value + 1}"))
        bad.append(_join(steps[:-1], final))
        for words in steps:  # a non-commutative step written swapped
            if ex.data["relations"][words[0]][0] in ("minus", "diff") and len(words) == 8 and words[2] != words[4]:
                w = list(words)
                w[2], w[4] = w[4], w[2]
                bad.append(_join([w if s is words else s for s in steps], final))
        for b in bad:
            if b != ex.answer:
                assert not check_chain(ex.data, b), b
                assert not check_chain(ex.data, b, strict=True), b
                checked += 1
    assert checked >= 200


# ---- scripts/train_cot.py --free-choice ------------------------------------------------------

def _train_cot():
    return load_script("scripts/train_cot.py")


def test_train_cot_maps_tasks_to_their_free_choice_counterparts():
    names = _train_cot().free_choice_names
    assert names(["cot-train", "cot-short-train", "cot"]) == ["cot-free-train", "cot-free-short-train", "cot-free"]
    assert names(["cot-free"]) == ["cot-free"]
    with pytest.raises(SystemExit, match="no free-choice counterpart of \\['add'\\]"):
        names(["cot-train", "add"])


@pytest.mark.slow  # ~10-30 s: the script's --smoke run (a tiny random model)
def test_train_cot_smoke_with_free_choice_trains_and_evaluates_on_cot_free(monkeypatch, tmp_path):
    import json
    import sys

    out = tmp_path / "m"
    monkeypatch.setattr(sys, "argv", ["train_cot.py", "--out", str(out), "--smoke", "--free-choice", "--baseline", "",
                                      "--eval-n", "2", "--eval-batch", "2"])
    _train_cot().main()
    info = json.loads((out / "info.json").read_text())
    assert info["complete"] and info["tasks"] == ["cot-free"] and info["train"]["free_choice"] is True
    assert info["train"]["mix"] == {"cot-free-train": 0.8, "cot-free-short-train": 0.2}
    assert set(info["eval"]["accuracy"]) == {"cot-free"} and 0 <= info["eval"]["confidence"]["share_in_band"] <= 1


def test_a_calibrated_oracle_commits_the_free_choices_inside_the_band():
    """benchmarks/oracle_commit_confidences.py: decoding with the generator's exact distribution, the
    default data leaves few in-band commits (its choices are pinned before they come up), the
    free-choice data adds commits at ~0.7."""
    oracle = load_script("benchmarks/oracle_commit_confidences.py")
    plain = oracle.measure("cot-short-train", 12, seed=3, max_steps=2, max_chains=5000)
    free = oracle.measure("cot-free-short-train", 12, seed=3, max_steps=2, max_chains=5000)
    assert plain["decoded"] == free["decoded"] == 12
    assert free["share_in_band_without_eos"] > plain["share_in_band_without_eos"] + 0.05
    assert 0.65 < free["mean_in_band_confidence"] < 0.8


def test_shipped_cot_free_model_commits_more_confidences_inside_the_band_than_cot_8m():
    """The point of cot-free-8m (its decoding is checked with cot-8m's in test_cot_tasks.py): its
    committed confidences, measured at training on the GPU (N = 500, info.json), spread wider."""
    from paradecode import zoo

    conf = {n: zoo.info(n)["eval"]["confidence"] for n in ("cot-8m", "cot-free-8m")}
    assert conf["cot-free-8m"]["share_in_band"] > 1.5 * conf["cot-8m"]["share_in_band"], conf
    assert conf["cot-free-8m"]["share_in_band_without_eos"] > 1.5 * conf["cot-8m"]["share_in_band_without_eos"], conf
    assert zoo.info("cot-free-8m")["eval"]["accuracy"]["cot-free"] >= 0.9
