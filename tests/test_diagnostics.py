"""The diagnostics' measurements (ablate.probes.measurements) on models whose answer is known: a linear model, a quadratic
one, a network with nothing to normalise, ResNets whose residual branches are zeroed (each block is then
its skip path alone, so the deep network computes what a shallow one does)."""
import contextlib
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ablate.probes import measurements as probes
from ablate.probes.lesion import dropped
from helpers.models import build


def linear_model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 10))


def data(n=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 4, 4, generator=g), torch.randint(0, 10, (n,), generator=g)


@contextlib.contextmanager
def all_dropped(model):
    with contextlib.ExitStack() as stack:
        for _, b in model.blocks():
            stack.enter_context(dropped(b))
        yield


# ---------------------------------------------------------------- loss landscape


def test_direction_is_filter_normalised_and_leaves_biases_and_batchnorm_alone():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 2 * 2, 3))
    d = probes.filter_normalised_direction(model, torch.Generator().manual_seed(0))
    params = dict(model.named_parameters())
    for name in ("1.weight", "1.bias", "0.bias", "3.bias"):
        assert torch.count_nonzero(d[name]) == 0, name
    for name in ("0.weight", "3.weight"):  # one norm per output channel / output neuron
        w, v = params[name].detach(), d[name]
        assert torch.allclose(v.reshape(len(v), -1).norm(dim=1), w.reshape(len(w), -1).norm(dim=1), rtol=1e-5)
        assert not torch.allclose(v, w)  # a random direction, not the weights themselves


def test_a_linear_models_slice_is_the_loss_computed_by_hand_and_the_weights_are_restored():
    model = linear_model()
    x, y = data()
    d = probes.filter_normalised_direction(model, torch.Generator().manual_seed(1))
    w, b = model[1].weight.detach().clone(), model[1].bias.detach().clone()
    alphas = [-1.0, -0.5, 0.0, 0.25, 1.0]
    losses = probes.loss_surface(model, x, y, [d], [(a,) for a in alphas])
    for a, loss in zip(alphas, losses):
        logits = x.reshape(len(x), -1) @ (w + a * d["1.weight"]).T + b  # the bias does not move
        assert loss == pytest.approx(float(F.cross_entropy(logits, y)), rel=1e-6)
    assert torch.equal(model[1].weight, w) and torch.equal(model[1].bias, b) and model.training
    plane = probes.loss_surface(model, x, y, [d, d], [(0.5, 0.5)])
    assert plane[0] == pytest.approx(losses[-1], rel=1e-6)  # 0.5 d + 0.5 d = 1 d


def test_the_landscape_uses_trained_batchnorm_statistics():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(8, 10))
    with torch.no_grad():
        model[1].running_mean.fill_(3.0)
        model[1].running_var.fill_(4.0)
    x, y = data()
    d = probes.filter_normalised_direction(model, torch.Generator().manual_seed(0))
    model.train()
    (loss,) = probes.loss_surface(model, x, y, [d], [(0.0,)])
    assert model[1].running_mean.eq(3.0).all() and model.training  # evaluated only; the mode is given back
    with torch.no_grad():
        assert loss == pytest.approx(float(F.cross_entropy(model.eval()(x), y)), rel=1e-6)
        assert loss != pytest.approx(float(F.cross_entropy(model.train()(x), y)), rel=1e-3)


def test_curvature_of_a_parabola_and_of_a_flat_slice():
    alphas = np.linspace(-1, 1, 41)
    assert probes.curvature(alphas, 3 * alphas ** 2 + alphas + 2) == pytest.approx(6.0)
    # |alpha| <= 0.25 only: a quartic term outside the window does not count
    assert probes.curvature(alphas, 2 * alphas ** 2 + 100 * np.where(abs(alphas) > 0.3, alphas ** 4, 0)) == pytest.approx(4.0)
    zero = linear_model()
    with torch.no_grad():
        zero[1].weight.zero_()
    x, y = data()
    d = probes.filter_normalised_direction(zero, torch.Generator().manual_seed(0))
    losses = probes.loss_surface(zero, x, y, [d], [(a,) for a in alphas])
    assert len(set(losses)) == 1  # zero weights: the filter-normalised direction is zero, the slice flat
    assert probes.curvature(alphas, losses) == pytest.approx(0.0, abs=1e-9)


