/**
 * The benchmark's data: a seeded plan (which characters are registered, which clips show what,
 * under which transforms) and the clips themselves, rendered with ffmpeg (H.264) and cached by
 * the hash of everything that goes into them under `.cache/bench/clips/`.
 *
 * Clip kinds:
 *  - near-copy:     a registered reference image itself, transformed;
 *  - new-rendition: another frame/pose of a registered character (never registered itself);
 *  - lookalike:     an unregistered character, preferably of a registered one's family (recolour,
 *                   same style), so any report of a registered character is a false alarm;
 *  - empty:         background (and maybe a caption) only.
 * Transforms: on-screen height 15–70 % of the frame, motion, mirror, hue shift, tilt, blur, noise,
 * a partial occluder, a burned-in caption, and low-quality re-encoding (downscale + high CRF).
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { copyFileSync, existsSync, mkdirSync, renameSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import sharp from 'sharp';
import { resolveBinaries } from '../../media/ffmpeg';
import { mulberry32, type Rng } from '../../synthetic/art';
import { transformArt } from '../../synthetic/video';
import type { ArtImage, ArtSource, SourceCharacter } from './sources';

const run = promisify(execFile);

/** Bump when the rendering changes, so cached clips are not reused. */
export const GENERATOR_VERSION = 1;

export type ClipKind = 'near-copy' | 'new-rendition' | 'lookalike' | 'empty';
export const CLIP_KINDS: readonly ClipKind[] = ['near-copy', 'new-rendition', 'lookalike', 'empty'];

export interface ClipTransforms {
  /** Character height / frame height. */
  heightFrac: number;
  mirror: boolean;
  /** Hue rotation, degrees (0: none). */
  hue: number;
  /** Rotation, degrees (0: none). */
  tilt: number;
  /** Horizontal motion, px/s at the clip's size. */
  drift: number;
  /** Where the character starts within the free space of the frame (0..1 each). */
  xFrac: number;
  yFrac: number;
  /** Gaussian blur of the whole frame (sigma px; 0: none). */
  blur: number;
  /** ffmpeg temporal noise strength (0: none). */
  noise: number;
  /** An opaque bar over part of the character: side, fraction of the character covered, colour. */
  occlusion?: { side: 'left' | 'right' | 'top' | 'bottom'; frac: number; colour: string };
  caption?: string;
  /** x264 CRF of the first encode. */
  crf: number;
  /** Re-encoded at half size and high CRF, then back to full size. */
  reencode: boolean;
}

export interface PlannedClip {
  id: string;
  kind: ClipKind;
  source: string;
  /** Who appears (absent for empty clips). */
  characterKey?: string;
  /** The registered character that is there (positives only). */
  truthCharacter?: string;
  /** Set when the character shown is an unregistered recolour of truthCharacter (same silhouette). */
  recolourOf?: string;
  /** Which image: reference or rendition, by index. */
  image?: { set: 'references' | 'renditions'; index: number; label: string };
  interval?: { startSec: number; endSec: number };
  background: number;
  transforms: ClipTransforms;
}

export interface Plan {
  seed: number;
  width: number;
  height: number;
  durationSec: number;
  registered: Array<{ key: string; name: string; source: string; family: string; references: string[] }>;
  unregistered: string[];
  backgrounds: string[];
  clips: PlannedClip[];
}

export interface PlanOptions {
  seed: number;
  clips: number;
  /** At most this many registered characters per source. */
  maxRegisteredPerSource: number;
  width: number;
  height: number;
  durationSec: number;
  /** Fractions of positives (near-copy, new-rendition) and negatives (lookalike, empty); normalised. */
  mix: Record<ClipKind, number>;
}

export const DEFAULT_MIX: Record<ClipKind, number> = { 'near-copy': 0.35, 'new-rendition': 0.35, lookalike: 0.2, empty: 0.1 };

const CAPTIONS = [
  'No way, did you see that?!',
  'Episode 12 — The Frozen Forest',
  'LIKE & SUBSCRIBE for more',
  '[dramatic music]',
  'I told you we should have gone left.',
  'Speedrun any% — new PB',
  'Watch till the end!',
  'Hold on... something is coming',
];

