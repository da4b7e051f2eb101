"""benchmarks/read_gap.py: the parts that run without a GPU."""

import pytest
import torch

from .conftest import load_script


def test_it_needs_a_gpu_and_says_so(monkeypatch):
    mod = load_script("benchmarks/read_gap.py", "read_gap")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit, match="needs a GPU"):
        mod.main([])


def test_host_path_segments_run_from_each_read_to_the_launch_after_it():
    """Marks before a read (a step planned ahead makes its request then) do not count; each read
    counts once, up to the first launch after it; a launch with no read before it counts nothing."""
    mod = load_script("benchmarks/read_gap.py", "read_gap")
    clock = mod.HostClock()
    marks = [("request_start", 0.0), ("request_end", 1.0), ("forward_start", 1.5), ("replay_start", 2.0),
             ("replay_end", 2.5),  # the first step: no read before it
             ("request_start", 3.0), ("request_end", 3.5),  # the next step planned before this read
             ("read", 10.0), ("step_end", 10.002), ("replay_start", 10.005), ("replay_end", 10.006),
             ("read", 20.0), ("step_end", 20.001), ("request_start", 20.002), ("request_end", 20.004),
             ("forward_start", 20.006), ("replay_start", 20.010), ("replay_end", 20.011)]
    clock.marks = marks
    seg = clock.segments()
    assert seg["read->replay_start"] == pytest.approx(1e3 * (0.005 + 0.010) / 2)
    assert seg["read->step_end"] == pytest.approx(1e3 * (0.002 + 0.001) / 2)
    assert seg["request_start->request_end"] == pytest.approx(2.0)  # only the one after a read
    assert seg["step_end->replay_start"] == pytest.approx(3.0)  # the planned step: straight to the launch