# ---------------------------------------------------------------- shattered gradients


def test_autocorrelation_of_a_ramp_of_gradients_is_the_ramps():
    # f(x) = (w . x)^2 / 2 has gradient (w . x) w: along a line of inputs it changes linearly.
    w = torch.randn(16, generator=torch.Generator().manual_seed(0))

    class Quadratic(nn.Module):
        def forward(self, x):
            return (0.5 * (x.reshape(len(x), -1) @ w) ** 2).unsqueeze(1)

    a, b = torch.randn(1, 4, 4), torch.randn(1, 4, 4)
    line = probes.line_between(a, b, 256)
    assert torch.allclose(line[0], a) and torch.allclose(line[-1], b)
    g = probes.input_gradients(Quadratic(), line, torch.ones(1), chunk=50)
    acf = probes.autocorrelation(g, 64)
    t = np.arange(256) - 127.5
    expected = [float((t[: 256 - k] * t[k:]).sum() / (t * t).sum()) for k in range(65)]
    assert acf == pytest.approx(expected, abs=1e-6)  # float32 gradients
    assert acf[0] == 1.0 and acf[1] > 0.98


def test_a_linear_models_gradient_does_not_vary_so_its_autocorrelation_is_undefined():
    model = linear_model()
    line = probes.line_between(*data(2)[0], 64)
    g = probes.input_gradients(model, line, torch.ones(10) / math.sqrt(10))
    assert np.allclose(g, g[0])
    assert np.isnan(probes.autocorrelation(g, 8)).all()


def test_white_noise_gradients_have_no_autocorrelation():
    g = np.random.default_rng(0).standard_normal((256, 500))
    acf = probes.autocorrelation(g, 16)
    assert acf[0] == pytest.approx(1.0) and np.abs(acf[1:]).max() < 0.02


