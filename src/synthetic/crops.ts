/**
 * Seeded 128x128-style "window crops" like the likeness tier feeds a crop model: a window of a busy
 * scene that holds one synthetic character (part of it, or most of it, possibly mirrored, rotated,
 * blurred or JPEG-compressed), or only background. Used to calibrate and to check quantised models
 * (training/quantise.sh, the perf bench, the descriptor tests); deterministic for a given spec.
 *
 * Seeds: callers pick character and background seed ranges disjoint from other uses (see
 * training/README.md): tests < 1000, benchmarks styleSeed 40-44, background bank 50000-50007,
 * training 20000-30047 / 200000+, int8 calibration 60000-69999, int8 evaluation 80000-89999.
 */
import type { RawImage } from '../media/types';
import sharp from 'sharp';
import { composite, decodeToRaw, mulberry32, renderBackground, renderCharacter } from './art';

export interface CropSpec {
  /** Number of crops. */
  count: number;
  /** Seed of the per-crop choices (placement, augmentation). */
  seed: number;
  /** Seeds of the characters that may appear (renderCharacter). */
  characters: number[];
  /** styleSeed of a character seed (look-alike families share one); default: the seed itself. */
  styleOf?: (seed: number) => number;
  /** First seed of the background pool (renderBackground); `backgrounds` consecutive seeds are used. */
  backgroundSeed: number;
  backgrounds: number;
  /** Share of crops with no character (default 0.25). */
  emptyShare?: number;
  /** Output side in pixels (default 128). */
  size?: number;
}

export interface Crop {
  image: RawImage & { channels: 3 };
  /** Index into spec.characters of the character in the crop, or -1 for background only. */
  character: number;
}

const BG_SIDE = 384;

/** The crops of a spec, in order. Characters and backgrounds are rendered once each. */
export async function windowCrops(spec: CropSpec): Promise<Crop[]> {
  const size = spec.size ?? 128;
  const emptyShare = spec.emptyShare ?? 0.25;
  const styleOf = spec.styleOf ?? ((s: number) => s);
  const styles = ['busy', 'busy', 'busy', 'gradient', 'plain'] as const;
  const bgs: RawImage[] = [];
  for (let i = 0; i < spec.backgrounds; i++) {
    const s = spec.backgroundSeed + i;
    const png = await renderBackground(s, BG_SIDE, BG_SIDE, { style: styles[i % styles.length], shapes: 30 + (i % 4) * 15, noise: i % 3 === 0 ? 6 : 0 });
    bgs.push(await decodeToRaw(png, 3));
  }
  const art = new Map<number, Buffer>();
  const r = mulberry32(spec.seed * 2654435761 + 7);
  const out: Crop[] = [];
  for (let n = 0; n < spec.count; n++) {
    const bg = bgs[Math.floor(r() * bgs.length)];
    // A window of 96-256 background pixels, like a scan window that is later resampled to the input.
    const win = Math.round(96 + r() * 160);
    const x = Math.floor(r() * (BG_SIDE - win));
    const y = Math.floor(r() * (BG_SIDE - win));
    const region = extract(bg, x, y, win);
    let character = -1;
    let image = region;
    if (r() >= emptyShare) {
      character = Math.floor(r() * spec.characters.length);
      const seed = spec.characters[character];
      let png = art.get(seed);
      if (!png) art.set(seed, (png = await renderCharacter(seed, 192, { styleSeed: styleOf(seed) })));
      const frac = 0.45 + r() * 0.6; // character side relative to the window: from well inside to cut off
      const res = await composite(
        region,
        [{ image: png, cx: win * (0.5 + (r() - 0.5) * 0.3), cy: win * (0.5 + (r() - 0.5) * 0.3), scale: (frac * win) / 192, mirror: r() < 0.5, rotateDeg: r() < 0.3 ? (r() - 0.5) * 20 : 0 }],
        { jpegQuality: r() < 0.4 ? Math.round(40 + r() * 50) : undefined, blurSigma: r() < 0.2 ? 0.5 + r() : undefined },
      );
      image = res.raw;
    }
    const { data } = await sharp(image.data, { raw: { width: win, height: win, channels: 3 } })
      .resize(size, size, { fit: 'fill', kernel: 'linear' })
      .raw()
      .toBuffer({ resolveWithObject: true });
    out.push({ image: { width: size, height: size, channels: 3, data: new Uint8Array(data.buffer, data.byteOffset, data.byteLength) }, character });
  }
  return out;
}

/** Reference views of characters: each drawn alone and centred on neutral grey, `size` x `size`. */
export async function referenceViews(characters: number[], styleOf: (seed: number) => number = (s) => s, size = 128): Promise<Array<RawImage & { channels: 3 }>> {
  const out: Array<RawImage & { channels: 3 }> = [];
  for (const seed of characters) {
    const png = await renderCharacter(seed, size, { styleSeed: styleOf(seed) });
    const { data } = await sharp(png).flatten({ background: { r: 128, g: 128, b: 128 } }).removeAlpha().raw().toBuffer({ resolveWithObject: true });
    out.push({ width: size, height: size, channels: 3, data: new Uint8Array(data.buffer, data.byteOffset, data.byteLength) });
  }
  return out;
}

function extract(img: RawImage, x: number, y: number, side: number): RawImage & { channels: 3 } {
  const data = new Uint8Array(side * side * 3);
  for (let j = 0; j < side; j++) {
    const from = ((y + j) * img.width + x) * 3;
    data.set(img.data.subarray(from, from + side * 3), j * side * 3);
  }
  return { width: side, height: side, channels: 3, data };
}
