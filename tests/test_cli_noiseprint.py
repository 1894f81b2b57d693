"""`tamperscope noiseprint`: .npy + PNG outputs, the weight-free fallback notice, one-line errors."""
import numpy as np
import pytest
import torch
from PIL import Image

from tamperscope.backbones.dncnn import DnCNN
from tamperscope.cli import main
from tamperscope.report.visualize import stretch_to_uint8


@pytest.fixture
def image_file(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, size=(40, 56, 3), dtype=np.uint8)
    path = tmp_path / "photo.png"
    Image.fromarray(rgb).save(path)
    return path, rgb


@pytest.fixture
def weights_file(tmp_path):
    torch.manual_seed(3)
    net = DnCNN().eval()
    path = tmp_path / "noiseprint++.th"
    torch.save({"network": net.state_dict(), "global_step": 1}, path)
    return path, net


def test_writes_npy_and_png_with_weights(tmp_path, image_file, weights_file, capsys):
    (img, rgb), (wpath, net) = image_file, weights_file
    out, png = tmp_path / "out" / "np.npy", tmp_path / "np.png"
    rc = main(["noiseprint", str(img), "--weights", str(wpath), "--out", str(out), "--png", str(png)])
    assert rc == 0
    arr = np.load(out)
    assert arr.shape == (40, 56) and arr.dtype == np.float32
    with torch.no_grad():
        ref = net(torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 256.0)[0, 0].numpy()
    np.testing.assert_allclose(arr, ref, atol=1e-5)
    view = np.asarray(Image.open(png))
    assert view.shape == (40, 56) and view.dtype == np.uint8 and view.min() == 0 and view.max() == 255
    assert "no --weights" not in capsys.readouterr().err


def test_fallback_without_weights_prints_notice(tmp_path, image_file, capsys):
    img, _ = image_file
    out = tmp_path / "r.npy"
    assert main(["noiseprint", str(img), "--out", str(out)]) == 0
    assert "SRM residual" in capsys.readouterr().err
    arr = np.load(out)
    assert arr.shape == (40, 56)
    assert abs(float(arr.std(ddof=1)) - 1.0) < 1e-3


def test_bad_inputs_exit_2_with_one_line(tmp_path, image_file, capsys):
    img, _ = image_file
    assert main(["noiseprint", str(tmp_path / "nope.png"), "--out", str(tmp_path / "a.npy")]) == 2
    assert main(["noiseprint", str(img), "--out", str(tmp_path / "a.txt")]) == 2
    junk = tmp_path / "junk.th"
    junk.write_bytes(b"\x00not a torch file")
    assert main(["noiseprint", str(img), "--weights", str(junk), "--out", str(tmp_path / "a.npy")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("tamperscope noiseprint: error:") for line in err)
    assert "nope.png" in err[0] and ".npy" in err[1] and "junk.th" in err[2]
    assert not (tmp_path / "a.npy").exists()


def test_stretch_is_robust_to_outliers():
    x = np.linspace(-1, 1, 10000).reshape(100, 100).astype(np.float32)
    x[0, 0] = 1e6
    out = stretch_to_uint8(x)
    assert out.dtype == np.uint8 and out.min() == 0 and out.max() == 255
    assert 100 < out[50, 50] < 155                      # the outlier does not squash the rest to black
    assert (stretch_to_uint8(np.zeros((4, 4))) == 128).all()
