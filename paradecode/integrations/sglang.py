"""paradecode's block strategies as an SGLang dLLM algorithm, for serving at scale.

SGLang (``--dllm-algorithm``) runs a diffusion LM's blocks with tensor / expert parallelism,
CUDA graphs and continuous batching, and takes the decoding rule as a ``DllmAlgorithm``
subclass whose ``step(forward_batch, full_logits, states) -> done`` updates the block's tokens
in place. :class:`Paradecode` is that subclass for every block strategy in paradecode's
registry (threshold, credit, localleap, prophet, learn2pd, eb, lowconf and any registered
later): it runs the strategy's own block step
(:class:`~paradecode.samplers.block_decoder.BlockDecoder`), so a block commits what
``paradecode.sample(..., layout="llada2")`` commits.

Launch (after ``pip install "paradecode[sglang]"`` next to SGLang)::

    python -m sglang.launch_server --model-path inclusionAI/LLaDA2.0-mini \\
        --dllm-algorithm Paradecode --dllm-algorithm-config threshold.yaml

with a YAML naming the strategy and its options (the strategy's config fields, checked as
``paradecode.sample`` checks them)::

    strategy: threshold
    threshold: 0.9

SGLang finds the algorithm through its general-plugin entry point (``sglang.srt.plugins``,
declared in paradecode's pyproject): :func:`register` runs in every SGLang process before the
server arguments are read. ``register()`` may also be called by hand (an in-process ``Engine``
loads the plugins itself).

Per request, ``states`` holds one :class:`BlockDecoder` for the request's current block
(SGLang makes the states at a block's first forward, and carries them across rounds in its
first-done-first-out loop). Options read per block: ``steps`` (lowconf, learn2pd and a
composite's base) is steps per block; SGLang's own ``block_size`` key is the block length.
docs/sglang.md says how the strategies behave under SGLang's loops and which cannot be served.
"""

from __future__ import annotations

from typing import Any, List, Optional

import torch

try:
    from sglang.srt.dllm.algorithm.base import DllmAlgorithm
except ImportError as e:  # pragma: no cover - exercised only without SGLang
    raise ImportError(
        "paradecode.integrations.sglang needs SGLang (its sglang.srt.dllm.algorithm package): "
        'pip install "paradecode[sglang]" on the serving machine (SGLang brings its own CUDA torch).'
    ) from e

from ..config import check_value
from ..samplers.block_decoder import BlockDecoder
from .one_block import one_block_strategy

__all__ = ["ALGORITHM_NAME", "Paradecode", "register"]

ALGORITHM_NAME = "Paradecode"
# Keys of --dllm-algorithm-config that SGLang's DllmConfig reads itself (block_size becomes the
# block length); ours: the strategy, the end-of-text id, Learn2PD's filter directory.
SGLANG_KEYS = ("block_size", "capture_input_preparation")
# Strategy fields SGLang decides, and why a YAML cannot set them.
ENGINE_FIELDS = {
    "block_length": "the block length is SGLang's block_size (the checkpoint's, 32 for LLaDA2)",
    "gen_length": "the generation length is each request's max_new_tokens",
    "layout": "SGLang's blocks are LLaDA2's (layout 'llada2')",
    "temperature": "the step is greedy (temperature 0): the ranks of a tensor-parallel group must commit the same tokens",
    "cfg_scale": "classifier-free guidance needs a second, unconditional forward, which SGLang's loop does not run",
}


