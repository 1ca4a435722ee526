"""A small convolutional image tower for the bootstrap Chinese CLIP, registered with timm so that open_clip builds it
from a config (`"vision_cfg": {"timm_model_name": "danqing_convnet_bn", ...}`).

Why not the ViT of open_clip's configs: at 64 px and a few CPU minutes, a ViT of the bootstrap's size learned colours,
backgrounds and positions but not the shapes of things - trained *with clean labels* on single-thing renders it stayed
at chance (0.03 over 31 kinds), where this conv net (3x3 convolutions, batch norm, 2x2 max pooling, a global max
pool) reached 0.54. Max pooling keeps a small thing's response wherever it sits in the picture.

`register()` is idempotent and is called by `embed.register_model_config` for every config naming a tower of this
module, so a checkpoint that uses it loads in any process (a Dagster step, the CLI, a test).
"""

from __future__ import annotations

from typing import Any

TOWERS = {"danqing_convnet_bn": (32, 64, 128, 128)}
"""timm model name -> channel widths of the conv stages (each but the last followed by 2x2 max pooling)."""

_registered = False


def _build(widths: tuple[int, ...], **kwargs: Any) -> Any:
    import torch.nn as nn
    from timm.layers import SelectAdaptivePool2d

    class SmallConvNet(nn.Module):
        """conv3x3 - batch norm - ReLU stages with 2x2 max pooling between them, then a global pool (timm's
        interface: `num_features`, `reset_classifier`, `forward_features`)."""

        def __init__(self, num_classes: int = 0, global_pool: str = "max", in_chans: int = 3, **_: Any) -> None:
            super().__init__()
            layers: list[nn.Module] = []
            c = in_chans
            for i, w in enumerate(widths):
                layers += [nn.Conv2d(c, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
                if i < len(widths) - 1:
                    layers.append(nn.MaxPool2d(2))
                c = w
            self.features = nn.Sequential(*layers)
            self.num_features = c
            self.default_cfg = self.pretrained_cfg = {"pool_size": None}
            self.reset_classifier(num_classes, global_pool)

        def reset_classifier(self, num_classes: int, global_pool: str = "max") -> None:
            self.global_pool = SelectAdaptivePool2d(pool_type=global_pool or "max", flatten=True)
            self.fc = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()

        def forward_features(self, x: Any) -> Any:
            return self.features(x)

        def forward(self, x: Any) -> Any:
            return self.fc(self.global_pool(self.features(x)))

    return SmallConvNet(**kwargs)


def register() -> None:
    """Register every tower of `TOWERS` with timm (once per process)."""
    global _registered
    if _registered:
        return
    from timm.models import register_model

    for name, widths in TOWERS.items():
        def factory(pretrained: bool = False, _widths: tuple[int, ...] = widths, **kwargs: Any) -> Any:
            if pretrained:
                raise ValueError("the danqing conv towers have no pretrained weights")
            return _build(_widths, **kwargs)

        factory.__name__ = name
        factory.__module__ = __name__
        register_model(factory)
    _registered = True


def uses_tower(config: dict[str, Any]) -> bool:
    """Whether an open_clip model config names a tower of this module."""
    return (config.get("vision_cfg") or {}).get("timm_model_name") in TOWERS
