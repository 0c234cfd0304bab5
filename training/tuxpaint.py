"""Reads Tux Paint stamps (tuxpaint-stamps-default, GPL-2): animals, people, cartoon characters and
Halloween figures, one drawing each (painted, cartoon and photo-like styles). Writes the same format
as freedink.py, with a single frame per character: these add instances and styles, not poses.

Look-alike families: the stamps of one folder (e.g. animals/mammals/bovines: cows and bulls,
animals/insects/cartoon), in chunks of up to 6.
"""
import os

import numpy as np
from PIL import Image

ROOT = '/usr/share/tuxpaint/stamps'
FOLDERS = ['animals', 'people', 'town/cartoon', 'seasonal/halloween']
MAX_SIDE = 192
CHUNK = 6


def extract(out_dir):
    chars, count = [], {}
    files = []
    for top in FOLDERS:
        for d, _, fs in os.walk(os.path.join(ROOT, top)):
            files += [os.path.join(d, f) for f in fs if f.endswith('.png')]
    for path in sorted(files):
        rel = os.path.relpath(path, ROOT)
        folder = os.path.dirname(rel)
        try:
            a = np.asarray(Image.open(path).convert('RGBA'))
        except Exception:
            continue
        ys, xs = np.nonzero(a[:, :, 3] > 16)
        if len(ys) < 150 or ys.max() - ys.min() < 12 or xs.max() - xs.min() < 12:
            continue
        im = Image.fromarray(a[ys.min():ys.max() + 1, xs.min():xs.max() + 1], 'RGBA')
        im.thumbnail((MAX_SIDE, MAX_SIDE), Image.LANCZOS)
        n = count[folder] = count.get(folder, 0) + 1
        key = 'tuxpaint.' + rel[:-4].replace('/', '-')
        cd = os.path.join(out_dir, 'chars', key)
        os.makedirs(cd, exist_ok=True)
        im.save(os.path.join(cd, 'stamp-00.png'))
        chars.append({'key': key, 'source': 'tuxpaint', 'family': f"tuxpaint.{folder.replace('/', '-')}{(n - 1) // CHUNK}",
                      'frames': [{'file': os.path.relpath(os.path.join(cd, 'stamp-00.png'), out_dir), 'anim': 'stamp', 'dir': '', 'idx': 0,
                                  'label': f'tuxpaint-stamps-default:{rel}'}]})
    return chars


if __name__ == '__main__':
    import art_index
    art_index.main('tuxpaint', 'tuxpaint-stamps-default (Bill Kendrick and contributors), GPL-2', extract)
