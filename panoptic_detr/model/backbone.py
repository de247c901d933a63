"""The ResNet backbone of DETR, with torchvision's parameter names (torchvision is not used).

Keys of the official checkpoints: `backbone.0.body.{conv1,bn1,layer1..layer4}.*`, where
`backbone` is a `Joiner(Backbone, PositionEmbeddingSine)` and `body` is the ResNet trunk up
to layer4 (no avgpool / fc), as torchvision's IntermediateLayerGetter leaves it.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from panoptic_detr.model.config import RESNETS
from panoptic_detr.model.nested_tensor import NestedTensor
from panoptic_detr.model.position_encoding import PositionEmbeddingSine


class FrozenBatchNorm2d(nn.Module):
    """BatchNorm2d with fixed statistics and affine parameters, all stored as buffers.

    y = x * scale + shift with scale = weight * rsqrt(running_var + 1e-5) and
    shift = bias - running_mean * scale. The eps is added before rsqrt, as DETR does (without
    it, backbones other than the torchvision ResNets can produce NaNs).
    """

    def __init__(self, num_features: int, eps: float = 1e-5, fold: bool = True):
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        # conv_bn folds it into the conv before it; False: a separate pass, as the official
        # DETR (bench/train_step.py --unfolded times the two)
        self.fold = fold
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        # Checkpoints made from a regular BatchNorm2d carry a counter that means nothing here.
        state_dict.pop(prefix + "num_batches_tracked", None)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)

    def scale_shift(self) -> tuple[Tensor, Tensor]:
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        return scale, self.bias - self.running_mean * scale

    def forward(self, x: Tensor) -> Tensor:
        scale, shift = self.scale_shift()
        return x * scale.reshape(1, -1, 1, 1) + shift.reshape(1, -1, 1, 1)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}"


class PaddingMasks:
    """Exact padding masks of a batch at every stride, for the padding-invariant mode.

    Every strided op of the ResNet (7x7/2 conv, 3x3/2 max-pool, 3x3/2 and 1x1/2 convs) maps a
    size n to ceil(n / 2), so an image whose valid region is h x w has exactly
    ceil(h / s) x ceil(w / s) valid positions at stride s, wherever it sits in a padded batch.
    (DETR's nearest-interpolated masks can differ from this by one row or column.)
    """

    def __init__(self, mask: Tensor):
        valid = ~mask
        self.heights = valid[:, :, 0].sum(1)  # valid regions are top-left rectangles
        self.widths = valid[:, 0, :].sum(1)
        self.size = tuple(mask.shape[-2:])
        self._cache: dict[int, Tensor] = {}

    def padding(self, stride: int) -> Tensor:
        """[B, 1, ceil(H/stride), ceil(W/stride)] bool, True = padding."""
        if stride not in self._cache:
            h, w = (-(-n // stride) for n in self.size)
            rows = torch.arange(h, device=self.heights.device)[None, :, None]
            cols = torch.arange(w, device=self.widths.device)[None, None, :]
            vh = -(-self.heights // stride)
            vw = -(-self.widths // stride)
            pad = (rows >= vh[:, None, None]) | (cols >= vw[:, None, None])
            self._cache[stride] = pad[:, None]
        return self._cache[stride]

    def zero(self, x: Tensor, stride: int) -> Tensor:
        """x with its padded positions set to 0, as a conv's own zero padding sees them."""
        pad = self.padding(stride)
        if pad.shape[-2:] != x.shape[-2:]:
            raise RuntimeError(f"padding mask {tuple(pad.shape[-2:])} does not fit features {tuple(x.shape[-2:])}")
        return x.masked_fill(pad, 0)


def _zero(x: Tensor, pm: PaddingMasks | None, stride: int) -> Tensor:
    return x if pm is None else pm.zero(x, stride)


def _conv3x3(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=dilation, dilation=dilation, bias=False)


def _conv1x1(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 1, stride=stride, bias=False)


def folded_conv_params(conv: nn.Module, bn: nn.Module) -> tuple[Tensor, Tensor] | None:
    """(weight, bias) of one conv equal to bn(conv(x)), or None when bn cannot be folded.

    A frozen (or eval-mode, with running statistics) batch norm is an affine map per
    channel, y = x * scale + shift, so bn(conv(x)) is a conv with weight * scale and bias
    conv.bias * scale + shift. The one rule behind both folds: `conv_bn` (every forward,
    training too) and `fold_frozen_batchnorm` (once, for inference).
    """
    if not isinstance(conv, nn.Conv2d) or conv.padding_mode != "zeros" or conv.groups != 1:
        return None
    if isinstance(bn, FrozenBatchNorm2d):
        scale, shift = bn.scale_shift()
    elif isinstance(bn, nn.BatchNorm2d) and bn.track_running_stats and bn.running_var is not None:
        # running statistics: the eval-mode map (inference folds a copy before eval())
        weight = bn.weight if bn.weight is not None else torch.ones_like(bn.running_var)
        bias = bn.bias if bn.bias is not None else torch.zeros_like(bn.running_mean)
        scale = weight * (bn.running_var + bn.eps).rsqrt()
        shift = bias - bn.running_mean * scale
    else:
        return None
    weight = conv.weight * scale.to(conv.weight.dtype).reshape(-1, 1, 1, 1)
    bias = shift if conv.bias is None else conv.bias * scale + shift
    return weight, bias.to(weight.dtype)


def conv_bn(conv: nn.Module, bn: nn.Module, x: Tensor) -> Tensor:
    """bn(conv(x)); a frozen batch norm (with `fold` on) is folded into the conv first.

    The fold costs one pass over the (small) weight instead of two passes over the (large)
    activation, one forward and one backward (measured: 1.03x on an r50 training step on
    CPU, bench/train_step.py --unfolded). Values change by float rounding only; the
    weights and keys do not.
    """
    params = folded_conv_params(conv, bn) if isinstance(bn, FrozenBatchNorm2d) and bn.fold else None
    if params is not None:
        return F.conv2d(x, params[0], params[1], conv.stride, conv.padding, conv.dilation, conv.groups)
    return bn(conv(x))


def fold_frozen_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of `model` whose ResNet batch norms are folded into the convs before them.

    In the ResNet blocks every `convN` is followed directly by `bnN` (and `downsample` is
    `Sequential(conv, bn)`): each pair becomes one conv with a bias (`folded_conv_params`)
    and an Identity. For inference: it removes the per-forward fold of `conv_bn` (and,
    for eval-mode BatchNorm2d, two full passes over every backbone activation). Values
    change only by float rounding. The model passed in is not modified.
    """
    import copy

    def fold(parent: nn.Module, conv_name: str, bn_name: str) -> None:
        conv, bn = getattr(parent, conv_name), getattr(parent, bn_name)
        params = folded_conv_params(conv, bn)
        if params is None:
            return
        fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                          conv.dilation, bias=True).to(conv.weight.device, conv.weight.dtype)
        with torch.no_grad():
            fused.weight.copy_(params[0])
            fused.bias.copy_(params[1])
        fused.requires_grad_(False)
        setattr(parent, conv_name, fused)
        setattr(parent, bn_name, nn.Identity())

    model = copy.deepcopy(model)
    for module in list(model.modules()):
        if isinstance(module, (ResNet, BasicBlock, Bottleneck)):
            for i in (1, 2, 3):
                if hasattr(module, f"conv{i}") and hasattr(module, f"bn{i}"):
                    fold(module, f"conv{i}", f"bn{i}")
            down = getattr(module, "downsample", None)
            if isinstance(down, nn.Sequential) and len(down) == 2:
                fold(down, "0", "1")
    return model


def _shortcut(downsample: nn.Module | None, x: Tensor) -> Tensor:
    if downsample is None:
        return x
    if isinstance(downsample, nn.Sequential) and len(downsample) == 2:
        return conv_bn(downsample[0], downsample[1], x)
    return downsample(x)


class BasicBlock(nn.Module):
    """Two 3x3 convs (ResNet-18/34)."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 dilation: int = 1, norm_layer: Callable[[int], nn.Module] = FrozenBatchNorm2d):
        super().__init__()
        if dilation != 1:
            raise ValueError("BasicBlock has no dilation (as torchvision's)")
        self.stride = stride
        self.conv1 = _conv3x3(inplanes, planes, stride)
        self.bn1 = norm_layer(planes)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = norm_layer(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor, pm: PaddingMasks | None = None, stride_in: int = 1) -> Tensor:
        """`pm` (padding-invariant mode): re-zero the padding before every spatial conv."""
        stride_out = stride_in * self.stride
        identity = _shortcut(self.downsample, x)
        out = _zero(self.relu(conv_bn(self.conv1, self.bn1, x)), pm, stride_out)
        out = conv_bn(self.conv2, self.bn2, out)
        return _zero(self.relu(out + identity), pm, stride_out)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3, 1x1 expand (ResNet-50/101). The stride sits on the 3x3 conv (ResNet v1.5)."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 dilation: int = 1, norm_layer: Callable[[int], nn.Module] = FrozenBatchNorm2d):
        super().__init__()
        self.stride = stride
        self.conv1 = _conv1x1(inplanes, planes)
        self.bn1 = norm_layer(planes)
        self.conv2 = _conv3x3(planes, planes, stride, dilation)
        self.bn2 = norm_layer(planes)
        self.conv3 = _conv1x1(planes, planes * self.expansion)
        self.bn3 = norm_layer(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor, pm: PaddingMasks | None = None, stride_in: int = 1) -> Tensor:
        """`pm` (padding-invariant mode): re-zero the padding before every spatial conv."""
        stride_out = stride_in * self.stride
        identity = _shortcut(self.downsample, x)
        out = _zero(self.relu(conv_bn(self.conv1, self.bn1, x)), pm, stride_in)
        out = _zero(self.relu(conv_bn(self.conv2, self.bn2, out)), pm, stride_out)
        out = conv_bn(self.conv3, self.bn3, out)
        return _zero(self.relu(out + identity), pm, stride_out)


class ResNet(nn.Module):
    """The ResNet trunk (stem + 4 stages) returning the four stage outputs (strides 4, 8, 16, 32).

    `dilate_last` (DC5) replaces layer4's stride by dilation 2, following torchvision: the first
    block of layer4 keeps dilation 1 (and stride 1), the later blocks use dilation 2.
    """

    def __init__(self, block: type[BasicBlock] | type[Bottleneck], layers: tuple[int, ...], dilate_last: bool = False,
                 norm_layer: Callable[[int], nn.Module] = FrozenBatchNorm2d, width: int = 64):
        super().__init__()
        self._norm_layer = norm_layer
        self.inplanes = width
        self.dilation = 1
        self.conv1 = nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = norm_layer(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, width, layers[0])
        self.layer2 = self._make_layer(block, width * 2, layers[1], stride=2)
        self.layer3 = self._make_layer(block, width * 4, layers[2], stride=2)
        self.layer4 = self._make_layer(block, width * 8, layers[3], stride=2, dilate=dilate_last)
        self.out_channels = [width * block.expansion * 2**i for i in range(4)]
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def _make_layer(self, block, planes: int, blocks: int, stride: int = 1, dilate: bool = False) -> nn.Sequential:
        previous_dilation = self.dilation
        if dilate:
            self.dilation *= stride
            stride = 1
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                _conv1x1(self.inplanes, planes * block.expansion, stride),
                self._norm_layer(planes * block.expansion),
            )
        layers = [block(self.inplanes, planes, stride, downsample, previous_dilation, self._norm_layer)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes, dilation=self.dilation, norm_layer=self._norm_layer)
                   for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: Tensor, pm: PaddingMasks | None = None) -> list[Tensor]:
        """-> [layer1, layer2, layer3, layer4] outputs. With `pm` (padding-invariant mode) the
        padding is re-zeroed before every spatial op, so it acts exactly as each image's own
        zero padding would if the image ran alone."""
        x = _zero(self.relu(conv_bn(self.conv1, self.bn1, x)), pm, 2)
        x = _zero(self.maxpool(x), pm, 4)  # inputs are >= 0, so zeros act as the pool's -inf padding
        outs = []
        stride = 4
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            if pm is None:
                x = layer(x)  # the official path (keeps the Sequential's hooks working)
            else:
                for block in layer:
                    x = block(x, pm, stride)
                    stride *= block.stride
            outs.append(x)
        return outs


