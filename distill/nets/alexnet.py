"""AlexNet for cross-architecture evaluation."""

from __future__ import annotations

from .base import ConvNormAct, StagedNet, register_arch


class AlexNet(StagedNet):
    """AlexNet as used for cross-architecture evaluation in DC/DM (conv 128/192/256/192/192,
    three 2x2 max-pools), with a selectable norm after each convolution (``none`` default)."""

    def __init__(self, in_channels: int, num_classes: int, image_size: tuple[int, int],
                 norm: str = "none"):
        super().__init__()
        spec = [(128, 5, 4 if in_channels == 1 else 2, True), (192, 5, 2, True),
                (256, 3, 1, False), (192, 3, 1, False), (192, 3, 1, True)]
        spatial, cin, stages = tuple(image_size), in_channels, []
        for cout, k, pad, pool in spec:
            layer = ConvNormAct(cin, cout, k, pad, norm, spatial)
            stage, spatial = self._stage(layer, layer.out_spatial, pool)
            stages.append(stage)
            cin = cout
        self._finish(stages, cin, spatial, num_classes)
        self.taps = tuple(f"conv{i + 1}" for i in range(len(spec)))


register_arch("alexnet", lambda cin, k, size, s: AlexNet(cin, k, size, norm=s.norm), default_norm="none")
