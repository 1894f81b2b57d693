"""MAE encoder/decoder: equivalence with transformers' ViTMAEForPreTraining, FAIR layout, masking, tables."""
import pytest
import torch

from tamperscope.backbones.mae import (MAE_CONFIGS, MaskedAutoencoder, complementary_noise, load_mae_weights,
                                       masking_from_noise, patchify, sincos_pos_embed_2d, unpatchify)
from tamperscope.errors import UserError



def _hf_model(img_size: int = 64):
    transformers = pytest.importorskip("transformers")
    cfg = MAE_CONFIGS["small"]
    hf_cfg = transformers.ViTMAEConfig(
        hidden_size=cfg["embed_dim"], num_hidden_layers=cfg["depth"], num_attention_heads=cfg["num_heads"],
        intermediate_size=int(cfg["embed_dim"] * cfg["mlp_ratio"]), decoder_hidden_size=cfg["decoder_embed_dim"],
        decoder_num_hidden_layers=cfg["decoder_depth"], decoder_num_attention_heads=cfg["decoder_num_heads"],
        decoder_intermediate_size=int(cfg["decoder_embed_dim"] * cfg["mlp_ratio"]), image_size=img_size,
        patch_size=cfg["patch_size"], mask_ratio=0.75, layer_norm_eps=1e-6, hidden_act="gelu",
        norm_pix_loss=False)
    torch.manual_seed(1)
    model = transformers.ViTMAEForPreTraining(hf_cfg).eval()
    with torch.no_grad():  # random non-trivial values for every tensor (LN and biases too)
        for name, p in model.named_parameters():
            if "position" not in name and "pos_embed" not in name:
                p.add_(torch.randn_like(p) * 0.02)
        # this transformers version leaves the fixed tables at zero on random init: write FAIR's table
        grid = img_size // cfg["patch_size"]
        model.vit.embeddings.position_embeddings.copy_(_fair_table(grid, cfg["embed_dim"])[None])
        model.decoder.decoder_pos_embed.copy_(_fair_table(grid, cfg["decoder_embed_dim"])[None])
    return model


