"""Check the real-benchmark conventions on the real files (not shipped, not downloaded here):
every GSM8K gold answer scores under both filters, an off-by-one answer never does, and every
HumanEval canonical solution passes the sandboxed executor.

    python benchmarks/real_tasks_gold.py DATA_DIR     # DATA_DIR holds gsm8k/test.jsonl, HumanEval.jsonl.gz
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from paradecode.bench.real import code, gsm8k


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data_dir", type=Path)
    args = ap.parse_args()
    problems = gsm8k.load_gsm8k(args.data_dir)
    strict = sum(bool(gsm8k.score(p, p.answer)["strict"]) for p in problems)
    print(f"gsm8k: {strict} / {len(problems)} gold answers score (strict-match)")
    he = code.load_humaneval(args.data_dir)
    result = code.evaluate(he, [p.solution for p in he])
    print(f"humaneval: canonical solutions pass@1 = {result['pass@1']:.3f} ({len(he)} problems)")
    return 0 if strict == len(problems) and result["pass@1"] == 1.0 else 1


if __name__ == "__main__":
    sys.exit(main())
