"""tamperscope.data.datasets: record loaders, balanced mixture, ForensicsDataset and collate."""
import json
import warnings

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from tamperscope.data.datasets import (BalancedMixture, ForensicsDataset, Record, collate, load_dataset_spec,
                                       load_records, records_from_folder, records_from_json)
from tamperscope.data.edges import edge_band
from tamperscope.data.transforms import resize_mask
from tamperscope.errors import UserError
from tamperscope.nn.norm import imagenet_denormalize


def _img(h=48, w=64, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.random((h, w, 3)) * 255).astype(np.uint8)


def _mask(h=48, w=64):
    m = np.zeros((h, w), np.uint8)
    m[8:24, 10:40] = 255
    return m


def _folder(root, n_tp=3, n_au=2, suffixes=("_gt", "_mask", "")):
    (root / "Tp").mkdir(parents=True)
    (root / "Gt").mkdir()
    (root / "Au").mkdir()
    for i in range(n_tp):
        Image.fromarray(_img(seed=i)).save(root / "Tp" / f"t{i}.png")
        Image.fromarray(_mask()).save(root / "Gt" / f"t{i}{suffixes[i % len(suffixes)]}.png")
    for i in range(n_au):
        Image.fromarray(_img(seed=10 + i)).save(root / "Au" / f"a{i}.jpg")
    return root


# ----------------------------------------------------------------------------- loaders


def test_records_from_json(tmp_path):
    _folder(tmp_path / "ds")
    items = [["Tp/t0.png", "Gt/t0_gt.png"], ["Au/a0.jpg", "Negative"]]
    (tmp_path / "ds" / "list.json").write_text(json.dumps(items))
    recs = records_from_json(tmp_path / "ds" / "list.json")
    assert [r.mask is None for r in recs] == [False, True]
    assert recs[0].image == tmp_path / "ds" / "Tp" / "t0.png" and recs[0].image.is_file()

    items = [[f"Tp/missing{i}.png", "Negative"] for i in range(13)] + [["Tp/t0.png", "Gt/nope.png"]]
    (tmp_path / "ds" / "bad.json").write_text(json.dumps(items))
    with pytest.raises(UserError) as info:
        records_from_json(tmp_path / "ds" / "bad.json")
    msg = str(info.value)
    assert "bad.json" in msg and "14 listed file(s) missing" in msg and "missing0.png" in msg
    assert "(and 4 more)" in msg and "\n" not in msg

    (tmp_path / "ds" / "metadata.jsonl").write_text(json.dumps({"image": "t0.png", "method": "sd2"}) + "\n")
    assert records_from_json(tmp_path / "ds" / "list.json")[0].meta == {"method": "sd2"}

    (tmp_path / "ds" / "odd.json").write_text(json.dumps([["Tp/t0.png"]]))
    with pytest.raises(UserError, match="entry 0"):
        records_from_json(tmp_path / "ds" / "odd.json")


def test_records_from_folder_pairs_by_stem(tmp_path):
    root = _folder(tmp_path / "ds")
    (root / "metadata.jsonl").write_text(json.dumps({"image": "t1.png", "region": "object", "area_bin": 2}) + "\n")
    recs = records_from_folder(root)
    tampered = [r for r in recs if r.mask is not None]
    assert len(tampered) == 3 and len(recs) == 5
    for r in tampered:
        assert r.mask.stem.startswith(r.image.stem)
    assert {r.image.name: r.meta for r in tampered}["t1.png"] == {"region": "object", "area_bin": 2}
    assert ForensicsDataset(recs, image_size=16)[1]["meta"] == {"region": "object", "area_bin": 2}
    assert load_records(root) == recs

    (root / "Tp" / "lonely.png").write_bytes((root / "Tp" / "t0.png").read_bytes())
    (root / "Gt" / "orphan_gt.png").write_bytes((root / "Gt" / "t0_gt.png").read_bytes())
    with pytest.raises(UserError, match=r"1 image\(s\) in Tp/ without a mask: lonely.png; 1 mask\(s\) in Gt/"
                                        r" without an image: orphan_gt.png"):
        records_from_folder(root)


