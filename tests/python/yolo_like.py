"""A small YOLOv7-like detector, written from scratch for the tests (no code from GPL projects).

It has the pieces that make Q/DQ placement hard, following the published architecture:
- ConvBNAct: Conv2d(bias=False) + BatchNorm2d + SiLU;
- ELAN blocks: two 1x1 convs on the input, a chain of 3x3 convs, and a concat of the chain's
  intermediate outputs (4 inputs in the backbone, 6 in the head), then a 1x1 conv;
- MP downsample: a MaxPool(2) -> 1x1 conv branch next to a 1x1 -> 3x3/s2 conv branch that reads
  the same tensor, concatenated (in the head also with a lateral feature map);
- SPPCSPC: MaxPools 5/9/13 (stride 1) of one tensor concatenated with that tensor;
- nearest 2x upsample + concat with a lateral 1x1 conv;
- a residual Bottleneck (x + cv2(cv1(x))) using an Add module, so a custom map can make it a QuantAdd;
- a detect head of three 1x1 convs whose outputs are reshaped to (bs, anchors, ny, nx, 5 + classes)
  and, in eval mode unless `export` is set, decoded with a grid it caches and rebuilds when the
  feature map's size differs (a branch on tensor shapes, as YOLOv7's IDetect has);
- the top level runs its layers from a route table with `from` indices and saved outputs, as
  YOLOv7's Model does, after checking the input size (an `if` on a tensor shape).
The shape branches are Python control flow torch.fx cannot trace; a recorded run can.
"""
import torch
from torch import nn


class ConvBNAct(nn.Module):
    def __init__(self, c1, c2, k=1, s=1):
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, k, s, k // 2, bias=False)
        self.bn = nn.BatchNorm2d(c2)
        self.act = nn.SiLU()

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))


class Concat(nn.Module):
    def __init__(self, d=1):
        super().__init__()
        self.d = d

    def forward(self, xs):
        return torch.cat(xs, self.d)


class Add(nn.Module):
    def forward(self, x, y):
        return x + y


