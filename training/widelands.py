"""Reads Widelands unit animations (widelands-data, GPL-2+): tribe workers, wild animals ("critters")
and ships, each a spritesheet per animation (and per direction for walk/sail) described in the
unit's init.lua (frames, rows, columns). Writes the same format as freedink.py.

Look-alike families: the workers of one tribe share a body and differ by tool and clothes, so they
are grouped in families of up to 6 (alphabetical chunks per tribe); the animals in chunks of 6; the
ships of all tribes form one family.
"""
import glob
import os
import re

import numpy as np
from PIL import Image

ROOT = '/usr/share/games/widelands/data'
MAX_FRAMES = 24   # per character: every direction, a few frames each
CHUNK = 6


def spritesheets(lua):
    """{anim: (frames, rows, columns, directional)} from an init.lua's spritesheets table."""
    i = lua.find('spritesheets')
    if i < 0:
        return {}
    out = {}
    for m in re.finditer(r'(\w+)\s*=\s*\{([^{}]*?(?:\{[^{}]*\}[^{}]*?)*)\}', lua[i:]):
        body = m.group(2)
        f, r, c = (re.search(k + r'\s*=\s*(\d+)', body) for k in ('frames', 'rows', 'columns'))
        if f and r and c:
            out[m.group(1)] = (int(f.group(1)), int(r.group(1)), int(c.group(1)), 'directional = true' in body)
    return out


def frames_of(sheet, frames, rows, cols):
    im = Image.open(sheet).convert('RGBA')
    w, h = im.size[0] // cols, im.size[1] // rows
    for k in range(frames):
        cell = np.asarray(im.crop(((k % cols) * w, (k // cols) * h, (k % cols + 1) * w, (k // cols + 1) * h)))
        ys, xs = np.nonzero(cell[:, :, 3] > 16)
        if len(ys) < 150 or ys.max() - ys.min() < 12 or xs.max() - xs.min() < 12:
            continue
        yield k, cell[ys.min():ys.max() + 1, xs.min():xs.max() + 1]


def units():
    """(key, family base, folder) for every unit with animations."""
    out = []
    for tribe in sorted(os.listdir(os.path.join(ROOT, 'tribes', 'workers'))):
        for w in sorted(os.listdir(os.path.join(ROOT, 'tribes', 'workers', tribe))):
            out.append((f'{tribe}-{w}', tribe, os.path.join(ROOT, 'tribes', 'workers', tribe, w)))
    for c in sorted(os.listdir(os.path.join(ROOT, 'world', 'critters'))):
        out.append((f'critter-{c}', 'critters', os.path.join(ROOT, 'world', 'critters', c)))
    for t in sorted(os.listdir(os.path.join(ROOT, 'tribes', 'ships'))):
        out.append((f'ship-{t}', 'ships', os.path.join(ROOT, 'tribes', 'ships', t)))
    return out


def extract(out_dir):
    chars, count = [], {}
    for key, base, d in units():
        lua = os.path.join(d, 'init.lua')
        if not os.path.exists(lua):
            continue
        sheets = spritesheets(open(lua).read())
        cand = []  # (anim, dir, idx, sheet, rgba)
        for anim, (nf, rows, cols, directional) in sorted(sheets.items()):
            if anim in ('sinking', 'die', 'fall'):
                continue
            for dr in (['e', 'ne', 'nw', 'se', 'sw', 'w'] if directional else ['']):
                stem = f'{anim}_{dr}_' if dr else f'{anim}_'
                files = [os.path.join(d, stem + s + '.png') for s in ('2', '1')]
                sheet = next((f for f in files if os.path.exists(f)), None)
                if sheet is None:
                    continue
                try:
                    for k, rgba in frames_of(sheet, nf, rows, cols):
                        cand.append((anim, dr, k, sheet, rgba))
                except Exception:
                    continue
        if len(cand) < 2:
            continue
        if len(cand) > MAX_FRAMES:  # spread over animations and directions
            cand = [cand[int(i * len(cand) / MAX_FRAMES)] for i in range(MAX_FRAMES)]
        n = count[base] = count.get(base, 0) + 1
        family = f'widelands.{base}{(n - 1) // CHUNK}' if base != 'ships' else 'widelands.ships'
        cd = os.path.join(out_dir, 'chars', 'widelands.' + key)
        os.makedirs(cd, exist_ok=True)
        frames, seen = [], set()
        for anim, dr, k, sheet, rgba in cand:
            if rgba.tobytes() in seen:
                continue
            seen.add(rgba.tobytes())
            fname = f'{anim}{dr}-{k:02d}.png'
            Image.fromarray(rgba, 'RGBA').save(os.path.join(cd, fname))
            frames.append({'file': os.path.relpath(os.path.join(cd, fname), out_dir), 'anim': anim, 'dir': dr, 'idx': k,
                           'label': f'widelands-data:{os.path.relpath(sheet, ROOT)}#{k}'})
        if len(frames) >= 2:
            chars.append({'key': 'widelands.' + key, 'source': 'widelands', 'family': family, 'frames': frames})
    return chars


if __name__ == '__main__':
    import art_index
    art_index.main('widelands', 'widelands-data (Widelands Development Team), GPL-2+', extract)
