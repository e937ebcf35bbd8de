"""RetinaNet-style detector as in the paper: ResNet (or MobileNetV2) backbone, FPN P3-P5, shared 4-conv heads.

The forward pass returns raw tensors in training and eval alike; decoding and NMS live in
``adla.postprocess``. Nothing resizes the input: the tensor given is what the network sees. The model
normalises its input itself (RGB floats in 0-255 in), so exported graphs take plain pixels.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn
from torchvision import models
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.ops import FeaturePyramidNetwork, FrozenBatchNorm2d

from adla.anchors import AnchorSpec
from adla.errors import AdlaError
from adla.ranges import check_ranges

BACKBONES = {"resnet18": models.resnet18, "resnet34": models.resnet34, "resnet50": models.resnet50,
             "resnet101": models.resnet101, "mobilenet_v2": models.mobilenet_v2}
NORMS = ("auto", "frozen_bn", "bn", "gn")
HEAD_NORMS = ("auto", "gn", "none")
# MobileNetV2: the blocks of torchvision's ``features`` that end each stage, in the ResNet's terms (stem,
# then the stages ending at strides 4, 8, 16, 32), and the three whose outputs the FPN taps (strides 8, 16,
# 32: 32, 96 and 1280 channels).
MOBILENET_STAGE_ENDS = (1, 4, 7, 14, 19)
MOBILENET_TAPS = {"6": "c3", "13": "c4", "18": "c5"}
MOBILENET_CHANNELS = [32, 96, 1280]


def group_norm(channels: int, max_groups: int = 32) -> nn.GroupNorm:
    """GroupNorm with up to 32 groups (Wu and He 2018), fewer when the channels do not divide."""
    groups = max(g for g in range(1, max_groups + 1) if channels % g == 0)
    return nn.GroupNorm(groups, channels)


def resolved_norm(cfg: ModelConfig) -> str:
    """The norm a config builds: ``auto`` is frozen BN over given backbone weights, GroupNorm from scratch.

    From-scratch training at 2-8 images a batch is where BatchNorm's statistics are poor; He et al.,
    "Rethinking ImageNet Pre-training" (ICCV 2019) train detectors from scratch with GroupNorm.
    """
    if cfg.norm == "auto":
        return "frozen_bn" if cfg.backbone_weights else "gn"
    return cfg.norm


def resolved_head_norm(cfg: ModelConfig) -> str:
    """The norm of FPN and heads: ``auto`` is GroupNorm when the backbone has it, none otherwise (the paper)."""
    if cfg.head_norm == "auto":
        return "gn" if resolved_norm(cfg) == "gn" else "none"
    return cfg.head_norm


def _norm_layer(name: str):
    return {"frozen_bn": FrozenBatchNorm2d, "bn": nn.BatchNorm2d, "gn": group_norm}[name]


@dataclass(frozen=True)
class ModelConfig:
    """Detector architecture. Defaults are the paper's R50 RetinaNet with sub-size anchors."""

    backbone: str = "resnet50"  # resnet18/34/50/101 or mobilenet_v2
    # a local torchvision state dict, or "imagenet": the registry's checked file (adla.weights: hub cache,
    # torchvision's download when online, else `adla weights get BACKBONE`)
    backbone_weights: str | None = None
    # "auto": frozen_bn with backbone_weights, gn without; or "frozen_bn", "bn", "gn" (backbone)
    norm: str = "auto"
    # FPN and heads: "auto" follows the backbone (gn with gn, none otherwise), or "gn", "none"
    head_norm: str = "auto"
    # with weights: the stem and this many stages frozen (1: everything before stride 8, as mmdetection's
    # RetinaNet freezes ResNet's stem + layer1; MobileNetV2's features[0:4]); ignored without weights
    frozen_stages: int = 1
    num_classes: int = 8
    fpn_channels: int = 256
    head_channels: int = 256
    head_convs: int = 4
    prior_prob: float = 0.01
    pixel_mean: tuple[float, float, float] = (123.675, 116.28, 103.53)
    pixel_std: tuple[float, float, float] = (58.395, 57.12, 57.375)
    anchors: AnchorSpec = field(default_factory=AnchorSpec)

    RANGES: ClassVar[dict[str, str]] = {"frozen_stages": "[-1, 4]", "num_classes": ">= 1", "fpn_channels": ">= 1",
                                        "head_channels": ">= 1", "head_convs": ">= 0", "prior_prob": "(0, 1)"}

    def __post_init__(self) -> None:
        check_ranges(self, self.RANGES)


def _backbone(cfg: ModelConfig, pretrained: bool) -> tuple[nn.Module, list[int]]:
    """The backbone body (returns {"c3", "c4", "c5"} at strides 8, 16, 32) and its output channels.

    With ``pretrained`` false the weights file is not read (a checkpoint brings every weight).
    """
    if cfg.backbone not in BACKBONES:
        raise AdlaError(f"unknown backbone {cfg.backbone!r}; choose one of {sorted(BACKBONES)}")
    if cfg.norm not in NORMS:
        raise AdlaError(f"unknown model.norm {cfg.norm!r}; choose one of {list(NORMS)}")
    if cfg.head_norm not in HEAD_NORMS:
        raise AdlaError(f"unknown model.head_norm {cfg.head_norm!r}; choose one of {list(HEAD_NORMS)}")
    net = BACKBONES[cfg.backbone](weights=None, norm_layer=_norm_layer(resolved_norm(cfg)))
    mobilenet = cfg.backbone == "mobilenet_v2"
    if cfg.backbone_weights and pretrained:
        _load_pretrained(net, cfg.backbone, cfg.backbone_weights, "classifier." if mobilenet else "fc.")
    if cfg.backbone_weights and cfg.frozen_stages >= 0:
        for param in _frozen_params(net, mobilenet, cfg.frozen_stages):
            param.requires_grad_(False)
    if mobilenet:
        return IntermediateLayerGetter(net.features, return_layers=MOBILENET_TAPS), list(MOBILENET_CHANNELS)
    width = 1 if cfg.backbone in ("resnet18", "resnet34") else 4
    body = IntermediateLayerGetter(net, return_layers={"layer2": "c3", "layer3": "c4", "layer4": "c5"})
    return body, [128 * width, 256 * width, 512 * width]


