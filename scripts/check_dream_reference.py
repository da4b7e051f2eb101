"""Compare paradecode's DreamModel with Dream's own modeling code and Fast-dLLM's ``dream/`` generate.

The reference code is not part of paradecode: put it in a directory outside the repository as
two importable packages and pass that directory with ``--ref-dir``:

* ``hub_dream/``: ``configuration_dream.py``, ``modeling_dream.py``, ``generation_utils.py`` of
  the Hugging Face repo Dream-org/Dream-v0-Instruct-7B (plus an empty ``__init__.py``);
* ``fastdllm_dream/``: NVlabs/Fast-dLLM ``dream/model/*.py`` (``__init__.py``,
  ``configuration_dream.py``, ``modeling_dream.py``, ``generation_utils.py``,
  ``generation_utils_block.py``).

Two checks on tiny random configs (CPU, float32):

1. ``logits``: max |difference| of our (shifted) logits against each reference's
   ``forward`` shifted as Dream's samplers do, without and with left padding (Dream's 4-D
   mask), and in bfloat16.
2. ``tokens``: Fast-dLLM's ``_sample`` (``generation_utils_block.py``, ``alg=
   "confidence_threshold"``, ``dual_cache`` True/False) against ``paradecode.sample`` with
   ``cache="dual"`` / ``"prefix"`` and the threshold rule with Fast-dLLM-Dream's first step
   (the block's first forward commits only its first column). paradecode never predicts the
   mask token; ``--keep-mask`` leaves Fast-dLLM's mask logit alone to show what that changes.

    python scripts/check_dream_reference.py --ref-dir /work/ref-dream [--seeds 3] [--keep-mask]
"""

from __future__ import annotations

import argparse
import copy
import sys
import types

import torch

import paradecode
from paradecode.models.dream import DreamConfig, DreamModel
from paradecode.models.hf import dream_attention
from paradecode.samplers.threshold import ConfidenceThreshold, ThresholdConfig

MASK = 90
KW = dict(vocab_size=96, hidden_size=64, intermediate_size=112, num_hidden_layers=3, num_attention_heads=4,
          num_key_value_heads=2, max_position_embeddings=512, rope_theta=10000.0, mask_token_id=MASK,
          pad_token_id=91, eos_token_id=92, bos_token_id=92)


def _transformers5_shims() -> None:
    """Dream's code was written for transformers 4.46: plain RoPE was ROPE_INIT_FUNCTIONS["default"]."""
    import transformers.modeling_rope_utils as rope_utils

    def default_rope(config, device=None, **_):
        hd = config.hidden_size // config.num_attention_heads
        return 1.0 / (config.rope_theta ** (torch.arange(0, hd, 2, dtype=torch.int64).float().to(device) / hd)), 1.0

    rope_utils.ROPE_INIT_FUNCTIONS.setdefault("default", default_rope)


def _shift(logits: torch.Tensor) -> torch.Tensor:
    return torch.cat([logits[:, :1], logits[:, :-1]], dim=1)


def _ours(seed: int, scale: float) -> DreamModel:
    torch.manual_seed(seed)
    model = DreamModel(DreamConfig(**KW)).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 2:
                p.normal_(0, scale)
            elif name.endswith("bias"):
                p.normal_(0, 0.3)
            else:
                p.add_(torch.randn_like(p) * 0.3)  # norm weights
    return model


def _reference(package, model: DreamModel):
    cfg = package.configuration_dream.DreamConfig(**KW)
    cfg._attn_implementation = "sdpa"
    ref = package.modeling_dream.DreamModel(cfg).eval()
    ref.load_state_dict(model.state_dict(), strict=True)
    return ref


