"""Averages the weights of two float descriptors of one lineage (the same graph, one fine-tuned
from the other): `python3 training/soup.py A.onnx B.onnx OUT.onnx [t]` writes (1 - t) * A + t * B
(t = 0.5 by default), initializer by initializer (weight-space ensembling of a fine-tune with its
starting point, as in WiSE-FT / model soups). The graphs must match node for node."""
import sys

import numpy as np
import onnx
from onnx import numpy_helper


def main(a_path, b_path, out_path, t=0.5):
    a, b = onnx.load(a_path), onnx.load(b_path)
    if [n.op_type for n in a.graph.node] != [n.op_type for n in b.graph.node]:
        raise SystemExit('the two graphs differ')
    wb = {i.name: numpy_helper.to_array(i) for i in b.graph.initializer}
    if set(wb) != {i.name for i in a.graph.initializer}:
        raise SystemExit('the two graphs have different initializers')
    for i, init in enumerate(a.graph.initializer):
        x = numpy_helper.to_array(init)
        y = wb[init.name]
        if x.dtype.kind == 'f':
            x = ((1 - t) * x.astype(np.float64) + t * y.astype(np.float64)).astype(x.dtype)
        elif not np.array_equal(x, y):
            raise SystemExit(f'{init.name}: non-float initializers differ')
        a.graph.initializer[i].CopyFrom(numpy_helper.from_array(x, init.name))
    onnx.save(a, out_path)
    print(f'soup: {out_path} = {1 - t:g} x {a_path} + {t:g} x {b_path}')


if __name__ == '__main__':
    main(sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]) if len(sys.argv) > 4 else 0.5)
