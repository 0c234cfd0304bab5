"""Reads Unknown Horizons' unit sprites (unknown-horizons, graphics CC-BY-SA 3.0): small renders of
3D models, each unit drawn from 8 angles (0, 45, ... 315 degrees) in every action it has (idle,
move, work, ...), a PNG per animation frame under `content/gfx/units/<kind>/.../as_<unit>/<action>/
<angle>/`. A character is one unit (`as_*`); its frames are the first frame of each action and
angle (later frames of an action differ little at this size), so its poses are mostly other
facings, as a rendered character seen from another side. Writes the same format as freedink.py:
`anim` = the action, `dir` = the angle, `idx` = 0. Look-alike families: the inhabitants (people of
one style and size), the workers, the animals, the ships, in chunks of up to 6.

The package is not installed (it pulls in a Python game engine): `apt-get download unknown-horizons`
and `dpkg-deb -x` it into a folder, given as UH_ROOT (run.sh does this).
"""
import os

import numpy as np
from PIL import Image

from art_index import add_frame

ROOT = os.environ.get('UH_ROOT', '/usr/share/unknown-horizons')
CHUNK = 6
FAMILY = {'inhabitant': 'inhabitant', 'animals': 'animals', 'ships': 'ships'}


def extract(out_dir):
    base = os.path.join(ROOT, 'content', 'gfx', 'units')
    units = []
    for dirpath, dirnames, _ in os.walk(base):
        dirnames.sort()
        if os.path.basename(dirpath).startswith('as_'):
            units.append(dirpath)
            dirnames[:] = []
    chars, count = [], {}
    for u in sorted(units):
        rel = os.path.relpath(u, base).split(os.sep)
        name = rel[-1][3:]
        key = f'unknownhorizons.{name}'
        frames, seen = [], set()
        for action in sorted(os.listdir(u)):
            adir = os.path.join(u, action)
            if not os.path.isdir(adir) or action.startswith(('tm_', 'color', 'wateroverlay')):
                continue  # not drawings of the unit: team-colour masks and the water under a ship
            for angle in sorted(os.listdir(adir), key=lambda a: int(a) if a.isdigit() else 999):
                if not angle.isdigit():
                    continue
                pngs = sorted(f for f in os.listdir(os.path.join(adir, angle)) if f.endswith('.png'))
                if not pngs:
                    continue
                src = os.path.join(adir, angle, pngs[0])
                add_frame(frames, seen, np.asarray(Image.open(src).convert('RGBA')), out_dir, key, f'{action}-{angle}.png',
                          anim=action, dir=angle, idx=0, label=f'unknown-horizons:{os.path.relpath(src, ROOT)}')
        if len(frames) < 2:
            continue
        group = FAMILY.get(rel[0], 'workers')
        n = count[group] = count.get(group, 0) + 1
        chars.append({'key': key, 'source': 'unknownhorizons', 'family': f'unknownhorizons.{group}{(n - 1) // CHUNK}', 'frames': frames})
    return chars


if __name__ == '__main__':
    import art_index
    art_index.main('unknownhorizons', 'unknown-horizons graphics (The Unknown Horizons Team), CC-BY-SA 3.0', extract)
