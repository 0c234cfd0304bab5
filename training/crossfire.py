"""Reads Crossfire's monster sprites (crossfire-client-images, GPL) from the client's `crossfire.base`
image set: small pixel art, mostly 32x32 tiles, larger monsters drawn whole (64x64 to 128x128). A
character is one monster (`arch/monster/<kind>/.../<name>.<code>`); its frames are the animation
frames and facings of that monster. Writes the same format as freedink.py: frame `anim` = facing,
`dir` = '', `idx` = the frame's number.

`crossfire.base` is a concatenation of `IMAGE <bytes> <path>` lines, each followed by that many
bytes of PNG. An image's code has three characters: the part of a multi-tile monster (`x` for a
monster drawn whole, `1` for the first tile), the facing, and the animation frame. Only whole
drawings are used: `x` images where a monster has them, `1` images of monsters that are one tile;
monsters drawn only as several tiles, generators (`*_gen`) and images that repeat another frame
byte for byte are left out. The classic set (`crossfire.clsc`) is not used: where it differs, it is
mostly another design, not another pose. Look-alike families: a folder's monsters (e.g.
`monster/goblin`, `monster/humanoid/Elf`), in chunks of up to 6.
"""
import io
import os

import numpy as np
from PIL import Image

from art_index import add_frame

ROOT = '/usr/share/games/crossfire-client/crossfire.base'
CHUNK = 6


def images(path):
    """{path: png bytes} of a Crossfire client image set."""
    data, out, i = open(path, 'rb').read(), {}, 0
    while True:
        j = data.find(b'IMAGE ', i)
        if j < 0:
            return out
        end = data.find(b'\n', j)
        head = data[j:end].split()
        if len(head) == 3 and head[1].isdigit():
            n = int(head[1])
            out[head[2].decode()] = data[end + 1:end + 1 + n]
            i = end + 1 + n
        else:
            i = j + 6


def extract(out_dir):
    monsters = {}  # (folder, name) -> {code: png path}
    for path in images(ROOT):
        parts = path.split('/')
        if 'monster' not in parts[:3]:
            continue
        name, _, code = parts[-1].partition('.')
        if len(code) != 3 or name.endswith('_gen'):
            continue
        monsters.setdefault(('/'.join(parts[parts.index('monster'):-1]), name), {})[code] = path
    blobs = images(ROOT)
    chars, count = [], {}
    for (folder, name), codes in sorted(monsters.items()):
        whole = sorted(c for c in codes if c[0] == 'x')
        if not whole:
            if any(c[0] != '1' for c in codes):
                continue  # drawn only as several tiles
            whole = sorted(codes)
        key = f'crossfire.{name}'
        frames, seen = [], set()
        for code in whole:
            add_frame(frames, seen, np.asarray(Image.open(io.BytesIO(blobs[codes[code]])).convert('RGBA')), out_dir, key, f'{code}.png',
                      anim=code[1], dir='', idx=int(code[2]) if code[2].isdigit() else 0, label=f'crossfire-client-images:{codes[code]}')
        if not frames:
            continue
        group = folder.replace('/', '-')
        n = count[group] = count.get(group, 0) + 1
        chars.append({'key': key, 'source': 'crossfire', 'family': f'crossfire.{group}{(n - 1) // CHUNK}', 'frames': frames})
    return chars


if __name__ == '__main__':
    import art_index
    art_index.main('crossfire', 'crossfire-client-images (Crossfire Development team), GPL', extract)
