"""Trains Kagami's likeness descriptor (kagami-descriptor-v1/-v2/-v3) and evaluates it against the frozen
model and earlier descriptors (--compare), then exports it to ONNX. See training/README.md; run through training/run.sh.

Descriptor: MobileNetV2 trunk (ImageNet, up to block_10_project_BN; stem..block_6 frozen,
blocks 7-10 fine-tuned) -> 1x1 conv 96->512 + BN + ReLU6 -> GeM (p=3, global) -> linear 512->256
-> L2. Input 128x128 RGB crops around the character, (pixel - 127.5) / 127.5, NHWC in the ONNX.

Loss (SSCD-style): InfoNCE / NT-Xent over two strongly augmented views per character (views of the
same frame, or of two different frames = poses of the character), batches built from whole
look-alike families (recolours, same-style synthetic characters) so they are in-batch negatives,
plus a KoLeo entropy regulariser that spreads the embeddings.
"""
import argparse
import io
import json
import math
import os
import random
import subprocess
import tempfile
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image, ImageFilter, ImageEnhance

import mnv2

HERE = os.path.dirname(os.path.abspath(__file__))
CELL = 16  # the trunk's output stride: one cell of its feature map, in input pixels

# Held-out look-alike families of each real art source (never trained on): evaluation only.
HELDOUT = {
    'freedink': {'bonca', 'goblin', 'maiden', 'girl', 'pig', 'slayer', 'duck', 'oldman'},
    # one family of 6 workers per tribe, 6 animals
    'widelands': {'amazons1', 'atlanteans2', 'barbarians3', 'empire4', 'frisians5', 'critters1'},
    'tuxpaint': {'animals-birds2', 'animals-mammals-bovines1', 'animals-fish1', 'animals-insects-cartoon1',
                 'animals-mammals1', 'seasonal-halloween1', 'town-cartoon1'},
    # a tileset's units of one kind: two cimpletoon families with 8 directions each, two single-drawing ones
    'freeciv': {'cimpletoon-mounted0', 'cimpletoon-civil0', 'amplio2-ancient0', 'trident-ships0'},
    # a folder's monsters: 40 characters, 112 frames (animation frames and facings)
    'crossfire': {'monster-goblin0', 'monster-undead1', 'monster-humanoid-Human2', 'monster-insect-ant0',
                  'monster-dragon-Hatchlings0', 'monster-animal0', 'monster-humanoid-Elf0'},
    # renders of 3D models from 8 (5 drawn) facings: 5 people and 2 deer; 3 aircraft and a ship
    'unknownhorizons': {'inhabitant1', 'animals0'},
    'boswars': {'aircraft0'},
    # ships seen from above at 8 headings and as a larger three-quarter render: 6 ships
    'naev': {'ships3'},
}
REAL_SOURCES = list(HELDOUT)


def heldout(c):
    if c['source'] == 'synthetic':
        return int(c['family'].split('style')[1]) % 5 == 0  # every 5th style family
    return c['family'].split('.', 1)[1] in HELDOUT[c['source']]


# ------------------------------------------------------------------------------------------- data

def load_data(data, sources):
    chars = []
    for src in sources:
        idx = json.load(open(os.path.join(data, src + '.json')))
        for c in idx['characters']:
            for f in c['frames']:
                f['img'] = Image.open(os.path.join(data, f['file'])).convert('RGBA')
                f['group'] = f.get('pose') if src == 'synthetic' else f"{f.get('anim', '')}{f.get('dir', '')}"
            chars.append(c)
    bgs = []
    for f in sorted(os.listdir(os.path.join(data, 'backgrounds'))):
        bgs.append(Image.open(os.path.join(data, 'backgrounds', f)).convert('RGB'))
    tiles = '/usr/share/games/dink/dink/Tiles'
    if os.path.isdir(tiles):
        for f in sorted(os.listdir(tiles)):
            if f.lower().endswith('.bmp'):
                bgs.append(Image.open(os.path.join(tiles, f)).convert('RGB'))
    return chars, bgs


def recolour_identities(chars):
    """Sets c['identity'] for each character: the key of the first member of its look-alike family
    drawn with the same silhouette (same size, alpha masks at IoU >= 0.95 on their first frames), that
    is, a recolour of one body (freedink's knight-blue/-red/..., gnome colours); its own key otherwise."""
    masks = {}
    for c in chars:
        a = np.asarray(c['frames'][0]['img'].getchannel('A')) >= 128
        masks[c['key']] = a
        c['identity'] = c['key']
    heads = {}
    for c in chars:
        for h in heads.get(c['family'], []):
            a, b = masks[c['key']], masks[h]
            if a.shape == b.shape and (a & b).sum() >= 0.95 * max(1, (a | b).sum()):
                c['identity'] = h
                break
        else:
            heads.setdefault(c['family'], []).append(c['key'])
    return sum(c['identity'] != c['key'] for c in chars)


