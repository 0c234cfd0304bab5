"""Reads Dink Smallwood sprites (freedink-data, zlib licence) from their FastFile (dir.ff) packs.

dir.ff layout: int32 count, then count x {int32 offset, char name[13]} (the last entry marks the
end of the data), each file a BMP. Sprites are drawn on white (255,255,255), the engine's colour key;
we turn pure-white pixels into transparency, as the engine does, and drop the dithered shadows.
"""
import glob
import io
import os
import re
import struct

import numpy as np
from PIL import Image

ROOT = '/usr/share/games/dink/dink/graphics'

# key -> (family, [dir.ff folders relative to ROOT]). Colour variants share a family (look-alikes).
CHARACTERS = {
    'duck': ('duck', ['Animals/Duck']),
    'fish1': ('fish', ['Animals/Fish/Fish1']),
    'fish2': ('fish', ['Animals/Fish/Fish2']),
    'pig': ('pig', ['Animals/Pig']),
    'dink': ('dink', ['Dink/walk', 'Dink/idle', 'Dink/hit/normal', 'Dink/push']),
    'dink-sword': ('dink', ['Dink/sword/walk', 'Dink/sword/idle', 'Dink/sword/hit']),
    'dink-bow': ('dink', ['Dink/bow/walk', 'Dink/bow/idle', 'Dink/bow/hit']),
    'boatman': ('boatman', ['People/Boatman']),
    'fairy': ('fairy', ['People/Fairy']),
    'girl': ('girl', ['People/Girl']),
    'gnome-blue': ('gnome', ['People/Gnome/Blue']),
    'gnome-green': ('gnome', ['People/Gnome/Green']),
    'gnome-purple': ('gnome', ['People/Gnome/Purple']),
    'knight-blue': ('knight', ['People/Knight/Blue', 'People/Knight/Blue/Attack']),
    'knight-gold': ('knight', ['People/Knight/Gold', 'People/Knight/Gold/Attack']),
    'knight-red': ('knight', ['People/Knight/Red', 'People/Knight/Red/Attack']),
    'knight-silver': ('knight', ['People/Knight/Silver', 'People/Knight/Silver/Attack']),
    'maiden-blue': ('maiden', ['People/Maiden/Blue']),
    'maiden-brown': ('maiden', ['People/Maiden/Brown']),
    'maiden-red': ('maiden', ['People/Maiden/Red']),
    'merchant': ('merchant', ['People/Merchant']),
    'merchant-blue': ('merchant', ['People/Merchant/Blue']),
    'merchant-green': ('merchant', ['People/Merchant/Green']),
    'merchant-purple': ('merchant', ['People/Merchant/Purple']),
    'mom': ('mom', ['People/Mom']),
    'mom-brown': ('mom', ['People/Mom/Brown']),
    'oldman': ('oldman', ['People/Oldman']),
    'peasant': ('peasant', ['People/Peasant2']),
    'soldier': ('soldier', ['People/Soldier']),
    'bonca': ('bonca', ['foes/Bonca/Walk', 'foes/Bonca/Attack']),
    'bonca-gray': ('bonca', ['foes/Bonca/Gray/Walk', 'foes/Bonca/Gray/Attack']),
    'bonca-purple': ('bonca', ['foes/Bonca/Purple/Walk', 'foes/Bonca/Purple/Attack']),
    'dragon': ('dragon', ['foes/Dragon']),
    'pillbug': ('pillbug', ['foes/Pill']),
    'puddle-blue': ('puddle', ['foes/Puddle/Blue/Walk']),
    'puddle-green': ('puddle', ['foes/Puddle/Green/Walk']),
    'puddle-red': ('puddle', ['foes/Puddle/Red/Walk']),
    'slayer': ('slayer', ['foes/Slayers/Walk', 'foes/Slayers/Attack']),
    'spike': ('spike', ['foes/Spike/Walk']),
    'stonegiant': ('stonegiant', ['foes/Stonegnt/walk', 'foes/Stonegnt/Attack']),
    'goblin-hammer': ('goblin', ['foes/goblin/Hammer/walk', 'foes/goblin/Hammer/attack']),
    'goblin-horns': ('goblin', ['foes/goblin/Horns/walk', 'foes/goblin/Horns/attack']),
    'goblin-soldier': ('goblin', ['foes/goblin/Soldier/walk', 'foes/goblin/Soldier/attack']),
}