class Bottleneck(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.cv1 = ConvBNAct(c, c, 1)
        self.cv2 = ConvBNAct(c, c, 3)
        self.add = Add()

    def forward(self, x):
        return self.add(x, self.cv2(self.cv1(x)))


class ELAN(nn.Module):
    """Backbone ELAN (concat of 4: last, third, the second 1x1, the first 1x1); head=True concats all 6."""

    def __init__(self, c1, c2, c_, head=False):
        super().__init__()
        self.head = head
        c3 = c_ // 2 if head else c_
        self.cv1 = ConvBNAct(c1, c_, 1)
        self.cv2 = ConvBNAct(c1, c_, 1)
        self.cv3 = ConvBNAct(c_, c3, 3)
        self.cv4 = ConvBNAct(c3, c3, 3)
        self.cv5 = ConvBNAct(c3, c3, 3)
        self.cv6 = ConvBNAct(c3, c3, 3)
        self.cat = Concat(1)
        cin = 2 * c_ + 4 * c3 if head else 2 * c_ + 2 * c3
        self.out = ConvBNAct(cin, c2, 1)

    def forward(self, x):
        a = self.cv1(x)
        b = self.cv2(x)
        x3 = self.cv3(b)
        x4 = self.cv4(x3)
        x5 = self.cv5(x4)
        x6 = self.cv6(x5)
        parts = [x6, x5, x4, x3, b, a] if self.head else [x6, x4, b, a]
        return self.out(self.cat(parts))


class MPDown(nn.Module):
    """MaxPool branch + strided conv branch on the same input, concatenated (plus `skip` in the head)."""

    def __init__(self, c1, c_):
        super().__init__()
        self.mp = nn.MaxPool2d(2, 2)
        self.cv1 = ConvBNAct(c1, c_, 1)
        self.cv2 = ConvBNAct(c1, c_, 1)
        self.cv3 = ConvBNAct(c_, c_, 3, 2)
        self.cat = Concat(1)

    def forward(self, x, skip=None):
        b1 = self.cv1(self.mp(x))
        b2 = self.cv3(self.cv2(x))
        return self.cat([b2, b1] if skip is None else [b2, b1, skip])


class SPPCSPC(nn.Module):
    def __init__(self, c1, c2, c_):
        super().__init__()
        self.cv1 = ConvBNAct(c1, c_, 1)
        self.cv2 = ConvBNAct(c1, c_, 1)
        self.cv3 = ConvBNAct(c_, c_, 3)
        self.cv4 = ConvBNAct(c_, c_, 1)
        self.m = nn.ModuleList(nn.MaxPool2d(k, 1, k // 2) for k in (5, 9, 13))
        self.cv5 = ConvBNAct(4 * c_, c_, 1)
        self.cv6 = ConvBNAct(c_, c_, 3)
        self.cv7 = ConvBNAct(2 * c_, c2, 1)

    def forward(self, x):
        x1 = self.cv4(self.cv3(self.cv1(x)))
        y1 = self.cv6(self.cv5(torch.cat([x1] + [m(x1) for m in self.m], 1)))
        y2 = self.cv2(x)
        return self.cv7(torch.cat((y1, y2), dim=1))


class Detect(nn.Module):
    export = False  # as YOLOv7's IDetect: raw maps for export

    def __init__(self, ch, nc=3, na=3, strides=(8, 16, 32)):
        super().__init__()
        self.na, self.no = na, nc + 5
        self.strides = strides
        self.m = nn.ModuleList(nn.Conv2d(c, na * self.no, 1) for c in ch)
        self.grid = [torch.zeros(1)] * len(ch)

    def forward(self, xs):
        out = []
        for i, conv in enumerate(self.m):
            y = conv(xs[i])
            bs, _, ny, nx = y.shape
            y = y.view(bs, self.na, self.no, ny, nx).permute(0, 1, 3, 4, 2).contiguous()
            if not self.training and not self.export:
                if self.grid[i].shape[2:4] != y.shape[2:4]:
                    yv, xv = torch.meshgrid(torch.arange(ny), torch.arange(nx), indexing="ij")
                    self.grid[i] = torch.stack((xv, yv), 2).view(1, 1, ny, nx, 2).float()
                xy = (y[..., :2].sigmoid() * 2 - 0.5 + self.grid[i]) * self.strides[i]
                y = torch.cat((xy, y[..., 2:]), -1)
            out.append(y)
        return out


class Backbone(nn.Module):
    def __init__(self, w=8):
        super().__init__()
        self.stem = nn.Sequential(ConvBNAct(3, w, 3), ConvBNAct(w, 2 * w, 3, 2))
        self.res = Bottleneck(2 * w)
        self.down2 = ConvBNAct(2 * w, 4 * w, 3, 2)
        self.elan2 = ELAN(4 * w, 4 * w, w)
        self.mp3 = MPDown(4 * w, 2 * w)
        self.elan3 = ELAN(4 * w, 8 * w, 2 * w)
        self.mp4 = MPDown(8 * w, 4 * w)
        self.elan4 = ELAN(8 * w, 8 * w, 2 * w)
        self.mp5 = MPDown(8 * w, 4 * w)
        self.elan5 = ELAN(8 * w, 8 * w, 2 * w)

    def forward(self, x):
        x = self.elan2(self.down2(self.res(self.stem(x))))
        p3 = self.elan3(self.mp3(x))
        p4 = self.elan4(self.mp4(p3))
        p5 = self.elan5(self.mp5(p4))
        return p3, p4, p5


class YoloLike(nn.Module):
    """Input (N, 3, H, W) with H, W multiples of 32; returns 3 detect maps (N, 3, H/s, W/s, 5 + nc)."""

    def __init__(self, w=8, nc=3):
        super().__init__()
        self.backbone = Backbone(w)
        self.sppcspc = SPPCSPC(8 * w, 4 * w, 2 * w)
        self.lat5 = ConvBNAct(4 * w, 2 * w, 1)
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.route4 = ConvBNAct(8 * w, 2 * w, 1)
        self.cat4 = Concat(1)
        self.elan_h4 = ELAN(4 * w, 2 * w, 2 * w, head=True)
        self.lat4 = ConvBNAct(2 * w, w, 1)
        self.route3 = ConvBNAct(8 * w, w, 1)
        self.cat3 = Concat(1)
        self.elan_h3 = ELAN(2 * w, w, w, head=True)
        self.mp_h4 = MPDown(w, w)
        self.elan_n4 = ELAN(4 * w, 2 * w, 2 * w, head=True)
        self.mp_h5 = MPDown(2 * w, 2 * w)
        self.elan_n5 = ELAN(8 * w, 4 * w, 2 * w, head=True)
        self.out3 = ConvBNAct(w, 2 * w, 3)
        self.out4 = ConvBNAct(2 * w, 4 * w, 3)
        self.out5 = ConvBNAct(4 * w, 8 * w, 3)
        self.detect = Detect((2 * w, 4 * w, 8 * w), nc)

    # (layer, from): outputs 0-2 are the backbone's p3, p4, p5; an int reads that output, a list passes
    # the outputs as one list argument, a tuple as several arguments (YOLOv7's Model uses `from` indices).
    ROUTES = (("sppcspc", 2), ("lat5", 3), ("up", 4), ("route4", 1), ("cat4", [6, 5]), ("elan_h4", 7),
              ("lat4", 8), ("up", 9), ("route3", 0), ("cat3", [11, 10]), ("elan_h3", 12), ("mp_h4", (13, 8)),
              ("elan_n4", 14), ("mp_h5", (15, 3)), ("elan_n5", 16), ("out3", 13), ("out4", 15), ("out5", 17),
              ("detect", [18, 19, 20]))

    def forward(self, x):
        if x.shape[-1] % 32 or x.shape[-2] % 32:
            raise ValueError(f"YoloLike: input height and width must be multiples of 32, got {tuple(x.shape)}")
        y = list(self.backbone(x))
        for name, f in self.ROUTES:
            m = getattr(self, name)
            if isinstance(f, int):
                out = m(y[f])
            elif isinstance(f, list):
                out = m([y[j] for j in f])
            else:
                out = m(*[y[j] for j in f])
            y.append(out)
        return y[-1]


def randomize_bn(model, seed=0):
    """Non-trivial BatchNorm statistics and affine parameters (drawn from seed); the model in eval mode."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return model.eval()


def make_model(w=8, nc=3, seed=0):
    """A YoloLike in eval mode with random weights and non-trivial BatchNorm statistics."""
    return randomize_bn(YoloLike(w, nc), seed)
