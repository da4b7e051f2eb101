"""Compare the lm-eval model ``paradecode``'s loglikelihood on a Dream checkpoint with Dream's own
evaluation code.

The reference is not part of paradecode. Give it from outside the repository:

* ``--eval-py``: DreamLM/Dream's ``eval/eval.py``. Its ``Dream`` class's ``_encode_pair``,
  ``_forward_process``, ``get_logits`` and ``_eval_target_nll_mc`` are read from the file with
  ``ast`` and bound to a stand-in object with the attributes they read (nothing else of the file
  runs, so accelerate / datasets need not be installed);
* ``--ref-dir``: the directory holding ``hub_dream/`` (Dream's ``modeling_dream.py`` and
  ``configuration_dream.py``, as for ``scripts/check_dream_reference.py``), whose model the
  reference scores with.

A tiny random Dream (3 layers, hidden 64) with a character tokenizer that has Dream's special
token names is saved to a temporary directory; paradecode loads it as lm-eval would
(``ParadecodeLM(pretrained=dir)``, so the Dream recipe is picked by ``model_type``), Dream's
code gets the same weights. Each reference call starts from ``torch.manual_seed(seed)``; ours
seeds its CPU generator with the same seed, so both draw the same masks.

    python scripts/check_dream_likelihood_reference.py --eval-py /path/to/Dream/eval/eval.py --ref-dir /work/ref-dream
"""

from __future__ import annotations

import argparse
import ast
import logging
import sys
import tempfile
import types

import torch
import torch.nn.functional as F

from paradecode.integrations.lm_eval import ParadecodeLM
from paradecode.models.dream import DreamConfig, DreamModel

SPECIAL = ["<|endoftext|>", "<|beginoftext|>", "<|mask|>", "<unk>"]
PAIRS = [("12+345=", "357"), ("12+345=", "951"), ("sort lemon:", "elmno"), ("sort river:", " eirrv"), ("ab", "c")]
SETTINGS = [(4, 2), (12, 3), (32, 8), (128, 32)]  # (mc_num, batch_size)
METHODS = ("_encode_pair", "_forward_process", "get_logits", "_eval_target_nll_mc")


def tokenizer():
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(SPECIAL + [chr(c) for c in range(32, 127)])}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    core.decoder = decoders.Fuse()
    core.add_special_tokens(SPECIAL)
    return PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<|endoftext|>", pad_token="<|endoftext|>",
                                   bos_token="<|beginoftext|>", mask_token="<|mask|>", unk_token="<unk>")


def config_fields(tok) -> dict:
    return dict(vocab_size=len(tok), hidden_size=64, intermediate_size=112, num_hidden_layers=3, num_attention_heads=4,
                num_key_value_heads=2, max_position_embeddings=512, rope_theta=10000.0,
                mask_token_id=tok.mask_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.eos_token_id,
                bos_token_id=tok.bos_token_id)


def reference_methods(path: str) -> dict:
    """The four methods of ``eval.py``'s ``Dream`` class, compiled on their own."""
    tree = ast.parse(open(path).read())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Dream")
    namespace = {"torch": torch, "F": F, "eval_logger": logging.getLogger("dream-reference")}
    for fn in cls.body:
        if isinstance(fn, ast.FunctionDef) and fn.name in METHODS:
            fn.decorator_list = []
            exec(compile(ast.Module([fn], []), path, "exec"), namespace)
    missing = [m for m in METHODS if m not in namespace]
    if missing:
        raise SystemExit(f"{path}: no {missing} in class Dream; is it Dream's eval/eval.py?")
    return {m: namespace[m] for m in METHODS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--eval-py", required=True, help="DreamLM/Dream eval/eval.py")
    parser.add_argument("--ref-dir", required=True, help="directory holding hub_dream/")
    parser.add_argument("--seed", type=int, default=1234)
    args = parser.parse_args()
    sys.path.insert(0, args.ref_dir)
    import hub_dream.configuration_dream as hub_config
    import hub_dream.modeling_dream as hub_modeling

    from check_dream_reference import _transformers5_shims  # scripts/ is on sys.path when run as a script

    _transformers5_shims()
    tok = tokenizer()
    torch.manual_seed(0)
    ours = DreamModel(DreamConfig(**config_fields(tok))).eval()
    with torch.no_grad():  # peaked logits and nonzero biases, as the other Dream checks
        for name, p in ours.named_parameters():
            if p.dim() == 2:
                p.normal_(0, 0.3)
            elif name.endswith("bias"):
                p.normal_(0, 0.3)
    cfg = hub_config.DreamConfig(**config_fields(tok))
    cfg._attn_implementation = "sdpa"
    hub = hub_modeling.DreamModel(cfg).eval()
    hub.load_state_dict(ours.state_dict(), strict=True)

    class Full(torch.nn.Module):
        """``eval.py`` calls ``self.model(batch)``; Dream's forward takes ``attention_mask="full"``."""

        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, x):
            return self.model(x, attention_mask="full")

    methods = reference_methods(args.eval_py)
    directory = tempfile.mkdtemp()
    ours.save_pretrained(directory)
    tok.save_pretrained(directory)
    from lm_eval.api.instance import Instance

    worst = 0.0
    for mc_num, batch in SETTINGS:
        lm = ParadecodeLM(pretrained=directory, device="cpu", batch_size=batch, mc_num=mc_num, seed=args.seed)
        got = lm.loglikelihood([Instance("loglikelihood", {}, p, i) for i, p in enumerate(PAIRS)], disable_tqdm=True)
        ref = types.SimpleNamespace(tokenizer=tok, model=Full(hub), batch_size=batch, mc_num=mc_num, sampling_eps=1e-3,
                                    classifier_free_guidance=1.0, log_type="ftb", device=torch.device("cpu"),
                                    add_bos_token=True, max_length=2048)
        for name, fn in methods.items():
            setattr(ref, name, types.MethodType(fn, ref))
        for (context, continuation), (ll, greedy) in zip(PAIRS, got):
            prefix, target = ref._encode_pair(context, continuation)
            torch.manual_seed(args.seed)
            with torch.no_grad():
                want = -ref._eval_target_nll_mc(torch.tensor(prefix), torch.tensor(target))
            rel = abs(ll - want) / abs(want)
            worst = max(worst, rel)
            print(f"mc_num={mc_num:3d} batch={batch:2d} {context!r:14} -> {continuation!r:9} paradecode {ll:11.6f}  "
                  f"Dream {want:11.6f}  rel {rel:.1e}  is_greedy {greedy}")
    print(f"largest relative difference: {worst:.2g}")


if __name__ == "__main__":
    main()