const rnd = (r: Rng, lo: number, hi: number) => lo + (hi - lo) * r();
const chance = (r: Rng, p: number) => r() < p;
const pick = <T>(r: Rng, xs: readonly T[]): T => xs[Math.floor(r() * xs.length)];
function shuffle<T>(r: Rng, xs: readonly T[]): T[] {
  const a = [...xs];
  for (let i = a.length - 1; i > 0; i--) {
    const j = Math.floor(r() * (i + 1));
    [a[i], a[j]] = [a[j], a[i]];
  }
  return a;
}

/** Which characters get registered: one per look-alike family (the others stay unregistered look-alikes). */
function chooseRegistered(r: Rng, src: ArtSource, max: number): { registered: SourceCharacter[]; unregistered: SourceCharacter[] } {
  const families = new Map<string, SourceCharacter[]>();
  for (const c of src.characters) families.set(c.family, [...(families.get(c.family) ?? []), c]);
  const registered: SourceCharacter[] = [];
  const unregistered: SourceCharacter[] = [];
  // Families with look-alikes first (they make the hard negatives), then singletons; a quarter of
  // the singletons stay unregistered as plain "someone else" negatives.
  const fams = shuffle(r, [...families.values()]).sort((a, b) => Number(b.length > 1) - Number(a.length > 1));
  for (const members of fams) {
    const m = shuffle(r, members);
    const withRenditions = m.filter((c) => c.renditions.length > 0);
    const head = withRenditions[0] ?? m[0];
    const rest = m.filter((c) => c !== head);
    if (registered.length < max && (members.length > 1 || !chance(r, 0.25))) registered.push(head);
    else unregistered.push(head);
    unregistered.push(...rest);
  }
  return { registered, unregistered };
}

function makeTransforms(r: Rng, width: number): ClipTransforms {
  return {
    heightFrac: rnd(r, 0.15, 0.7),
    mirror: chance(r, 0.3),
    hue: chance(r, 0.25) ? Math.round(rnd(r, 20, 60)) * (chance(r, 0.5) ? 1 : -1) : 0,
    tilt: chance(r, 0.15) ? Math.round(rnd(r, 5, 15)) * (chance(r, 0.5) ? 1 : -1) : 0,
    drift: Math.round(rnd(r, -60, 60) * (width / 960)),
    xFrac: rnd(r, 0.1, 0.9),
    yFrac: rnd(r, 0.1, 0.9),
    blur: chance(r, 0.2) ? Math.round(rnd(r, 1, 2.2) * 10) / 10 : 0,
    noise: chance(r, 0.2) ? Math.round(rnd(r, 8, 20)) : 0,
    occlusion: chance(r, 0.2)
      ? { side: pick(r, ['left', 'right', 'top', 'bottom'] as const), frac: Math.round(rnd(r, 0.25, 0.4) * 100) / 100, colour: pick(r, ['#3a3a3a', '#c8b070', '#5a7a3a', '#ffffff']) }
      : undefined,
    caption: chance(r, 0.35) ? pick(r, CAPTIONS) : undefined,
    crf: Math.round(rnd(r, 20, 28)),
    reencode: chance(r, 0.25),
  };
}