def resnet(name: str, dilation: bool = False, frozen_bn: bool = True, width: int = 64) -> ResNet:
    """`width` is the stem's channel count (64 in every torchvision ResNet); smaller widths make
    narrow ResNets for CPU-sized models (48 keeps 56% of the parameters and FLOPs)."""
    kind, depths = RESNETS[name]
    block = BasicBlock if kind == "basic" else Bottleneck
    return ResNet(block, depths, dilate_last=dilation, norm_layer=FrozenBatchNorm2d if frozen_bn else nn.BatchNorm2d,
                  width=width)


class Backbone(nn.Module):
    """ResNet `body` returning layer1..layer4 as NestedTensors, each with its own padding mask.

    conv1, bn1 and layer1 never train (requires_grad False), as in DETR; layer2-4 train when
    `train_backbone`. The masks are the image mask resized to each feature map with nearest
    interpolation.
    """

    def __init__(self, name: str = "resnet50", dilation: bool = False, frozen_bn: bool = True,
                 train_backbone: bool = True, width: int = 64):
        super().__init__()
        self.body = resnet(name, dilation, frozen_bn, width)
        for pname, p in self.body.named_parameters():
            if not train_backbone or not pname.startswith(("layer2.", "layer3.", "layer4.")):
                p.requires_grad_(False)
        self.channels = list(self.body.out_channels)  # layer1..layer4
        self.strides = [4, 8, 16, 16 if dilation else 32]
        self.num_channels = self.channels[-1]
        self.channels_last = False  # see set_channels_last
        self.padding_invariant = False  # see set_padding_invariant

    def set_channels_last(self, enabled: bool = True) -> "Backbone":
        """Run the convolutions in channels_last memory format (often faster on CPU and GPU).

        Only the memory layout changes: values, keys and shapes are the same.
        """
        self.channels_last = enabled
        self.body.to(memory_format=torch.channels_last if enabled else torch.contiguous_format)
        return self

    def forward(self, samples: NestedTensor) -> list[NestedTensor]:
        x = samples.tensors
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        pm = PaddingMasks(samples.mask) if self.padding_invariant else None
        feats = self.body(x, pm)
        out = []
        for f, stride in zip(feats, self.strides):
            if self.channels_last:
                f = f.contiguous()
            if pm is not None:
                mask = pm.padding(stride)[:, 0]
            else:
                mask = F.interpolate(samples.mask[None].float(), size=f.shape[-2:]).to(torch.bool)[0]
            out.append(NestedTensor(f, mask))
        return out


class Joiner(nn.Sequential):
    """`Joiner(backbone, position_embedding)`: index 0 is the backbone (keys `backbone.0.*`)."""

    def __init__(self, backbone: Backbone, position_embedding: PositionEmbeddingSine):
        super().__init__(backbone, position_embedding)
        self.num_channels = backbone.num_channels
        self.channels = backbone.channels
        self.strides = backbone.strides

    def forward(self, samples: NestedTensor) -> tuple[list[NestedTensor], Tensor]:
        """-> (layer1..layer4 features, positional encoding of the last level [B, d, h, w])."""
        features = self[0](samples)
        last = features[-1]
        # Only the last level feeds the transformer, so only its encoding is computed.
        pos = self[1](last.mask).to(last.tensors.dtype)
        return features, pos


def build_backbone(name: str, dilation: bool, frozen_bn: bool, hidden_dim: int, train_backbone: bool = True,
                   width: int = 64) -> Joiner:
    return Joiner(Backbone(name, dilation, frozen_bn, train_backbone, width), PositionEmbeddingSine(hidden_dim // 2))
