"""The command line shared by the art extractors (freedink.py, widelands.py, tuxpaint.py, freeciv.py,
crossfire.py):
`python3 training/<source>.py [OUT]` extracts into OUT (default training/data), writes OUT/<source>.json
(the licence and the characters) and prints a summary, one line per character."""
import json
import os
import sys

import numpy as np
from PIL import Image


def trimmed(a):
    """An RGBA sprite cut to its opaque pixels (alpha > 16), or None if too little of it is opaque."""
    ys, xs = np.nonzero(a[:, :, 3] > 16)
    if len(ys) < 40 or ys.max() - ys.min() < 6 or xs.max() - xs.min() < 6:
        return None
    return a[ys.min():ys.max() + 1, xs.min():xs.max() + 1]


def add_frame(frames, seen, rgba, out_dir, key, fname, **meta):
    """Trims an RGBA sprite and, unless it is too small or repeats a frame already in `seen` byte for
    byte, saves it as OUT/chars/<key>/<fname> and appends its entry (file + meta) to `frames`."""
    a = trimmed(rgba)
    if a is None or a.tobytes() in seen:
        return
    seen.add(a.tobytes())
    cd = os.path.join(out_dir, 'chars', key)
    os.makedirs(cd, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(a), 'RGBA').save(os.path.join(cd, fname))
    frames.append({'file': os.path.relpath(os.path.join(cd, fname), out_dir), **meta})


def main(source, licence, extract):
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(os.path.abspath(__file__)), 'data')
    chars = extract(out)
    with open(os.path.join(out, source + '.json'), 'w') as f:
        json.dump({'licence': licence, 'characters': chars}, f, indent=1)
    print(f'{source}:', len(chars), 'characters,', sum(len(c['frames']) for c in chars), 'frames,',
          len({c['family'] for c in chars}), 'families')
    for c in chars:
        print(' ', c['key'], c['family'], len(c['frames']), sorted({f['anim'] + str(f['dir']) for f in c['frames']}))