def test_calibrated_batchnorm_holds_the_batch_statistics_and_inputs_stop_interacting():
    model = build("cifar", 20)
    x = torch.randn(64, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    probes.calibrate_batchnorm(model, x)
    assert not model.training
    with torch.no_grad():
        stem = model.stem[0](x)
    assert torch.allclose(model.stem[1].running_mean, stem.mean(dim=(0, 2, 3)), atol=1e-5)
    assert torch.allclose(model.stem[1].running_var, stem.var(dim=(0, 2, 3), unbiased=True), rtol=1e-4)
    assert model.stem[1].momentum == 0.1  # restored
    with torch.no_grad():
        assert torch.allclose(model(x)[:3], model(x[:3]), atol=1e-5)


def test_with_residual_branches_zeroed_the_gradient_is_the_skip_paths():
    """zero_init_residual: every block is its skip path, so the 56-layer net's input gradient equals that of the
    net with every block dropped: stem, subsample + zero-pad shortcuts, pool and classifier."""
    model = build("cifar", 56, shortcut="identity", zero_init_residual=True)
    x = torch.randn(32, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    probes.calibrate_batchnorm(model, x)
    line = probes.line_between(x[0], x[1], 64)
    u = torch.randn(10, generator=torch.Generator().manual_seed(0))
    g = probes.input_gradients(model, line, u, chunk=16)
    with all_dropped(model):
        shallow = probes.input_gradients(model, line, u)
    assert np.allclose(g, shallow, atol=1e-6)
    plain = build("cifar", 56, shortcut="identity", residual=False)
    probes.calibrate_batchnorm(plain, x)
    deep = probes.autocorrelation(probes.input_gradients(plain, line, u), 1)[1]
    assert probes.autocorrelation(g, 1)[1] > deep  # the comparison can fail: a deep plain net's gradient differs


# ---------------------------------------------------------------- signal propagation


def test_channel_statistics_of_a_known_tensor():
    t = torch.zeros(2, 3, 2, 2)
    t[:, 0] = 1.0                     # channel 0: mean 1, variance 0
    t[0, 1], t[1, 1] = 2.0, -2.0      # channel 1: mean 0, variance 4
    t[:, 2, 0, 0] = 4.0               # channel 2: one position in four is 4: mean 1, variance 3
    sq_mean, var = probes.channel_stats(t)
    assert sq_mean == pytest.approx((1 + 0 + 1) / 3) and var == pytest.approx((0 + 4 + 3) / 3)


@pytest.mark.parametrize("block", ["basic", "preact"])
def test_zeroed_residual_branches_pass_their_input_on(block):
    model = build("cifar", 20, shortcut="identity", block=block, zero_init_residual=True).train()
    x = torch.randn(32, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    rows = probes.signal_propagation(model, x)
    assert [r["block"] for r in rows] == [n for n, _ in model.blocks()]
    # a pre-activation branch ends in its conv, fed by a zeroed BN: nothing; a basic branch is measured before the
    # BN that zeroes it, so its conv output still varies
    assert all((r["branch_variance"] == 0.0) == (block == "preact") for r in rows)
    same_shape = [i for i, (_, b) in enumerate(model.blocks()) if b.shortcut is None and i > 0]
    for i in same_shape:  # the block's output is its input: the previous block's output
        assert rows[i]["variance"] == pytest.approx(rows[i - 1]["variance"], rel=1e-9)
        assert rows[i]["sq_mean"] == pytest.approx(rows[i - 1]["sq_mean"], rel=1e-9)
    fresh = probes.signal_propagation(build("cifar", 20, shortcut="identity", block=block).train(), x)
    assert all(r["branch_variance"] > 0 for r in fresh)  # the comparison can fail


def test_the_branch_is_measured_before_the_batchnorm_that_makes_its_variance_one():
    # In train mode a basic block's branch ends with BN (scale 1, shift 0): after it every channel has variance 1,
    # whatever the network; the measurement is the conv output that BN normalises.
    model = build("cifar", 20).train()
    x = torch.randn(64, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    seen = {}
    hooks = [b.conv2.register_forward_hook(lambda _m, _i, out, n=n: seen.__setitem__(("conv", n), out.detach()))
             for n, b in model.blocks()]
    hooks += [b.bn2.register_forward_hook(lambda _m, _i, out, n=n: seen.__setitem__(("bn", n), out.detach()))
              for n, b in model.blocks()]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    rows = probes.signal_propagation(model, x)
    for r in rows:
        by_hand = seen[("conv", r["block"])].double().transpose(0, 1).reshape(seen[("conv", r["block"])].shape[1], -1)
        assert r["branch_variance"] == pytest.approx(float(by_hand.var(dim=1, unbiased=False).mean()), rel=1e-9)
        assert probes.channel_stats(seen[("bn", r["block"])])[1] == pytest.approx(1.0, abs=1e-3)
    assert not any(r["branch_variance"] == pytest.approx(1.0, abs=0.05) for r in rows)  # the comparison can fail


# ---------------------------------------------------------------- top Hessian eigenvalue


def quadratic(eigenvalues, seed=0):
    """loss(w) = 1/2 w'Aw + b'w with A = Q diag(eigenvalues) Q' for a random rotation Q: its Hessian is A."""
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(len(eigenvalues), len(eigenvalues), generator=g, dtype=torch.float64))
    a = q @ torch.diag(torch.tensor(eigenvalues, dtype=torch.float64)) @ q.T
    b = torch.randn(len(eigenvalues), generator=g, dtype=torch.float64)
    w = torch.randn(len(eigenvalues), generator=g, dtype=torch.float64, requires_grad=True)
    return (lambda: 0.5 * w @ a @ w + b @ w), w


@pytest.mark.parametrize("eigenvalues, top", [([5.0, 2.0, 1.0, 0.5, -1.0], 5.0), ([3.0, -0.5, 0.1], 3.0),
                                              ([-6.0, 3.0, 1.0], -6.0)])
def test_power_iteration_finds_a_quadratics_largest_eigenvalue(eigenvalues, top):
    loss, w = quadratic(eigenvalues)
    value, iterations = probes.top_hessian_eigenvalue(loss, [w], iterations=200, tolerance=1e-10,
                                                      generator=torch.Generator().manual_seed(1))
    assert value == pytest.approx(top, rel=1e-6) and iterations < 200


def test_hessian_top_of_a_small_network_matches_the_full_hessian():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3)).double()
    x, y = data(24)
    x, y = x.double(), y % 3
    w = [p for p in model.parameters()]
    shapes = [p.shape for p in w]

    def loss_of(flat):
        chunks, start = [], 0
        for shape in shapes:
            n = int(np.prod(shape))
            chunks.append(flat[start:start + n].reshape(shape))
            start += n
        logits = x.flatten(1) @ chunks[0].T + chunks[1]
        return F.cross_entropy(logits, y)

    flat = torch.cat([p.detach().flatten() for p in w])
    eig = torch.linalg.eigvalsh(torch.autograd.functional.hessian(loss_of, flat))
    value, _ = probes.hessian_top(model, x, y, iterations=2000, tolerance=1e-12)
    assert value == pytest.approx(float(eig[eig.abs().argmax()]), rel=1e-4)
    assert model.training and all(p.grad is None for p in model.parameters())


# ---------------------------------------------------------------- lesions of k blocks


def test_k_values_and_distinct_draws_within_one_block_type():
    assert probes.k_values(9) == list(range(1, 10))
    ks = probes.k_values(27)
    assert ks[0] == 1 and ks[-1] == 27 and len(ks) == 12 and ks == sorted(set(ks))
    model = build("cifar", 20)  # 9 blocks: 7 same-shape, 2 downsampling (the first of stages 2 and 3)
    down = {n for n, b in model.blocks() if b.conv1.stride[0] != 1}
    rows = probes.k_lesions(model, lambda: 0.5, samples=5, rng=np.random.default_rng(0))
    assert rows[0] == {"block_type": "none", "n_blocks": 9, "k": 0, "sample": 0, "dropped": "", "accuracy": 0.5}
    same = [r for r in rows if r["block_type"] == "same-shape"]
    downs = [r for r in rows if r["block_type"] == "downsampling"]
    assert {r["n_blocks"] for r in same} == {7} and {r["n_blocks"] for r in downs} == {2}
    assert all(not set(r["dropped"].split()) & down for r in same)  # the types never mix
    assert all(set(r["dropped"].split()) <= down for r in downs)
    assert [r["k"] for r in downs] == [1, 1, 2]  # all sets: C(2, 1) = 2, C(2, 2) = 1
    ones = [r["dropped"] for r in same if r["k"] == 1]
    assert len(ones) == 5 == len(set(ones))
    assert sum(r["k"] == 7 for r in same) == 1 and sum(r["k"] == 6 for r in same) == 5  # C(7, 6) = 7: 5 drawn


def test_with_residual_branches_zeroed_no_lesion_changes_anything():
    model = build("cifar", 20, shortcut="identity", zero_init_residual=True)
    x = torch.randn(40, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    probes.calibrate_batchnorm(model, x)
    with torch.no_grad():
        labels = model(x).argmax(1)

    def score():
        with torch.no_grad():
            return float((model(x).argmax(1) == labels).float().mean())

    rows = probes.k_lesions(model, score, samples=3, rng=np.random.default_rng(0))
    assert {r["accuracy"] for r in rows} == {1.0} and max(r["k"] for r in rows) == 7
    plain = build("cifar", 20, residual=False)
    probes.calibrate_batchnorm(plain, x)
    with torch.no_grad():
        plain_labels = plain(x).argmax(1)
    changed = probes.k_lesions(plain, lambda: float((plain(x).argmax(1) == plain_labels).float().mean()),
                               samples=3, rng=np.random.default_rng(0))
    assert min(r["accuracy"] for r in changed) < 1.0  # the comparison can fail
