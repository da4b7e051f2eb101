"""Broken checkpoints are refused with a ValueError that names the path and what to do;
altered bytes are caught by the sha256 our savers write; files without checksums still load."""

import json
import struct

import pytest
import torch
from safetensors.torch import load_file, save_file

from paradecode.models import LLaDAModel
from paradecode.models.checkpoint import CHECKSUM_KEY, INDEX, SINGLE, load_state_dict_from_dir
from paradecode.samplers.learn2pd_filter import Learn2PDFilter
from paradecode.vision import VQVAE
from paradecode.vision.checkpoints import read_state_dict

from ._vision_tiny import tiny_vae
from .conftest import tiny_config


@pytest.fixture(scope="module")
def small():
    torch.manual_seed(0)
    return LLaDAModel(tiny_config(n_layers=1)).eval()


@pytest.fixture
def saved(tmp_path, small):
    small.save_pretrained(tmp_path / "m")
    return tmp_path / "m"


def flip_byte(file, tensor):
    """Overwrite one data byte of ``tensor`` in a safetensors file, leaving the header intact."""
    raw = bytearray(file.read_bytes())
    n = struct.unpack("<Q", raw[:8])[0]
    start = 8 + n + json.loads(raw[8 : 8 + n])[tensor]["data_offsets"][0]
    raw[start] ^= 0xFF
    file.write_bytes(bytes(raw))


def edit_json(file, **changes):
    data = json.loads(file.read_text())
    data.update(changes)
    file.write_text(json.dumps(data))


def refused(path, *patterns, loader=LLaDAModel.from_pretrained):
    with pytest.raises(ValueError) as e:
        loader(path)
    msg = str(e.value)
    for p in patterns:
        assert p in msg, msg
    return msg


# ---- LLaDAModel.from_pretrained ----------------------------------------------------------------


def test_roundtrip_writes_and_verifies_checksums(saved, small):
    from safetensors import safe_open

    with safe_open(str(saved / SINGLE), "pt") as f:
        sums = json.loads(f.metadata()[CHECKSUM_KEY])
    assert set(sums) == set(small.state_dict())
    x = torch.randint(0, 60, (1, 5))
    assert torch.equal(LLaDAModel.from_pretrained(saved)(x), small(x))


def test_missing_directory_or_file(tmp_path, saved):
    refused(tmp_path / "nowhere", str(tmp_path / "nowhere"), "does not exist")
    refused(saved / "config.json", "is a file", "give the directory")
    (saved / "config.json").unlink()
    refused(saved, str(saved), "has no config.json")


@pytest.mark.parametrize(
    "text, pattern",
    [("{not json", "is not valid JSON"), ("[1, 2]", "must hold a JSON object"), ("", "is not valid JSON"), ("null", "JSON NoneType")],
)
def test_config_not_a_json_object(saved, text, pattern):
    (saved / "config.json").write_text(text)
    refused(saved, str(saved / "config.json"), pattern, "re-save")


def test_config_not_text(saved):
    (saved / "config.json").write_bytes(b"\xff\xfe\x00garbage")
    refused(saved, str(saved / "config.json"), "not text")


@pytest.mark.parametrize(
    "changes, pattern",
    [
        (dict(d_model="64"), "field d_model must be an int, got str '64'"),
        (dict(d_model=64.0), "field d_model must be an int, got float"),
        (dict(rope_theta="big"), "field rope_theta must be a float"),
        (dict(rms_norm_eps=float("nan")), "field rms_norm_eps must be a finite float"),
        (dict(weight_tying="no"), "field weight_tying must be a bool"),
        (dict(mask_token_id=[60]), "field mask_token_id must be an int or None"),
        (dict(n_heads=0), "field n_heads must be >= 1"),
        (dict(vocab_size=-5), "field vocab_size must be >= 1"),
        (dict(n_heads=3), "cannot build a LLaDAModel"),
        (dict(block_type="sequential"), "cannot build a LLaDAModel"),
    ],
)
def test_config_fields_are_checked(saved, changes, pattern):
    edit_json(saved / "config.json", **changes)
    refused(saved, str(saved / "config.json"), pattern)


