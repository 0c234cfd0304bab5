#!/usr/bin/env python3
"""Static int8 QDQ quantisation of Kagami's crop descriptor (python3-onnx + numpy only).

Two steps around a calibration run in node (training/calibrate-int8.js, onnxruntime-node), and
the float simplification on its own:

  quantise.py simplify FP32.onnx OUT.onnx
      Only the simplification of `prepare` (below): the same outputs, bit for bit on this
      onnxruntime, about 1.5-2x faster on CPU (onnxruntime reorders memory around a separate Pad).
      training/run.sh applies it to the descriptors it exports.

  quantise.py prepare  FP32.onnx PREPPED.onnx CALIB.onnx TENSORS.json
      Simplifies the float graph without changing what it computes: the ZeroPadding2D Pads before
      stride-2 convolutions (exported by torch as a constant-foldable Pad) become the Conv's own
      `pads`, and Relu followed by Clip(0, 6) becomes the Clip. Lists the activations to quantise:
      every input of a Conv or Add and every output of one (for a Conv followed by Clip(0, 6): the
      Clip's output). CALIB.onnx is PREPPED.onnx with those tensors as extra outputs.

  quantise.py write    PREPPED.onnx TENSORS.json RANGES.json INT8.onnx [WEIGHT_BITS]
      Inserts QuantizeLinear/DequantizeLinear pairs: activations uint8, asymmetric, from the
      calibrated [lo, hi] (widened to hold 0); Conv weights int8, symmetric, per output channel,
      in [-63, 63] (WEIGHT_BITS 7, the default) or [-127, 127] (8); Conv biases int32 at scale
      input_scale * weight_scale. Why 7 bits: on x86 CPUs without VNNI, onnxruntime's u8 x s8
      kernels multiply with VPMADDUBSW, which adds two u8*s8 products into an int16 and saturates;
      with 8-bit weights the sum of two 255 * 127 products overflows, with 7-bit ones it cannot
      (255 * 63 * 2 < 32767). Same reason as onnxruntime's own `reduce_range` option. onnxruntime's graph
      optimiser fuses DQ -> Conv (-> Clip) -> Q into QLinearConv and DQ -> Add -> Q into QLinearAdd.
      The head after the last Conv (GeM pooling, the 512 -> 256 Gemm, L2) stays float.
"""
import json
import sys

import numpy as np
import onnx
from onnx import helper, numpy_helper, TensorProto

FOLDABLE = {'ConstantOfShape', 'Concat', 'Reshape', 'Slice', 'Transpose', 'Cast', 'Constant'}


def const_value(node):
    for a in node.attribute:
        if a.name == 'value':
            return numpy_helper.to_array(a.t)
    raise ValueError(f'Constant {node.name} without a tensor value')


def fold_constants(graph):
    """Values of the constant-only subgraphs (initializers, Constant nodes and the shape arithmetic)."""
    known = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    for n in graph.node:
        if n.op_type not in FOLDABLE or not all(i == '' or i in known for i in n.input):
            continue
        x = [known[i] if i else None for i in n.input]
        if n.op_type == 'Constant':
            v = const_value(n)
        elif n.op_type == 'ConstantOfShape':
            attr = {a.name: a for a in n.attribute}
            fill = numpy_helper.to_array(attr['value'].t) if 'value' in attr else np.zeros(1, np.float32)
            v = np.full(tuple(int(d) for d in x[0]), fill.reshape(-1)[0], dtype=fill.dtype)
        elif n.op_type == 'Concat':
            axis = helper.get_attribute_value(n.attribute[0])
            v = np.concatenate(x, axis=axis)
        elif n.op_type == 'Reshape':
            shape = [int(d) for d in x[1]]
            shape = [x[0].shape[i] if d == 0 else d for i, d in enumerate(shape)]
            v = x[0].reshape(shape)
        elif n.op_type == 'Slice':
            data, starts, ends = x[0], x[1], x[2]
            axes = x[3] if len(x) > 3 and x[3] is not None else np.arange(len(starts))
            steps = x[4] if len(x) > 4 and x[4] is not None else np.ones(len(starts), np.int64)
            idx = [slice(None)] * data.ndim
            for s, e, a, st in zip(starts, ends, axes, steps):
                idx[int(a)] = slice(int(s), int(e), int(st))
            v = data[tuple(idx)]
        elif n.op_type == 'Transpose':
            perm = [a for a in n.attribute if a.name == 'perm']
            v = np.transpose(x[0], helper.get_attribute_value(perm[0]) if perm else None)
        elif n.op_type == 'Cast':
            to = helper.get_attribute_value(n.attribute[0])
            v = x[0].astype(onnx.mapping.TENSOR_TYPE_TO_NP_TYPE[to])
        known[n.output[0]] = v
    return known


def consumers(graph):
    c = {}
    for n in graph.node:
        for i in n.input:
            c.setdefault(i, []).append(n)
    return c


def attr(node, name, default=None):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def set_attr(node, name, value):
    for a in list(node.attribute):
        if a.name == name:
            node.attribute.remove(a)
    node.attribute.append(helper.make_attribute(name, value))


