"""End-to-end tests of `tamperscope generate` (BR-Gen pipeline, paper 001 §3) on small synthetic photos."""
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

N = 24  # 3 photos x 2 region types x 4 methods: one photo in each split
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
    assert summary["produced"] == len(recs) and summary["produced"] + summary["failed"] == N
    assert summary["produced"] >= N - 6 and summary["warnings"] == []
    assert sorted(p.name for p in (dataset / "Tp").iterdir()) == sorted(r["image"] for r in recs)
    for r in recs:
        m = NAME.match(Path(r["image"]).stem)
        assert m, r["image"]
        assert (m.group(1), m.group(2), m.group(3), int(m.group(4))) == (r["method"], r["region"], r["source"], r["id"])
        assert r["mask"] == Path(r["image"]).stem + "_mask.png" and (dataset / "Gt" / r["mask"]).is_file()
        assert (dataset / "Au" / r["authentic"]).is_file()
        for key in ("source_photo", "region", "method", "mask_area", "area_bin", "quality", "backend", "seed"):
            assert key in r
        # area limits of the default --area-policy paper: stuff 3–80 %, background the inverse of a 2–20 % thing
        assert (0.03 <= r["mask_area"] < 0.8) if r["region"] == "Stuff" else (0.8 <= r["mask_area"] <= 0.98)
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
    families = {r["method"]: r["generator_family"] for r in recs.values()}  # Split A (paper 001 §5.2)
    assert {m: families[m] for m in ("cvTelea", "cvNS", "exemplar", "pseudoLDM")} == {
        "cvTelea": "classical", "cvNS": "classical", "exemplar": "classical", "pseudoLDM": "Diffusion-like"}


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
    assert len(list((out / ".brgen" / "records").glob("*.json"))) == 3  # the 4th sample shares the group's mask
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
    produced = len(_records(dataset))
    assert len(tampered) == produced and len(folder) == produced + len(list((dataset / "Au").iterdir()))
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
                 "--methods", "cvTelea", "--regions", "stuff", "--max-side", "128", "--no-progress"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["produced"] == 4 and summary["naturalness_range"]["n_photos"] == 4
    authentic = sorted((out / "Au").iterdir())
    assert [a.stem for a in authentic] == [p.stem for p in kodak]  # 4 photos, 4 samples: each used once
    assert all(max(read_image(a).shape[:2]) == 128 for a in authentic)


def test_one_mask_per_photo_and_region_forged_by_every_method(dataset):
    """Paper 001 §3.2: a Stuff and a Background mask per photo, each run through every inpainter."""
    recs = [json.loads(p.read_text()) for p in sorted((dataset / ".brgen" / "records").glob("*.json"))]
    assert [r["id"] for r in recs] == list(range(N))
    groups: dict[int, list[dict]] = {}
    for r in recs:
        groups.setdefault(r["group"], []).append(r)
    assert len(groups) == N // 4
    methods = ["cvTelea", "cvNS", "exemplar", "pseudoLDM"]
    per_photo: dict[str, list[str]] = {}
    for g, members in groups.items():
        assert [r["method"] for r in members] == methods  # every method on the group's mask
        assert len({(r["source"], r["region"]) for r in members}) == 1
        per_photo.setdefault(members[0]["source"], []).append(members[0]["region"])
        masks = {(dataset / r["gt_path"]).read_bytes() for r in members if r["status"] == "done"}
        assert len(masks) == 1, f"group {g}: the methods got different masks"
    assert sorted(per_photo.values()) == [["Stuff", "Background"]] * 3
    splits = {json.loads(line)["split"] for line in (dataset / "metadata.jsonl").read_text().splitlines()}
    assert splits == {"train", "val", "test"}  # the first three photos are one of each split


def test_small_n_warns_about_empty_splits_and_partial_photo(photos, tmp_path, capsys):
    out = tmp_path / "six"
    assert main(["generate", "--photos", str(photos), "--out", str(out), "--n", "6", "--seed", "3",
                 "--max-side", "160", "--no-progress"]) == 0
    err = capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["warnings"]) == 2 and all(f"warning: {w}" in err for w in summary["warnings"])
    assert "photo" in summary["warnings"][0] and "gets 6 of its 8 forgeries" in summary["warnings"][0]
    assert "train and val split(s) will be empty" in summary["warnings"][1]
    assert "make 24 or more" in summary["warnings"][1]
    assert json.loads((out / "val.json").read_text()) == [] and "warning" in (out / "summary.md").read_text()


