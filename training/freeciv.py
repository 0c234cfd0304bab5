"""Reads Freeciv unit sprites (freeciv-data, GPL-2+) from three tilesets drawn by different artists:
amplio2 (64x48, painted, one view), trident (30x30, small pixel art, one view) and cimpletoon
(64x48, cartoon, eight directions). A character is one unit as one tileset draws it: cimpletoon's
eight directions are its poses (new views of one design), amplio2's and trident's units are single
drawings that add styles (near copies only, like the Tux Paint stamps). The same unit in two
tilesets is *not* one character: the artists drew different designs of the same idea (a knight, a
warrior), and a rightsholder's character is a design, not an idea. Writes the same format as
freedink.py: frame `anim` = tileset, `dir` = direction.

Tilesets are read through their `.spec` files (a grid: top-left corner, cell size, border, then
`row, column, "tag"[, "tag" ...]` lines); only `u.*` tags are used. Look-alike families: a
tileset's units of one kind (ships, aircraft, mounted, foot soldiers, civilians, machines), in
chunks of up to 6.
"""
import os
import re

import numpy as np
from PIL import Image

from art_index import trimmed

ROOT = '/usr/share/games/freeciv'
SPECS = [('amplio2', 'amplio2/units.spec'), ('amplio2', 'amplio2/extra_units.spec'),
         ('trident', 'trident/units.spec'), ('trident', 'trident/extra_units.spec'),
         ('cimpletoon', 'cimpletoon/orient_units.spec')]
DIRS = ('sw', 'w', 'nw', 'n', 'ne', 'e', 'se', 's')
KINDS = {
    'ships': 'aegis_cruiser battleship caravel carrier cruiser destroyer dredger frigate galleon ironclad longboat rowboat submarine transport trireme',
    'air': 'awacs balloon bomber cruise_missile drone fighter helicopter nuclear stealth_bomber stealth_fighter zeppelin',
    'mounted': 'chariot cavalry crusaders dragoons elephants horsemen knights',
    'ancient': 'archers legion phalanx pikemen warriors samurai barbarian_leader leader',
    'modern': 'alpine_troops marines musketeers paratroopers partisan riflemen fanatics',
    'civil': 'caravan diplomat emissary engineers explorer freight migrants settlers spy worker',
    'machines': 'armor artillery cannon catapult howitzer mech_inf train',
}
KIND_OF = {u: k for k, us in KINDS.items() for u in us.split()}
CHUNK = 6


def grids(text):
    """Yields (x0, y0, dx, dy, border, [(row, col, [tags])]) for each [grid_*] section of a .spec file."""
    text = re.sub(r';[^\n]*', '', text)  # comments
    for sec in re.finditer(r'\[grid_\w+\](.*?)(?=\n\[|\Z)', text, re.S):
        body = sec.group(1)

        def num(name, default=0):
            m = re.search(rf'^\s*{name}\s*=\s*(-?\d+)', body, re.M)
            return int(m.group(1)) if m else default
        tiles = re.search(r'tiles\s*=\s*\{(.*?)\}', body, re.S)
        cells = []
        for line in tiles.group(1).splitlines() if tiles else []:
            m = re.match(r'\s*(\d+)\s*,\s*(\d+)\s*,\s*(.*)', line)
            if m:
                cells.append((int(m.group(1)), int(m.group(2)), re.findall(r'"([^"]+)"', m.group(3))))
        yield num('x_top_left'), num('y_top_left'), num('dx'), num('dy'), num('pixel_border'), cells


def extract(out_dir):
    sprites = {}  # unit -> [(tileset, dir, rgba, label)]
    for tileset, spec in SPECS:
        path = os.path.join(ROOT, spec)
        if not os.path.exists(path):
            continue
        text = open(path, encoding='utf-8', errors='replace').read()
        gfx = re.search(r'gfx\s*=\s*"([^"]+)"', text).group(1)
        sheet = np.asarray(Image.open(os.path.join(ROOT, gfx + '.png')).convert('RGBA'))
        for x0, y0, dx, dy, border, cells in grids(text):
            for row, col, tags in cells:
                for tag in tags[:1]:  # a cell's first tag names the unit drawn; the others reuse it
                    if not tag.startswith('u.'):
                        continue
                    name, dr = tag[2:], ''
                    base, _, suffix = name.rpartition('_')
                    if tileset == 'cimpletoon' and suffix in DIRS:
                        name, dr = base, suffix
                    x, y = x0 + col * (dx + border), y0 + row * (dy + border)
                    a = trimmed(sheet[y:y + dy, x:x + dx])
                    if a is not None and name in KIND_OF:
                        sprites.setdefault(name, []).append((tileset, dr, a, f'freeciv-data:{gfx}.png#{row},{col}'))
    chars, count = [], {}
    for name in sorted(sprites):
        for tileset in sorted({t for t, *_ in sprites[name]}):
            frames, seen = [], set()
            key = f'freeciv.{tileset}-{name}'
            cd = os.path.join(out_dir, 'chars', key)
            for _, dr, a, label in (s for s in sprites[name] if s[0] == tileset):
                if a.tobytes() in seen:
                    continue
                seen.add(a.tobytes())
                os.makedirs(cd, exist_ok=True)
                fname = f'{tileset}{dr}.png'
                Image.fromarray(np.ascontiguousarray(a), 'RGBA').save(os.path.join(cd, fname))
                frames.append({'file': os.path.relpath(os.path.join(cd, fname), out_dir), 'anim': tileset, 'dir': dr, 'idx': 0, 'label': label})
            group = f'{tileset}-{KIND_OF[name]}'
            n = count[group] = count.get(group, 0) + 1
            chars.append({'key': key, 'source': 'freeciv', 'family': f'freeciv.{group}{(n - 1) // CHUNK}', 'frames': frames})
    return chars


if __name__ == '__main__':
    import art_index
    art_index.main('freeciv', 'freeciv-data (The Freeciv project), GPL-2+', extract)
