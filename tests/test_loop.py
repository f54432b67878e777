"""The distillation loop on digits: learning, gradients, seeding, exact resume, snapshots."""

import dataclasses

import pytest
import torch

import distill.selection as selection
from distill.config import to_dict
from distill.errors import UserError
from distill.loop import distill
from distill.methods import get_method
from distill.prepare import prepare
from distill.settings import NetConfig, SetConfig, resolve, set_identity
from distill.step import attention_layers, bound, loss_and_grad
from distill.train import TrainRecipe, train_group

SMALL = dict(ipc=2, batch_real=16, net=NetConfig(width=32), checkpoint_every=0)


def _cfg(method="atom", iterations=50, **kw):
    """A resolved config; keys that are no field of SetConfig are the method's hyperparameters."""
    own = {f.name for f in dataclasses.fields(SetConfig)}
    kw = {**SMALL, **kw}
    params = {k: v for k, v in kw.items() if k not in own}
    return resolve(SetConfig(method=method, iterations=iterations, params=params,
                             **{k: v for k, v in kw.items() if k in own}), 16, "digits")


def _step(net, train_x, index, syn, cfg, gen):
    return loss_and_grad(net, train_x, index, syn, cfg, *bound(cfg), gen)


@pytest.mark.parametrize("method", ["dm", "datadam", "atom", "atom_channel"])
def test_loss_decreases(digits_prep, method):
    s = distill(digits_prep, _cfg(method, 50), progress=False)  # lr 1; x100 for the attention methods
    losses = torch.tensor(s.meta["losses"])
    assert len(losses) == 50
    assert losses[-10:].mean() < 0.9 * losses[:10].mean()
    assert s.images.shape == (20, 1, 16, 16)
    assert s.labels.tolist() == [c for c in range(10) for _ in range(2)]


def test_gradients_reach_only_synthetic_images(digits_prep):
    cfg = _cfg("atom")
    net = cfg.net.spec().build(1, 10, (16, 16))
    for p in net.parameters():
        p.requires_grad_(False)
    train_x = digits_prep.train_x.clone().requires_grad_(True)
    syn = torch.randn(20, 1, 16, 16, requires_grad=True)
    loss = _step(net, train_x, digits_prep.data.class_index(), syn, cfg, torch.Generator().manual_seed(0))
    assert loss.item() > 0 and not loss.requires_grad
    assert syn.grad is not None and syn.grad.abs().sum() > 0
    assert train_x.grad is None
    assert all(p.grad is None for p in net.parameters())


def test_same_seed_same_set_and_different_seed_differs(digits_prep):
    a = distill(digits_prep, _cfg(iterations=5), progress=False)
    b = distill(digits_prep, _cfg(iterations=5), progress=False)
    c = distill(digits_prep, _cfg(iterations=5, seed=1), progress=False)
    assert torch.equal(a.images, b.images)
    assert not torch.equal(a.images, c.images)


def test_resume_equals_uninterrupted(digits_prep, tmp_path):
    full = distill(digits_prep, _cfg(iterations=8), progress=False)
    ckpt = tmp_path / "ckpt.pt"
    # "interrupted" after 4 iterations (the checkpoint at 4 survives), then resumed to 8
    distill(digits_prep, _cfg(iterations=4, checkpoint_every=2), checkpoint=ckpt, progress=False)
    assert torch.load(ckpt, weights_only=True)["iteration"] == 4
    resumed = distill(digits_prep, _cfg(iterations=8, checkpoint_every=2), checkpoint=ckpt,
                      resume=True, progress=False)
    assert torch.equal(resumed.images, full.images)
    assert resumed.meta["losses"] == pytest.approx(full.meta["losses"])


def test_resume_rejects_other_config(digits_prep, tmp_path):
    ckpt = tmp_path / "ckpt.pt"
    distill(digits_prep, _cfg(iterations=2, checkpoint_every=2), checkpoint=ckpt, progress=False)
    with pytest.raises(UserError, match="differs in: lam"):
        distill(digits_prep, _cfg(iterations=4, lam=0.5), checkpoint=ckpt, resume=True, progress=False)