def test_two_shards_and_merge_equal_a_single_run(photos, dataset, tmp_path, capsys):
    out = tmp_path / "sharded"
    for k in (1, 0):  # any order
        assert run_cli(photos, out, "--shard", f"{k}/2") == 0
        assert not (out / "metadata.jsonl").exists()
    assert f"--merge --out {out}" in capsys.readouterr().out
    assert main(["generate", "--merge", "--out", str(out), "--no-progress"]) == 0
    a, b = _all_files(dataset), _all_files(out)
    assert a.keys() == b.keys() and [k for k in a if a[k] != b[k]] == []


def test_merge_refuses_an_incomplete_run_and_workers_match(photos, dataset, tmp_path, capsys):
    out = tmp_path / "half"
    assert run_cli(photos, out, "--shard", "0/2") == 0
    assert main(["generate", "--merge", "--out", str(out)]) == 2
    assert "incomplete" in capsys.readouterr().err
    assert main(["generate", "--merge", "--out", str(tmp_path / "nothing")]) == 2
    assert main(["generate", "--photos", str(photos), "--out", str(tmp_path / "x"), "--shard", "2/2"]) == 2
    assert capsys.readouterr().err.endswith("shard '2/2': expected K/N with 0 <= K < N (e.g. 0/4), or auto "
                                            "(--shard)\n")
    workers = tmp_path / "workers"
    assert run_cli(photos, workers, "--workers", "2") == 0
    a, b = _all_files(dataset), _all_files(workers)
    assert a.keys() == b.keys() and [k for k in a if a[k] != b[k]] == []


def test_parse_shard_from_launchers():
    assert brgen_pipeline.parse_shard("3/4") == (3, 4)
    assert brgen_pipeline.parse_shard("auto", {"RANK": "1", "WORLD_SIZE": "8"}) == (1, 8)
    assert brgen_pipeline.parse_shard("auto", {"SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_MIN": "1",
                                               "SLURM_ARRAY_TASK_COUNT": "6"}) == (4, 6)
    for bad in ("4/4", "1", "a/b", "-1/2"):
        with pytest.raises(UserError, match="K/N"):
            brgen_pipeline.parse_shard(bad)
    with pytest.raises(UserError, match="torchrun"):
        brgen_pipeline.parse_shard("auto", {})


class _DetectedRegions:
    """A stand-in for the detector + SAM back end: the 'detector' decides the area (here 50 % things, which
    the built-in area policy would confine to 2-20 %)."""

    name = "fake-detector"
    decides_area = True

    def propose(self, image, kind, target, rng):
        from tamperscope.data.brgen.regions import Region

        mask = np.zeros(image.shape[:2], bool)
        mask[:, : image.shape[1] // 2] = True
        return Region(mask if kind != "background" else ~mask, kind, "detected", "dog", {})


def test_area_limits_never_reject_detected_regions(photos, tmp_path, monkeypatch):
    from tamperscope.data.brgen import backends

    real = backends.build_backends

    def with_detector(*args, **kwargs):
        b = real("builtin", {})
        b.regions = _DetectedRegions()
        return b

    monkeypatch.setattr(backends, "build_backends", with_detector)
    out = tmp_path / "detected"
    summary = generate(GenerateOptions(photos=photos, out=out, n=2, seed=0, regions=("thing",),
                                       methods=("cvTelea", "exemplar"), max_side=160, progress=False))
    assert "area_out_of_bin" not in summary["rejections"]
    recs = _records(out)
    assert recs and all(r["area_bin"] == "<60" and r["region_shape"] == "detected" for r in recs)
    # an explicit --area-bins subset still filters detected masks
    summary = generate(GenerateOptions(photos=photos, out=tmp_path / "filtered", n=1, seed=0, regions=("thing",),
                                       methods=("cvTelea",), area_bins=("<20",), retries=1, max_side=160,
                                       progress=False))
    assert summary["produced"] == 0 and summary["rejections"] == {"area_out_of_bin": 2}