def check_logits(hub, fast) -> None:
    model = _ours(0, 0.5)
    x = torch.randint(0, 88, (3, 20), generator=torch.Generator().manual_seed(1))
    am = torch.ones(3, 20, dtype=torch.long)
    am[1, :4] = 0
    am[2, :7] = 0
    readable = torch.zeros(3, 20, dtype=torch.bool)
    readable[:, 1:] = am[:, :-1].bool()  # columns whose predecessor is a real token
    for name, package in (("Dream (hub modeling_dream.py)", hub), ("Fast-dLLM dream/model/modeling_dream.py", fast)):
        ref = _reference(package, model)
        with torch.no_grad():
            ours, theirs = model(x), _shift(ref(x, attention_mask="full").logits)
            print(f"{name}: float32, no padding: max |diff| {(ours - theirs).abs().max().item():.3g} "
                  f"(max |logit| {ours.abs().max().item():.3g})")
            if package is hub:  # Fast-dLLM's copy recomputes position ids as arange (no padded batches)
                ours_p = model(x, attention_mask=am)
                theirs_p = _shift(ref(x, **dream_attention(am)).logits)
                print(f"{name}: float32, left padding (4-D mask), real predecessors: max |diff| "
                      f"{(ours_p - theirs_p)[readable].abs().max().item():.3g}")
            ours16 = copy.deepcopy(model).to(torch.bfloat16)(x).float()
            theirs16 = _shift(copy.deepcopy(ref).to(torch.bfloat16)(x, attention_mask="full").logits.float())
            print(f"{name}: bfloat16: max |diff| {(ours16 - theirs16).abs().max().item():.3g}; against float32 "
                  f"Dream: ours {(ours16 - theirs).abs().max().item():.3g}, theirs {(theirs16 - theirs).abs().max().item():.3g}")


class FirstColumnThenThreshold(ConfidenceThreshold):
    """Fast-dLLM-Dream's rule: a block's first (full) forward commits its first column
    (generation_utils_block.py: ``x[:, current_block_start] = x0[:, current_block_start]``);
    later forwards commit the most confident masked column and every one above the threshold."""

    name = "fastdllm-dream-threshold"

    def select(self, view, state):
        sel = super().select(view, state)
        first = torch.zeros_like(sel)
        first[:, 0] = True
        return torch.where((view.step_in_block == 0).to(sel.device)[:, None], first & view.mask, sel)


def check_tokens(fast, seeds: int, keep_mask: bool) -> None:
    block = fast.generation_utils_block
    total = same = 0
    for seed in range(seeds):
        for scale in (0.3, 1.0):
            model = _ours(seed, scale)
            ref = _reference(fast, model)
            ref._sample = types.MethodType(block.DreamGenerationMixin._sample, ref)
            inner = ref.forward

            def forward(*a, _inner=inner, **k):
                out = _inner(*a, **k)
                if not keep_mask:
                    out.logits[..., MASK] = float("-inf")
                return out

            ref.forward = forward
            for P, G, B, thr in ((5, 32, 8, 0.9), (9, 24, 8, 0.5), (3, 32, 16, 0.7)):
                prompt = torch.randint(0, 88, (1, P), generator=torch.Generator().manual_seed(100 + seed))
                for cache, dual in (("dual", True), ("prefix", False)):
                    # diffusion_generate only builds this config (its transformers-4 plumbing fails on 5.x)
                    gc = types.SimpleNamespace(output_history=False, return_dict_in_generate=False, max_length=P + G,
                                               mask_token_id=MASK, steps=G, temperature=0.0, top_p=None, top_k=None,
                                               alg="confidence_threshold", alg_temp=None, eps=1e-3)
                    with torch.no_grad():
                        theirs = ref._sample(prompt.clone(), attention_mask=None, generation_config=gc, threshold=thr,
                                             block_length=B, dual_cache=dual)
                    strategy = FirstColumnThenThreshold(ThresholdConfig(gen_length=G, block_length=B, threshold=thr))
                    mine = paradecode.sample(model, prompt, strategy, cache=cache).sequences
                    ok = torch.equal(mine, theirs)
                    total, same = total + 1, same + ok
                    diff = "" if ok else f" (columns {(mine != theirs).nonzero()[:, 1].tolist()} differ)"
                    print(f"seed={seed} scale={scale} prompt={P} gen={G} block={B} threshold={thr} cache={cache}: "
                          f"identical={ok}{diff}")
    print(f"tokens: {same}/{total} runs identical to Fast-dLLM's dream generate "
          f"(mask token {'kept' if keep_mask else 'excluded'} in Fast-dLLM's predictions)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ref-dir", required=True, help="directory holding hub_dream/ and fastdllm_dream/")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--keep-mask", action="store_true")
    args = parser.parse_args()
    sys.path.insert(0, args.ref_dir)
    _transformers5_shims()
    import fastdllm_dream.configuration_dream  # noqa: F401
    import fastdllm_dream.generation_utils_block  # noqa: F401
    import fastdllm_dream.modeling_dream  # noqa: F401
    import hub_dream.configuration_dream  # noqa: F401
    import hub_dream.modeling_dream  # noqa: F401

    fast, hub = sys.modules["fastdllm_dream"], sys.modules["hub_dream"]
    torch.set_grad_enabled(False)
    check_logits(hub, fast)
    check_tokens(fast, args.seeds, args.keep_mask)


if __name__ == "__main__":
    main()
