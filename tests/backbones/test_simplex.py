"""Fractal OpenSimplex noise (DiffForensics §3.1, AnoDDPM): exactness against the ``opensimplex`` package (test-only
dependency), octave structure, independence and normalisation."""
import numpy as np
import pytest
import torch

from tamperscope.backbones.simplex import opensimplex3, opensimplex_permutation, random_permutations, simplex_noise

opensimplex = pytest.importorskip("opensimplex")



def _reference_points(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    scattered = rng.uniform(-40.0, 40.0, size=(1500, 3))
    # lattice-aligned points exercise the tie-breaking comparisons (xins == yins etc.)
    grid = np.stack(np.meshgrid(np.arange(-2, 2, 0.25), np.arange(-2, 2, 0.25), np.arange(-1, 1, 0.5)), -1)
    return np.concatenate([scattered, grid.reshape(-1, 3)])


@pytest.mark.parametrize("seed", [3, 7, -123456789])
def test_base_field_matches_reference_package(seed):
    ref_gen = opensimplex.OpenSimplex(seed)
    pts = _reference_points(abs(seed) % 1000)
    expected = np.array([ref_gen.noise3(*p) for p in pts])
    t = torch.from_numpy(pts)
    perm = opensimplex_permutation(seed).view(1, 1, 256)
    got = opensimplex3(t[None, :, 0], t[None, :, 1], t[None, :, 2], perm)[0, 0].numpy()
    assert np.abs(got - expected).max() < 1e-10
    # float32 (the training dtype) stays close at these coordinate magnitudes
    t32 = t.float()
    got32 = opensimplex3(t32[None, :, 0], t32[None, :, 1], t32[None, :, 2], perm)[0, 0].double().numpy()
    assert np.abs(got32 - expected).max() < 2e-3


def test_fractal_sum_matches_reference_octaves():
    """S = Σ γ^k simplex3(x/f_k, y/f_k, z/f_k), f_k = f/2^k, x = column, y = row (AnoDDPM's fixed-T octaves)."""
    H, W, z, seeds = 12, 20, 37.0, (11, 12)
    freq, octaves, gamma = 16.0, 3, 0.8
    perm = torch.stack([opensimplex_permutation(s) for s in seeds]).view(1, 2, 256)
    got = simplex_noise((1, 2, H, W), frequency=freq, octaves=octaves, persistence=gamma,
                        z=torch.tensor([z]), perm=perm, dtype=torch.float64)
    for c, s in enumerate(seeds):
        ref_gen = opensimplex.OpenSimplex(s)
        expected = np.zeros((H, W))
        f, amp = freq, 1.0
        for _ in range(octaves):
            expected += amp * np.array([[ref_gen.noise3(x / f, y / f, z / f) for x in range(W)] for y in range(H)])
            f, amp = f / 2, amp * gamma
        assert np.abs(got[0, c].numpy() - expected).max() < 1e-10


def _band_power(field: torch.Tensor, lo: float, hi: float) -> float:
    """Mean power spectral density of the fields at radial frequencies in [lo, hi) cycles/pixel."""
    spec = torch.fft.fft2(field - field.mean(dim=(-2, -1), keepdim=True)).abs() ** 2
    fy = torch.fft.fftfreq(field.shape[-2])[:, None]
    fx = torch.fft.fftfreq(field.shape[-1])[None, :]
    r = (fx ** 2 + fy ** 2).sqrt()
    band = (r >= lo) & (r < hi)
    return spec[..., band].mean().item()


def test_octave_structure_power_falls_with_frequency():
    g = torch.Generator().manual_seed(0)
    noise = simplex_noise((2, 1, 128, 128), frequency=32.0, octaves=4, persistence=0.8, generator=g)
    bands = [(1 / 64, 1 / 32), (1 / 16, 1 / 8), (1 / 4, 1 / 2)]
    powers = [_band_power(noise, lo, hi) for lo, hi in bands]
    assert powers[0] > 3 * powers[1] > 9 * powers[2] > 0
    # adding octaves adds fine-scale energy: 4 octaves carry more high-frequency power than 1
    g = torch.Generator().manual_seed(0)
    single = simplex_noise((2, 1, 128, 128), frequency=32.0, octaves=1, generator=g)
    assert _band_power(noise, 1 / 16, 1 / 8) > 2 * _band_power(single, 1 / 16, 1 / 8)


def test_fields_are_independent_per_sample_and_channel_and_reproducible():
    shape = (2, 3, 64, 64)
    a = simplex_noise(shape, frequency=16.0, generator=torch.Generator().manual_seed(1))
    b = simplex_noise(shape, frequency=16.0, generator=torch.Generator().manual_seed(1))
    c = simplex_noise(shape, frequency=16.0, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b)
    assert (a - c).abs().max() > 0.1
    flat = a.reshape(6, -1)
    corr = torch.corrcoef(flat)
    off_diag = corr[~torch.eye(6, dtype=torch.bool)]
    assert off_diag.abs().max() < 0.6
    for i in range(6):
        for j in range(i + 1, 6):
            assert (flat[i] - flat[j]).abs().max() > 0.1


def test_z_slice_per_sample():
    perm = random_permutations(2, torch.Generator().manual_seed(0)).view(2, 1, 256)
    perm = torch.cat([perm[:1], perm[:1]])  # same table for both samples
    same = simplex_noise((2, 1, 32, 32), z=torch.tensor([5.0, 5.0]), perm=perm)
    diff = simplex_noise((2, 1, 32, 32), z=torch.tensor([5.0, 300.0]), perm=perm)
    assert torch.allclose(same[0], same[1])
    assert (diff[0] - diff[1]).abs().max() > 0.05


def test_amplitude_and_normalize_flag():
    g = torch.Generator().manual_seed(0)
    raw = simplex_noise((2, 3, 128, 128), generator=g)
    assert raw.abs().max() < sum(0.8 ** k for k in range(6))  # |simplex3| ≤ 1 per octave
    assert 0.1 < raw.std().item() < 1.0  # AnoDDPM amplitude, not unit variance
    g = torch.Generator().manual_seed(0)
    norm = simplex_noise((2, 3, 128, 128), normalize=True, generator=g)
    assert torch.allclose(norm.mean(dim=(2, 3)), torch.zeros(2, 3), atol=1e-5)
    assert torch.allclose(norm.std(dim=(2, 3)), torch.ones(2, 3), atol=1e-4)
    assert torch.allclose(norm, (raw - raw.mean((2, 3), keepdim=True)) / raw.std((2, 3), keepdim=True), atol=1e-5)


def test_bad_arguments_raise():
    with pytest.raises(ValueError):
        simplex_noise((1, 1, 8, 8), octaves=0)
    with pytest.raises(ValueError):
        simplex_noise((1, 2, 8, 8), perm=torch.zeros(1, 1, 256, dtype=torch.long))


def test_autocast_does_not_change_the_noise():
    g = torch.Generator().manual_seed(3)
    plain = simplex_noise((1, 2, 32, 32), frequency=8.0, generator=g)
    g = torch.Generator().manual_seed(3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        amp = simplex_noise((1, 2, 32, 32), frequency=8.0, generator=g)
    assert amp.dtype == torch.float32 and torch.equal(plain, amp)


def test_no_fixed_lattice_pattern_across_batches():
    """Without z each call draws its slice: the per-pixel variance over many batches has no fixed map
    (with a constant z = 0 slice the halves' variance maps correlate at ≈0.7 and pixel (0, 0) is always 0)."""
    fields = torch.cat([simplex_noise((8, 1, 32, 32), frequency=8.0, octaves=2,
                                      generator=torch.Generator().manual_seed(i))[:, 0] for i in range(20)])
    first, second = fields[:80].var(0).flatten(), fields[80:].var(0).flatten()
    assert torch.corrcoef(torch.stack([first, second]))[0, 1].abs() < 0.3
    assert fields[:, 0, 0].abs().max() > 0.1
