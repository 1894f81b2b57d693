"""Fractal 3-D OpenSimplex noise in torch, the corruption of DiffForensics' pre-text task (paper 003 §3.1;
AnoDDPM, Wyatt et al. 2022).

DiffForensics (Alg. 1) adds ``ε ~ Simplex(ν = 2⁻⁶, N = 6, γ = 0.8)`` instead of Gaussian noise, following
AnoDDPM (Wyatt et al., CVPR-W 2022). The base field is Kurt Spencer's 2014 OpenSimplex 3-D noise, the
algorithm of the ``opensimplex`` PyPI package (0.4.x) that AnoDDPM forks. This module evaluates it exactly,
vectorised over all points (no per-pixel Python loops): every point sums the kernels of the lattice vertices
the reference selects (the 4 or 6 vertices of its simplectic cell plus two "extra" vertices chosen by the
same region rules), so values match the reference package to float precision when the same permutation
table is used (:func:`opensimplex_permutation` reproduces the package's seeding). The geometry (which
vertices, which kernel weights) does not depend on the permutation, so it is built once per octave as a
sparse ``points × 3·vertices`` operator and applied to the gradients of all fields in one sparse matmul.

Fractal sum (AnoDDPM ``rand_3d_fixed_T_octaves``): ``S = Σ_k γ^k · simplex3(x/f_k, y/f_k, z/f_k)`` with
``f_k = f / 2^k`` (``f = 1/ν = 64``), x the column index, y the row index and z a per-sample slice
coordinate (AnoDDPM uses the diffusion timestep; default here one random slice per batch, see below).
Resolved ambiguities (AnoDDPM's code vs paper 003 §3.1):

* AnoDDPM broadcasts one field over batch and channels and, through a default-argument quirk, never changes
  its seed. Here every (sample, channel) gets its own random permutation table drawn from a
  ``torch.Generator``; all octaves of one field share its table, as in AnoDDPM. The fields of one batch share
  one slice z ~ U[0, 1000) drawn at each call (one geometry pass per batch; a fixed slice would leave the same
  per-pixel variance map in every field, the tables do not remove it); ``z`` per sample reproduces AnoDDPM's
  z = t slicing at ≈6× the CPU cost.
* The AnoDDPM amplitude is kept by default (std ≈ 0.3–0.5); ``normalize=True`` rescales each
  (sample, channel) field to zero mean and unit std.
"""
from __future__ import annotations

import itertools
import warnings

import torch

STRETCH_3D = -1.0 / 6.0  # (1/sqrt(3+1) - 1) / 3
SQUISH_3D = 1.0 / 3.0  # (sqrt(3+1) - 1) / 3
NORM_3D = 103.0

#: 24 gradients of the reference (vertices of a skewed rhombicuboctahedron)
GRADIENTS_3D = torch.tensor([
    [-11, 4, 4], [-4, 11, 4], [-4, 4, 11], [11, 4, 4], [4, 11, 4], [4, 4, 11],
    [-11, -4, 4], [-4, -11, 4], [-4, -4, 11], [11, -4, 4], [4, -11, 4], [4, -4, 11],
    [-11, 4, -4], [-4, 11, -4], [-4, 4, -11], [11, 4, -4], [4, 11, -4], [4, 4, -11],
    [-11, -4, -4], [-4, -11, -4], [-4, -4, -11], [11, -4, -4], [4, -11, -4], [4, -4, -11],
], dtype=torch.float64)

_CUBE_VERTICES = tuple(itertools.product((0, 1), repeat=3))


def _axis_offset(bits: int, value: int) -> tuple[int, int, int]:
    """``value`` on the first axis (x, y, z order) whose bit is set in ``bits``."""
    axis = 0 if bits & 1 else (1 if bits & 2 else 2)
    return tuple(value if a == axis else 0 for a in range(3))


def _neg_offset(bits: int) -> tuple[int, int, int]:
    """The permutation of (1, 1, −1) with −1 on the first axis (x, y, z order) whose bit is clear."""
    axis = 0 if not bits & 1 else (1 if not bits & 2 else 2)
    return tuple(-1 if a == axis else 1 for a in range(3))


