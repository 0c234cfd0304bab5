"""MobileNetV2 (alpha 1.0, Keras applications) trunk up to block_10_project_BN, in torch.

Weights come from export-weights.js (the same ImageNet weights Kagami's ONNX converter uses).
Keras conventions reproduced: BN epsilon 1e-3, ReLU6, stride-2 depthwise convs preceded by a
ZeroPadding2D ((0,1),(0,1)) (Keras `correct_pad` for even input sizes), 'same' padding elsewhere.
Input: NCHW float, already normalised as (pixel - 127.5) / 127.5.
"""
import json
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

# (block name, expansion, out channels, stride); block_0 is Keras' "expanded_conv".
BLOCKS = [('expanded_conv', 1, 16, 1), ('block_1', 6, 24, 2), ('block_2', 6, 24, 1), ('block_3', 6, 32, 2),
          ('block_4', 6, 32, 1), ('block_5', 6, 32, 1), ('block_6', 6, 64, 2), ('block_7', 6, 64, 1),
          ('block_8', 6, 64, 1), ('block_9', 6, 64, 1), ('block_10', 6, 96, 1)]


def bn(c):
    return nn.BatchNorm2d(c, eps=1e-3, momentum=0.01)


class Block(nn.Module):
    def __init__(self, name, cin, t, cout, stride):
        super().__init__()
        self.name, self.stride = name, stride
        hid = cin * t
        self.expand = None
        if t != 1:
            self.expand = nn.Sequential(nn.Conv2d(cin, hid, 1, bias=False), bn(hid), nn.ReLU6())
        self.dw = nn.Conv2d(hid, hid, 3, stride, padding=0 if stride == 2 else 1, groups=hid, bias=False)
        self.dw_bn = bn(hid)
        self.project = nn.Sequential(nn.Conv2d(hid, cout, 1, bias=False), bn(cout))
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        y = self.expand(x) if self.expand is not None else x
        if self.stride == 2:
            y = F.pad(y, (0, 1, 0, 1))
        y = F.relu6(self.dw_bn(self.dw(y)))
        y = self.project(y)
        return x + y if self.residual else y


class Trunk(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, 3, 2, padding=0, bias=False)
        self.bn1 = bn(32)
        blocks, cin = [], 32
        for name, t, cout, s in BLOCKS:
            blocks.append(Block(name, cin, t, cout, s))
            cin = cout
        self.blocks = nn.ModuleList(blocks)

    def stem(self, x):
        return F.relu6(self.bn1(self.conv1(F.pad(x, (0, 1, 0, 1)))))

    def forward(self, x, start=0, stop=None):
        """Runs blocks[start:stop]; start=0 includes the stem."""
        if start == 0:
            x = self.stem(x)
        for b in self.blocks[start:stop]:
            x = b(x)
        return x

    def load_keras(self, prefix):
        idx = json.load(open(prefix + '.json'))
        data = np.fromfile(prefix + '.bin', dtype='<f4')
        W = {t['name']: data[t['offset']:t['offset'] + int(np.prod(t['shape']))].reshape(t['shape']) for t in idx['tensors']}

        def conv(m, name, depthwise=False):
            k = W[name + ('/depthwise_kernel' if depthwise else '/kernel')]  # [kh,kw,cin,cout|mult]
            k = k.transpose(2, 3, 0, 1) if depthwise else k.transpose(3, 2, 0, 1)
            assert tuple(k.shape) == tuple(m.weight.shape), (name, k.shape, m.weight.shape)
            m.weight.data.copy_(torch.from_numpy(np.ascontiguousarray(k)))

        def bnl(m, name):
            m.weight.data.copy_(torch.from_numpy(W[name + '/gamma']))
            m.bias.data.copy_(torch.from_numpy(W[name + '/beta']))
            m.running_mean.copy_(torch.from_numpy(W[name + '/moving_mean']))
            m.running_var.copy_(torch.from_numpy(W[name + '/moving_variance']))

        conv(self.conv1, 'Conv1'); bnl(self.bn1, 'bn_Conv1')
        for b in self.blocks:
            n = b.name
            if b.expand is not None:
                conv(b.expand[0], n + '_expand'); bnl(b.expand[1], n + '_expand_BN')
            conv(b.dw, n + '_depthwise', True); bnl(b.dw_bn, n + '_depthwise_BN')
            conv(b.project[0], n + '_project'); bnl(b.project[1], n + '_project_BN')
        return idx['source']


def gem_grid(f, grid=3, p=3.0, eps=1e-6):
    """Kagami's current head: GeM over a grid of cells (floor bounds), concatenated, L2."""
    H, W = f.shape[2], f.shape[3]
    b = lambda n: [(i * n // grid, (i + 1) * n // grid) for i in range(grid)]
    x = f.clamp(min=eps).pow(p)
    cells = [x[:, :, y0:y1, x0:x1].mean(dim=(2, 3)) for (y0, y1) in b(H) for (x0, x1) in b(W)]
    return F.normalize(torch.cat(cells, 1).pow(1.0 / p), dim=1)
