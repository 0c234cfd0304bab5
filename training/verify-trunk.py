"""Writes 3 test images at 224 px and the torch trunk + GeM 3x3 head's embeddings of them, to be
compared (check-onnx.js) with Kagami's ONNX model mobilenetv2-block10-gem3x3 built by the TS converter."""
import os
import sys
import random

import numpy as np
import torch

import mnv2
import train

out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(train.HERE, 'out')
os.makedirs(out, exist_ok=True)
torch.set_num_threads(1)
chars, bgs = train.load_data(os.path.join(train.HERE, 'data'), ['synthetic', 'freedink'])
rng = random.Random(7)
imgs = [train.view(chars[i]['frames'][0]['img'], rng, bgs, 224) for i in (0, 100, len(chars) - 1)]
from PIL import Image
for i, im in enumerate(imgs):
    Image.fromarray(im).save(os.path.join(out, f'trunk-check-{i}.png'))
trunk = mnv2.Trunk()
trunk.load_keras(os.path.join(train.HERE, 'data', 'mobilenetv2_block10'))
trunk.eval()
with torch.no_grad():
    e = mnv2.gem_grid(trunk(train.to_tensor(imgs)))
e.numpy().astype('<f4').tofile(os.path.join(out, 'trunk-check-torch.bin'))
print('verify-trunk: wrote', e.shape, 'to', out)