def _extra_vertex_table() -> torch.Tensor:
    """Lattice offsets of the two extra vertices, indexed by a case code (see :func:`_extra_vertex_code`).

    Codes 0–7: tetrahedron at (0,0,0) with vertex bitmask c; 8–15: tetrahedron at (1,1,1); 16–23: octahedron,
    both closest points on the (1,1,1) side (c = a & b); 24–31: both on the (0,0,0) side (c = a | b);
    32–95: one on each side, 32 + 8·c_far + c_near. Unused codes stay zero.
    """
    table = torch.zeros(96, 2, 3, dtype=torch.long)
    for c in range(1, 7):
        bits = [(c >> a) & 1 for a in range(3)]
        if c in (1, 2, 4):  # (0,0,0) is among the closest: vertices beyond the faces around axis c
            x0, x1 = (1, 1) if bits[0] else (-1, 0)
            y0 = y1 = 1 if bits[1] else 0
            if not bits[1]:
                if bits[0]:
                    y0 -= 1
                else:
                    y1 -= 1
            z0, z1 = (1, 1) if bits[2] else (0, -1)
        else:  # two unit vertices are closest: their sum and its reflection
            x0, x1 = (1, 1) if bits[0] else (0, -1)
            y0, y1 = (1, 1) if bits[1] else (0, -1)
            z0, z1 = (1, 1) if bits[2] else (0, -1)
        table[c] = torch.tensor([[x0, y0, z0], [x1, y1, z1]])
        if c in (3, 5, 6):  # (1,1,1) is among the closest
            x0, x1 = (2, 1) if bits[0] else (0, 0)
            y0 = y1 = 1 if bits[1] else 0
            if bits[1]:
                if bits[0]:
                    y1 += 1
                else:
                    y0 += 1
            z0, z1 = (1, 2) if bits[2] else (0, 0)
        else:
            x0, x1 = (1, 2) if bits[0] else (0, 0)
            y0, y1 = (1, 2) if bits[1] else (0, 0)
            z0, z1 = (1, 2) if bits[2] else (0, 0)
        table[8 + c] = torch.tensor([[x0, y0, z0], [x1, y1, z1]])
    for c in range(8):
        table[16 + c] = torch.tensor([(1, 1, 1), _axis_offset(c, 2)])
        table[24 + c] = torch.tensor([(0, 0, 0), _neg_offset(c)])
        for c_near in range(8):
            table[32 + 8 * c + c_near] = torch.tensor([_neg_offset(c), _axis_offset(c_near, 2)])
    return table


def _vertex_tables() -> tuple[torch.Tensor, torch.Tensor]:
    """All vertices evaluated per case code: the cell's cube vertices (Σ ≤ 1, 1 ≤ Σ ≤ 2 or Σ ≥ 2) plus the
    two extra vertices, padded to 8 with invalid slots (mask 0) for the tetrahedral cells."""
    extra = _extra_vertex_table()
    vertices = torch.zeros(96, 8, 3, dtype=torch.long)
    valid = torch.zeros(96, 8)
    for code in range(96):
        if code < 8:
            cell = [v for v in _CUBE_VERTICES if sum(v) <= 1]
        elif code < 16:
            cell = [v for v in _CUBE_VERTICES if sum(v) >= 2]
        else:
            cell = [v for v in _CUBE_VERTICES if 1 <= sum(v) <= 2]
        rows = [torch.tensor(v) for v in cell] + [extra[code, 0], extra[code, 1]]
        vertices[code, :len(rows)] = torch.stack(rows)
        valid[code, :len(rows)] = 1
    return vertices, valid


_VERTICES, _VALID = _vertex_tables()


