/**
 * Generates test clips with the real ffmpeg: a panning background with character art overlaid
 * during known intervals, encoded as H.264. The art is transformed beforehand (scale, mirror,
 * hue shift, tilt) with sharp, so each clip has an exact ground truth.
 */
import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import sharp from 'sharp';
import { resolveBinaries } from '../media/ffmpeg';

const run = promisify(execFile);

export interface Appearance {
  /** PNG with transparency. */
  png: Buffer;
  startSec: number;
  endSec: number;
  /** Height of the character in the frame, as a fraction of the frame height. */
  heightFrac: number;
  mirror?: boolean;
  /** Hue rotation in degrees. */
  hue?: number;
  /** Rotation in degrees (clockwise). */
  tilt?: number;
  /** Start position of the top-left corner as a fraction of the frame; moves by `drift` px/s. */
  x: number;
  y: number;
  drift?: number;
}

export interface ClipSpec {
  out: string;
  width: number;
  height: number;
  durationSec: number;
  fps?: number;
  /** PNG at least width×height; wider backgrounds pan. */
  background: Buffer;
  appearances: Appearance[];
  /** x264 constant rate factor (higher = more compression artefacts). */
  crf?: number;
}

/** Applies the appearance's transforms to the art and returns the PNG that gets overlaid. */
export async function transformArt(a: Appearance, frameHeight: number): Promise<Buffer> {
  const h = Math.max(8, Math.round(a.heightFrac * frameHeight));
  let img = sharp(a.png).resize({ height: h });
  if (a.mirror) img = img.flop();
  if (a.hue) img = img.modulate({ hue: a.hue });
  let buf = await img.png().toBuffer();
  if (a.tilt) buf = await sharp(buf).rotate(a.tilt, { background: { r: 0, g: 0, b: 0, alpha: 0 } }).png().toBuffer();
  return buf;
}

export async function makeClip(spec: ClipSpec): Promise<void> {
  const { ffmpeg } = resolveBinaries();
  const dir = await mkdtemp(path.join(os.tmpdir(), 'kagami-clip-'));
  try {
    const fps = spec.fps ?? 25;
    const bgFile = path.join(dir, 'bg.png');
    await writeFile(bgFile, spec.background);
    const bgMeta = await sharp(spec.background).metadata();
    const pan = Math.max(0, (bgMeta.width ?? spec.width) - spec.width) / spec.durationSec;
    const args = ['-y', '-hide_banner', '-loglevel', 'error', '-loop', '1', '-framerate', String(fps), '-i', bgFile];
    const filters = [`[0:v]crop=${spec.width}:${spec.height}:x='min(t*${pan.toFixed(3)},iw-${spec.width})':y=0,format=rgba[v0]`];
    for (let i = 0; i < spec.appearances.length; i++) {
      const a = spec.appearances[i];
      const f = path.join(dir, `a${i}.png`);
      await writeFile(f, await transformArt(a, spec.height));
      args.push('-loop', '1', '-framerate', String(fps), '-i', f);
      const x = `${Math.round(a.x * spec.width)}+(t-${a.startSec})*${a.drift ?? 0}`;
      const y = `${Math.round(a.y * spec.height)}`;
      filters.push(`[v${i}][${i + 1}:v]overlay=x='${x}':y='${y}':enable='between(t,${a.startSec},${a.endSec})'[v${i + 1}]`);
    }
    const last = `v${spec.appearances.length}`;
    filters.push(`[${last}]format=yuv420p[out]`);
    args.push(
      '-filter_complex', filters.join(';'),
      '-map', '[out]', '-t', String(spec.durationSec), '-r', String(fps),
      '-c:v', 'libx264', '-preset', 'veryfast', '-crf', String(spec.crf ?? 23), '-pix_fmt', 'yuv420p', spec.out,
    );
    await run(ffmpeg, args, { maxBuffer: 16 << 20 });
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** Length of the overlap of two intervals over the length of their union. */
export function temporalIoU(a: { startSec: number; endSec: number }, b: { startSec: number; endSec: number }): number {
  const inter = Math.max(0, Math.min(a.endSec, b.endSec) - Math.max(a.startSec, b.startSec));
  const union = Math.max(a.endSec, b.endSec) - Math.min(a.startSec, b.startSec);
  return union > 0 ? inter / union : 0;
}