export function makePlan(sources: readonly ArtSource[], o: PlanOptions): Plan {
  const r = mulberry32(o.seed * 2654435761 + 7);
  const perSource = sources.map((s) => ({ src: s, ...chooseRegistered(r, s, o.maxRegisteredPerSource) }));
  const backgrounds = sources.flatMap((s) => s.backgrounds.map((b) => b.label));
  if (!backgrounds.length) throw new Error('no backgrounds: include the supertux or synthetic source');
  const total = CLIP_KINDS.reduce((a, k) => a + o.mix[k], 0);
  // Exact counts per kind (largest remainder), then a seeded shuffle of the order.
  const raw = CLIP_KINDS.map((k) => (o.clips * o.mix[k]) / total);
  const counts = raw.map(Math.floor);
  const order = raw.map((v, i) => [v - Math.floor(v), i] as const).sort((a, b) => b[0] - a[0]);
  for (let i = 0; counts.reduce((a, b) => a + b, 0) < o.clips; i++) counts[order[i % order.length][1]]++;
  const kinds = shuffle(r, CLIP_KINDS.flatMap((k, i) => Array<ClipKind>(counts[i]).fill(k)));

  const clips: PlannedClip[] = [];
  const used = new Map<string, number>();
  // Least-used first (ties seeded), so every registered character is shown about equally often.
  const leastUsed = <T extends { key: string }>(xs: T[]): T => {
    const min = Math.min(...xs.map((x) => used.get(x.key) ?? 0));
    const c = pick(r, xs.filter((x) => (used.get(x.key) ?? 0) === min));
    used.set(c.key, (used.get(c.key) ?? 0) + 1);
    return c;
  };
  kinds.forEach((kind, i) => {
    const t = makeTransforms(r, o.width);
    const start = Math.round(rnd(r, 0.3, 2.5) * 100) / 100;
    const end = Math.min(o.durationSec - 0.2, Math.round((start + rnd(r, 2, 3.5)) * 100) / 100);
    const bg = Math.floor(r() * backgrounds.length);
    const id = `c${String(i).padStart(3, '0')}`;
    const ps = perSource[i % perSource.length];
    const base = { id, kind, source: ps.src.id, background: bg, transforms: t };
    if (kind === 'empty') {
      clips.push(base);
      return;
    }
    if (kind === 'lookalike') {
      const regFamilies = new Set(ps.registered.map((c) => c.family));
      const pool = ps.unregistered.filter((c) => regFamilies.has(c.family));
      const c = leastUsed(pool.length ? pool : ps.unregistered.length ? ps.unregistered : perSource.flatMap((p) => p.unregistered));
      const set = c.renditions.length && chance(r, 0.5) ? 'renditions' : 'references';
      const index = Math.floor(r() * c[set].length);
      clips.push({ ...base, source: c.source, characterKey: c.key, image: { set, index, label: c[set][index].label }, interval: { startSec: start, endSec: end } });
      return;
    }
    const pool = kind === 'new-rendition' ? ps.registered.filter((c) => c.renditions.length) : ps.registered;
    const all = perSource.flatMap((p) => (kind === 'new-rendition' ? p.registered.filter((c) => c.renditions.length) : p.registered));
    const c = leastUsed(pool.length ? pool : all);
    const set = kind === 'near-copy' ? 'references' : 'renditions';
    const index = Math.floor(r() * c[set].length);
    clips.push({
      ...base,
      source: c.source,
      characterKey: c.key,
      truthCharacter: c.key,
      image: { set, index, label: c[set][index].label },
      interval: { startSec: start, endSec: end },
    });
  });
  return {
    seed: o.seed,
    width: o.width,
    height: o.height,
    durationSec: o.durationSec,
    registered: perSource.flatMap((p) =>
      p.registered.map((c) => ({ key: c.key, name: c.name, source: c.source, family: c.family, references: c.references.map((x) => x.label) })),
    ),
    unregistered: perSource.flatMap((p) => p.unregistered.map((c) => c.key)),
    backgrounds,
    clips,
  };
}

// ----------------------------------------------------------------------------- rendering

export interface ArtLookup {
  character(key: string): SourceCharacter;
  background(index: number): Buffer;
}

export function artLookup(sources: readonly ArtSource[]): ArtLookup {
  const chars = new Map(sources.flatMap((s) => s.characters.map((c) => [c.key, c] as const)));
  const bgs = sources.flatMap((s) => s.backgrounds.map((b) => b.png));
  return {
    character: (k) => {
      const c = chars.get(k);
      if (!c) throw new Error(`unknown character ${k}`);
      return c;
    },
    background: (i) => bgs[i],
  };
}

const sha = (...parts: Array<string | Buffer>) => {
  const h = createHash('sha256');
  for (const p of parts) h.update(p).update('\0');
  return h.digest('hex');
};