def test_config_describing_another_size(saved):
    edit_json(saved / "config.json", d_model=32, mlp_hidden_size=48)
    msg = refused(saved, str(saved), "wrongly shaped weights", "Check that config.json")
    assert "(64, 64) in the file, (32, 32) in the model" in msg or "in the model" in msg


def test_huge_config_sizes_allocate_nothing(saved):
    edit_json(saved / "config.json", d_model=2**24, mlp_hidden_size=2**24)  # 2**48-element projections
    refused(saved, "wrongly shaped weights")  # built on the meta device: no petabytes asked for
    edit_json(saved / "config.json", d_model=2**40, n_heads=2**10, n_kv_heads=2**10)
    refused(saved, "cannot build a LLaDAModel", "overflow")
    edit_json(saved / "config.json", d_model=64, n_heads=4, n_kv_heads=2, n_layers=2**40)
    refused(saved, "far larger than the checkpoint")  # stops at once instead of building 2**40 blocks


@pytest.mark.parametrize("arg", [3, None, b"dir", ["a"]])
def test_path_argument_type(arg):
    for loader in (LLaDAModel.from_pretrained, VQVAE.from_pretrained, Learn2PDFilter.from_pretrained):
        with pytest.raises(TypeError, match="directory must be a path"):
            loader(arg)
    with pytest.raises(TypeError, match="path must be a path"):
        read_state_dict(arg)


@pytest.mark.parametrize("cut", [1, 100, 5])
def test_truncated_weights(saved, cut):
    raw = (saved / SINGLE).read_bytes()
    (saved / SINGLE).write_bytes(raw[:cut] if cut < 8 else raw[:-cut])
    refused(saved, str(saved / SINGLE), "truncated", "re-download")


def test_not_a_safetensors_file(saved):
    (saved / SINGLE).write_text("version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 12\n")
    refused(saved, str(saved / SINGLE), "not a safetensors file")


def test_no_weights(saved):
    (saved / SINGLE).unlink()
    refused(saved, "holds neither model.safetensors nor model.safetensors.index.json")


def test_missing_and_unexpected_keys_are_listed(saved):
    state = load_file(str(saved / SINGLE))
    dropped = sorted(state)[:8]
    for k in dropped:
        del state[k]
    state["model.extra.weight"] = torch.zeros(2)
    save_file(state, str(saved / SINGLE))
    msg = refused(saved, "missing keys", "unexpected keys ['model.extra.weight']", "and 2 more")
    assert dropped[0] in msg


def test_integer_tensor_for_a_float_weight(saved):
    state = load_file(str(saved / SINGLE))
    state["model.transformer.ln_f.weight"] = torch.ones(64, dtype=torch.long)
    save_file(state, str(saved / SINGLE))
    refused(saved, "non-float tensors for float weights", "ln_f.weight")


def test_overwritten_bytes_are_caught(saved):
    flip_byte(saved / SINGLE, "model.transformer.ln_f.weight")
    refused(saved, str(saved / SINGLE), "tensor 'model.transformer.ln_f.weight'", "sha256", "re-download")


def test_checksum_metadata_damage(saved):
    state = load_file(str(saved / SINGLE))
    save_file(state, str(saved / SINGLE), metadata={CHECKSUM_KEY: "{oops"})
    refused(saved, "metadata is damaged")
    sums = {k: "0" * 64 for k in list(state)[:-1]}
    save_file(state, str(saved / SINGLE), metadata={CHECKSUM_KEY: json.dumps(sums)})
    refused(saved, "changed after it was saved", "without a checksum")