def merge_recolours(chars):
    """One training character per identity: a recolour's frames join its head's, so pose pairs can
    join two colours of one body and recolours are no longer in-batch negatives of each other."""
    out, by_id = [], {}
    for c in chars:
        h = by_id.get(c['identity'])
        if h is None:
            by_id[c['identity']] = h = dict(c, frames=list(c['frames']))
            out.append(h)
        else:
            h['frames'] += c['frames']
    return out


def references(c):
    """Reference frames: synthetic the normal drawing; game art the first frame of its first two pose groups."""
    if c['source'] == 'synthetic':
        return [c['frames'][0]]
    groups = sorted({f['group'] for f in c['frames']})
    return [min((f for f in c['frames'] if f['group'] == g), key=lambda f: f.get('idx', 0)) for g in groups[:2]]


# ------------------------------------------------------------------------------------ augmentation

def background(rng, bgs, S):
    r = rng.random()
    if r < 0.65:
        bg = bgs[rng.randrange(len(bgs))]
        s = rng.uniform(0.3, 1.0) * min(bg.size)
        x, y = rng.uniform(0, bg.size[0] - s), rng.uniform(0, bg.size[1] - s)
        return bg.resize((S, S), Image.BILINEAR, box=(x, y, x + s, y + s))
    if r < 0.85:
        return Image.new('RGB', (S, S), tuple(rng.randrange(256) for _ in range(3)))
    a = np.array([rng.randrange(256) for _ in range(3)], np.float32)
    b = np.array([rng.randrange(256) for _ in range(3)], np.float32)
    t = np.linspace(0, 1, S, dtype=np.float32)[:, None, None]
    g = np.broadcast_to(a * (1 - t) + b * t, (S, S, 3))
    return Image.fromarray(g.astype(np.uint8))


def colour_jitter(im, rng, k, recolour=False):
    """Brightness, contrast, saturation, and a hue shift: small (+-7 degrees) by default, or with
    `recolour` a rotation of 20-180 degrees either way (the whole sprite recoloured)."""
    rgb, alpha = im.convert('RGB'), im.getchannel('A')
    rgb = ImageEnhance.Brightness(rgb).enhance(rng.uniform(1 - 0.25 * k, 1 + 0.25 * k))
    rgb = ImageEnhance.Contrast(rgb).enhance(rng.uniform(1 - 0.25 * k, 1 + 0.25 * k))
    rgb = ImageEnhance.Color(rgb).enhance(rng.uniform(1 - 0.3 * k, 1 + 0.3 * k))
    # PIL's hue channel runs 0-255 for 360 degrees.
    shift = int(round(rng.uniform(14, 128))) * rng.choice((-1, 1)) if recolour else int(round(rng.uniform(-5, 5) * k))
    if shift:
        h, s, v = rgb.convert('HSV').split()
        h = h.point(lambda p: (p + shift) % 256)
        rgb = Image.merge('HSV', (h, s, v)).convert('RGB')
    out = rgb.convert('RGBA')
    out.putalpha(alpha)
    return out