def test_resume_refuses_other_data_and_a_longer_checkpoint(digits_prep, tmp_path):
    """A checkpoint continues only the run it belongs to: not on a dataset of another size or
    preprocessing (its images would be read in the wrong space), not past the iterations asked
    (the result would be the longer run labelled as the shorter)."""
    ckpt = tmp_path / "ckpt.pt"
    distill(digits_prep, _cfg(iterations=4, checkpoint_every=2), checkpoint=ckpt, progress=False)
    with pytest.raises(UserError, match=r"iteration 4, beyond the 2 asked for"):
        distill(digits_prep, _cfg(iterations=2, checkpoint_every=2), checkpoint=ckpt, resume=True, progress=False)
    whitened = prepare(digits_prep.data, zca=True)
    with pytest.raises(UserError, match=r"other data \(differs in: zca: zca=False\)"):
        distill(whitened, _cfg(iterations=6, checkpoint_every=2), checkpoint=ckpt, resume=True, progress=False)
    fewer = prepare(dataclasses.replace(digits_prep.data, train_x=digits_prep.data.train_x[:-10],
                                        train_y=digits_prep.data.train_y[:-10]))
    with pytest.raises(UserError, match=r"differs in: train_images"):
        distill(fewer, _cfg(iterations=6, checkpoint_every=2), checkpoint=ckpt, resume=True, progress=False)
    assert distill(digits_prep, _cfg(iterations=6, checkpoint_every=2), checkpoint=ckpt, resume=True,
                   progress=False).meta["iterations"] == 6  # the same data and more iterations: continues


@pytest.mark.parametrize("init", ["noise", "kcenter"])
def test_other_inits(digits_prep, init):
    s = distill(digits_prep, _cfg(iterations=2, init=init, embed_epochs=1), progress=False)
    assert s.images.shape == (20, 1, 16, 16) and torch.isfinite(s.images).all()


def test_real_init_uses_images_of_each_class(digits_prep):
    s = distill(digits_prep, _cfg(iterations=0), progress=False)
    x, y = digits_prep.train_x, digits_prep.data.train_y
    for img, label in zip(s.images, s.labels):
        match = (x - img).flatten(1).abs().amax(1) == 0
        assert match.any() and bool((y[match] == label).all())


def test_selection_methods(digits_prep):
    for method in ("random", "herding", "kcenter"):
        s = distill(digits_prep, _cfg(method, embed_epochs=1), progress=False)
        idx = torch.tensor(s.meta["source_indices"])
        assert torch.equal(s.images, digits_prep.train_x[idx])
        assert torch.equal(digits_prep.data.train_y[idx], s.labels)


def test_selection_embeddings_are_trained_once_per_data_and_seed(digits, monkeypatch):
    """Herding and k-center at several IPCs share one embedding ConvNet (same network, epochs and
    seed), and the sets equal those made from scratch."""
    calls = []
    real = selection.selection_embeddings
    monkeypatch.setattr(selection, "selection_embeddings", lambda *a, **k: (calls.append(1), real(*a, **k))[1])
    shared = prepare(digits)
    made = [distill(shared, _cfg(m, ipc=i, embed_epochs=1), progress=False)
            for m, i in (("herding", 1), ("herding", 3), ("kcenter", 2))]
    assert len(calls) == 1
    distill(shared, _cfg("herding", ipc=1, embed_epochs=1, seed=1), progress=False)
    assert len(calls) == 2  # another seed: another network
    for s, (m, i) in zip(made, (("herding", 1), ("herding", 3), ("kcenter", 2))):
        fresh = distill(prepare(digits), _cfg(m, ipc=i, embed_epochs=1), progress=False)
        assert s.meta["source_indices"] == fresh.meta["source_indices"]


def test_selections_ignore_what_their_cache_key_drops(digits_prep):
    """A selection's set depends only on the keys ``set_identity`` keeps: changing every matching
    hyperparameter gives the same picks (so the cache may reuse them); the embedding network does not."""
    def kept(cfg):
        return set_identity(to_dict(cfg))

    base = _cfg("herding", embed_epochs=1)
    other = dataclasses.replace(base, params={"loss_scale": 1.0, "p_spatial": 1.0, "p_channel": 1.0, "lam": 0.5},
                                iterations=7, lr_img=3.0, momentum=0.0, batch_real=4, dsa="none", init="noise",
                                preset="reference_code", factor=2)
    picks = [distill(digits_prep, c, progress=False).meta["source_indices"] for c in (base, other)]
    assert picks[0] == picks[1]
    assert kept(base) == kept(other)
    assert kept(dataclasses.replace(base, net=NetConfig(width=16))) != kept(base)
    att = _cfg("atom")  # a matching method depends on all of them
    assert kept(att) != kept(dataclasses.replace(att, params={**att.params, "loss_scale": 1.0}))


