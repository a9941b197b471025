"""Ready-made networks: the conv benchmark's small CNN and the CIFAR-style
ResNets of the loss-landscape paper (Li et al. 2018), as Sequentials."""
import numbers

from .layers import (BatchNorm2d, Conv2d, Dense, Flatten, GlobalAvgPool2d, MaxPool2d, ReLU,
                     Residual, Sequential)

__all__ = ["small_cnn", "resnet"]


def _positive(who, name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{who}: {name} must be a positive int, got {value!r}")
    return int(value)


def small_cnn(in_channels=1, num_classes=10, image_size=28):
    """Conv2d(in, 32, 3, p=1)-ReLU-MaxPool2d(2)-Conv2d(32, 64, 3, p=1)-ReLU-
    MaxPool2d(2)-Flatten-Dense(64 * (image_size // 4)**2, 128)-ReLU-
    Dense(128, num_classes): for 28x28 images, the 3136-128 head."""
    for name, value in (("in_channels", in_channels), ("num_classes", num_classes),
                        ("image_size", image_size)):
        _positive("small_cnn", name, value)
    if image_size < 4:
        raise ValueError(f"small_cnn: image_size must be >= 4 (two 2x2 poolings), got "
                         f"{image_size}")
    side = image_size // 4
    return Sequential(Conv2d(in_channels, 32, 3, padding=1), ReLU(), MaxPool2d(2),
                      Conv2d(32, 64, 3, padding=1), ReLU(), MaxPool2d(2), Flatten(),
                      Dense(64 * side * side, 128), ReLU(), Dense(128, num_classes))


def _basic_block(c_in, c_out, stride, skip):
    """conv3x3-BN-ReLU-conv3x3-BN (+ the shortcut when skip), then ReLU."""
    body = Sequential(Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
                      BatchNorm2d(c_out), ReLU(),
                      Conv2d(c_out, c_out, 3, padding=1, bias=False), BatchNorm2d(c_out))
    if not skip:
        return [body, ReLU()]
    shortcut = None
    if stride != 1 or c_in != c_out:       # a 1x1 projection where the shape changes
        shortcut = Sequential(Conv2d(c_in, c_out, 1, stride=stride, bias=False),
                              BatchNorm2d(c_out))
    return [Residual(body, shortcut), ReLU()]


def resnet(depth, *, skip=True, width=16, in_channels=1, num_classes=10):
    """The CIFAR-style ResNet-(6n+2) of He et al. (2016) as Li et al. (2018)
    draw it: a 3x3 stem (conv-BN-ReLU), three stages of n basic blocks with
    width, 2*width and 4*width channels (stride 2 at the start of the second
    and third), 1x1 projection shortcuts where the shape changes, global
    average pooling and a Dense classifier. ``skip=False`` removes every
    shortcut (the paper's "noshort" nets). depth: 20, 32, 44, 56, 110, ..."""
    depth = _positive("resnet", "depth", depth)
    if (depth - 2) % 6 or depth < 8:
        raise ValueError(f"resnet: depth must be 6n + 2 with n >= 1 (20, 32, 44, 56, 110), "
                         f"got {depth}")
    width = _positive("resnet", "width", width)
    n = (depth - 2) // 6
    layers = [Conv2d(_positive("resnet", "in_channels", in_channels), width, 3, padding=1,
                     bias=False), BatchNorm2d(width), ReLU()]
    c = width
    for stage, c_out in enumerate((width, 2 * width, 4 * width)):
        for block in range(n):
            stride = 2 if stage > 0 and block == 0 else 1
            layers += _basic_block(c, c_out, stride, skip)
            c = c_out
    layers += [GlobalAvgPool2d(), Dense(c, _positive("resnet", "num_classes", num_classes))]
    return Sequential(*layers)