def view(sprite, rng, bgs, S=128, strong=True, window=False, recolour=False, context=0, neighbours=None):
    """One augmented crop around the character: S x S RGB uint8. `window`: framed as the scanner's
    sliding windows see a character (40-105 % of the window side, off-centre by up to a quarter of
    it, so at times cut by the window's edge) instead of roughly centred at 55-95 %. `recolour`: a
    large hue rotation (colour_jitter).

    `context` > 0: the S x S box is one of a larger scene, (S + CELL * context) px square, at a
    random whole-cell offset (0..context cells each way), as a window is part of the frame the dense
    form runs over: what the crop would cut off (the rest of the character, its background, with
    `neighbours` at times another character) stays in view around the box, and the degradations
    (resolution, blur, noise, JPEG) apply to the whole scene. Returns (scene, (ox, oy) in cells)."""
    k = 1.0 if strong else 0.5
    im = sprite
    if rng.random() < 0.5:
        im = im.transpose(Image.FLIP_LEFT_RIGHT)
    im = colour_jitter(im, rng, k, recolour)
    rot = rng.uniform(-12, 12) * k
    if abs(rot) > 1:
        im = im.rotate(rot, resample=Image.BILINEAR, expand=True)
    w, h = im.size
    side = S * (rng.uniform(0.4, 1.05) if window else rng.uniform(0.55, 0.95))
    sc = side / max(w, h)
    nw, nh = max(4, round(w * sc)), max(4, round(h * sc))
    im = im.resize((nw, nh), Image.NEAREST if rng.random() < 0.3 else Image.BILINEAR)
    C, ox, oy = S, 0, 0
    if context:
        C = S + CELL * context
        ox, oy = rng.randint(0, context), rng.randint(0, context)
    canvas = background(rng, bgs, C)
    j = 0.25 * S if window else 0.12 * k * S
    x = ox * CELL + int((S - nw) / 2 + rng.uniform(-j, j))
    y = oy * CELL + int((S - nh) / 2 + rng.uniform(-j, j))
    if context and neighbours and rng.random() < 0.3:  # another character nearby, centred outside the box
        other = rng.choice(neighbours)
        other = other['frames'][rng.randrange(len(other['frames']))]['img']
        sc2 = S * rng.uniform(0.4, 0.9) / max(other.size)
        other = other.resize((max(4, round(other.size[0] * sc2)), max(4, round(other.size[1] * sc2))), Image.BILINEAR)
        side = rng.choice(('left', 'right', 'top', 'bottom'))
        cx = {'left': ox * CELL, 'right': ox * CELL + S}.get(side, ox * CELL + rng.uniform(0, S))
        cy = {'top': oy * CELL, 'bottom': oy * CELL + S}.get(side, oy * CELL + rng.uniform(0, S))
        canvas.paste(other, (int(cx - other.size[0] / 2), int(cy - other.size[1] / 2)), other)
    canvas.paste(im, (x, y), im)
    if strong and rng.random() < 0.3:  # occluder: a patch of another background over part of the character
        ow, oh = int(nw * rng.uniform(0.25, 0.6)), int(nh * rng.uniform(0.25, 0.6))
        occ = background(rng, bgs, max(ow, oh)).crop((0, 0, ow, oh))
        canvas.paste(occ, (x + rng.randrange(max(1, nw - ow)), y + rng.randrange(max(1, nh - oh))))
    if rng.random() < 0.35:  # small on screen: lose resolution
        s = int(C * rng.uniform(0.3, 0.65))
        canvas = canvas.resize((s, s), Image.BILINEAR).resize((C, C), Image.BILINEAR)
    if rng.random() < 0.3:
        canvas = canvas.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.3) * k))
    a = np.asarray(canvas, dtype=np.float32)
    if rng.random() < 0.3:
        a = a + np.random.RandomState(rng.randrange(1 << 30)).normal(0, rng.uniform(2, 8) * k, a.shape)
    canvas = Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))
    if rng.random() < 0.5:
        buf = io.BytesIO()
        canvas.save(buf, 'JPEG', quality=rng.randrange(25 if strong else 50, 90))
        canvas = Image.open(io.BytesIO(buf.getvalue())).convert('RGB')
    a = np.asarray(canvas, dtype=np.uint8)
    return (a, (ox, oy)) if context else a


def reference_view(sprite, S):
    """How a registered reference is embedded: the character centred on neutral grey, 10 % margin."""
    w, h = sprite.size
    sc = 0.9 * S / max(w, h)
    im = sprite.resize((max(1, round(w * sc)), max(1, round(h * sc))), Image.BILINEAR)
    canvas = Image.new('RGB', (S, S), (128, 128, 128))
    canvas.paste(im, ((S - im.size[0]) // 2, (S - im.size[1]) // 2), im)
    return np.asarray(canvas, dtype=np.uint8)


def to_tensor(batch):
    x = torch.from_numpy(np.stack(batch)).float()
    return ((x - 127.5) / 127.5).permute(0, 3, 1, 2).contiguous()


# ------------------------------------------------------------------------------------------ model

class Descriptor(nn.Module):
    def __init__(self, trunk, hidden=512, dim=256, p=3.0):
        super().__init__()
        self.trunk = trunk
        self.expand = nn.Sequential(nn.Conv2d(96, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6())
        self.proj = nn.Linear(hidden, dim)
        self.p = p

    def head(self, f, boxes=None, cells=8):
        """Global GeM over the map, or with `boxes` ((ox, oy) per image, in cells) over each image's
        cells x cells box of a larger map: the mean the dense form's RoiAlign takes on a cell-aligned box."""
        x = self.expand(f).clamp(min=1e-6).pow(self.p)
        if boxes is None:
            x = x.mean(dim=(2, 3))
        else:
            x = torch.stack([x[i, :, oy:oy + cells, ox:ox + cells].mean(dim=(1, 2)) for i, (ox, oy) in enumerate(boxes)])
        return F.normalize(self.proj(x.pow(1.0 / self.p)), dim=1)

    def forward(self, x, boxes=None):
        return self.head(self.trunk(x), boxes)


def load_onnx_weights(model, path):
    """Starts `model` from a committed float descriptor exported by this script (train.py --init):
    its ONNX graph has every BatchNorm folded into the conv before it, so each conv gets the folded
    weight and its BatchNorm becomes the identity plus the folded bias (mean 0, variance 1 - eps,
    scale 1). Convs are matched by the module path torch.onnx.export puts in their node names."""
    import onnx
    from onnx import numpy_helper
    m = onnx.load(path)
    init = {t.name: torch.from_numpy(numpy_helper.to_array(t).copy()) for t in m.graph.initializer}
    mods = dict(model.named_modules())
    done = 0
    for n in m.graph.node:
        if n.op_type != 'Conv':
            continue
        # /d/trunk/blocks.1/expand/expand.0/Conv -> trunk.blocks.1.expand.0 (the wrapper's d and the
        # Sequential's own name, which prefixes its child's, dropped)
        seg = n.name.strip('/').split('/')[1:-1]
        key = '.'.join(q for i, q in enumerate(seg) if not (i + 1 < len(seg) and seg[i + 1].startswith(q + '.')))
        conv = mods[key]
        if key.endswith('.0'):
            bnm = mods[key[:-2] + '.1']
        elif key.endswith('dw'):
            bnm = mods[key + '_bn']
        elif key == 'trunk.conv1':
            bnm = mods['trunk.bn1']
        else:
            raise SystemExit(f'{path}: no BatchNorm known for conv {key}')
        w, b = init[n.input[1]], init[n.input[2]]
        assert conv.weight.shape == w.shape, (key, conv.weight.shape, w.shape)
        with torch.no_grad():
            conv.weight.copy_(w)
            bnm.weight.fill_(1.0)
            bnm.bias.copy_(b)
            bnm.running_mean.zero_()
            bnm.running_var.fill_(1.0 - bnm.eps)
        done += 1
    gemm = [n for n in m.graph.node if n.op_type == 'Gemm'][0]
    with torch.no_grad():
        model.proj.weight.copy_(init[gemm.input[1]])
        model.proj.bias.copy_(init[gemm.input[2]])
    return f'{path}: {done} convs (BatchNorm folded) and the projection'


class OnnxWrapper(nn.Module):
    """ONNX interface: NHWC float input (already (pixel-127.5)/127.5), L2-normalised output."""

    def __init__(self, d):
        super().__init__()
        self.d = d

    def forward(self, x):
        return self.d(x.permute(0, 3, 1, 2))


def nt_xent(za, zb, tau):
    z = torch.cat([za, zb])
    n = za.shape[0]
    sim = z @ z.t() / tau
    sim.fill_diagonal_(-1e9)
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)])
    return F.cross_entropy(sim, target)


