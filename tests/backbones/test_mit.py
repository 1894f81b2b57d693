"""MiT encoder: parameter counts, equivalence with transformers' SegFormer, official-layout loading."""
import pytest
import torch

from tamperscope.backbones.mit import MixVisionTransformer, load_all_mlp_head_weights, load_mit_weights
from tamperscope.errors import UserError
from tamperscope.registry import create_model

transformers = pytest.importorskip("transformers")


@pytest.mark.parametrize("variant,expected", [("b0", 3.32e6), ("b2", 24.20e6), ("b3", 44.07e6)])
def test_parameter_counts(variant, expected):
    n = sum(p.numel() for p in MixVisionTransformer(variant).parameters())
    assert abs(n - expected) / expected < 0.005


def _hf_config(variant, num_labels=1):
    from transformers import SegformerConfig
    dims = {"b0": [32, 64, 160, 256], "b2": [64, 128, 320, 512]}[variant]
    depths = {"b0": [2, 2, 2, 2], "b2": [3, 4, 6, 3]}[variant]
    return SegformerConfig(hidden_sizes=dims, depths=depths, num_attention_heads=[1, 2, 5, 8],
                           sr_ratios=[8, 4, 2, 1], decoder_hidden_size=256 if variant == "b0" else 768,
                           num_labels=num_labels, drop_path_rate=0.0)


@pytest.mark.parametrize("variant", ["b0", "b2"])
def test_equals_transformers_segformer_model(variant, tmp_path):
    from transformers import SegformerModel
    hf = SegformerModel(_hf_config(variant)).eval()
    hf.save_pretrained(tmp_path)  # written in the hub layout (segformer.encoder.* / attention.self.*)
    ours = MixVisionTransformer(variant, drop_path_rate=0.0, ln_eps=1e-5).eval()  # HF uses eps 1e-5
    report = load_mit_weights(ours, tmp_path)
    assert report["loaded"] == len(ours.state_dict())
    x = torch.randn(2, 3, 96, 128)
    with torch.no_grad():
        ref = hf(x, output_hidden_states=True).hidden_states
        got = ours(x)
    assert len(ref) == 4
    for r, g in zip(ref, got):
        assert r.shape == g.shape
        torch.testing.assert_close(g, r, atol=1e-4, rtol=1e-4)


def test_segformer_b2_equals_transformers_semantic_segmentation(tmp_path):
    from transformers import SegformerForSemanticSegmentation
    hf = SegformerForSemanticSegmentation(_hf_config("b2", num_labels=1)).eval()
    with torch.no_grad():  # non-trivial BN statistics
        hf.decode_head.batch_norm.running_mean.uniform_(-0.5, 0.5)
        hf.decode_head.batch_norm.running_var.uniform_(0.5, 2.0)
    hf.save_pretrained(tmp_path)
    ours = create_model("segformer-b2", segformer_weights=str(tmp_path), ln_eps=1e-5, drop_path_rate=0.0).eval()
    load_all_mlp_head_weights(ours.head, tmp_path, keep_classifier=True)
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        ref = hf(x).logits  # H/4
        quarter = ours.head(ours.encoder(x))
        full = ours(x)["mask_logits"]
    torch.testing.assert_close(quarter, ref, atol=1e-4, rtol=1e-4)
    assert full.shape == (1, 1, 128, 128)


def _nvlabs_ade_state_dict(variant="b0"):
    """An ADE SegFormer checkpoint built with the documented NVlabs key names (NVlabs/SegFormer)."""
    enc = MixVisionTransformer(variant)
    sd = {f"backbone.{k}": v for k, v in enc.state_dict().items()}
    dims, E = enc.embed_dims, 256
    for i, c in enumerate(dims, 1):
        sd[f"decode_head.linear_c{i}.proj.weight"] = torch.randn(E, c)
        sd[f"decode_head.linear_c{i}.proj.bias"] = torch.randn(E)
    sd["decode_head.linear_fuse.conv.weight"] = torch.randn(E, 4 * E, 1, 1)
    for n in ("weight", "bias", "running_mean", "running_var"):
        sd[f"decode_head.linear_fuse.bn.{n}"] = torch.rand(E)
    sd["decode_head.linear_fuse.bn.num_batches_tracked"] = torch.tensor(5)
    sd["decode_head.linear_pred.weight"] = torch.randn(150, E, 1, 1)
    sd["decode_head.linear_pred.bias"] = torch.randn(150)
    sd["decode_head.conv_seg.weight"] = torch.randn(150, E, 1, 1)
    sd["decode_head.conv_seg.bias"] = torch.randn(150)
    return {"meta": {}, "state_dict": sd}, enc


def test_nvlabs_ade_checkpoint_loads_without_missing_keys(tmp_path):
    ckpt, src = _nvlabs_ade_state_dict()
    path = tmp_path / "segformer.b0.512x512.ade.160k.pth"
    torch.save(ckpt, path)
    model = create_model("segformer-b0", segformer_weights=str(path))
    for k, v in src.state_dict().items():
        torch.testing.assert_close(model.encoder.state_dict()[k], v)
    torch.testing.assert_close(model.head.linear_fuse.conv.weight, ckpt["state_dict"]["decode_head.linear_fuse.conv.weight"])


def test_imagenet_encoder_file_and_one_channel_stem(tmp_path):
    src = MixVisionTransformer("b0")
    sd = dict(src.state_dict())
    sd["head.weight"], sd["head.bias"] = torch.randn(1000, 256), torch.randn(1000)  # ImageNet classifier
    path = tmp_path / "mit_b0.pth"
    torch.save(sd, path)
    one = MixVisionTransformer("b0", in_chans=1)
    report = load_mit_weights(one, path)
    assert report["adapted"] and "head.weight" in report["ignored"]
    torch.testing.assert_close(one.patch_embed1.proj.weight, sd["patch_embed1.proj.weight"].mean(1, keepdim=True))


def test_wrong_variant_is_one_readable_error(tmp_path):
    torch.save(MixVisionTransformer("b0").state_dict(), tmp_path / "mit_b0.pth")
    with pytest.raises(UserError, match="MiT-b2"):
        load_mit_weights(MixVisionTransformer("b2"), tmp_path / "mit_b0.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="junk.pth"):
        load_mit_weights(MixVisionTransformer("b0"), tmp_path / "junk.pth")


def test_variable_input_size_and_attention_mask():
    enc = MixVisionTransformer("b0").eval()
    feats = enc(torch.randn(1, 3, 160, 96))
    assert [f.shape[-2:] for f in feats] == [(40, 24), (20, 12), (10, 6), (5, 3)]
    # an all-True boolean mask is the unmasked attention; masking changes the output
    blk = enc.block1[0]
    x = torch.randn(1, 16 * 16, 32)
    Hk, Wk = blk.attn.kv_grid(16, 16)
    full = torch.ones(1, 1, 256, Hk * Wk, dtype=torch.bool)
    with torch.no_grad():
        torch.testing.assert_close(blk(x, 16, 16, attn_mask=full), blk(x, 16, 16))
        half = full.clone()
        half[..., : Hk * Wk // 2] = False
        assert not torch.allclose(blk(x, 16, 16, attn_mask=half), blk(x, 16, 16))
        probs = blk.attn.attention_probs(blk.norm1(x), 16, 16)
    assert probs.shape == (1, 1, 256, Hk * Wk)
    torch.testing.assert_close(probs.sum(-1), torch.ones(1, 1, 256))