def test_plain_photo_folder_is_authentic(tmp_path):
    (tmp_path / "photos" / "sub").mkdir(parents=True)
    Image.fromarray(_img()).save(tmp_path / "photos" / "a.png")
    Image.fromarray(_img()).save(tmp_path / "photos" / "sub" / "b.jpg")
    (tmp_path / "photos" / "README.txt").write_text("not an image")
    recs = load_records(tmp_path / "photos")
    assert [r.image.name for r in recs] == ["a.png", "b.jpg"] and all(r.mask is None for r in recs)
    with pytest.raises(UserError, match="not found"):
        load_records(tmp_path / "nowhere")


def test_balanced_mixture_and_spec(tmp_path):
    root = _folder(tmp_path / "ds")
    (root / "list.json").write_text(json.dumps([["Au/a0.jpg", "Negative"], ["Au/a1.jpg", "Negative"]]))
    mix = load_dataset_spec(f"mix:{root / 'list.json'},{root}@7", seed=3)
    assert isinstance(mix, BalancedMixture) and len(mix) == 14
    first = [mix[i].image.name for i in range(14)]
    assert all(n.startswith("a") for n in first[:7])
    assert sorted(first[:6]) == ["a0.jpg"] * 3 + ["a1.jpg"] * 3  # whole passes before repeats
    assert len(set(first[7:])) == 5  # 7 draws from 5 records cover all of them
    mix.set_epoch(1)
    second = [mix[i].image.name for i in range(14)]
    mix.set_epoch(0)
    assert [mix[i].image.name for i in range(14)] == first and second != first
    with pytest.raises(UserError, match="integer"):
        load_dataset_spec(f"mix:{root}@many")
    # one count per source; a source without its own count gets the default
    weighted = load_dataset_spec(f"mix:{root / 'list.json'}@3,{root}@8", seed=3)
    assert weighted.per_source == [3, 8] and len(weighted) == 11
    names = [weighted[i].image.name for i in range(11)]
    assert all(n.startswith("a") for n in names[:3]) and len(set(names[3:])) == 5
    assert load_dataset_spec(f"mix:{root / 'list.json'}@3,{root}").per_source == [3, 1840]
    with pytest.raises(UserError, match="2 sources needs as many counts"):
        BalancedMixture(weighted.sources, [1, 2, 3])
    benco = tmp_path / "balanced.json"
    benco.write_text(json.dumps([["ManiDataset", str(root)], ["JsonDataset", str(root / "list.json")]]))
    assert len(load_dataset_spec(benco)) == 2 * 1840
    assert isinstance(load_dataset_spec(root / "list.json"), list)

    Image.fromarray(_mask(64, 48)).save(root / "Gt" / "t0_gt.png")  # a transposed mask inside a mixture
    with pytest.warns(UserWarning, match="t0_gt.png"):
        ds = ForensicsDataset(load_dataset_spec(f"mix:{root}@9"), image_size=16, on_mismatch="skip")
    assert len(ds) == 9 and all(ds.records[i].image.name != "t0.png" for i in range(9))
    ds.set_epoch(2)
    assert ds.records.epoch == 2 and ds[8]["index"].item() == 8


# ----------------------------------------------------------------------------- ForensicsDataset