def koleo(z):
    d = torch.cdist(z, z)
    d = d + torch.eye(len(z)) * 1e3
    return -torch.log(d.min(dim=1).values + 1e-6).mean()


# ------------------------------------------------------------------------------------- evaluation

def pose_frames(c, refs, n=8):
    """A character's frames other than its references, n of them spread evenly when it has more:
    the new-pose queries."""
    others = [f for f in c['frames'] if all(f is not r for r in refs)]
    return [others[int(i * len(others) / n)] for i in range(n)] if len(others) > n else others


def eval_set(chars, bgs, seed, S=224):
    """Fixed, seeded queries: per held-out character its reference views, 3 augmented copies of each
    reference (near copies), up to 8 other frames / renditions, augmented (new poses), and one copy
    of each reference recoloured by a hue rotation of 20-180 degrees (its own random stream, so the
    other queries are the same as before it was added)."""
    rng = random.Random(seed)
    rrng = random.Random(seed + 7919)
    refs, near, new, recol = [], [], [], []
    for ci, c in enumerate(chars):
        rf = references(c)
        for f in rf:
            refs.append((ci, reference_view(f['img'], S)))
            for _ in range(3):
                near.append((ci, view(f['img'], rng, bgs, S, strong=False)))
            recol.append((ci, view(f['img'], rrng, bgs, S, strong=False, recolour=True)))
        for f in pose_frames(c, rf):
            new.append((ci, view(f['img'], rng, bgs, S, strong=False)))
    return refs, near, new, recol


def eval_context(chars, bgs, seed, context, S=128):
    """The near-copy and new-pose queries again, each as a box of a larger scene (view(context=...)),
    with the other held-out characters as neighbours: what the dense form sees of a window. Its own
    random stream, so eval_set's queries are unchanged."""
    rng = random.Random(seed + 104729)
    near, new = [], []
    for ci, c in enumerate(chars):
        rf = references(c)
        for f in rf:
            for _ in range(3):
                near.append((ci, view(f['img'], rng, bgs, S, strong=False, context=context, neighbours=chars)))
        for f in pose_frames(c, rf):
            new.append((ci, view(f['img'], rng, bgs, S, strong=False, context=context, neighbours=chars)))
    return near, new


@torch.no_grad()
def embed_boxes(model, queries, bs=64):
    """A torch Descriptor's vectors of context queries ((scene, box) pairs), pooled over their boxes."""
    out = []
    for i in range(0, len(queries), bs):
        part = queries[i:i + bs]
        out.append(model(to_tensor([im for im, _ in part]), [b for _, b in part]))
    return torch.cat(out)


@torch.no_grad()
def embed(fn, images, size, bs=64):
    out = []
    for i in range(0, len(images), bs):
        batch = [im if im.shape[0] == size else np.asarray(Image.fromarray(im).resize((size, size), Image.BILINEAR)) for im in images[i:i + bs]]
        out.append(fn(to_tensor(batch)))
    return torch.cat(out)