def test_files_without_checksums_still_load(saved, small):
    state = load_file(str(saved / SINGLE))
    save_file(state, str(saved / SINGLE), metadata={"format": "pt"})  # as the shipped files are
    x = torch.randint(0, 60, (1, 4))
    assert torch.equal(LLaDAModel.from_pretrained(saved)(x), small(x))
    flip_byte(saved / SINGLE, "model.transformer.ln_f.weight")
    LLaDAModel.from_pretrained(saved)  # nothing to verify against: loads (the limit of the check)
    assert load_state_dict_from_dir(saved, verify=False)


def test_shipped_checkpoints_load():
    """The shipped files predate checksums: they load unverified, as any file written elsewhere."""
    from pathlib import Path

    import paradecode
    from paradecode import zoo

    root = Path(paradecode.__file__).parent
    model, tok = zoo.load("tasks-6m")
    assert model.config.vocab_size > 0 and tok is not None
    assert Learn2PDFilter.from_pretrained(root / "zoo" / "tasks-6m" / "learn2pd_filter").block_length > 0
    assert isinstance(VQVAE.from_pretrained(root / "vision" / "shipped" / "shapes32" / "vae"), VQVAE)


# ---- sharded checkpoints -------------------------------------------------------------------------


@pytest.fixture
def sharded(tmp_path, small):
    small.save_pretrained(tmp_path / "s", max_shard_bytes=20_000)
    assert (tmp_path / "s" / INDEX).exists()
    return tmp_path / "s"


def test_sharded_roundtrip(sharded, small):
    x = torch.randint(0, 60, (1, 4))
    assert torch.equal(LLaDAModel.from_pretrained(sharded)(x), small(x))


@pytest.mark.parametrize(
    "index, pattern",
    [
        ("{bad", "is not valid JSON"),
        ('{"metadata": {}}', "has no usable 'weight_map'"),
        ('{"weight_map": []}', "got a list"),
        ('{"weight_map": {}}', "got an empty one"),
        ('{"weight_map": {"a": "../model.safetensors"}}', "which is not a shard file name"),
        ('{"weight_map": {"a": 3}}', "which is not a shard file name"),
        ('{"weight_map": {"a": "model-00009-of-00009.safetensors"}}', "names shard(s) ['model-00009-of-00009.safetensors'], missing"),
    ],
)
def test_broken_index(sharded, index, pattern):
    (sharded / INDEX).write_text(index)
    refused(sharded, str(sharded / INDEX), pattern)


def test_index_and_shards_disagree(sharded):
    index = json.loads((sharded / INDEX).read_text())
    index["weight_map"]["model.transformer.wte.weight"] = sorted(set(index["weight_map"].values()))[-1]
    (sharded / INDEX).write_text(json.dumps(index))
    refused(sharded, "model.transformer.wte.weight", "does not hold them")


def test_missing_shard_file(sharded):
    shard = sorted(sharded.glob("model-*.safetensors"))[0]
    shard.unlink()
    refused(sharded, shard.name, "missing from", "download every shard")


def test_corrupted_shard(sharded):
    shard = sorted(sharded.glob("model-*.safetensors"))[-1]
    name = sorted(load_file(str(shard)))[0]
    flip_byte(shard, name)
    refused(sharded, str(shard), f"tensor {name!r}")


# ---- vision checkpoints -----------------------------------------------------------------------------


@pytest.fixture
def vae_dir(tmp_path):
    tiny_vae().save_pretrained(tmp_path / "vae")
    return tmp_path / "vae"


def test_vision_roundtrip(vae_dir):
    assert isinstance(VQVAE.from_pretrained(vae_dir), VQVAE)


@pytest.mark.parametrize(
    "changes, pattern",
    [
        (dict(ch="32"), "field ch must be an int, got str '32'"),
        (dict(ch_mult="12"), "field ch_mult must be a tuple"),
        (dict(using_sa=1), "field using_sa must be a bool"),
        (dict(beta=float("inf")), "field beta must be a finite float"),
        (dict(colour=True), "unknown VQVAEConfig field(s) ['colour']"),
        (dict(ch=-32), "cannot build a VQVAE"),
        (dict(num_res_blocks=2**40), "far larger than the checkpoint"),  # stops at once, no 2**40 loop
        (dict(ch=16), "multiples of 32"),  # the config's own __post_init__, with the path
        (dict(ch=64), "does not match VQVAE"),
    ],
)
def test_vision_config_fields(vae_dir, changes, pattern):
    edit_json(vae_dir / "config.json", **changes)
    refused(vae_dir, str(vae_dir), pattern, loader=VQVAE.from_pretrained)


