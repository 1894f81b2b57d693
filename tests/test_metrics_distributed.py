"""MetricAccumulator.gather across 2 CPU ranks (gloo) equals the single-process result."""
import json

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from tamperscope.metrics import MetricAccumulator

N_IMAGES = 5
WORLD_SIZE = 2


def _dataset():
    """5 images: 3 tampered, 2 authentic, with image scores and a region group."""
    rng = np.random.default_rng(7)
    probs = rng.random((N_IMAGES, 48, 48)).astype(np.float32)
    masks = np.zeros((N_IMAGES, 48, 48), bool)
    masks[0, 5:30, 10:40] = True
    masks[1, 20:45, 0:25] = True
    masks[2] = True
    probs[masks] = np.clip(probs[masks] + 0.3, 0, 1)
    scores = rng.random(N_IMAGES)
    labels = np.array([1, 1, 1, 0, 0])
    regions = ["stuff", "object", "stuff", "object", "stuff"]
    return probs, masks, scores, labels, regions


def _add(acc, indices):
    probs, masks, scores, labels, regions = _dataset()
    for i in indices:
        acc.add(i, probs[i], masks[i], scores[i], labels[i], groups={"region": regions[i]})


def _worker(rank, init_file, out_dir):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD_SIZE)
    try:
        # DistributedSampler(shuffle=False): pad to a multiple of the world size by repeating the start
        padded = list(range(N_IMAGES)) + list(range(-N_IMAGES % WORLD_SIZE))
        shard = padded[rank::WORLD_SIZE]  # rank 0: 0, 2, 4; rank 1: 1, 3, 0 (duplicate)
        acc = MetricAccumulator()
        _add(acc, shard)
        assert len(acc) == 3
        acc.gather()
        result = {"flat": acc.compute(), "by_region": acc.compute(group_by="region"), "n": len(acc)}
        with open(f"{out_dir}/rank{rank}.json", "w") as fh:
            json.dump(result, fh)
    finally:
        dist.destroy_process_group()


def _assert_same(actual: dict, expected: dict):
    assert actual.keys() == expected.keys()
    for key, value in expected.items():
        if value is None:
            assert actual[key] is None, key
        else:
            assert actual[key] == pytest.approx(value, abs=1e-6), key


def test_two_rank_gather_equals_single_process(tmp_path):
    mp.spawn(_worker, args=(str(tmp_path / "dist_init"), str(tmp_path)), nprocs=WORLD_SIZE, join=True)
    single = MetricAccumulator()
    _add(single, range(N_IMAGES))
    expected_flat = single.compute()
    expected_groups = single.compute(group_by="region")
    assert expected_flat["n_images"] == N_IMAGES and expected_flat["image_auc"] is not None
    for rank in range(WORLD_SIZE):
        result = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert result["n"] == N_IMAGES  # the padded duplicate counted once
        _assert_same(result["flat"], expected_flat)
        assert set(result["by_region"]) == set(expected_groups)
        for region, expected in expected_groups.items():
            _assert_same(result["by_region"][region], expected)