def top1(fn, size, refs, queries, chars, sources, Q=None):
    """Top-1 of each query among the references' characters; Q: the queries' vectors when they are
    not crops fn embeds (context queries)."""
    R = embed(fn, [im for _, im in refs], size)
    if Q is None:
        Q = embed(fn, [im for _, im in queries], size)
    rc = torch.tensor([c for c, _ in refs])
    sim = Q @ R.t()
    n = len(chars)
    per_char = torch.full((len(queries), n), -9.0)
    for j in range(n):
        per_char[:, j] = sim[:, rc == j].max(dim=1).values
    # Right when the best character is the query's own or, with --recolours-same, a recolour of it.
    ident = {}
    ids = torch.tensor([ident.setdefault(c.get('identity', c['key']), len(ident)) for c in chars])
    pred = ids[per_char.argmax(dim=1)]
    qc = ids[torch.tensor([c for c, _ in queries])]
    ok = (pred == qc).float()
    res = {'all': (ok.mean().item(), len(queries))}
    for s in sources:
        m = torch.tensor([chars[c]['source'] == s for c, _ in queries])
        if m.any():
            res[s] = (ok[m].mean().item(), int(m.sum()))
    return res


def onnx_fn(manifest):
    """A committed descriptor run by Kagami's OnnxEmbedder (node training/embed-onnx.js), as a torch function."""
    def fn(x):
        u8 = (x.permute(0, 2, 3, 1) * 127.5 + 127.5).round().clamp(0, 255).to(torch.uint8).contiguous().numpy()
        with tempfile.TemporaryDirectory() as d:
            u8.tofile(os.path.join(d, 'in.u8'))
            subprocess.run(['node', os.path.join(HERE, 'embed-onnx.js'), manifest, os.path.join(d, 'in.u8'), os.path.join(d, 'out.f32')], check=True)
            return torch.from_numpy(np.fromfile(os.path.join(d, 'out.f32'), dtype='<f4').reshape(len(u8), -1).copy())
    return fn


PCTS = [1, 5, 10, 25, 50, 75, 90, 95, 99]


def cosines(fn, size, ev, chars):
    """Cosine distributions on the held-out queries (percentiles PCTS): a query and the best reference
    of its own character (near copies, new poses); the best reference of an unrelated character
    (another look-alike family) and any reference of one (all pairs)."""
    refs, near, new, _ = ev
    R = embed(fn, [im for _, im in refs], size)
    rfam = np.array([chars[c]['family'] for c, _ in refs])
    rc = np.array([c for c, _ in refs])
    out, best, every = {}, [], []
    for kind, qs in (('near', near), ('new', new)):
        Q = embed(fn, [im for _, im in qs], size)
        sim = (Q @ R.t()).numpy()
        own = [sim[i, rc == c].max() for i, (c, _) in enumerate(qs)]
        for i, (c, _) in enumerate(qs):
            o = sim[i, rfam != chars[c]['family']]
            best.append(o.max())
            every += list(o)
        out[kind] = [float(v) for v in np.percentile(own, PCTS)]
    out['unrelated-best'] = [float(v) for v in np.percentile(best, PCTS)]
    out['unrelated-all'] = [float(v) for v in np.percentile(every, PCTS)]
    return out


def evaluate(name, fn, size, ev, chars, sources):
    refs, near, new, recol = ev
    return {'model': name, 'near': top1(fn, size, refs, near, chars, sources), 'new': top1(fn, size, refs, new, chars, sources),
            'recoloured': top1(fn, size, refs, recol, chars, sources)}


def print_table(rows, n_chars, sources, log):
    cols = ['all'] + sources
    log(f'known-box top-1 among {n_chars} held-out characters (queries per cell in brackets)')
    kinds = (('near', 'near copies'), ('new', 'new poses'), ('recoloured', 'recoloured copies'))
    log('| model | ' + ' | '.join(f'{t}: {c}' for _, t in kinds for c in cols) + ' |')
    log('|---' * (1 + len(kinds) * len(cols)) + '|')
    for r in rows:
        cells = [f"{100 * r[k][c][0]:.1f} % ({r[k][c][1]})" if c in r[k] else '-' for k, _ in kinds for c in cols]
        log(f"| {r['model']} | " + ' | '.join(cells) + ' |')


