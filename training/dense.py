"""Derives the dense (fully convolutional) form of a committed crop descriptor (manifest `dense`).

The descriptor is trunk -> 1x1 conv -> GeM (ReduceMean of x^p over the whole 8x8 map) -> linear -> L2.
Its dense form runs the same nodes on a frame of any size and replaces the ReduceMean with a RoiAlign
(mode avg, one output bin, 8x8 samples, spatial scale 1/stride) over boxes given as a second input,
so every window of one size in a frame is pooled from one pass of the trunk instead of one pass per
crop. Weights, quantisation and the head are untouched; only the input's spatial dimensions become
symbolic. The product feeds the boxes (onnx-embedder.ts, denseVectors).

usage: python3 training/dense.py models/<id>.onnx models/<id>-dense.onnx [models/<id>.json [UP_TO]]
With a manifest, its `dense` section is (re)written: the file, its sha256, the stride, this recipe,
and UP_TO (the share of the windows that go through the dense form by default: 1 for a model
trained to see past its windows' edges; omitted: none). A manifest with an 8-bit weights variant
(`weights8`, quantise.sh) gets that variant's dense form too, `<its file>-dense.onnx`.
"""
import hashlib
import json
import os
import sys

import onnx
from onnx import TensorProto, helper


def main(src: str, dst: str, stride: int = 16, cells: int = 8) -> None:
    model = onnx.load(src)
    graph = model.graph
    dims = graph.input[0].type.tensor_type.shape.dim
    # 1 x H x W x 3 (NHWC): one frame at a time, any size.
    dims[0].dim_param = 'one'
    for i, name in ((1, 'H'), (2, 'W')):
        dims[i].ClearField('dim_value')
        dims[i].dim_param = name
    del graph.value_info[:]  # shapes inferred for 128x128 no longer hold
    pools = [i for i, n in enumerate(graph.node) if n.op_type == 'ReduceMean']
    if len(pools) != 1:
        raise SystemExit(f'{src}: expected one ReduceMean (the GeM pooling), found {len(pools)}')
    at = pools[0]
    pool = graph.node[at]
    axes = [a for a in pool.attribute if a.name == 'axes']
    if not axes or list(axes[0].ints) != [2, 3]:
        raise SystemExit(f'{src}: the ReduceMean does not pool over H and W')
    x, y = pool.input[0], pool.output[0]
    roi = helper.make_node('RoiAlign', [x, 'rois', 'batch_indices'], [y + '_roi'], mode='avg', output_height=1,
                           output_width=1, sampling_ratio=cells, spatial_scale=1.0 / stride)
    flat = helper.make_node('Flatten', [y + '_roi'], [y], axis=1)
    graph.node.remove(pool)
    graph.node.insert(at, flat)
    graph.node.insert(at, roi)
    graph.input.append(helper.make_tensor_value_info('rois', TensorProto.FLOAT, ['R', 4]))
    graph.input.append(helper.make_tensor_value_info('batch_indices', TensorProto.INT64, ['R']))
    graph.output[0].type.tensor_type.shape.dim[0].dim_param = 'R'
    onnx.checker.check_model(model)
    onnx.save(model, dst)
    print(f'{dst}: RoiAlign (stride {stride}, {cells}x{cells} samples) in place of the global pooling')


def write_manifest(manifest: str, src: str, dst: str, up_to: str | None, stride: int = 16) -> None:
    """Puts the dense form's section into the crop model's manifest, right after `usage`."""
    m = json.load(open(manifest))
    if os.path.dirname(os.path.abspath(dst)) != os.path.dirname(os.path.abspath(manifest)):
        raise SystemExit(f'{dst}: the dense form goes beside its manifest {manifest}')
    recipe = f'python3 training/dense.py {src} {dst} {manifest}' + (f' {up_to}' if up_to is not None else '')
    dense = {'file': os.path.basename(dst), 'sha256': hashlib.sha256(open(dst, 'rb').read()).hexdigest(), 'stride': stride, 'recipe': recipe}
    if up_to is not None:
        dense['upTo'] = float(up_to) if '.' in up_to else int(up_to)
    if 'weights8' in m:
        # The 8-bit weights variant (quantise.sh) gets its own dense form, derived the same way.
        w8 = os.path.join(os.path.dirname(os.path.abspath(manifest)), m['weights8']['file'])
        w8_dense = w8[:-len('.onnx')] + '-dense.onnx'
        main(w8, w8_dense, stride)
        m['weights8']['dense'] = {'file': os.path.basename(w8_dense), 'sha256': hashlib.sha256(open(w8_dense, 'rb').read()).hexdigest()}
    out = {}
    for k, v in m.items():
        if k != 'dense':
            out[k] = v
        if k == 'usage':
            out['dense'] = dense
    if 'dense' not in out:
        out['dense'] = dense
    with open(manifest, 'w') as f:
        f.write(json.dumps(out, indent=2, ensure_ascii=False) + '\n')
    print(f'{manifest}: dense section written (sha256 {dense["sha256"]})')


if __name__ == '__main__':
    if len(sys.argv) not in (3, 4, 5):
        raise SystemExit('usage: python3 training/dense.py SRC.onnx DST.onnx [MANIFEST.json [UP_TO]]')
    main(sys.argv[1], sys.argv[2])
    if len(sys.argv) >= 4:
        write_manifest(sys.argv[3], sys.argv[1], sys.argv[2], sys.argv[4] if len(sys.argv) == 5 else None)