def prune(graph):
    """Drops nodes and initializers that no graph output depends on."""
    needed = {o.name for o in graph.output}
    keep = []
    for n in reversed(graph.node):
        if any(o in needed for o in n.output):
            keep.append(n)
            needed.update(i for i in n.input if i)
    keep.reverse()
    del graph.node[:]
    graph.node.extend(keep)
    inits = [i for i in graph.initializer if i.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(inits)


def is_relu6(node, known):
    if node.op_type != 'Clip' or len(node.input) < 3 or not node.input[1] or not node.input[2]:
        return False
    lo, hi = known.get(node.input[1]), known.get(node.input[2])
    return lo is not None and hi is not None and float(lo) == 0.0 and float(hi) == 6.0


def simplify(model):
    g = model.graph
    known = fold_constants(g)
    cons = consumers(g)
    removed = set()
    for n in g.node:
        if n.op_type == 'Pad':
            pads = known.get(n.input[1])
            value = known.get(n.input[2]) if len(n.input) > 2 and n.input[2] else np.zeros(1)
            users = cons.get(n.output[0], [])
            mode = attr(n, 'mode', b'constant')
            if pads is None or mode not in (b'constant', 'constant') or float(np.asarray(value).reshape(-1)[0]) != 0.0:
                raise SystemExit(f'Pad {n.name}: not a constant zero pad')
            if len(users) != 1 or users[0].op_type != 'Conv' or attr(users[0], 'auto_pad', b'NOTSET') not in (b'NOTSET', 'NOTSET'):
                raise SystemExit(f'Pad {n.name}: not followed by exactly one Conv')
            p = [int(v) for v in pads]
            if p[0] or p[1] or p[4] or p[5]:
                raise SystemExit(f'Pad {n.name}: pads the batch or channel axis')
            conv = users[0]
            cp = attr(conv, 'pads', [0, 0, 0, 0])
            set_attr(conv, 'pads', [cp[0] + p[2], cp[1] + p[3], cp[2] + p[6], cp[3] + p[7]])
            conv.input[0] = n.input[0]
            removed.add(id(n))
        elif n.op_type == 'Relu':
            users = cons.get(n.output[0], [])
            if len(users) == 1 and is_relu6(users[0], known):
                users[0].input[0] = n.input[0]  # clip(relu(x), 0, 6) == clip(x, 0, 6)
                removed.add(id(n))
    keep = [n for n in g.node if id(n) not in removed]
    del g.node[:]
    g.node.extend(keep)
    prune(g)
    # Constant nodes whose values are now only the Clip bounds stay; everything else is gone.
    return known


def activations_to_quantise(model, known):
    """Conv/Add inputs and outputs (a Conv's output after its Clip(0, 6)), in graph order."""
    g = model.graph
    inits = {i.name for i in g.initializer}
    cons = consumers(g)
    out = []

    def add(t):
        if t and t not in inits and t not in known and t not in out:
            out.append(t)

    for n in g.node:
        if n.op_type == 'Conv':
            add(n.input[0])
            users = cons.get(n.output[0], [])
            if len(users) == 1 and is_relu6(users[0], known):
                add(users[0].output[0])
            else:
                add(n.output[0])
        elif n.op_type == 'Add':
            for i in n.input:
                add(i)
            add(n.output[0])
    return out


def cmd_simplify(src, dst):
    model = onnx.load(src)
    simplify(model)
    onnx.checker.check_model(model)
    onnx.save(model, dst)
    print(f'simplify: {src} -> {dst}')


def cmd_prepare(src, prepped, calib, tensors_json):
    model = onnx.load(src)
    known = simplify(model)
    onnx.checker.check_model(model)
    tensors = activations_to_quantise(model, known)
    onnx.save(model, prepped)
    cm = onnx.ModelProto()
    cm.CopyFrom(model)
    for t in tensors:
        cm.graph.output.append(helper.make_tensor_value_info(t, TensorProto.FLOAT, None))
    onnx.save(cm, calib)
    relu6 = [n.output[0] for n in model.graph.node if is_relu6(n, known)]
    # The model input (after its NHWC -> NCHW Transpose) has a known range: keep all of it.
    inputs = {i.name for i in model.graph.input}
    direct = [n.output[0] for n in model.graph.node if n.op_type == 'Transpose' and n.input[0] in inputs]
    with open(tensors_json, 'w') as f:
        json.dump({'tensors': tensors, 'relu6': [t for t in tensors if t in relu6], 'input': [t for t in tensors if t in direct]}, f, indent=1)
    ops = {}
    for n in model.graph.node:
        ops[n.op_type] = ops.get(n.op_type, 0) + 1
    print(f'prepare: {len(tensors)} activations to quantise; float graph now {ops}')


def act_params(lo, hi):
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    if hi - lo < 1e-8:
        hi = lo + 1e-8
    scale = (hi - lo) / 255.0
    zp = int(np.clip(round(-lo / scale), 0, 255))
    return np.float32(scale), np.uint8(zp)


def cmd_write(prepped, tensors_json, ranges_json, dst, weight_bits='7'):
    qmax = 2 ** (int(weight_bits) - 1) - 1
    assert qmax in (63, 127), 'WEIGHT_BITS is 7 or 8'
    model = onnx.load(prepped)
    g = model.graph
    tensors = json.load(open(tensors_json))['tensors']
    ranges = json.load(open(ranges_json))['ranges']
    inits = {i.name: i for i in g.initializer}
    new_inits, new_nodes = [], []
    qparams = {}
    for t in tensors:
        lo, hi = ranges[t]
        s, zp = act_params(lo, hi)
        qparams[t] = float(s)
        new_inits += [numpy_helper.from_array(np.array(s, np.float32), t + '_scale'),
                      numpy_helper.from_array(np.array(zp, np.uint8), t + '_zp')]
    # Rewire every consumer of a quantised tensor to its DequantizeLinear output.
    for n in g.node:
        for k, i in enumerate(n.input):
            if i in qparams:
                n.input[k] = i + '_dq'
    for t in tensors:
        new_nodes.append((t, [
            helper.make_node('QuantizeLinear', [t, t + '_scale', t + '_zp'], [t + '_q'], name=t + '_Q'),
            helper.make_node('DequantizeLinear', [t + '_q', t + '_scale', t + '_zp'], [t + '_dq'], name=t + '_DQ'),
        ]))
    # Conv weights (per output channel, symmetric, WEIGHT_BITS bits in an int8) and biases (int32).
    for n in g.node:
        if n.op_type != 'Conv':
            continue
        x = n.input[0][:-3] if n.input[0].endswith('_dq') else None
        if x not in qparams:
            raise SystemExit(f'Conv {n.name}: input is not quantised')
        w = numpy_helper.to_array(inits[n.input[1]]).astype(np.float32)
        amax = np.abs(w.reshape(w.shape[0], -1)).max(axis=1).astype(np.float64)
        ws = amax / qmax
        if len(n.input) > 2 and n.input[2]:
            # A channel whose weights are all zero (or tiny) still has its bias: keep that in int32.
            b = np.abs(numpy_helper.to_array(inits[n.input[2]]).astype(np.float64))
            ws = np.maximum(ws, b / (qparams[x] * 2.0 ** 30))
        ws = np.maximum(ws, 1e-12).astype(np.float32)
        wq = np.clip(np.round(w / ws.reshape(-1, 1, 1, 1)), -qmax, qmax).astype(np.int8)
        wn = n.input[1]
        new_inits += [numpy_helper.from_array(wq, wn + '_q'), numpy_helper.from_array(ws, wn + '_scale'),
                      numpy_helper.from_array(np.zeros(len(ws), np.int8), wn + '_zp')]
        dq = [helper.make_node('DequantizeLinear', [wn + '_q', wn + '_scale', wn + '_zp'], [wn + '_dq'], name=wn + '_DQ', axis=0)]
        n.input[1] = wn + '_dq'
        if len(n.input) > 2 and n.input[2]:
            bn = n.input[2]
            b = numpy_helper.to_array(inits[bn]).astype(np.float64)
            bs = (qparams[x] * ws.astype(np.float64)).astype(np.float32)
            bq = np.round(b / bs).astype(np.int32)
            new_inits += [numpy_helper.from_array(bq, bn + '_q'), numpy_helper.from_array(bs, bn + '_scale'),
                          numpy_helper.from_array(np.zeros(len(bs), np.int32), bn + '_zp')]
            dq.append(helper.make_node('DequantizeLinear', [bn + '_q', bn + '_scale', bn + '_zp'], [bn + '_dq'], name=bn + '_DQ', axis=0))
            n.input[2] = bn + '_dq'
        new_nodes.append((None, dq))
    # Insert each Q/DQ pair right after the node producing its tensor (graph inputs: at the start),
    # and the weight DQs at the start, so the node list stays topologically sorted.
    producer = {o: k for k, n in enumerate(g.node) for o in n.output}
    after = {}
    for t, nodes in new_nodes:
        after.setdefault(producer.get(t, -1) if t else -1, []).extend(nodes)
    ordered = list(after.get(-1, []))
    for k, n in enumerate(g.node):
        ordered.append(n)
        ordered += after.get(k, [])
    del g.node[:]
    g.node.extend(ordered)
    g.initializer.extend(new_inits)
    prune(g)
    model.producer_name = 'kagami training/quantise.py'
    model.producer_version = '1'
    onnx.checker.check_model(model)
    onnx.save(model, dst)
    counts = {}
    for n in g.node:
        counts[n.op_type] = counts.get(n.op_type, 0) + 1
    print(f'write: {dst}: {counts}')


if __name__ == '__main__':
    if len(sys.argv) == 4 and sys.argv[1] == 'simplify':
        cmd_simplify(*sys.argv[2:])
    elif len(sys.argv) == 6 and sys.argv[1] == 'prepare':
        cmd_prepare(*sys.argv[2:])
    elif len(sys.argv) in (6, 7) and sys.argv[1] == 'write':
        cmd_write(*sys.argv[2:])
    else:
        print(__doc__)
        sys.exit(2)
