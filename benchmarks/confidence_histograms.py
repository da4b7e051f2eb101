"""Issue 17: how sure the shipped dLLMs are when they commit, side by side.

For each model: the confidences of the tokens LLaDA's baseline (lowconf, one token per step)
commits on the model's own tasks (``paradecode.bench.confidence``), as a histogram over
``BINS``, with the share in [0.5, 0.9) (all tokens, and without ``<eos>``). Threshold rules only
differ where confidences fall between "unsure" and "sure", so this says how much room a model
leaves them.

A model whose info.json already holds this measurement (``eval.confidence``, written by
scripts/train_cot.py on N = 500 held-out problems) is read from there unless ``--measure``;
the others are measured here (``--n`` problems per task, seed 20261201, as train_cot.py does).

    python benchmarks/confidence_histograms.py --n 48 --out results/confidence_histograms.png   # CPU, ~10 min
    python benchmarks/confidence_histograms.py --measure --device cuda --n 500 --out OUT/h.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Optional

from paradecode import zoo
from paradecode.bench.confidence import BINS, model_confidences

EVAL_SEED = 20261201  # scripts/train_cot.py's held-out seed


def histogram_of(name: str, measure: bool, n: int, device: str) -> dict[str, Any]:
    recorded = (zoo.info(name).get("eval") or {}).get("confidence")
    if recorded and not measure:
        return dict(recorded, model=name, source=f"{name}/info.json eval.confidence "
                    f"(N = {(zoo.info(name).get('eval') or {}).get('n', '?')} per task)")
    out = model_confidences(name, n, EVAL_SEED, device=device)
    return dict(out, source=f"measured here: lowconf at full steps, {n} problems per task, seed {EVAL_SEED}")


def plot(hists: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"[{a:g}, {b:g})" for a, b in zip(BINS[:-1], BINS[1:])]
    fig, ax = plt.subplots(figsize=(10, 4.2))
    width = 0.8 / len(hists)
    for i, h in enumerate(hists):
        xs = [j + (i - (len(hists) - 1) / 2) * width for j in range(len(labels))]
        share = h["share_in_band"]
        no_eos = h.get("share_in_band_without_eos")
        label = f"{h['model']}: {share:.1%} in [0.5, 0.9)" + (f" ({no_eos:.1%} without <eos>)" if no_eos else "")
        ax.bar(xs, [100 * v for v in h["histogram"]], width=width, label=label)
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, rotation=35, fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("% of committed tokens (log)")
    ax.set_xlabel("confidence of the committed token (LLaDA's baseline, one token per step)")
    ax.legend(fontsize=8)
    ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="cot-8m,tasks-6m")
    ap.add_argument("--measure", action="store_true", help="measure every model, also those with a recorded histogram")
    ap.add_argument("--n", type=int, default=256, help="problems per task of a measurement")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", required=True, help="PNG path; the numbers go beside it as .json")
    args = ap.parse_args(argv)
    hists = [histogram_of(m.strip(), args.measure, args.n, args.device) for m in args.models.split(",") if m.strip()]
    out = Path(args.out)
    plot(hists, out)
    out.with_suffix(".json").write_text(json.dumps({"bins": list(BINS), "models": hists}, indent=1) + "\n")
    for h in hists:
        print(f"{h['model']:10s} in [0.5, 0.9): {h['share_in_band']:.1%} of {h['n']} committed tokens"
              + (f", {h['share_in_band_without_eos']:.1%} without <eos>" if "share_in_band_without_eos" in h else "")
              + f"  [{h['source']}]")
        print("           " + " ".join(f"{v:.4f}" for v in h["histogram"]))
    print(f"wrote {out} and {out.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