# ------------------------------------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--data', default=os.path.join(HERE, 'data'))
    ap.add_argument('--out', default=os.path.join(HERE, 'out'))
    ap.add_argument('--steps', type=int, default=800)
    ap.add_argument('--batch', type=int, default=48, help='characters per batch (two views each)')
    ap.add_argument('--size', type=int, default=128)
    ap.add_argument('--freeze', type=int, default=7, help='stem and blocks[0:freeze] stay frozen')
    ap.add_argument('--lr', type=float, default=1e-3)
    ap.add_argument('--tau', type=float, default=0.05)
    ap.add_argument('--koleo', type=float, default=0.05)
    ap.add_argument('--pose-prob', type=float, default=0.6, help='P(second view comes from another pair: usually another frame)')
    ap.add_argument('--pairs', type=int, default=24, help='cached view pairs per training character')
    ap.add_argument('--threads', type=int, default=1)
    ap.add_argument('--max-minutes', type=float, default=0, help='stop training after this long (0: no limit); the log says where it stopped')
    ap.add_argument('--seed', type=int, default=1234)
    ap.add_argument('--pool-seed', type=int, default=None, help='seed of the view pool and the batches (default: --seed); the evaluation queries keep --seed, so a run with fresh views is evaluated on the same queries')
    ap.add_argument('--onnx', default=os.path.join(HERE, '..', 'models', 'kagami-descriptor-v1.onnx'))
    ap.add_argument('--sources', default='freedink', help='real art sources to use besides synthetic (comma-separated: ' + ','.join(REAL_SOURCES) + ')')
    ap.add_argument('--real-frac', type=float, default=1 / 3, help='share of each batch taken from the real art sources')
    ap.add_argument('--window-frac', type=float, default=0.0, help='share of training views framed as sliding windows frame a character (see view())')
    ap.add_argument('--hue-prob', type=float, default=0.0, help='share of training views recoloured by a hue rotation of 20-180 degrees')
    ap.add_argument('--recolours-same', action='store_true', help='a recolour of one body (same silhouette) is the same character: trained as one, and right in the evaluation')
    ap.add_argument('--context-frac', type=float, default=0.0, help='share of training views that are a box of a larger scene (view(context=...)), pooled over the box as the dense form pools a window')
    ap.add_argument('--context', type=int, default=2, help='cells of scene around such a box (the scene is size + 16 x context px square)')
    ap.add_argument('--init', default='', help='start from this committed float descriptor (its ONNX file) instead of the ImageNet trunk and a new head; its BatchNorms stay frozen')
    ap.add_argument('--no-baseline', action='store_true', help='skip the frozen models\' rows of the table (smoke runs)')
    ap.add_argument('--compare', default='', help='comma-separated manifests of committed descriptors to evaluate on the same queries')
    args = ap.parse_args()
    real = [s for s in args.sources.split(',') if s]
    assert all(s in HELDOUT for s in real), f'unknown source in {real}'
    name = os.path.basename(args.onnx).rsplit('.', 1)[0]

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    rng = random.Random(args.seed if args.pool_seed is None else args.pool_seed)
    os.makedirs(args.out, exist_ok=True)
    logf = open(os.path.join(args.out, 'train.log'), 'w')

    def log(s):
        print(s, flush=True)
        logf.write(s + '\n'); logf.flush()

    sources = ['synthetic'] + real
    chars, bgs = load_data(args.data, sources)
    if args.recolours_same:
        log(f'recolours: {recolour_identities(chars)} characters are a recolour of another of their family (one identity each)')
    train = [c for c in chars if not heldout(c)]
    test = [c for c in chars if heldout(c)]
    if args.recolours_same:
        train = merge_recolours(train)
    # Backgrounds: every 4th one is kept for evaluation only.
    train_bgs = [b for i, b in enumerate(bgs) if i % 4]
    test_bgs = [b for i, b in enumerate(bgs) if i % 4 == 0]
    for s in sources:
        log(f'data: {s}: {sum(c["source"] == s for c in train)} training characters '
            f'({sum(len(c["frames"]) for c in train if c["source"] == s)} frames), {sum(c["source"] == s for c in test)} held-out')
    log(f'data: {len(train)} training characters, {len(test)} held-out, {len(bgs)} backgrounds')
    log('held-out: ' + ', '.join(c['key'] for c in test if c['source'] != 'synthetic') + ' + synthetic styles % 5 == 0')

    trunk = mnv2.Trunk()
    log('weights: ' + trunk.load_keras(os.path.join(args.data, 'mobilenetv2_block10')))
    trunk.eval()

    # ---- before: the current model (frozen trunk + GeM 3x3 grid, 224 px)
    ev = eval_set(test, test_bgs, args.seed + 1)
    rows = []
    if not args.no_baseline:
        rows.append(evaluate('before: mobilenetv2-block10-gem3x3 (frozen, 224 px)', lambda x: mnv2.gem_grid(trunk(x)), 224, ev, test, sources))
        rows.append(evaluate(f'frozen trunk + global GeM ({args.size} px)', lambda x: F.normalize(trunk(x).clamp(min=1e-6).pow(3).mean((2, 3)).pow(1 / 3), dim=1), args.size, ev, test, sources))
        print_table(rows, len(test), sources, log)

    # ---- train
    model = Descriptor(trunk)
    if args.init:
        log('init: ' + load_onnx_weights(model, args.init))
    for p in trunk.parameters():
        p.requires_grad = False
    tuned = list(trunk.blocks[args.freeze:])
    for b in tuned:
        for p in b.parameters():
            p.requires_grad = True
    params = [{'params': [p for b in tuned for p in b.parameters()], 'lr': args.lr * 0.3},
              {'params': list(model.expand.parameters()) + list(model.proj.parameters()), 'lr': args.lr}]
    opt = torch.optim.AdamW(params, weight_decay=1e-4)
    base = [g['lr'] for g in opt.param_groups]

    fams = {}
    for c in train:
        fams.setdefault(c['family'], []).append(c)
    fam_by_kind = {k: [f for f, cs in fams.items() if (cs[0]['source'] == 'synthetic') == (k == 'synthetic')] for k in ('real', 'synthetic')}
    n_real = round(args.batch * args.real_frac)

    def sample_batch():
        """Whole look-alike families, --real-frac of the characters from the real art sources."""
        chosen = []
        for s, quota in (('real', n_real), ('synthetic', args.batch - n_real)):
            fl = fam_by_kind[s][:]
            rng.shuffle(fl)
            got = []
            for f in fl:
                if len(got) >= quota:
                    break
                got += fams[f][:quota - len(got)]
            chosen += got
        return chosen

    # ---- view pool: the frozen part is most of the compute, so every training view is rendered
    # once (strong augmentation) and its frozen features (after blocks[0:freeze]) are cached.
    # Views come in pairs: two augmentations of one frame (a near-copy pair); another pair of the
    # same character usually shows another frame (a pose pair).
    t0 = time.time()
    # With --context-frac, a share of the views are boxes of larger scenes: their features go to a
    # second pool (a larger map), and `where` says which pool holds a view, at which row and box.
    pair_of = []  # pair index -> character index
    pool, cpool = [], []
    chunk, cchunk = [], []
    where = []  # view index -> (0, row) for a crop, (1, row, (ox, oy)) for a box of a scene
    cache = os.path.join(args.out, f'pool-{"-".join(real)}-s{args.seed}{f"-ps{args.pool_seed}" if args.pool_seed is not None else ""}-p{args.pairs}-f{args.freeze}-{args.size}{f"-w{args.window_frac}" if args.window_frac else ""}'
                         f'{f"-h{args.hue_prob}" if args.hue_prob else ""}{"-rs" if args.recolours_same else ""}'
                         f'{f"-c{args.context_frac}x{args.context}" if args.context_frac else ""}.pt')

    def flush(ch, out):
        with torch.no_grad():
            out.append(trunk(to_tensor(ch).contiguous(memory_format=torch.channels_last), 0, args.freeze).contiguous().half())
        ch.clear()

    for ci, c in enumerate(train):
        for _ in range(args.pairs):
            pair_of.append(ci)
    trunk.to(memory_format=torch.channels_last)  # ~1.7x faster on CPU for the pool's frozen pass
    if os.path.exists(cache):  # same sources, seed, pairs, freeze, size: the same views (saves a rerun's time)
        pool, cpool, where, state = torch.load(cache)
        rng.setstate(state)
    else:
        n_crop = n_ctx = 0
        for ci, c in enumerate(train):
            for _ in range(args.pairs):
                f = rng.choice(c['frames'])
                for _ in range(2):
                    w = args.window_frac > 0 and rng.random() < args.window_frac
                    h = args.hue_prob > 0 and rng.random() < args.hue_prob
                    if args.context_frac > 0 and rng.random() < args.context_frac:
                        scene, box = view(f['img'], rng, train_bgs, args.size, window=w, recolour=h, context=args.context, neighbours=train)
                        cchunk.append(scene)
                        where.append((1, n_ctx, box))
                        n_ctx += 1
                    else:
                        chunk.append(view(f['img'], rng, train_bgs, args.size, window=w, recolour=h))
                        where.append((0, n_crop))
                        n_crop += 1
                if len(chunk) >= 128:
                    flush(chunk, pool)
                if len(cchunk) >= 64:
                    flush(cchunk, cpool)
        if chunk:
            flush(chunk, pool)
        if cchunk:
            flush(cchunk, cpool)
        pool = torch.cat(pool) if pool else None
        cpool = torch.cat(cpool) if cpool else None
        torch.save((pool, cpool, where, rng.getstate()), cache)
    trunk.to(memory_format=torch.contiguous_format)
    pairs_by_char = [[] for _ in train]
    for p, ci in enumerate(pair_of):
        pairs_by_char[ci].append(p)
    pool_min = (time.time() - t0) / 60
    shapes = ', '.join(f'{len(t)} x {tuple(t.shape[1:])}' for t in (pool, cpool) if t is not None)
    log(f'view pool: {len(where)} views ({args.pairs} pairs per character), frozen features {shapes}, {pool_min:.1f} min')
    index = {id(c): i for i, c in enumerate(train)}

    t0 = time.time()
    done = args.steps
    for step in range(args.steps):
        if args.max_minutes and time.time() - t0 > 60 * args.max_minutes:
            done = step
            log(f'time budget of {args.max_minutes} min reached: stopping after {step} of {args.steps} steps')
            break
        lr_f = 0.5 * (1 + math.cos(math.pi * step / args.steps)) * min(1.0, (step + 1) / 50)
        for g, b in zip(opt.param_groups, base):
            g['lr'] = b * lr_f
        batch = sample_batch()
        ia, ib = [], []
        for c in batch:
            ps = pairs_by_char[index[id(c)]]
            p = rng.choice(ps)
            ia.append(2 * p + rng.randrange(2))
            if rng.random() < args.pose_prob:
                q = rng.choice([x for x in ps if x != p])
                ib.append(2 * q + rng.randrange(2))
            else:
                ib.append(2 * p + (1 - ia[-1] % 2))
        model.train()
        trunk.eval()  # frozen blocks keep their ImageNet statistics
        for b in tuned:
            b.train()
        if args.init:  # the folded BatchNorms keep their identity statistics
            for mod in model.modules():
                if isinstance(mod, nn.BatchNorm2d):
                    mod.eval()
        views = [where[v] for v in ia + ib]
        crops = [i for i, w in enumerate(views) if w[0] == 0]
        boxes = [i for i, w in enumerate(views) if w[0] == 1]
        parts = []
        if crops:
            parts.append(model.head(trunk(pool[[views[i][1] for i in crops]].float(), args.freeze)))
        if boxes:
            parts.append(model.head(trunk(cpool[[views[i][1] for i in boxes]].float(), args.freeze), [views[i][2] for i in boxes]))
        z = torch.cat(parts)[torch.argsort(torch.tensor(crops + boxes))]  # back in the batch's order
        za, zb = z[:len(batch)], z[len(batch):]
        l_nce = nt_xent(za, zb, args.tau)
        l_ko = koleo(za) + koleo(zb)
        loss = l_nce + args.koleo * l_ko
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 50 == 0 or step == args.steps - 1:
            el = time.time() - t0
            log(f'step {step:5d}  loss {loss.item():.3f}  nce {l_nce.item():.3f}  koleo {l_ko.item():.3f}  '
                f'lr {opt.param_groups[1]["lr"]:.2e}  {el / 60:.1f} min  ({el / (step + 1):.2f} s/step)')
    train_min = (time.time() - t0) / 60
    log(f'training: {done} steps x {2 * args.batch} views in {train_min:.1f} min (+ {pool_min:.1f} min view pool)')

    torch.save(model.state_dict(), os.path.join(args.out, 'descriptor.pt'))

    model.eval()
    rows.append(evaluate(f'after: {name} ({args.size} px, {done} steps)', model, args.size, ev, test, sources))
    if args.context_frac:
        near_c, new_c = eval_context(test, test_bgs, args.seed + 1, args.context, args.size)
        rows.append({'model': f'after: {name}, queries as boxes of larger scenes (pooled as the dense form pools a window)',
                     'near': top1(model, args.size, ev[0], near_c, test, sources, embed_boxes(model, [q for _, q in near_c])),
                     'new': top1(model, args.size, ev[0], new_c, test, sources, embed_boxes(model, [q for _, q in new_c])),
                     'recoloured': {}})
    for m in filter(None, args.compare.split(',')):
        rows.append(evaluate(f'committed: {os.path.basename(m).rsplit(".", 1)[0]} (onnxruntime)', onnx_fn(m), json.load(open(m))['input']['width'], ev, test, sources))
    print_table(rows, len(test), sources, log)
    cal = {}
    for m in [None] + list(filter(None, args.compare.split(','))):
        key = name if m is None else os.path.basename(m).rsplit('.', 1)[0]
        cal[key] = cosines(model if m is None else onnx_fn(m), args.size if m is None else json.load(open(m))['input']['width'], ev, test)
        log(f'cosines {key} (p' + '/'.join(map(str, PCTS)) + '): ' + '  '.join(f'{k} ' + '/'.join(f'{x:.2f}' for x in v) for k, v in cal[key].items()))
    json.dump({'rows': rows, 'cosines': cal, 'steps_done': done, 'train_minutes': train_min, 'pool_minutes': pool_min, 'args': vars(args), 'heldout': [c['key'] for c in test]},
              open(os.path.join(args.out, 'results.json'), 'w'), indent=1)

    # ---- export
    wrapper = OnnxWrapper(model).eval()
    dummy = torch.zeros(1, args.size, args.size, 3)
    torch.onnx.export(wrapper, dummy, args.onnx, input_names=['input'], output_names=['embedding'],
                      dynamic_axes={'input': {0: 'N'}, 'embedding': {0: 'N'}}, opset_version=13, do_constant_folding=True)
    log(f'onnx: {args.onnx} ({os.path.getsize(args.onnx) / 1e6:.2f} MB)')
    # Three check images (query views of held-out characters) and torch's embeddings of them.
    chk = [ev[2][i][1] for i in (0, len(ev[2]) // 2, len(ev[2]) - 1)]
    for i, im in enumerate(chk):
        Image.fromarray(np.asarray(Image.fromarray(im).resize((args.size, args.size), Image.BILINEAR))).save(os.path.join(args.out, f'check-{i}.png'))
    with torch.no_grad():
        e = model(to_tensor([np.asarray(Image.open(os.path.join(args.out, f'check-{i}.png')).convert('RGB')) for i in range(3)]))
    e.numpy().astype('<f4').tofile(os.path.join(args.out, 'check-torch.bin'))


if __name__ == '__main__':
    main()
