"""End-to-end tests of `tamperscope generate` (BR-Gen pipeline, SEED-SPECS §7) on small synthetic photos."""
import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from tamperscope.cli import main
from tamperscope.data.brgen import GenerateOptions, generate
from tamperscope.data.brgen import pipeline as brgen_pipeline
from tamperscope.data.brgen.regions import bin_range
from tamperscope.errors import UserError
from tamperscope.io import read_image, read_mask, write_png

N = 8
NAME = re.compile(r"^(cvTelea|cvNS|exemplar|splice|copymove|pseudoLDM)_(Stuff|Background|Thing)_"
                  r"([A-Za-z0-9-]+)_(\d{6})$")


def make_photo(rng: np.random.Generator, h: int = 128, w: int = 160) -> np.ndarray:
    """A photo-like scene: sky gradient, textured ground with a wavy horizon, two objects, sensor noise."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    sky = np.stack([110 + 60 * yy / h, 150 + 50 * yy / h, 230 - 30 * yy / h], -1)
    ground_col = rng.uniform(60, 160, 3)
    texture = cv2.GaussianBlur(rng.normal(0, rng.uniform(8, 30), (h, w)).astype(np.float32), (0, 0),
                               rng.uniform(0.7, 2.0))[..., None]
    ground = ground_col + texture
    horizon = h * rng.uniform(0.35, 0.6) + 6 * np.sin(xx[0] / w * 2 * np.pi * rng.uniform(1, 3))
    img = np.where((yy < horizon[None, :])[..., None], sky, ground)
    for _ in range(2):
        cy, cx, r = rng.uniform(0.4, 0.9) * h, rng.uniform(0.1, 0.9) * w, rng.uniform(8, 20)
        inside = ((yy - cy) ** 2 + ((xx - cx) * rng.uniform(0.6, 1.4)) ** 2) < r * r
        img[inside] = rng.uniform(0, 255, 3)
    img += rng.normal(0, rng.uniform(1, 5), img.shape)
    return np.clip(img, 0, 255).round().astype(np.uint8)


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    for k in range(5):
        sub = root / ("outdoor" if k % 2 else "")
        sub.mkdir(exist_ok=True)
        write_png(sub / f"scene_{k}.png", make_photo(rng))
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    return root


def run_cli(photos: Path, out: Path, *extra: str) -> int:
    return main(["generate", "--photos", str(photos), "--out", str(out), "--n", str(N), "--seed", "3",
                 "--max-side", "160", "--no-progress", *extra])


@pytest.fixture(scope="module")
def dataset(photos, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("gen") / "ds"
    assert run_cli(photos, out) == 0
    return out


def _records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metadata.jsonl").read_text().splitlines()]


def _all_files(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def test_layout_names_and_metadata(dataset):
    recs = _records(dataset)
    summary = json.loads((dataset / "summary.json").read_text())
    assert summary["produced"] == len(recs) == N
    assert sorted(p.name for p in (dataset / "Tp").iterdir()) == sorted(r["image"] for r in recs)
    for r in recs:
        m = NAME.match(Path(r["image"]).stem)
        assert m, r["image"]
        assert (m.group(1), m.group(2), m.group(3), int(m.group(4))) == (r["method"], r["region"], r["source"], r["id"])
        assert r["mask"] == Path(r["image"]).stem + "_mask.png" and (dataset / "Gt" / r["mask"]).is_file()
        assert (dataset / "Au" / r["authentic"]).is_file()
        for key in ("source_photo", "region", "method", "mask_area", "area_bin", "quality", "backend", "seed"):
            assert key in r
        # §7.2 area limits (the default --area-policy spec): stuff 20–80 %, background 80–98 %
        assert (0.2 <= r["mask_area"] < 0.8) if r["region"] == "Stuff" else (0.8 <= r["mask_area"] <= 0.98)
        assert r["backend"]["regions"] == "builtin" and r["quality"]["clip_score"] is None
    counts = summary["counts"]
    totals = {key: sum(counts[key].values()) for key in ("method", "region", "area_bin", "method_region")}
    assert set(totals.values()) == {len(recs)}
    assert set(counts["region"]) <= {"Stuff", "Background"}
    assert set(counts["method"]) == {"cvTelea", "cvNS", "exemplar", "pseudoLDM"}  # inpainting only by default (§7.2)
    assert summary["photos"]["usable"] == 5 and [b["photo"] for b in summary["photos"]["bad"]] == ["broken.jpg"]
    assert (dataset / "summary.md").read_text().startswith("# tamperscope generate")
    sheet = read_image(dataset / "contact_sheet.png")
    assert sheet.shape[1] == 3 * 192 and sheet.shape[0] > 100


def test_masks_in_bins_and_outside_unchanged(dataset):
    for r in _records(dataset):
        mask = read_mask(dataset / "Gt" / r["mask"])
        area = mask.mean()
        lo, hi = bin_range(r["area_bin"])
        assert 0 < area < 1 and lo <= area < hi and abs(area - r["mask_area"]) < 1e-5
        au, tp = read_image(dataset / "Au" / r["authentic"]), read_image(dataset / "Tp" / r["image"])
        assert au.shape == tp.shape
        # every built-in forger composites hard: pixels outside the mask are bit-identical (lossless PNG)
        np.testing.assert_array_equal(tp[~mask], au[~mask])
        assert np.abs(tp[mask].astype(int) - au[mask]).mean() > 1.0


def test_splits_disjoint_by_source(dataset):
    recs = {r["image"]: r for r in _records(dataset)}
    seen_sources: dict[str, str] = {}
    total = 0
    for split in ("train", "val", "test"):
        items = json.loads((dataset / f"{split}.json").read_text())
        total += len(items)
        for image, mask in items:
            assert (dataset / image).is_file()
            if mask == "Negative":
                src = Path(image).stem
            else:
                assert (dataset / mask).is_file()
                src = recs[Path(image).name]["source"]
                assert recs[Path(image).name]["split"] == split
            assert seen_sources.setdefault(src, split) == split, f"{src} appears in two splits"
    au_sources = {Path(i).stem for s in ("train", "val", "test")
                  for i, m in json.loads((dataset / f"{s}.json").read_text()) if m == "Negative"}
    assert au_sources == {r["source"] for r in recs.values()}
    assert total == len(recs) + len(au_sources)
    for split in ("train", "val", "test"):  # the same split as two lists, for balanced real/fake sampling
        whole = json.loads((dataset / f"{split}.json").read_text())
        fakes = json.loads((dataset / f"{split}_tp.json").read_text())
        reals = json.loads((dataset / f"{split}_au.json").read_text())
        assert fakes + reals == whole and all(m != "Negative" for _, m in fakes)
        assert all(m == "Negative" for _, m in reals)
    families = {r["method"]: r["generator_family"] for r in recs.values()}  # Split A (§7.1)
    assert all(families[m] == "GAN-like" for m in ("cvTelea", "cvNS", "exemplar") if m in families)
    assert families.get("pseudoLDM", "Diffusion-like") == "Diffusion-like"


def test_same_seed_same_bytes_and_other_seed_differs(photos, dataset, tmp_path):
    again = tmp_path / "again"
    assert run_cli(photos, again) == 0
    a, b = _all_files(dataset), _all_files(again)
    assert a.keys() == b.keys()
    assert [k for k in a if a[k] != b[k]] == []
    other = tmp_path / "other"
    assert main(["generate", "--photos", str(photos), "--out", str(other), "--n", "2", "--seed", "4",
                 "--max-side", "160", "--no-progress"]) == 0
    first_other = sorted((other / "Tp").iterdir())[0]
    assert not (dataset / "Tp" / first_other.name).is_file() or \
        (dataset / "Tp" / first_other.name).read_bytes() != first_other.read_bytes()


def test_resume_after_interrupt_gives_same_bytes(photos, dataset, tmp_path, monkeypatch):
    out = tmp_path / "resumed"
    real = brgen_pipeline._Run.make_sample
    calls = {"n": 0}

    def interrupted(self, i):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real(self, i)

    monkeypatch.setattr(brgen_pipeline._Run, "make_sample", interrupted)
    assert run_cli(photos, out) == 130
    assert len(list((out / ".brgen" / "records").glob("*.json"))) == 3
    assert not (out / "metadata.jsonl").exists()
    monkeypatch.setattr(brgen_pipeline._Run, "make_sample", real)
    assert run_cli(photos, out) == 0
    a, b = _all_files(dataset), _all_files(out)
    assert a.keys() == b.keys() and [k for k in a if a[k] != b[k]] == []


def test_resume_refuses_changed_options(photos, dataset):
    with pytest.raises(UserError, match="seed"):
        generate(GenerateOptions(photos=photos, out=dataset, n=N, seed=4, max_side=160, progress=False))


def test_resume_refuses_another_pipeline_version(photos, dataset, tmp_path):
    import shutil

    copy = tmp_path / "old"
    shutil.copytree(dataset, copy)
    run_file = copy / brgen_pipeline.STATE_DIR / brgen_pipeline.RUN_FILE
    state = json.loads(run_file.read_text())
    run_file.write_text(json.dumps({**state, "format_version": brgen_pipeline.FORMAT_VERSION - 1}))
    with pytest.raises(UserError, match="another version"):
        generate(GenerateOptions(photos=photos, out=copy, n=N, seed=3, max_side=160, progress=False))


def test_model_dir_keys_are_given_once(photos, tmp_path, capsys):
    assert main(["generate", "--photos", str(photos), "--out", str(tmp_path / "o"), "--backend", "models",
                 "--model-dir", "clip=/a", "--model-dir", "clip=/b"]) == 2
    assert "given twice" in capsys.readouterr().err


def test_bad_output_folders_are_refused(photos, tmp_path):
    with pytest.raises(UserError, match="inside"):
        generate(GenerateOptions(photos=photos, out=photos / "out", n=1, progress=False))
    with pytest.raises(UserError, match="photos folder"):
        generate(GenerateOptions(photos=photos, out=photos, n=1, progress=False))
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("x")
    with pytest.raises(UserError, match="not empty"):
        generate(GenerateOptions(photos=photos, out=busy, n=1, progress=False))
    assert main(["generate", "--photos", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2


def test_thing_regions_small_bin_and_jpeg(photos, tmp_path):
    out = tmp_path / "things"
    assert main(["generate", "--photos", str(photos), "--out", str(out), "--n", "3", "--seed", "5",
                 "--regions", "thing", "--area-bins", "20", "--methods", "cvTelea,splice",
                 "--jpeg-quality", "90", "--max-side", "160", "--no-progress"]) == 0
    recs = _records(out)
    assert recs and all(r["region"] == "Thing" and r["area_bin"] == "<20" for r in recs)
    assert {r["method"] for r in recs} <= {"cvTelea", "splice"}
    assert all(r["image"].endswith(".jpg") and r["jpeg_quality"] == 90 for r in recs)
    for r in recs:
        assert 0 < read_mask(out / "Gt" / r["mask"]).mean() < 0.2
    with pytest.raises(UserError, match="cannot produce"):
        generate(GenerateOptions(photos=photos, out=tmp_path / "x", n=1, regions=("background",),
                                 area_bins=("<20",), progress=False))


def test_models_backend_without_weights_is_reported(photos, tmp_path):
    with pytest.raises(UserError, match="no weights given"):
        generate(GenerateOptions(photos=photos, out=tmp_path / "m", n=1, backend="models", progress=False))
    with pytest.raises(UserError, match="not a folder"):
        generate(GenerateOptions(photos=photos, out=tmp_path / "m", n=1, backend="models",
                                 model_dirs={"clip": str(tmp_path / "nope")}, progress=False))


def test_output_loads_with_the_data_layer(dataset):
    from tamperscope.data.datasets import load_records

    folder = load_records(dataset)
    tampered = [r for r in folder if r.mask is not None]
    assert len(tampered) == N and len(folder) == N + len(list((dataset / "Au").iterdir()))
    assert all(r.meta["region"] in ("Stuff", "Background") and r.meta["area_bin"].startswith("<") for r in tampered)
    listed = sum(len(load_records(dataset / f"{s}.json")) for s in ("train", "val", "test")
                 if json.loads((dataset / f"{s}.json").read_text()))
    assert listed == len(folder)


def test_real_photos_from_shared_data(shared_data, tmp_path):
    kodak = sorted((shared_data / "authentic" / "kodak24").glob("*.png"))[:4]
    if len(kodak) < 4:
        pytest.skip("kodak24 not present")
    photos = tmp_path / "kodak"
    photos.mkdir()
    for p in kodak:
        (photos / p.name).symlink_to(p)
    out = tmp_path / "out"
    assert main(["generate", "--photos", str(photos), "--out", str(out), "--n", "4", "--seed", "1",
                 "--max-side", "128", "--no-progress"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["produced"] == 4 and summary["naturalness_range"]["n_photos"] == 4
    authentic = sorted((out / "Au").iterdir())
    assert [a.stem for a in authentic] == [p.stem for p in kodak]  # 4 photos, 4 samples: each used once
    assert all(max(read_image(a).shape[:2]) == 128 for a in authentic)