def test_presets_and_defaults():
    def weights(cfg):
        m = get_method(cfg.method)
        return m.weights(m.typed(cfg.params))

    paper = resolve(SetConfig(method="datadam", ipc=10), 32)
    assert (paper.params["p_spatial"], paper.params["lam"], paper.params["loss_scale"], paper.net.norm, paper.net.init,
            paper.iterations, paper.batch_real, paper.lr_img) == (4.0, 0.01, 100.0, "instancenorm", "he", 8000, 128, 1.0)
    ref = resolve(SetConfig(method="datadam", ipc=100, preset="reference_code"), 64)
    assert (ref.params["p_spatial"], ref.params["lam"], ref.params["loss_scale"], ref.net.norm, ref.net.init,
            ref.iterations, ref.batch_real, ref.lr_img) == (1.0, 0.02, 100.0, "batchnorm", "default", 20000, 64, 10.0)
    assert resolve(SetConfig(), 16, "digits").iterations == 300
    dm = weights(resolve(SetConfig(method="dm"), 32))
    assert (dm.maps, dm.last_weight) == ((), 1.0)
    atom = weights(resolve(SetConfig(method="atom", params={"p_channel": 2.0}), 32))
    assert (atom.maps, atom.last_weight) == ((("spatial", 4.0), ("channel", 2.0)), 0.01)
    for preset in ("paper", "reference_code"):  # DM as its authors ran it, in every preset
        dm_cfg = resolve(SetConfig(method="dm", ipc=100, preset=preset), 32)
        assert (dm_cfg.iterations, dm_cfg.batch_real, dm_cfg.lr_img, dm_cfg.params) == (20000, 256, 1.0, {"loss_scale": 1.0})
    mine = resolve(SetConfig(method="dm", ipc=100, iterations=5, params={"loss_scale": 100.0, "lam": 3.0}), 32)
    assert (mine.iterations, mine.params, mine.batch_real) == (5, {"loss_scale": 100.0}, 256)  # the user's values win
    assert resolve(SetConfig(method="dm"), 16, "digits").iterations == 300  # quick defaults too
    with pytest.raises(UserError, match="unknown method"):
        resolve(SetConfig(method="mtt"), 32)
    with pytest.raises(UserError, match="unknown preset"):
        resolve(SetConfig(preset="code"), 32)
    with pytest.raises(UserError, match="out of range"):
        attention_layers(resolve(SetConfig(layers=[4]), 32), 3)


def test_ipc_larger_than_a_class(digits_prep):
    with pytest.raises(UserError, match="ipc 500 is larger than class"):
        distill(digits_prep, _cfg(ipc=500), progress=False)


def test_chunking_does_not_change_loss_or_gradient(digits_prep):
    """Class chunks of the real and synthetic forwards give the loss and gradient of one
    all-classes pass."""
    results = []
    for chunk in (16, 48, 100000):  # 1 class, 3 classes, all 10 classes per forward
        cfg = _cfg("atom", chunk=chunk)
        net = cfg.net.spec().build(1, 10, (16, 16))
        syn = digits_prep.train_x[:20].clone().requires_grad_(True)
        loss = _step(net, digits_prep.train_x, digits_prep.data.class_index(), syn, cfg,
                     torch.Generator().manual_seed(0))
        results.append((loss.item(), syn.grad.clone()))
    for loss, grad in results[:2]:
        assert loss == pytest.approx(results[2][0], rel=1e-5)
        assert torch.allclose(grad, results[2][1], rtol=1e-4, atol=1e-7)


def test_periodic_evaluation_hook(digits_prep):
    """The quick evaluation at iteration n is one ConvNet trained (seed + 1, the evaluation recipe
    with the distillation's DSA) on the set as it is after n iterations, tested on the test split."""
    seen = []
    distill(digits_prep, _cfg(iterations=4, eval_every=2, eval_epochs=2), progress=False,
            on_eval=lambda it, acc: seen.append((it, acc)))
    assert [it for it, _ in seen] == [2, 4]
    for it, acc in seen:
        cfg = _cfg(iterations=it, eval_epochs=2)
        s = distill(digits_prep, cfg, progress=False)
        group = train_group(cfg.net.spec(), 1, s.images, s.labels, 10, TrainRecipe(epochs=2, dsa=cfg.dsa),
                            torch.Generator().manual_seed(cfg.seed + 1), ensemble=False)
        assert acc == group.accuracies(digits_prep.test_x, digits_prep.data.test_y)[0]
