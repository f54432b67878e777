import itertools

import pytest
import torch
import torch.nn as nn

from distill.errors import UserError
from distill.nets import ACTIVATIONS, ARCHS, NORMS, POOLINGS, ConvNet, build_net, init_weights


GRID = list(itertools.product([1, 2, 3, 4], [32, 64, 128, 256], ACTIVATIONS, NORMS, POOLINGS))


def test_layer_choices_are_the_protocols():
    """The NAS grid's options as docs/protocols.md section 5 writes them (4 x 4 x 3 x 5 x 3 = 720)."""
    assert set(ACTIVATIONS) == {"sigmoid", "relu", "leakyrelu"}
    assert set(NORMS) == {"none", "batchnorm", "layernorm", "instancenorm", "groupnorm"}
    assert set(POOLINGS) == {"none", "maxpooling", "avgpooling"}
    from nas.space import SPACES, grid

    full = {(p["depth"], p["width"], p["act"], p["norm"], p["pool"]) for p in grid(SPACES["full"])}
    assert full == set(GRID) and len(full) == 4 * 4 * 3 * 5 * 3


@pytest.mark.parametrize("depth,width", list(itertools.product([1, 2, 3, 4], [32, 64, 128, 256])))
def test_every_nas_option_builds_and_runs(depth, width):
    x = torch.randn(2, 3, 32, 32)
    for act, norm, pool in itertools.product(ACTIVATIONS, NORMS, POOLINGS):
        net = ConvNet(3, 10, (32, 32), width=width, depth=depth, act=act, norm=norm, pool=pool)
        feats, emb = net.forward_features(x)
        assert len(feats) == depth
        side = 32 if pool == "none" else 32 >> (depth - 1)
        assert feats[-1].shape == (2, width, side, side)  # last block, pre-pooling
        final = side if pool == "none" else side // 2
        assert emb.shape == (2, width * final * final)
        assert net(x).shape == (2, 10)


def test_features_are_post_activation_pre_pooling():
    torch.manual_seed(0)
    net = ConvNet(3, 10, (32, 32), depth=2, act="relu", norm="instancenorm", pool="maxpooling")
    x = torch.randn(3, 3, 32, 32)
    feats, emb = net.forward_features(x)
    b0 = net.blocks[0]
    f0 = torch.relu(b0.norm(b0.conv(x)))
    assert torch.allclose(feats[0], f0)
    assert torch.allclose(feats[1], torch.relu(net.blocks[1].norm(net.blocks[1].conv(nn.functional.max_pool2d(f0, 2)))))
    assert torch.allclose(emb, nn.functional.max_pool2d(feats[1], 2).flatten(1))
    assert torch.allclose(net.embed(x), emb)


def test_instancenorm_is_groupnorm_per_channel():
    net = ConvNet(3, 10, (32, 32), norm="instancenorm")
    gn = net.blocks[0].norm
    assert isinstance(gn, nn.GroupNorm) and gn.num_groups == gn.num_channels == 128 and gn.affine


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("size,ch", [((32, 32), 3), ((16, 16), 1)])
def test_cross_architectures(arch, size, ch):
    net = build_net(arch, ch, 7, size)
    feats, emb = net.forward_features(torch.randn(2, ch, *size))
    assert len(feats) >= 1 and emb.shape[0] == 2
    assert net.forward_head(emb).shape == (2, 7)
    assert len(feats) == len(net.taps)  # every returned map is a named attention tap


def test_attention_taps_are_explicit(digits_prep):
    x = torch.randn(2, 3, 32, 32)
    vgg = build_net("vgg11", 3, 10, (32, 32))
    feats, _ = vgg.forward_features(x)
    # every convolution's ReLU, as the DataDAM code hooks them: the VGG-11 configuration's widths
    assert [f.shape[1] for f in feats] == [64, 128, 256, 256, 512, 512, 512, 512]
    assert all(bool((f >= 0).all()) for f in feats)  # post-ReLU
    assert torch.allclose(vgg(x), vgg.forward_head(vgg.forward_features(x)[1]))
    expected = {"convnet": 3, "alexnet": 5, "vgg11": 8, "resnet18": 4, "vit": 6}
    assert {a: len(build_net(a, 3, 10, (32, 32)).taps) for a in expected} == expected
    # distillation validates distill.layers against the taps: AlexNet's 4th conv is a valid layer
    from distill.loop import distill
    from distill.settings import NetConfig, SetConfig, resolve

    cfg = resolve(SetConfig(method="datadam", ipc=1, iterations=1, layers=[4],
                                net=NetConfig(arch="alexnet")), 16, "digits")
    assert len(distill(digits_prep, cfg, progress=False).meta["losses"]) == 1
    with pytest.raises(UserError, match="attention taps 1..5"):
        distill(digits_prep, resolve(SetConfig(method="datadam", ipc=1, iterations=1, layers=[6],
                                                   net=NetConfig(arch="alexnet")), 16, "digits"), progress=False)


@pytest.mark.parametrize("arch,norm", [("resnet18", "batchnorm"), ("vgg11", "batchnorm"), ("alexnet", "instancenorm")])
def test_norm_variants(arch, norm):
    net = build_net(arch, 3, 10, (32, 32), norm=norm)
    kinds = {type(m) for m in net.modules()}
    assert (nn.BatchNorm2d in kinds) == (norm == "batchnorm")
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_depth_that_does_not_fit_is_a_clear_error():
    with pytest.raises(UserError, match="does not fit 8x8"):
        ConvNet(1, 10, (8, 8), depth=4, pool="avgpooling")


def test_init_is_seeded_and_he_normal():
    net = ConvNet(3, 10, (32, 32), width=64)
    a = init_weights(net, "he", torch.Generator().manual_seed(5)).blocks[1].conv.weight.clone()
    b = init_weights(net, "he", torch.Generator().manual_seed(5)).blocks[1].conv.weight.clone()
    assert torch.equal(a, b)
    fan_in = 64 * 9
    assert abs(a.std().item() - (2 / fan_in) ** 0.5) < 0.05 * (2 / fan_in) ** 0.5
    d = init_weights(net, "default", torch.Generator().manual_seed(5)).blocks[1].conv.weight
    bound = 1 / fan_in ** 0.5  # kaiming_uniform(a=sqrt(5)) bound
    assert d.abs().max() <= bound + 1e-6 and d.abs().max() > 0.9 * bound
    with pytest.raises(UserError, match="unknown init"):
        init_weights(net, "xavier")


def test_unknown_names():
    with pytest.raises(UserError, match="unknown architecture 'lenet'"):
        build_net("lenet", 3, 10, (32, 32))
    with pytest.raises(UserError, match="unknown norm"):
        build_net("convnet", 3, 10, (32, 32), norm="weird")
