"""The shipped trained shapes models, the metrics and the `paradecode image` demo."""

import json

import pytest
import torch

from paradecode.cli import main
from paradecode.vision import generate
from paradecode.vision.metrics import frechet_distance, psnr, ssim
from paradecode.vision.shapes import NUM_CLASSES, make_shapes
from paradecode.vision.zoo import load_shapes_models


@pytest.fixture(scope="module")
def shapes():
    return load_shapes_models()


def test_metrics_behave():
    g = torch.Generator().manual_seed(0)
    a = torch.rand(4, 3, 32, 32, generator=g)
    assert torch.isinf(psnr(a, a)).all() and torch.allclose(ssim(a, a), torch.ones(4))
    noisy = (a + 0.05 * torch.randn(a.shape, generator=g)).clamp(0, 1)
    assert (psnr(noisy, a) > 20).all() and (psnr(noisy, a) < 35).all() and (ssim(noisy, a) < 0.99).all()
    f = torch.randn(500, 8, generator=g)
    assert frechet_distance(f, f) == pytest.approx(0.0, abs=1e-6)
    assert frechet_distance(f, f + 1.0) == pytest.approx(8.0, rel=0.05)


@pytest.mark.slow
def test_shipped_models_generate_the_asked_classes(shapes):
    real, y = make_shapes(200, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert float((shapes.classifier(real).argmax(-1) == y).float().mean()) > 0.95
        rec = shapes.vae.img_to_reconstructed_img(real)
    assert float(psnr((rec + 1) / 2, (real + 1) / 2).mean()) > 25
    labels = torch.arange(NUM_CLASSES)
    out = generate(shapes.large, labels, seed=0, cfg=2.0, top_k=100, top_p=0.95)
    with torch.no_grad():
        acc = float((shapes.classifier(out.images * 2 - 1).argmax(-1) == labels).float().mean())
    assert acc >= 0.8
    # ScaleKV at a quarter of the cache stays close to the full model's images (same seed).
    skv = generate(shapes.large, labels, seed=0, cfg=2.0, top_k=100, top_p=0.95, cache="scalekv",
                   cache_options={"budget": 0.25, "window_size": 4})
    assert float(psnr(skv.images, out.images).clamp(max=99).mean()) > 25
    assert max(skv.trace.extra("kv_peak_bytes")) < 0.5 * max(out.trace.extra("kv_peak_bytes"))


@pytest.mark.slow
def test_image_cli_writes_a_grid(tmp_path, capsys):
    out = tmp_path / "grid.png"
    assert main(["image", "--out", str(out), "--classes", "0", "5", "--budgets", "0.5", "0.2"]) == 0
    from PIL import Image

    assert Image.open(out).size[0] > 300
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert [r["setting"].split(" ")[0] for r in rows] == ["VAR", "CoDe", "CoDe", "ScaleKV", "ScaleKV"]
    assert rows[-1]["kv_peak_bytes"] < rows[0]["kv_peak_bytes"]