def read_ff(path):
    b = open(path, 'rb').read()
    n = struct.unpack('<i', b[:4])[0]
    ents = []
    for i in range(n):
        off = struct.unpack('<i', b[4 + i * 17:8 + i * 17])[0]
        name = b[8 + i * 17:21 + i * 17].split(b'\0')[0].decode('latin1')
        ents.append((off, name))
    out = []
    for (off, name), (nxt, _) in zip(ents, ents[1:]):
        if name:
            out.append((name, b[off:nxt]))
    return out


def key_out_white(img):
    """RGBA array: pure-white pixels become transparent, dithered shadows are dropped; trimmed."""
    a = np.asarray(img.convert('RGB'), dtype=np.uint8)
    h, w, _ = a.shape
    white = (a[:, :, 0] >= 250) & (a[:, :, 1] >= 250) & (a[:, :, 2] >= 250)
    bg = white.copy()  # the engine's colour key: every pure-white pixel is transparent
    # Shadows are dithered (a checkerboard of grey and white): drop opaque pixels with at least
    # three transparent 4-neighbours, twice.
    for _ in range(2):
        t = np.pad(bg, 1, constant_values=True)
        n = t[:-2, 1:-1].astype(int) + t[2:, 1:-1] + t[1:-1, :-2] + t[1:-1, 2:]
        bg = bg | (n >= 3)
    alpha = np.where(bg, 0, 255).astype(np.uint8)
    ys, xs = np.nonzero(alpha)
    if len(ys) < 150 or ys.max() - ys.min() < 12 or xs.max() - xs.min() < 12:
        return None
    rgba = np.dstack([a, alpha])[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
    return rgba


def extract(out_dir):
    """Writes chars/freedink.<key>/<anim>-<frame>.png; returns the character index."""
    chars = []
    for key, (family, dirs) in CHARACTERS.items():
        d = os.path.join(out_dir, 'chars', 'freedink.' + key)
        os.makedirs(d, exist_ok=True)
        frames, seen = [], set()
        for sub in dirs:
            ff = os.path.join(ROOT, sub, 'dir.ff')
            if not os.path.exists(ff):
                continue
            for name, data in read_ff(ff):
                m = re.search(r'([A-Za-z])(\d)-(\d+)\.bmp$', name, re.I)  # ...W1-01.BMP
                m2 = re.search(r'(\d)([A-Za-z])-(\d+)\.bmp$', name, re.I)  # DK1W-01.BMP
                if m:
                    anim, direction, idx = m.group(1).upper(), int(m.group(2)), int(m.group(3))
                elif m2:
                    anim, direction, idx = m2.group(2).upper(), int(m2.group(1)), int(m2.group(3))
                else:
                    continue
                try:
                    rgba = key_out_white(Image.open(io.BytesIO(data)))
                except Exception:
                    continue
                if rgba is None or rgba.tobytes() in seen:
                    continue
                seen.add(rgba.tobytes())
                fname = f'{anim}{direction}-{idx:02d}.png'
                Image.fromarray(rgba, 'RGBA').save(os.path.join(d, fname))
                frames.append({'file': os.path.relpath(os.path.join(d, fname), out_dir), 'anim': anim, 'dir': direction, 'idx': idx,
                               'label': f'freedink-data:dink/graphics/{sub}/dir.ff:{name}'})
        if len(frames) >= 2:
            chars.append({'key': 'freedink.' + key, 'source': 'freedink', 'family': 'freedink.' + family, 'frames': frames})
    return chars


if __name__ == '__main__':
    import art_index
    art_index.main('freedink', 'freedink-data (Dink Smallwood game data, Seth A. Robinson / RTsoft), zlib-style licence', extract)