def test_vision_broken_files(vae_dir, tmp_path):
    refused(tmp_path / "none", "does not exist", loader=VQVAE.from_pretrained)
    (vae_dir / "config.json").write_text("[]")
    refused(vae_dir, "must hold a JSON object", loader=VQVAE.from_pretrained)


def test_vision_corruption(vae_dir):
    name = sorted(load_file(str(vae_dir / SINGLE)))[3]
    flip_byte(vae_dir / SINGLE, name)
    refused(vae_dir, f"tensor {name!r}", loader=VQVAE.from_pretrained)
    (vae_dir / SINGLE).write_bytes((vae_dir / SINGLE).read_bytes()[:-10])
    refused(vae_dir, "truncated", loader=VQVAE.from_pretrained)


def test_official_pth_files(tmp_path):
    good = tmp_path / "good.pth"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, good)
    assert set(read_state_dict(good)) == {"w"}
    good.write_bytes(good.read_bytes()[:40])
    refused(good, str(good), "not a readable torch checkpoint", loader=read_state_dict)
    torch.save([1, 2], tmp_path / "list.pth")
    refused(tmp_path / "list.pth", "does not hold a state dict", loader=read_state_dict)
    torch.save({"w": torch.zeros(1), "step": 3}, tmp_path / "mixed.pth")
    refused(tmp_path / "mixed.pth", "not named tensors", "'step'", loader=read_state_dict)
    refused(tmp_path / "absent.pth", "does not exist", loader=read_state_dict)
    (tmp_path / "x.safetensors").write_bytes(b"12345678junk")
    refused(tmp_path / "x.safetensors", "not a readable safetensors file", loader=read_state_dict)


# ---- Learn2PD filter ---------------------------------------------------------------------------------


@pytest.fixture
def filter_dir(tmp_path):
    torch.manual_seed(0)
    Learn2PDFilter(8, hidden_sizes=(5,)).save_pretrained(tmp_path / "flt", note="x")
    return tmp_path / "flt"


@pytest.mark.parametrize(
    "changes, pattern",
    [
        (dict(block_length="8"), "field block_length must be an int"),
        (dict(block_length=0), "field block_length must be >= 1"),
        (dict(hidden_sizes=[0]), "hidden_sizes must hold sizes >= 1"),
        (dict(hidden_sizes="5"), "field hidden_sizes must be a list"),
        (dict(block_length=4), "does not match Learn2PDFilter"),
        (dict(model_type="bert"), "is not a Learn2PD filter config"),
    ],
)
def test_filter_config(filter_dir, changes, pattern):
    edit_json(filter_dir / "config.json", **changes)
    refused(filter_dir, str(filter_dir), pattern, loader=Learn2PDFilter.from_pretrained)


def test_filter_files(filter_dir):
    assert Learn2PDFilter.from_pretrained(filter_dir).metadata == {"note": "x"}
    flip_byte(filter_dir / SINGLE, "net.0.weight")
    refused(filter_dir, "tensor 'net.0.weight'", "sha256", loader=Learn2PDFilter.from_pretrained)
    (filter_dir / "config.json").write_text("{")
    refused(filter_dir, "is not valid JSON", loader=Learn2PDFilter.from_pretrained)
    data = json.loads(json.dumps({"model_type": "learn2pd_filter"}))
    (filter_dir / "config.json").write_text(json.dumps(data))
    refused(filter_dir, "has no block_length", loader=Learn2PDFilter.from_pretrained)
