import torch

from distill.preprocess import Preprocess


def _pixels(n=300, seed=0):
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(n, 1, 4, 4, generator=g)
    # correlated channels so whitening has something to do
    return (torch.cat([base, 0.7 * base + 0.3 * torch.rand(n, 1, 4, 4, generator=g),
                       torch.rand(n, 1, 4, 4, generator=g)], 1) * 255).round().to(torch.uint8)


def test_normalisation_formula():
    pre = Preprocess.fit(_pixels(), (0.5, 0.4, 0.3), (0.2, 0.25, 0.1), zca=False)
    x = _pixels(5, seed=1)
    out = pre(x)
    exp = (x.float() / 255 - torch.tensor([0.5, 0.4, 0.3]).view(1, 3, 1, 1)) / torch.tensor([0.2, 0.25, 0.1]).view(1, 3, 1, 1)
    assert torch.allclose(out, exp, atol=1e-6)
    assert torch.allclose(pre.inverse(out), x.float() / 255, atol=1e-6)


def test_zca_matches_kornia_and_round_trips():
    from kornia.enhance import ZCAWhitening

    train = _pixels()
    pre = Preprocess.fit(train, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), zca=True)
    norm = pre.normalize(train)
    ref = ZCAWhitening(eps=0.1, compute_inv=True)
    ref.fit(norm)
    x = _pixels(7, seed=3)
    out = pre(x)
    assert torch.allclose(out, ref(pre.normalize(x)), atol=1e-4)
    # regularised whitening: with Cov = U diag(s) U^T, cov(zca(x)) = U diag(s / (s + eps)) U^T
    flat = norm.reshape(len(train), -1).double()
    s, u = torch.linalg.eigh(torch.cov(flat.T))
    expected = u @ torch.diag(s / (s + 0.1)) @ u.T
    w = pre(train).reshape(len(train), -1).double()
    assert torch.allclose(torch.cov(w.T), expected, atol=2e-3)
    # exact inverse back to pixels
    assert torch.allclose(pre.inverse(out), x.float() / 255, atol=1e-4)
    # serialised state round trip
    again = Preprocess.from_state(pre.state())
    assert torch.allclose(again(x), out)


def test_to_pixels_clamps():
    pre = Preprocess(mean=torch.tensor([0.5]), std=torch.tensor([0.5]))
    y = pre.to_pixels(torch.tensor([[[[-5.0, 0.0, 5.0]]]]))
    assert y.tolist() == [[[[0.0, 0.5, 1.0]]]]