function escapeXml(s: string): string {
  return s.replace(/[<>&'"]/g, (c) => ({ '<': '&lt;', '>': '&gt;', '&': '&amp;', "'": '&apos;', '"': '&quot;' })[c]!);
}

async function captionPng(text: string, width: number, height: number): Promise<Buffer> {
  const fs = Math.round(height * 0.055);
  const h = Math.round(fs * 1.8);
  const svg =
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${h}">` +
    `<text x="50%" y="${Math.round(fs * 1.25)}" text-anchor="middle" font-family="DejaVu Sans, Liberation Sans, sans-serif" font-weight="bold" ` +
    `font-size="${fs}" fill="#ffffff" stroke="#000000" stroke-width="${Math.max(2, fs / 10)}" paint-order="stroke">${escapeXml(text)}</text></svg>`;
  return sharp(Buffer.from(svg)).png().toBuffer();
}

/** The art as it is overlaid: scaled, mirrored, recoloured, tilted, then partly covered. */
async function preparedArt(art: ArtImage, t: ClipTransforms, frameHeight: number): Promise<Buffer> {
  let buf = await transformArt({ png: art.png, startSec: 0, endSec: 0, heightFrac: t.heightFrac, mirror: t.mirror, hue: t.hue, tilt: t.tilt, x: 0, y: 0 }, frameHeight);
  if (t.occlusion) {
    const m = await sharp(buf).metadata();
    const w = m.width!;
    const h = m.height!;
    const o = t.occlusion;
    const vertical = o.side === 'left' || o.side === 'right';
    const bw = vertical ? Math.max(1, Math.round(w * o.frac)) : w;
    const bh = vertical ? h : Math.max(1, Math.round(h * o.frac));
    const bar = await sharp({ create: { width: bw, height: bh, channels: 4, background: o.colour } }).png().toBuffer();
    buf = await sharp(buf)
      .composite([{ input: bar, left: o.side === 'right' ? w - bw : 0, top: o.side === 'bottom' ? h - bh : 0 }])
      .png()
      .toBuffer();
  }
  return buf;
}

/** Where a clip's character is overlaid: its box at the interval's start (plan pixels) and its drift (px/s, x only). */
export interface ArtPlacement {
  x0: number;
  y0: number;
  width: number;
  height: number;
  drift: number;
  png: Buffer;
}

/** The overlay's placement, as renderClip draws it (undefined for a clip without a character). */
export async function artPlacement(plan: Plan, clip: PlannedClip, art: ArtLookup): Promise<ArtPlacement | undefined> {
  const { width: W, height: H } = plan;
  const t = clip.transforms;
  const artImg = clip.characterKey && clip.image ? art.character(clip.characterKey)[clip.image.set][clip.image.index] : undefined;
  if (!artImg || !clip.interval) return undefined;
  const png = await preparedArt(artImg, t, H);
  const m = await sharp(png).metadata();
  const aw = m.width!;
  const ah = m.height!;
  const dur = clip.interval.endSec - clip.interval.startSec;
  // Start inside the free space; keep at least 60 % of the character in frame while it moves.
  let drift = t.drift;
  let x0 = Math.round(t.xFrac * Math.max(0, W - aw));
  const x1 = x0 + drift * dur;
  if (x1 < -0.4 * aw || x1 + aw > W + 0.4 * aw) drift = -drift;
  if (x0 + drift * dur < -0.4 * aw || x0 + drift * dur + aw > W + 0.4 * aw) drift = 0;
  x0 = Math.max(-Math.round(0.2 * aw), x0);
  const y0 = Math.round(t.yFrac * Math.max(0, H - ah));
  return { x0, y0, width: aw, height: ah, drift, png };
}

export interface RenderedClip {
  file: string;
  cached: boolean;
}

/** Renders a planned clip (or finds it in the cache). */
export async function renderClip(plan: Plan, clip: PlannedClip, art: ArtLookup, cacheDir: string): Promise<RenderedClip> {
  const { width: W, height: H, durationSec: D } = plan;
  const t = clip.transforms;
  const bgPng = art.background(clip.background);
  const artImg = clip.characterKey && clip.image ? art.character(clip.characterKey)[clip.image.set][clip.image.index] : undefined;
  const key = sha(String(GENERATOR_VERSION), JSON.stringify({ W, H, D, clip: { ...clip, id: undefined } }), bgPng, artImg?.png ?? '');
  const dir = path.join(cacheDir, 'clips');
  mkdirSync(dir, { recursive: true });
  const file = path.join(dir, `${key.slice(0, 24)}.mp4`);
  if (existsSync(file)) return { file, cached: true };

  const { ffmpeg } = resolveBinaries();
  const tmp = await mkdtemp(path.join(os.tmpdir(), 'kagami-bench-'));
  try {
    const fps = 25;
    const panW = W + Math.round(W * 0.3);
    const bgFile = path.join(tmp, 'bg.png');
    await writeFile(bgFile, await sharp(bgPng).resize(panW, H, { fit: 'cover' }).removeAlpha().png().toBuffer());
    const pan = (panW - W) / D;
    const args = ['-y', '-hide_banner', '-loglevel', 'error', '-loop', '1', '-framerate', String(fps), '-i', bgFile];
    const filters = [`[0:v]crop=${W}:${H}:x='min(t*${pan.toFixed(3)},iw-${W})':y=0,format=rgba[v0]`];
    let last = 'v0';
    let input = 1;
    const placed = await artPlacement(plan, clip, art);
    if (placed && clip.interval) {
      const { x0, y0, drift, png } = placed;
      const f = path.join(tmp, 'art.png');
      await writeFile(f, png);
      args.push('-loop', '1', '-framerate', String(fps), '-i', f);
      filters.push(`[${last}][${input}:v]overlay=x='${x0}+(t-${clip.interval.startSec})*${drift}':y=${y0}:enable='between(t,${clip.interval.startSec},${clip.interval.endSec})'[v1]`);
      last = 'v1';
      input++;
    }
    if (t.caption) {
      const f = path.join(tmp, 'caption.png');
      const cap = await captionPng(t.caption, W, H);
      await writeFile(f, cap);
      const ch = (await sharp(cap).metadata()).height!;
      args.push('-loop', '1', '-framerate', String(fps), '-i', f);
      filters.push(`[${last}][${input}:v]overlay=x=0:y=${H - ch - Math.round(H * 0.04)}[v2]`);
      last = 'v2';
      input++;
    }
    const post = [];
    if (t.blur > 0) post.push(`gblur=sigma=${t.blur}`);
    if (t.noise > 0) post.push(`noise=alls=${t.noise}:allf=t`);
    post.push('format=yuv420p');
    filters.push(`[${last}]${post.join(',')}[out]`);
    const first = t.reencode ? path.join(tmp, 'first.mp4') : path.join(tmp, 'out.mp4');
    args.push('-filter_complex', filters.join(';'), '-map', '[out]', '-t', String(D), '-r', String(fps));
    args.push('-c:v', 'libx264', '-preset', 'veryfast', '-crf', String(t.crf), '-pix_fmt', 'yuv420p', first);
    await run(ffmpeg, args, { maxBuffer: 16 << 20 });
    if (t.reencode) {
      // A low-quality re-upload: half resolution at high CRF, scaled back up.
      const half = path.join(tmp, 'half.mp4');
      await run(ffmpeg, ['-y', '-hide_banner', '-loglevel', 'error', '-i', first, '-vf', `scale=${W / 2}:-2`, '-c:v', 'libx264', '-preset', 'veryfast', '-crf', '36', half]);
      await run(ffmpeg, ['-y', '-hide_banner', '-loglevel', 'error', '-i', half, '-vf', `scale=${W}:${H}`, '-c:v', 'libx264', '-preset', 'veryfast', '-crf', '30', '-pix_fmt', 'yuv420p', path.join(tmp, 'out.mp4')]);
    }
    // Copy next to the target then rename: /tmp may be another filesystem, and a half-written
    // file must never look like a cached clip.
    copyFileSync(path.join(tmp, 'out.mp4'), `${file}.part`);
    renameSync(`${file}.part`, file);
    return { file, cached: false };
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
}

/** A short description of a clip's transforms, for tables of failures. */
export function describeTransforms(t: ClipTransforms): string {
  const parts = [`h=${Math.round(t.heightFrac * 100)}%`];
  if (t.mirror) parts.push('mirror');
  if (t.hue) parts.push(`hue${t.hue > 0 ? '+' : ''}${t.hue}`);
  if (t.tilt) parts.push(`tilt${t.tilt}`);
  if (t.blur) parts.push(`blur${t.blur}`);
  if (t.noise) parts.push(`noise${t.noise}`);
  if (t.occlusion) parts.push(`occl-${t.occlusion.side}${Math.round(t.occlusion.frac * 100)}`);
  if (t.caption) parts.push('caption');
  if (t.reencode) parts.push('reencode');
  return parts.join(' ');
}
