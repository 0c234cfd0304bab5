"""Reads Naev's ship graphics (naev-data, GPL-3+ per its copyright file): renders of 3D models, each
ship drawn twice over. `gfx/ship/<dir>/<ship>.png` is a sheet of the ship seen from above at sx × sy
(8 × 8 unless the ship's XML says `<GFX sx=.. sy=..>`) headings, in-game size; `<ship>_comm.png` is
a larger render of the same model from a three-quarter view, as the communication window shows it.
A character is one ship; its frames are 8 headings spread over the sheet (`anim` space, `dir` the
heading's index) and the comm render (`anim` comm): a model seen from another side and drawn at
another scale, as a character redrawn in a generated clip. The factions' repaints
(`<ship>_empire`, `_pirate`, `_dvaered`: the same model recoloured) are left out, as the
training would otherwise learn to tell a recolour from its character. Look-alike families: ships in
alphabetical chunks of 6 (one maker's hulls share a look, their names do not group them).

The package is not installed (it is the data of a game): `apt-get download naev-data` and
`dpkg-deb -x` it into a folder, given as NAEV_ROOT (run.sh does this).
"""
import os
import re

import numpy as np
from PIL import Image

from art_index import add_frame

ROOT = os.environ.get('NAEV_ROOT', '/usr/share/naev')
CHUNK = 6
HEADINGS = 8
REPAINTS = ('_empire', '_pirate', '_dvaered')


def sheet_grid():
    """{sheet name: (sx, sy)} from the ships' XML files (8 x 8 where not given)."""
    grid = {}
    ships = os.path.join(ROOT, 'dat', 'ships')
    for f in sorted(os.listdir(ships)):
        if not f.endswith('.xml'):
            continue
        with open(os.path.join(ships, f), encoding='utf-8') as x:
            for m in re.finditer(r'<GFX([^>]*)>\s*([^<\s]+)\s*</GFX>', x.read()):
                sx = re.search(r'sx="(\d+)"', m.group(1))
                sy = re.search(r'sy="(\d+)"', m.group(1))
                grid[m.group(2)] = (int(sx.group(1)) if sx else 8, int(sy.group(1)) if sy else 8)
    return grid


def extract(out_dir):
    base = os.path.join(ROOT, 'dat', 'gfx', 'ship')
    grid = sheet_grid()
    chars = []
    for d in sorted(os.listdir(base)):
        if not os.path.isdir(os.path.join(base, d)):
            continue
        for f in sorted(os.listdir(os.path.join(base, d))):
            name = f[:-4]
            if not f.endswith('.png') or name.endswith(('_comm', '_engine')) or name.endswith(REPAINTS) or name not in grid:
                continue
            comm = os.path.join(base, d, name + '_comm.png')
            if not os.path.exists(comm):
                continue
            key = f'naev.{name}'
            frames, seen = [], set()
            add_frame(frames, seen, np.asarray(Image.open(comm).convert('RGBA')), out_dir, key, 'comm.png',
                      anim='comm', dir=0, idx=0, label=f'naev-data:{os.path.relpath(comm, ROOT)}')
            sheet = np.asarray(Image.open(os.path.join(base, d, f)).convert('RGBA'))
            sx, sy = grid[name]
            cw, ch = sheet.shape[1] // sx, sheet.shape[0] // sy
            for k in range(HEADINGS):
                i = round(k * sx * sy / HEADINGS)
                r, c = divmod(i, sx)
                add_frame(frames, seen, sheet[r * ch:(r + 1) * ch, c * cw:(c + 1) * cw], out_dir, key, f'space-{k}.png',
                          anim='space', dir=k, idx=0, label=f'naev-data:{os.path.relpath(os.path.join(base, d, f), ROOT)}#{i}')
            if len(frames) < 2:
                continue
            chars.append({'key': key, 'source': 'naev', 'frames': frames})
    for n, c in enumerate(chars):
        c['family'] = f'naev.ships{n // CHUNK}'
    return chars


if __name__ == '__main__':
    import art_index
    art_index.main('naev', 'naev-data ship graphics (the Naev developers), GPL-3+', extract)
