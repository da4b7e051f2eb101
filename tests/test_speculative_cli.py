"""``paradecode speculative``: the shipped pair decodes from the command line as the Python API
does, prompt lookup needs no draft, and bad input gets one line that says what to do."""

import json
from pathlib import Path

import pytest
import torch

from paradecode.cli import main

pytest.importorskip("transformers")
TASKS_6M = str(Path(__file__).resolve().parents[1] / "paradecode" / "zoo" / "tasks-6m")


def run(capsys, *argv):
    code = main(["speculative", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_the_shipped_pair_decodes_the_target_greedy_text(capsys):
    import paradecode
    from paradecode.speculative.pair import BOS, decode, encode, load_pair

    code, out, err = run(capsys, "--prompt", "sort 5 3 8 1 9 2 > ", "--max-new-tokens", "24", "--compare")
    assert code == 0, err
    target, draft = load_pair()
    ref = paradecode.sample(target, [[BOS] + encode("sort 5 3 8 1 9 2 > ")], "speculative", draft_model=draft,
                            max_new_tokens=24)
    assert out.strip() == decode(ref.generated[0]) == "1 2 3 5 8 9"
    report = json.loads(err.strip().splitlines()[-1])
    assert report["same_tokens_as_target_alone"] is True
    assert report["nfe_by_role"]["target"] < report["tokens"]  # drafts were accepted
    assert report["accepted_drafts_per_step"] > 0 and report["speedup_vs_target_alone"] > 0
    # the same pair as checkpoint directories, through their own tokenizer: the text without its EOS
    pair = Path(__file__).resolve().parents[1] / "paradecode" / "zoo" / "spec-pair"
    code, out, err = run(capsys, "--target", str(pair / "target"), "--draft", str(pair / "draft"),
                         "--prompt", "sort 5 3 8 1 9 2 > ", "--max-new-tokens", "24")
    assert code == 0, err
    assert out.strip() == "1 2 3 5 8 9"


def test_prompt_lookup_and_sampling_options_reach_the_strategy(capsys, tmp_path):
    from paradecode.speculative import VocabTrim

    code, out, err = run(capsys, "--prompt", "repeat fig 3 > ", "--drafter", "prompt-lookup", "-o", "num_draft_tokens=8")
    assert code == 0, err
    assert out.strip() == "fig fig fig"
    assert "draft" not in json.loads(err.strip().splitlines()[-1])["nfe_by_role"]
    trim = tmp_path / "trim.json"
    VocabTrim.full(64).save(trim)
    sampled = [run(capsys, "--prompt", "add 12+345 > ", "-o", "do_sample=true", "-o", "temperature=0.7", "--seed", "3",
                   "--vocabtrim", str(trim)) for _ in range(2)]
    assert sampled[0][0] == 0 and sampled[0][1] == sampled[1][1]  # one seed, one text


def test_a_prompts_file_decodes_every_line_in_order_with_continuous_batching(capsys, tmp_path):
    lines = ["sort 5 3 8 1 9 2 > ", "add 12+345 > ", "list 3 tree > ", "rev apple > ", "count 3 to 9 > "]
    alone = [run(capsys, "--prompt", line)[1].strip() for line in lines]
    path = tmp_path / "prompts.txt"
    path.write_text("\n".join(lines) + "\n\n")  # a blank line is no prompt
    code, out, err = run(capsys, "--prompts-file", str(path), "--batch-size", "2")
    assert code == 0, err
    assert out.splitlines() == alone and alone[:2] == ["1 2 3 5 8 9", "357"]
    report = json.loads(err.strip().splitlines()[-1])
    assert report["prompts"] == 5 and report["batch_size"] == 2 and report["steps"] == report["target_forwards"]
    code, out, err = run(capsys, "--prompts-file", str(path), "--batch-size", "2", "--min-refill", "2")
    assert code == 0 and out.splitlines() == alone, err  # rows refilled in pairs: the same outputs
    assert 1 <= json.loads(err.strip().splitlines()[-1])["refills"] <= report["refills"] <= 3
    code, _, err = run(capsys, "--prompts-file", str(path), "--min-refill", "0")
    assert code == 2 and "min_refill must be an int from 1" in err
    code, _, err = run(capsys, "--prompts-file", str(path), "--compare")
    assert code == 2 and "use it with --prompt" in err


@pytest.mark.parametrize("argv, message", [
    (["--target", "/nonexistent"], "not a checkpoint directory nor a hub id"),
    (["--target", TASKS_6M], "diffusion LMs decode with `paradecode sample`"),
    (["--drafter", "prompt-lookup", "--draft", "x"], "leave --draft out"),
    (["--drafter", "prompt-lookup", "--vocabtrim", "x.json"], "prompt lookup has none"),
    (["-o", "draft_model=3"], "set by its own flag here (--draft)"),
    (["-o", "bogus=3"], "unknown option(s) ['bogus']"),
])
def test_bad_input_is_one_clear_line(capsys, argv, message):
    code, out, err = run(capsys, "--prompt", "x", *argv)
    assert code == 2 and out == ""
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_a_causal_lm_directory_needs_a_draft_or_prompt_lookup(capsys, tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                      num_key_value_heads=1, max_position_embeddings=64, pad_token_id=0, bos_token_id=None,
                      eos_token_id=None)
    LlamaForCausalLM(cfg).save_pretrained(tmp_path / "lm")
    code, _, err = run(capsys, "--target", str(tmp_path / "lm"), "--prompt", "[1, 2, 3]")
    assert code == 2 and "--draft is needed" in err
    code, out, err = run(capsys, "--target", str(tmp_path / "lm"), "--draft", str(tmp_path / "lm"), "--prompt",
                         "[1, 2, 3]", "--max-new-tokens", "5", "--compare")
    assert code == 0, err
    assert len(json.loads(out)) == 5 and json.loads(err.strip().splitlines()[-1])["same_tokens_as_target_alone"]
    code, _, err = run(capsys, "--target", str(tmp_path / "lm"), "--drafter", "prompt-lookup", "--prompt", "hello")
    assert code == 2 and "JSON list of token ids" in err