def test_batch_contract(tmp_path):
    root = _folder(tmp_path / "ds")
    ds = ForensicsDataset(load_records(root), image_size=32, edge="band")
    assert len(ds) == 5
    batch = collate([ds[i] for i in range(len(ds))])
    assert batch["image"].shape == (5, 3, 32, 32) and batch["image"].dtype == torch.float32
    assert batch["mask"].shape == (5, 1, 32, 32) and set(batch["mask"].unique().tolist()) <= {0.0, 1.0}
    assert batch["edge"].shape == (5, 1, 32, 32)
    assert batch["label"].tolist() == [1.0, 1.0, 1.0, 0.0, 0.0] and batch["label"].dtype == torch.float32
    assert batch["index"].tolist() == list(range(5)) and batch["index"].dtype == torch.long
    assert batch["orig_size"] == [(48, 64)] * 5
    assert batch["mask_path"][3] == "" and batch["mask_path"][0].endswith("t0_gt.png")
    assert all(m.shape == (48, 64) and m.dtype == torch.uint8 for m in batch["mask_full"])
    assert int(batch["mask_full"][0].sum()) == 16 * 30 and int(batch["mask_full"][4].sum()) == 0
    # ImageNet-normalised: denormalising gives back the resized picture
    back = imagenet_denormalize(batch["image"][:1])[0].permute(1, 2, 0).numpy() * 255
    ref = cv2.resize(_img(seed=0), (32, 32), interpolation=cv2.INTER_LINEAR).astype(np.float32)
    assert np.abs(back - ref).max() < 1e-3
    # the edge band is computed at full resolution, then resized (IMDLBenCo order)
    full = batch["mask_full"][0].numpy().astype(bool)
    assert np.array_equal(batch["edge"][0, 0].numpy() > 0, resize_mask(edge_band(full, 7), 32, 32))
    assert "edge" not in ForensicsDataset(load_records(root), image_size=32)[0]


def test_native_resolutions(tmp_path):
    """``crop``: a 16-aligned S×S window of the photo's own pixels; ``native``: the whole photo padded to a
    multiple of 32, with ``mask_full`` unpadded."""
    root = _folder(tmp_path / "ds")
    recs = load_records(root)
    crop = ForensicsDataset(recs, image_size=32, resolution="crop", edge="band", seed=1)
    for i in range(5):
        item = crop[i]
        assert item["image"].shape == (3, 32, 32) and item["mask"].shape == item["edge"].shape == (1, 32, 32)
        pixels = np.round(imagenet_denormalize(item["image"][None])[0].permute(1, 2, 0).numpy() * 255)
        photo = np.asarray(Image.open(recs[i].image).convert("RGB"), dtype=np.float32)
        corners = [(t, l) for t in (0, 16) for l in (0, 16, 32) if np.abs(photo[t:t + 32, l:l + 32] - pixels).max() < 1e-3]
        assert corners, i
        t, l = corners[0]
        full = item["mask_full"].numpy().astype(bool)
        assert np.array_equal(item["mask"][0].numpy() > 0, full[t:t + 32, l:l + 32])
        assert float(item["label"]) == float(full[t:t + 32, l:l + 32].any())
    native = ForensicsDataset(recs, image_size=32, resolution="native", edge="band")
    item = native[0]
    assert item["image"].shape == (3, 64, 64) and item["mask"].shape == item["edge"].shape == (1, 64, 64)
    assert item["mask_full"].shape == (48, 64) and item["orig_size"] == (48, 64)
    assert not item["mask"][0, 48:].any() and int(item["mask"].sum()) == 16 * 30
    with pytest.raises(UserError, match="resolution"):
        ForensicsDataset(recs, resolution="tiles")
    with pytest.raises(UserError, match="multiple of 16"):
        ForensicsDataset(recs, image_size=40, resolution="crop")


def test_mismatch_modes(tmp_path):
    root = _folder(tmp_path / "ds")
    Image.fromarray(_mask(64, 48)).save(root / "Gt" / "t0_gt.png")  # transposed mask
    recs = load_records(root)
    with pytest.raises(UserError) as info:
        ForensicsDataset(recs, image_size=32)
    msg = str(info.value)
    assert "t0.png is 48×64" in msg and "t0_gt.png is 64×48" in msg
    with pytest.warns(UserWarning, match="skipping 1 record") as rec:
        ds = ForensicsDataset(recs, image_size=32, on_mismatch="skip")
    assert len(rec) == 1 and len(ds) == 4
    ds = ForensicsDataset(recs, image_size=32, on_mismatch="resize")
    assert len(ds) == 5 and ds[0]["mask_full"].shape == (48, 64)
    with pytest.raises(UserError, match="on_mismatch"):
        ForensicsDataset(recs, on_mismatch="ignore")