class Paradecode(DllmAlgorithm):
    """A paradecode block strategy stepping SGLang's blocks; the strategy is the YAML's ``strategy``."""

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        options = dict(config.algorithm_config or {})
        for key in SGLANG_KEYS:
            options.pop(key, None)
        name = options.pop("strategy", None)
        fixed = sorted(set(options) & set(ENGINE_FIELDS))
        if fixed:
            raise ValueError(
                f"SGLang --dllm-algorithm-config: option(s) {fixed} cannot be set here: "
                + "; ".join(ENGINE_FIELDS[k] for k in fixed) + "."
            )
        owner = f"SGLang --dllm-algorithm-config (strategy {name!r})"
        self.eos_id: Optional[int] = check_value("eos_token_id", options.pop("eos_token_id", None), Optional[int], owner)
        filter_dir = check_value("filter", options.pop("filter", None), Optional[str], owner)
        steps = options.pop("steps", None)
        if name is None:
            raise ValueError(
                f"SGLang --dllm-algorithm {ALGORITHM_NAME}: the --dllm-algorithm-config YAML must name the "
                f"strategy, e.g. 'strategy: threshold'."
            )
        if self.eos_id is not None and self.eos_id < 0:
            raise ValueError(f"{owner}: eos_token_id must be a token id >= 0, got {self.eos_id!r}.")
        self.strategy = one_block_strategy(
            name, options, block_length=self.block_size, steps=steps, owner=owner, eos_token_id=self.eos_id,
            eos_hint="eos_token_id in the --dllm-algorithm-config YAML", engine="SGLang",
        )
        if filter_dir is not None:
            if not hasattr(self.strategy, "runtime_options") or "filter" not in self.strategy.runtime_options:
                raise ValueError(f"{owner}: option filter is Learn2PD's filter directory; {name!r} takes none.")
            from ..samplers.learn2pd_filter import Learn2PDFilter

            learned = Learn2PDFilter.from_pretrained(filter_dir)
            if learned.block_length != self.block_size:
                raise ValueError(
                    f"{owner}: the filter in {filter_dir} was trained for blocks of {learned.block_length}, but SGLang's "
                    f"block_size is {self.block_size}; train one for it (scripts/train_learn2pd.py)."
                )
            self.strategy.filter = learned

    def max_steps(self, block_size: int) -> int:
        """SGLang's bound on a block's forwards: one per position, the rule's post-edit steps
        (``editing``), and the forward that stores the finished block."""
        return block_size + self.strategy.post_block_steps + 1

    def init_step_state(self, forward_batch: Any) -> List[BlockDecoder]:
        """One decoder per request: its rule state lives as long as the request's block."""
        device = forward_batch.input_ids.device
        states = []
        for _ in range(forward_batch.batch_size):
            decoder = BlockDecoder(self.strategy, self.mask_id, self.eos_id, prompt_from_block_start=True)
            decoder.reset(1, device)
            states.append(decoder)
        return states

    def step(self, forward_batch: Any, full_logits: torch.Tensor, states: List[BlockDecoder]) -> List[bool]:
        """One step of each request's rule on its block, written into ``forward_batch.input_ids``.

        A block is reported done at the forward after its last change (as SGLang's
        ``LowConfidence`` after its last mask is filled): that forward has written the finished
        block's KV. A rule that holds a full block open (``editing``'s post-edit steps) keeps
        stepping it until it lets go.
        """
        batch = forward_batch.batch_size
        blocks = forward_batch.input_ids.view(batch, self.block_size)  # a view: writes land in place
        logits = full_logits.view(batch, self.block_size, -1)
        masked = (blocks == self.mask_id).any(-1).tolist()
        prompt = getattr(forward_batch, "dllm_prompt_mask", None)
        done = [False] * batch
        for i, decoder in enumerate(states):
            if not masked[i] and not bool(decoder.held[0]):
                done[i] = True
                continue
            if prompt is not None and bool(((blocks[i] == self.mask_id) & prompt[i]).any()):
                raise ValueError(
                    f"the prompt holds the mask token ({self.mask_id}) inside the block being decoded; "
                    f"{ALGORITHM_NAME} cannot tell it from a position to decode. Remove it from the prompt."
                )
            fixed = prompt[i : i + 1] if prompt is not None else None  # else: what the block held at its start
            decoder.step_inplace(blocks[i : i + 1], logits[i : i + 1], fixed=fixed)
        return done


def register() -> None:
    """Make ``--dllm-algorithm Paradecode`` known to SGLang in this process (idempotent).

    SGLang calls it from its ``sglang.srt.plugins`` entry point in every process; it adds the
    class to the map SGLang's ``get_algorithm_cls`` reads.
    """
    from sglang.srt.dllm import algorithm

    algorithm.algo_name_to_cls[ALGORITHM_NAME] = Paradecode