def _fair_table(grid: int, dim: int) -> torch.Tensor:
    """FAIR's get_2d_sincos_pos_embed written out independently: meshgrid(w, h) → the first half from w."""
    import numpy as np

    def one_d(d, pos):
        omega = 1.0 / 10000 ** (np.arange(d // 2, dtype=np.float64) / (d / 2.0))
        out = np.einsum("m,d->md", pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    gw, gh = np.meshgrid(np.arange(grid, dtype=np.float32), np.arange(grid, dtype=np.float32))
    table = np.concatenate([one_d(dim // 2, gw), one_d(dim // 2, gh)], axis=1)
    return torch.from_numpy(np.concatenate([np.zeros([1, dim]), table], axis=0)).float()


def test_sincos_table_matches_fair_formula():
    assert torch.allclose(sincos_pos_embed_2d(5, 5, 32), _fair_table(5, 32), atol=1e-6)


def test_equivalence_with_transformers_vitmae():
    hf = _hf_model(64)
    ours = MaskedAutoencoder("small", img_size=64).eval()
    load_mae_weights(ours, hf.state_dict())
    x = torch.randn(2, 3, 64, 64)
    noise = torch.rand(2, 16)
    with torch.no_grad():
        ref = hf(pixel_values=x, noise=noise, output_hidden_states=False)
        ref_hidden = hf.vit(pixel_values=x, noise=noise).last_hidden_state
        pred, mask, enc = ours(x, noise=noise, mask_ratio=0.75)
    assert enc.tokens.shape == ref_hidden.shape == (2, 1 + 4, MAE_CONFIGS["small"]["embed_dim"])
    assert torch.allclose(enc.tokens, ref_hidden, atol=1e-5)
    assert torch.allclose(pred, ref.logits, atol=1e-5)
    assert torch.equal(mask, ref.mask) and torch.equal(enc.ids_restore, ref.ids_restore)
    assert torch.allclose(ours.reconstruction_loss(x, pred, mask), ref.loss, atol=1e-5)


def test_regenerated_grid_matches_hf_at_its_own_size():
    """Our model built for 64 px runs at 128 px with a regenerated table equal to an HF model built at 128."""
    hf = _hf_model(128)
    ours = MaskedAutoencoder("small", img_size=64).eval()
    load_mae_weights(ours, hf.state_dict())
    x, noise = torch.randn(1, 3, 128, 128), torch.rand(1, 64)
    with torch.no_grad():
        ref = hf(pixel_values=x, noise=noise)
        pred, _, _ = ours(x, noise=noise)
    assert torch.allclose(pred, ref.logits, atol=1e-5)


def _fair_state_dict(model: MaskedAutoencoder, grid: int) -> dict:
    """A state dict with the documented FAIR key names (facebookresearch/mae) built from ``model``'s tensors."""
    cfg = MAE_CONFIGS[model.variant]
    sd = {"cls_token": model.encoder.cls_token, "pos_embed": _fair_table(grid, cfg["embed_dim"])[None],
          "patch_embed.proj.weight": model.encoder.patch_embed.proj.weight,
          "patch_embed.proj.bias": model.encoder.patch_embed.proj.bias,
          "norm.weight": model.encoder.norm.weight, "norm.bias": model.encoder.norm.bias,
          "mask_token": model.decoder.mask_token,
          "decoder_pos_embed": _fair_table(grid, cfg["decoder_embed_dim"])[None],
          "decoder_embed.weight": model.decoder.embed.weight, "decoder_embed.bias": model.decoder.embed.bias,
          "decoder_norm.weight": model.decoder.norm.weight, "decoder_norm.bias": model.decoder.norm.bias,
          "decoder_pred.weight": model.decoder.pred.weight, "decoder_pred.bias": model.decoder.pred.bias}
    for prefix, blocks in (("blocks", model.encoder.blocks), ("decoder_blocks", model.decoder.blocks)):
        for i, blk in enumerate(blocks):
            for name in ("norm1", "attn.qkv", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2"):
                mod = blk.get_submodule(name)
                sd[f"{prefix}.{i}.{name}.weight"] = mod.weight
                sd[f"{prefix}.{i}.{name}.bias"] = mod.bias
    return {k: v.detach().clone() for k, v in sd.items()}


def test_fair_layout_loads_without_missing_keys(tmp_path):
    torch.manual_seed(3)
    src = MaskedAutoencoder("small", img_size=224)
    sd = _fair_state_dict(src, grid=14)
    assert len(sd) == 2 + 2 + 2 + 1 + 1 + 2 * 3 + 12 * (6 + 2)  # FAIR key count for 6+2 blocks
    path = tmp_path / "mae_visualize_small.pth"
    torch.save({"model": sd}, path)
    dst = MaskedAutoencoder("small", img_size=64)  # another grid: the stored tables are only checked
    load_mae_weights(dst, path)
    for k, v in src.state_dict().items():
        assert torch.equal(dst.state_dict()[k], v), k
    assert not any("pos" in k for k in dst.state_dict())  # tables are non-persistent buffers


def test_loader_errors_are_readable(tmp_path):
    model = MaskedAutoencoder("small", img_size=64)
    sd = _fair_state_dict(model, grid=4)
    encoder_only = {k: v for k, v in sd.items() if not k.startswith(("decoder", "mask_token"))}
    with pytest.raises(UserError, match="encoder-only"):
        load_mae_weights(model, encoder_only)
    load_mae_weights(model, encoder_only, require_decoder=False)
    learned = dict(sd, pos_embed=torch.randn_like(sd["pos_embed"]))
    with pytest.raises(UserError, match="sin-cos"):
        load_mae_weights(model, learned)
    with pytest.raises(UserError, match="shape"):
        load_mae_weights(model, dict(sd, pos_embed=sd["pos_embed"][:, :-1]))
    with pytest.raises(UserError, match="not found"):
        load_mae_weights(model, tmp_path / "missing.pth")


def test_masking_is_deterministic_for_a_noise_and_complementary_groups_cover_each_patch_three_times():
    g1, g2 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    n1, n2 = complementary_noise(64, batch=2, generator=g1), complementary_noise(64, batch=2, generator=g2)
    assert torch.equal(n1, n2)
    _, mask, ids_restore = masking_from_noise(n1, len_keep=16)
    per_image = mask.view(4, 2, 64).sum(0)  # pass-major layout
    assert torch.equal(per_image, torch.full((2, 64), 3.0))
    assert torch.equal(mask.sum(1), torch.full((8,), 48.0))
    shuffle = torch.argsort(ids_restore, dim=1)
    assert torch.equal(torch.gather(shuffle, 1, ids_restore), torch.arange(64).expand(8, -1))
    n3 = complementary_noise(64, batch=2, generator=torch.Generator().manual_seed(8))
    assert not torch.equal(n1, n3)


def test_no_masking_path_and_keep_indices():
    model = MaskedAutoencoder("small", img_size=64).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        full = model.encoder(x, mask_ratio=0.0)
        assert full.tokens.shape == (1, 17, 192) and full.mask.sum() == 0
        keep = torch.tensor([[3, 0, 9, 15]])
        part = model.encoder(x, ids_keep=keep)
        assert part.tokens.shape == (1, 5, 192)
        assert torch.equal(part.mask[0].nonzero().flatten(), torch.tensor([i for i in range(16) if i not in (0, 3, 9, 15)]))
        pred = model.decoder(part.tokens, part.ids_restore, part.grid)
    assert pred.shape == (1, 16, 16 * 16 * 3)


def test_patchify_roundtrip_and_order():
    x = torch.arange(2 * 3 * 32 * 48, dtype=torch.float32).reshape(2, 3, 32, 48)
    p = patchify(x, 16)
    assert p.shape == (2, 6, 768)
    assert p[0, 1, 0] == x[0, 0, 0, 16] and p[0, 1, 1] == x[0, 1, 0, 16] and p[0, 1, 3] == x[0, 0, 0, 17]
    assert torch.equal(unpatchify(p, 16, (2, 3)), x)


@pytest.mark.parametrize("variant,enc_m,dec_m", [("vit-large-16", 303.3, 26.2), ("vit-base-16", 85.8, 26.2)])
def test_parameter_counts(variant, enc_m, dec_m):
    with torch.device("meta"):
        model = MaskedAutoencoder(variant, img_size=224)
    enc = sum(p.numel() for p in model.encoder.parameters()) / 1e6
    dec = sum(p.numel() for p in model.decoder.parameters()) / 1e6
    assert abs(enc - enc_m) < 0.5 and abs(dec - dec_m) < 0.5, (enc, dec)


def test_hub_file_layout_loads_like_the_module_layout():
    """Hub files (transformers < 5 names: ``vit.encoder.layer.{i}.attention.attention.query`` …) load too."""
    hf = _hf_model(64)
    renames = {"attention.q_proj": "attention.attention.query", "attention.k_proj": "attention.attention.key",
               "attention.v_proj": "attention.attention.value", "attention.o_proj": "attention.output.dense",
               "mlp.fc1": "intermediate.dense", "mlp.fc2": "output.dense"}
    hub = {}
    for key, value in hf.state_dict().items():
        key = key.replace("vit.layers.", "vit.encoder.layer.")
        for new, old in renames.items():
            key = key.replace(f".{new}.", f".{old}.")
        hub[key] = value
    assert "vit.encoder.layer.0.attention.attention.query.weight" in hub
    a, b = MaskedAutoencoder("small", img_size=64), MaskedAutoencoder("small", img_size=64)
    load_mae_weights(a, hf.state_dict())
    load_mae_weights(b, hub)
    for k, v in a.state_dict().items():
        assert torch.equal(b.state_dict()[k], v), k