def test_mask_on_stored_grid_of_rotated_jpeg(tmp_path):
    """A JPEG with EXIF orientation 6 whose mask was drawn on the stored (un-rotated) pixels."""
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(_img()).save(tmp_path / "rot.jpg", exif=exif)
    Image.fromarray(_mask()).save(tmp_path / "rot_gt.png")
    ds = ForensicsDataset([Record(tmp_path / "rot.jpg", tmp_path / "rot_gt.png")], image_size=32)
    assert ds[0]["orig_size"] == (48, 64)
    Image.fromarray(_mask(64, 48)).save(tmp_path / "rot_gt.png")  # now drawn on the displayed image
    assert ForensicsDataset([Record(tmp_path / "rot.jpg", tmp_path / "rot_gt.png")], image_size=32)[0][
        "orig_size"] == (64, 48)


def test_augmentation_is_seeded_by_epoch_and_index(tmp_path):
    recs = load_records(_folder(tmp_path / "ds"))
    ds = ForensicsDataset(recs, image_size=32, augment=True, seed=5)
    a, b = ds[1], ds[1]
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["mask"], b["mask"])
    ds.set_epoch(1)
    assert not torch.equal(ds[1]["image"], a["image"])
    again = ForensicsDataset(recs, image_size=32, augment=True, seed=5)
    assert torch.equal(again[1]["image"], a["image"])  # a fresh copy (a worker, a resumed run) agrees
    loader = torch.utils.data.DataLoader(again, batch_size=5, num_workers=2, collate_fn=collate)
    batch = next(iter(loader))
    assert torch.equal(batch["image"][1], a["image"])


def test_perturbation_applied(tmp_path):
    recs = load_records(_folder(tmp_path / "ds"))
    clean = ForensicsDataset(recs, image_size=32)[0]["image"]
    jpeg = ForensicsDataset(recs, image_size=32, perturb="jpeg:30")[0]
    assert not torch.equal(jpeg["image"], clean) and jpeg["mask_full"].shape == (48, 64)
    small = ForensicsDataset(recs, image_size=32, perturb=("resize", 0.5))[0]
    assert small["orig_size"] == (48, 64) and small["mask_full"].shape == (48, 64)
    with pytest.raises(UserError, match="unknown perturbation"):
        ForensicsDataset(recs, perturb="sharpen:2")


# ----------------------------------------------------------------------------- real data (CASIA v1)


def test_casia_reports_transposed_mask_once(shared_data):
    reported, total, kept = [], 0, 0
    datasets = []
    for split in ("train", "val", "test"):
        recs = records_from_json(shared_data / "casia1" / f"{split}.json")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ds = ForensicsDataset(recs, image_size=64, on_mismatch="skip", edge="band")
        reported += [str(w.message) for w in caught]
        total, kept = total + len(recs), kept + len(ds)
        datasets.append(ds)
    assert len(reported) == 1 and reported[0].count("Sp_D_CNN_A_sec0012_ani0007_0275") == 2  # image and mask
    assert "256×384" in reported[0] and "384×256" in reported[0]
    assert kept == total - 1 == 1719
    ds = datasets[0]
    tampered = [i for i in range(len(ds)) if ds.records[i].mask is not None]
    for i in tampered[:: max(1, len(tampered) // 6)] + [0, len(ds) - 1]:
        item = ds[i]
        assert item["image"].shape == (3, 64, 64) and item["mask_full"].shape == tuple(item["orig_size"])
        assert item["label"].item() == float(ds.records[i].mask is not None and item["mask"].any().item())
    with pytest.raises(UserError, match="Sp_D_CNN_A_sec0012_ani0007_0275"):
        ForensicsDataset(records_from_json(shared_data / "casia1" / "train.json"), image_size=64)
