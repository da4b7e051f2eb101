"""benchmarks/rule_work.py: each rule driven against fixed logits, with its results files."""

import json

import pytest

from .conftest import load_script


def _script():
    return load_script("benchmarks/rule_work.py")


def test_fixed_logits_answer_the_window_asked_for():
    import torch

    bench = _script()
    from paradecode.models import LLaDAConfig

    logits = torch.randn(2, 10, 7)
    model = bench.LogitsStub(logits, 6, LLaDAConfig(vocab_size=7, embedding_size=7, mask_token_id=6, eos_token_id=5))
    assert torch.equal(model(torch.zeros(1, 10, dtype=torch.long), logits_range=(4, 8)), logits[:1, 4:8])
    assert torch.equal(model(torch.zeros(2, 6, dtype=torch.long)), logits[:, :6])


def test_small_run_times_each_rule_and_writes_its_files(tmp_path):
    bench = _script()
    res = bench.main(["--device", "cpu", "--prompt", "8", "--gen", "32", "--block", "16", "--vocab", "300",
                      "--steps", "4", "--repeats", "1", "--rules", "lowconf,prophet,nope", "--out-dir", str(tmp_path)])
    data = json.loads((tmp_path / f"rule_work_{res['date']}_cpu.json").read_text())
    for rule in ("lowconf", "prophet"):
        assert data["rules"][rule]["steps"] == 3 and data["rules"][rule]["step_ms"] > 0  # the block start left out
    assert "nope" in data["rules"]["nope"]["error"]  # an unknown rule is reported, the others still run
    assert "prophet" in (tmp_path / f"rule_work_{res['date']}_cpu.txt").read_text()


def test_bad_arguments_stop_with_a_message():
    bench = _script()
    with pytest.raises(SystemExit, match="multiple of --block"):
        bench.main(["--device", "cpu", "--gen", "30", "--block", "16"])