def _extra_vertex_code(xins: torch.Tensor, yins: torch.Tensor, zins: torch.Tensor,
                       in_sum: torch.Tensor) -> torch.Tensor:
    """Case code of :func:`_extra_vertex_table` for every point (the reference's branch logic, vectorised)."""
    long = torch.long
    # tetrahedron at (0,0,0): the two closest of (1,0,0), (0,1,0), (0,0,1) (scores: larger = closer)
    ge = xins >= yins
    swap_b = ge & (zins > yins)
    swap_a = ~ge & (zins > xins)
    a_score = torch.where(swap_a, zins, xins)
    b_score = torch.where(swap_b, zins, yins)
    a_pt = torch.where(swap_a, 4, 1).to(long)
    b_pt = torch.where(swap_b, 4, 2).to(long)
    wins = 1 - in_sum
    origin_close = (wins > a_score) | (wins > b_score)
    code0 = torch.where(origin_close, torch.where(b_score > a_score, b_pt, a_pt), a_pt | b_pt)
    # tetrahedron at (1,1,1): the two closest of (0,1,1), (1,0,1), (1,1,0) (scores: smaller = closer)
    le = xins <= yins
    swap_b = le & (zins < yins)
    swap_a = ~le & (zins < xins)
    a_score = torch.where(swap_a, zins, xins)
    b_score = torch.where(swap_b, zins, yins)
    a_pt = torch.where(swap_a, 3, 6).to(long)
    b_pt = torch.where(swap_b, 3, 5).to(long)
    wins = 3 - in_sum
    corner_close = (wins < a_score) | (wins < b_score)
    code2 = 8 + torch.where(corner_close, torch.where(b_score < a_score, b_pt, a_pt), a_pt & b_pt)
    # octahedron: closest of each opposite pair, then the closest third pair may replace the further one
    p1, p2, p3 = xins + yins, xins + zins, yins + zins
    a_far, b_far, c_far = p1 > 1, p2 > 1, p3 > 1
    a_score = torch.where(a_far, p1 - 1, 1 - p1)
    b_score = torch.where(b_far, p2 - 1, 1 - p2)
    score = torch.where(c_far, p3 - 1, 1 - p3)
    a_pt = torch.where(a_far, 3, 4).to(long)
    b_pt = torch.where(b_far, 5, 2).to(long)
    c_pt = torch.where(c_far, 6, 1).to(long)
    a_le_b = a_score <= b_score
    repl_a = a_le_b & (a_score < score)
    repl_b = ~a_le_b & (b_score < score)
    a_pt = torch.where(repl_a, c_pt, a_pt)
    a_far = torch.where(repl_a, c_far, a_far)
    b_pt = torch.where(repl_b, c_pt, b_pt)
    b_far = torch.where(repl_b, c_far, b_far)
    far_pt = torch.where(a_far, a_pt, b_pt)
    near_pt = torch.where(a_far, b_pt, a_pt)
    code1 = torch.where(a_far == b_far,
                        torch.where(a_far, 16 + (a_pt & b_pt), 24 + (a_pt | b_pt)),
                        32 + 8 * far_pt + near_pt)
    return torch.where(in_sum <= 1, code0, torch.where(in_sum >= 2, code2, code1))


def opensimplex_permutation(seed: int) -> torch.Tensor:
    """The 256-entry permutation the ``opensimplex`` package (and AnoDDPM) derives from an integer seed
    (64-bit LCG shuffle); lets tests and users reproduce the reference fields exactly."""
    def wrap64(v: int) -> int:
        return (v + 2**63) % 2**64 - 2**63

    def step(v: int) -> int:
        return wrap64(v * 6364136223846793005 + 1442695040888963407)

    seed = step(step(step(int(seed))))
    source = list(range(256))
    perm = [0] * 256
    for i in range(255, -1, -1):
        seed = step(seed)
        r = (seed + 31) % (i + 1)
        perm[i] = source[r]
        source[r] = source[i]
    return torch.tensor(perm, dtype=torch.long)


def random_permutations(n: int, generator: torch.Generator | None = None,
                        device: torch.device | str | None = None) -> torch.Tensor:
    """``n`` independent random permutation tables (``n×256`` long), one per noise field."""
    gen_device = generator.device if generator is not None else torch.device("cpu")
    keys = torch.rand(n, 256, generator=generator, device=gen_device)
    return keys.argsort(dim=1).to(device if device is not None else gen_device)


