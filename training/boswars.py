"""Reads Bos Wars' unit sprite sheets (boswars-data, GPL-2+): renders of 3D models, one sheet per
unit with a frame size given in its `unit-*.lua` (`Image = {"file", ..., "size", {w, h}}`). Units
that turn are drawn in 5 facings, north to south through east (the engine mirrors them for the
west), for each animation frame. The engine numbers a sheet's cells left to right, top to bottom,
whatever its width, and an animation's `frame N` is cells N to N+4 (one per facing); the frames the
Still, Move and Attack animations show are used (not the dying ones). A character is one unit; its
frames are those frames and facings. Writes the same format as freedink.py: `anim` = 'f<frame>',
`dir` = the facing, `idx` = the frame. Buildings, plants, rocks and units drawn in one direction are
left out, and so are the two helicopters, whose lua writes the size without a space ("{128,128}"),
which the pattern below does not read: v11 was trained without them, so the pattern stays as it
is. Look-alike families: infantry, ground vehicles, aircraft and ships.

The package is not installed: `apt-get download boswars-data` and `dpkg-deb -x` it into a folder,
given as BOSWARS_ROOT (run.sh does this).
"""
import os
import re

import numpy as np
from PIL import Image

from art_index import add_frame

ROOT = os.environ.get('BOSWARS_ROOT', '/usr/share/games/boswars')
FAMILY = {'assault': 'infantry', 'bazoo': 'infantry', 'grenadier': 'infantry', 'engineer': 'infantry', 'medic': 'infantry',
          'heli': 'aircraft', 'chopper': 'aircraft', 'bomber': 'aircraft', 'jet': 'aircraft', 'destroyer': 'aircraft'}


def shown_frames(lua):
    """The frames (first cells) that the unit's Still, Move and Attack animations show."""
    frames = set()
    for anim in ('Still', 'Move', 'Attack'):
        m = re.search(anim + r'\s*=\s*\{([^}]*)\}', lua)
        if m:
            frames |= {int(f) for f in re.findall(r'"frame (\d+)"', m.group(1))}
    return sorted(frames)


def extract(out_dir):
    base = os.path.join(ROOT, 'units')
    chars = []
    for unit in sorted(os.listdir(base)):
        udir = os.path.join(base, unit)
        luas = [f for f in os.listdir(udir) if f.startswith('unit-') and f.endswith('.lua')] if os.path.isdir(udir) else []
        if len(luas) != 1:
            continue
        lua = open(os.path.join(udir, luas[0]), encoding='utf-8', errors='replace').read()
        if 'Building = true' in lua or re.search(r'DefineUnitType\([^)]*NumDirections = 1,', lua, re.S):
            continue
        m = re.search(r'Image = \{"file", [^,]*?"([^"]+\.png)", "size", \{(\d+), (\d+)\}\}', lua)
        if not m:
            continue
        sheet = os.path.join(udir, os.path.basename(m.group(1)))
        w, h = int(m.group(2)), int(m.group(3))
        im = np.asarray(Image.open(sheet).convert('RGBA'))
        cols = im.shape[1] // w
        cells = cols * (im.shape[0] // h)
        key = f'boswars.{unit}'
        frames, seen = [], set()
        for frame in shown_frames(lua):
            for facing in range(5):
                k = frame + facing
                if k >= cells:
                    continue
                row, col = divmod(k, cols)
                add_frame(frames, seen, im[row * h:(row + 1) * h, col * w:(col + 1) * w], out_dir, key, f'f{frame}-d{facing}.png',
                          anim=f'f{frame}', dir=str(facing), idx=frame, label=f'boswars-data:units/{unit}/{os.path.basename(sheet)}#{k}')
        if len(frames) < 2:
            continue
        chars.append({'key': key, 'source': 'boswars', 'family': f'boswars.{FAMILY.get(unit, "vehicles")}0', 'frames': frames})
    return chars


if __name__ == '__main__':
    import art_index
    art_index.main('boswars', 'boswars-data (The Bos Wars and Stratagus Project), GPL-2+', extract)
