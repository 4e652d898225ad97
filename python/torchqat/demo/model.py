"""The demo's network: a small ResNet-like CNN for 28x28 grey images (about 0.3M parameters).

It is written with plain torch.nn modules; the residual sum is an `Add` module (not `x + y` in
forward) so that quantization can swap it for torchqat's QuantAdd, which gives both summands one
shared quantizer, the placement TensorRT needs to fuse the add into the convolution.
"""
from torch import nn

__all__ = ["Add", "BasicBlock", "FashionResNet", "count_parameters"]


class Add(nn.Module):
    """x + y as a module (a float placeholder for torchqat.nn.QuantAdd)."""

    def forward(self, x, y):
        return x + y


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN, plus the shortcut (1x1 conv-BN when the shape changes), then ReLU."""

    def __init__(self, cin, cout, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        else:
            self.downsample = nn.Identity()
        self.add = Add()
        self.relu2 = nn.ReLU(inplace=True)

    def forward(self, x):
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(self.add(out, self.downsample(x)))


class FashionResNet(nn.Module):
    """stem (conv 1->w, max-pool to 14x14), three residual stages (w@14, 2w@7, 4w@4), avg-pool, linear."""

    def __init__(self, width=32, num_classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(1, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(2)
        self.layer1 = BasicBlock(width, width, 1)
        self.layer2 = BasicBlock(width, 2 * width, 2)
        self.layer3 = BasicBlock(2 * width, 4 * width, 2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.fc = nn.Linear(4 * width, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        for m in self.modules():
            if isinstance(m, BasicBlock):  # zero-init the last BN of each block: the block starts as identity
                nn.init.zeros_(m.bn2.weight)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(self.flatten(self.avgpool(x)))


def count_parameters(model):
    return sum(p.numel() for p in model.parameters())