def _simplex_operator(x: torch.Tensor, y: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Permutation-independent part of OpenSimplex 3-D at flat points ``x, y, z`` (``N``).

    Returns ``(A, keys)``: ``keys`` (``U``) are the distinct hashed lattice vertices ``(x&255, y&255, z&255)``
    packed into 24 bits, and ``A`` is a sparse CSR ``N×3U`` matrix holding, for each point, the weight vector
    ``max(2 − |d|², 0)⁴·d`` of each of its selected vertices, so that ``noise = A @ gradients / 103``.
    """
    dtype = x.dtype
    stretch = (x + y + z) * STRETCH_3D
    xs, ys, zs = x + stretch, y + stretch, z + stretch
    xsb, ysb, zsb = torch.floor(xs), torch.floor(ys), torch.floor(zs)
    xins, yins, zins = xs - xsb, ys - ysb, zs - zsb
    squish = (xsb + ysb + zsb) * SQUISH_3D
    d0 = torch.stack((x - (xsb + squish), y - (ysb + squish), z - (zsb + squish)), dim=-1)  # N×3
    code = _extra_vertex_code(xins, yins, zins, xins + yins + zins)
    offsets = _VERTICES.to(x.device)[code]  # N×8×3 lattice offsets from the cell origin
    lattice = (torch.stack((xsb, ysb, zsb), dim=-1).long()[:, None, :] + offsets) & 255
    d = d0[:, None, :] - offsets.to(dtype) - offsets.sum(-1, keepdim=True).to(dtype) * SQUISH_3D
    attn = (2 - (d * d).sum(-1)).clamp_min(0) * _VALID.to(device=x.device, dtype=dtype)[code]
    attn = attn * attn
    weight = (attn * attn)[..., None] * d  # N×8×3; zero for the padding slots
    keys, vertex = torch.unique((lattice[..., 0] * 256 + lattice[..., 1]) * 256 + lattice[..., 2],
                                return_inverse=True)
    n = x.shape[0]
    columns = (vertex[..., None] * 3 + torch.arange(3, device=x.device)).reshape(n, 24)
    columns, order = columns.sort(dim=1)
    values = torch.gather(weight.reshape(n, 24), 1, order)
    rows = torch.arange(0, 24 * n + 1, 24, device=x.device)
    with warnings.catch_warnings():  # torch flags sparse CSR as "beta"; SpMM with it is supported on CPU and CUDA
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        A = torch.sparse_csr_tensor(rows, columns.reshape(-1), values.reshape(-1), size=(n, 3 * keys.numel()),
                                    check_invariants=False)
    return A, keys


def _vertex_gradients(perm: torch.Tensor, keys: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Gradients of the lattice vertices ``keys`` under each of the K permutation tables ``perm``
    (the reference's hash ``perm[(perm[(perm[x] + y) & 255] + z) & 255] mod 24``), as a ``3U×K`` matrix."""
    K = perm.shape[0]
    pair = (perm[:, :, None] + torch.arange(256, device=perm.device)) & 255  # K×256×256: (perm[x] + y) & 255
    pair_hash = torch.gather(perm, 1, pair.reshape(K, -1))  # K×65536
    h = torch.gather(pair_hash, 1, (keys >> 8)[None].expand(K, -1))
    index = torch.gather(perm % GRADIENTS_3D.shape[0], 1, (h + (keys & 255)) & 255)  # K×U
    grads = GRADIENTS_3D.to(device=perm.device, dtype=dtype)[index]  # K×U×3
    return grads.permute(1, 2, 0).reshape(-1, K)


def opensimplex3(x: torch.Tensor, y: torch.Tensor, z: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    """OpenSimplex 3-D noise (range about [−1, 1]), an exact port of the reference algorithm.

    Coordinates ``x, y, z`` broadcast to ``G×N`` (G groups of points sharing their geometry); ``perm``
    (``G×K×256`` long) holds K permutation tables per group. Returns ``G×K×N``: each point sums the kernels
    ``max(2 − |d|², 0)⁴·⟨g, d⟩ / 103`` of the 8 (or 6) lattice vertices the reference selects. The geometry
    is built once per group as a sparse operator and applied to all K fields' gradients in one sparse matmul.
    Arithmetic runs in the coordinates' dtype.
    """
    x, y, z = torch.broadcast_tensors(x, y, z)
    G, N = x.shape
    if perm.ndim != 3 or perm.shape[0] != G or perm.shape[-1] != 256:
        raise ValueError(f"perm must be G×K×256 with G = {G}, got {tuple(perm.shape)}")
    perm = perm.to(x.device)
    out = torch.empty(G, perm.shape[1], N, device=x.device, dtype=x.dtype)
    for g in range(G):
        A, keys = _simplex_operator(x[g], y[g], z[g])
        out[g] = (A @ _vertex_gradients(perm[g], keys, x.dtype)).T / NORM_3D
    return out


#: slices drawn when no z is given lie in [0, RANDOM_SLICE_RANGE) (AnoDDPM slices at the timestep, 1..1000)
RANDOM_SLICE_RANGE = 1000.0


def simplex_noise(shape: tuple[int, int, int, int], *, frequency: float = 64.0, octaves: int = 6,
                  persistence: float = 0.8, z: torch.Tensor | None = None, normalize: bool = False,
                  generator: torch.Generator | None = None, perm: torch.Tensor | None = None,
                  device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Fractal OpenSimplex noise ``B×C×H×W``, one independent field per (sample, channel)
    (paper 003 Alg. 1: "randomly generate simplex seed").

    ``frequency`` is the coordinate divisor of the first octave (1/ν = 64); each octave halves it and
    multiplies the amplitude by ``persistence`` (γ). ``z`` (``B``, optional) is the slice coordinate per
    sample before division (AnoDDPM passes the timestep). Without it all B·C fields share one slice, drawn
    uniformly in [0, 1000) from ``generator`` at each call: one geometry pass for the batch (per-sample slices
    cost ≈6× more on the CPU), and no fixed lattice pattern across batches (a constant z = 0 slice would give
    every field the same per-pixel variance map, e.g. exactly 0 at lattice points). ``perm`` (``B×C×256``)
    fixes the permutation tables; otherwise they are drawn from ``generator``. float32 suits training;
    float64 reproduces the reference to ~1e-15.
    """
    B, C, H, W = shape
    if octaves < 1 or frequency <= 0:
        raise ValueError(f"simplex noise needs octaves >= 1 and frequency > 0 (got {octaves}, {frequency})")
    device = torch.device(device) if device is not None else (
        generator.device if generator is not None else torch.device("cpu"))
    if perm is None:
        perm = random_permutations(B * C, generator, device).view(B, C, 256)
    elif tuple(perm.shape) != (B, C, 256):
        raise ValueError(f"perm must be {B}×{C}×256, got {tuple(perm.shape)}")
    perm = perm.to(device)
    rows = torch.arange(H, device=device, dtype=dtype)[:, None].expand(H, W).reshape(1, -1)
    cols = torch.arange(W, device=device, dtype=dtype)[None, :].expand(H, W).reshape(1, -1)
    if z is None:  # one geometry group holding all B·C fields, on a random slice
        zc = torch.rand(1, 1, generator=generator, device=device, dtype=dtype) * RANDOM_SLICE_RANGE
        perm = perm.reshape(1, B * C, 256)
    else:  # one group per sample, its C channel fields share the slice
        zc = z.to(device=device, dtype=dtype).reshape(B, 1)
    noise = torch.zeros(perm.shape[0], perm.shape[1], H * W, device=device, dtype=dtype)
    freq, amp = float(frequency), 1.0
    with torch.autocast(device_type=device.type, enabled=False):  # exact fp32/fp64 even inside AMP training
        for _ in range(octaves):
            noise += amp * opensimplex3(cols / freq, rows / freq, zc / freq, perm)
            freq /= 2
            amp *= persistence
    noise = noise.view(B, C, H, W)
    if normalize:
        mean = noise.mean(dim=(2, 3), keepdim=True)
        std = noise.std(dim=(2, 3), keepdim=True).clamp_min(1e-6)
        noise = (noise - mean) / std
    return noise