def _frozen_params(net: nn.Module, mobilenet: bool, stages: int) -> list[nn.Parameter]:
    if mobilenet:
        features = net.features
        assert isinstance(features, nn.Sequential)
        return [p for block in features[:MOBILENET_STAGE_ENDS[stages]] for p in block.parameters()]
    frozen = ["conv1", "bn1"] + [f"layer{i}" for i in range(1, stages + 1)]
    return [p for name, p in net.named_parameters() if name.split(".")[0] in frozen]


def _load_pretrained(net: nn.Module, backbone: str, value: str, head_prefix: str) -> None:
    """Load a torchvision state dict into ``net``: every tensor but the classifier's, or a one-line error."""
    from adla.weights import resolve

    path = resolve(backbone, value)  # checks the sha256 of a registry file
    fix = ("get the right file with `adla weights get mobilenet_v2`" if backbone == "mobilenet_v2"
           else f"give torchvision's {backbone} state dict")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        why = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
        raise AdlaError(f"cannot read backbone weights, truncated or not a torch state dict ({why}); {fix}",
                        path) from exc
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise AdlaError(f"not a state dict of tensors; {fix}", path)
    try:
        missing, unexpected = net.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # a tensor of the right name with the wrong shape
        lines = [ln.strip() for ln in str(exc).splitlines() if "size mismatch" in ln]
        raise AdlaError(f"not {backbone} weights ({lines[0] if lines else exc}); {fix}", path) from exc
    missing = [k for k in missing if not k.startswith(head_prefix)]
    unexpected = [k for k in unexpected if not k.startswith(head_prefix)]
    if missing or unexpected:
        raise AdlaError(f"not {backbone} weights: {len(missing)} of its tensors missing (e.g. {missing[:2]}), "
                        f"{len(unexpected)} unknown (e.g. {unexpected[:2]}); {fix}", path)


class Head(nn.Module):
    """A stack of 3x3 conv (+ GroupNorm with ``group_norm``) + ReLU shared across levels, then a 3x3 output conv.

    The GN variant is mmdetection's RetinaNet GN head: one set of GN weights shared by all levels.
    """

    def __init__(self, in_ch: int, width: int, depth: int, out_ch: int, group_norm_layers: bool = False):
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(depth):
            layers.append(nn.Conv2d(in_ch if i == 0 else width, width, 3, padding=1))
            if group_norm_layers:
                layers.append(group_norm(width))
            layers.append(nn.ReLU(inplace=True))
        self.tower = nn.Sequential(*layers)
        self.out = nn.Conv2d(width if depth else in_ch, out_ch, 3, padding=1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d) and m.bias is not None:
                nn.init.normal_(m.weight, std=0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.tower(x))


class Detector(nn.Module):
    """RetinaNet with P3-P5.

    forward(images [B,3,H,W] RGB 0-255 float) -> (cls_logits [B,N,C], box_deltas [B,N,4]), N the anchors
    of ``adla.anchors.generate_anchors(cfg.anchors, H, W)`` in the same order.
    """

    def __init__(self, cfg: ModelConfig, *, pretrained: bool = True):
        super().__init__()
        self.cfg = cfg
        self.body, in_channels = _backbone(cfg, pretrained)
        gn = resolved_head_norm(cfg) == "gn"
        self.fpn = FeaturePyramidNetwork(in_channels, cfg.fpn_channels, norm_layer=group_norm if gn else None)
        a, c = cfg.anchors.num_anchors, cfg.num_classes
        self.cls_head = Head(cfg.fpn_channels, cfg.head_channels, cfg.head_convs, a * c, gn)
        self.box_head = Head(cfg.fpn_channels, cfg.head_channels, cfg.head_convs, a * 4, gn)
        assert self.cls_head.out.bias is not None
        nn.init.constant_(self.cls_head.out.bias, -math.log((1 - cfg.prior_prob) / cfg.prior_prob))
        self.pixel_mean: torch.Tensor
        self.pixel_std: torch.Tensor
        self.register_buffer("pixel_mean", torch.tensor(cfg.pixel_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(cfg.pixel_std).view(1, 3, 1, 1), persistent=False)

    @property
    def num_classes(self) -> int:
        return self.cfg.num_classes

    def features(self, images: torch.Tensor) -> list[torch.Tensor]:
        x = (images - self.pixel_mean) / self.pixel_std
        feats = self.fpn(OrderedDict(self.body(x)))
        return list(feats.values())

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b = images.shape[0]
        c = self.cfg.num_classes
        cls_out, box_out = [], []
        for f in self.features(images):
            # [B, A*C, h, w] -> [B, h*w*A, C], matching the anchor order
            cls_out.append(self.cls_head(f).permute(0, 2, 3, 1).reshape(b, -1, c))
            box_out.append(self.box_head(f).permute(0, 2, 3, 1).reshape(b, -1, 4))
        return torch.cat(cls_out, dim=1), torch.cat(box_out, dim=1)


def build_detector(cfg: ModelConfig, *, pretrained: bool = True) -> Detector:
    """The detector of ``cfg``; ``pretrained=False`` skips reading ``backbone_weights`` (for a checkpoint's
    model, whose state dict brings every weight)."""
    return Detector(cfg, pretrained=pretrained)

