/**
 * Deterministic synthetic "cartoon character" art for tests and benchmarks.
 *
 * Everything here is driven by a seeded PRNG (mulberry32), so the same seed gives the same
 * pixels on every run. Characters are flat-shaded SVG drawings with dark outlines (body,
 * head, ears/spikes, eyes, mouth, stripes, limbs, tail, a chest badge with glyph-like
 * strokes) and are deliberately left/right asymmetric so that mirrored appearances are
 * distinguishable. Characters sharing a `styleSeed` share palette and body plan, which makes
 * them good look-alike negatives.
 *
 * Main entry points:
 *   renderCharacter(seed, size, opts?)  -> PNG (RGBA, transparent background)
 *   renderBackground(seed, w, h, opts?) -> PNG (RGB)
 *   composite(background, placements, opts?) -> { png, raw, boxes }
 *   decodeToRaw(png, channels?)          -> RawImage
 */
import sharp from 'sharp';
import type { RawImage } from '../media/types';
import { mulberry32, type Rng } from '../random';

// ----------------------------------------------------------------------------- PRNG

export { mulberry32, type Rng };

const rnd = (r: Rng, lo: number, hi: number): number => lo + (hi - lo) * r();
const rint = (r: Rng, lo: number, hi: number): number => Math.floor(rnd(r, lo, hi + 1));
const pick = <T>(r: Rng, xs: readonly T[]): T => xs[Math.floor(r() * xs.length)];
const f1 = (v: number): string => v.toFixed(2);

function hsl(h: number, s: number, l: number): string {
  return `hsl(${Math.round(((h % 360) + 360) % 360)},${Math.round(s)}%,${Math.round(l)}%)`;
}

// ----------------------------------------------------------------------------- characters

export interface CharacterOptions {
  /** Palette and body plan seed; characters with the same styleSeed look alike. Default: seed. */
  styleSeed?: number;
  /** Outline width in viewBox units (the drawing is 100x100). Default 1.6. */
  outline?: number;
  /** Fill the canvas with this colour instead of leaving it transparent (e.g. '#ffffff'). */
  canvas?: string;
}

/** The character as an SVG document (viewBox 100x100, scaled to size x size pixels). */
export function characterSvg(seed: number, size: number, opts: CharacterOptions = {}): string {
  const style = mulberry32((opts.styleSeed ?? seed) * 7919 + 17);
  const r = mulberry32(seed * 104729 + 3);
  const ow = opts.outline ?? 1.6;
  const ink = '#1a1a22';

  // Palette (style): base hue plus complementary / analogous accents.
  const h0 = rnd(style, 0, 360);
  const palette = [
    hsl(h0, rnd(style, 55, 90), rnd(style, 45, 65)),
    hsl(h0 + 180 + rnd(style, -30, 30), rnd(style, 60, 95), rnd(style, 40, 60)),
    hsl(h0 + rnd(style, 30, 60), rnd(style, 50, 90), rnd(style, 60, 80)),
    hsl(h0 + rnd(style, 90, 150), rnd(style, 50, 90), rnd(style, 35, 55)),
    hsl(h0 + rnd(style, 200, 300), rnd(style, 40, 80), rnd(style, 70, 88)),
  ];
  const earKind = pick(style, ['spike', 'round', 'horn'] as const);
  const headR = rnd(style, 14, 19);

  const parts: string[] = [];
  const stroke = `stroke="${ink}" stroke-width="${ow}" stroke-linejoin="round"`;
  const col = (): string => pick(r, palette);

  // Body: jittered polygon.
  const bcx = 50 + rnd(r, -3, 3);
  const bcy = 62 + rnd(r, -3, 3);
  const bn = rint(r, 6, 9);
  const brx = rnd(r, 17, 24);
  const bry = rnd(r, 16, 22);
  const bodyPts: Array<[number, number]> = [];
  for (let i = 0; i < bn; i++) {
    const a = (i / bn) * Math.PI * 2 + rnd(r, -0.25, 0.25);
    const k = rnd(r, 0.8, 1.15);
    bodyPts.push([bcx + Math.cos(a) * brx * k, bcy + Math.sin(a) * bry * k]);
  }
  const bodyPath = bodyPts.map((p) => `${f1(p[0])},${f1(p[1])}`).join(' ');
  const bodyCol = palette[0];

  // Limbs (behind the body): thick lines with round "hands/feet".
  const limbs: Array<[number, number, number, number]> = [
    [bcx - brx * 0.7, bcy - 4, bcx - brx - rnd(r, 6, 14), bcy + rnd(r, -14, 6)],
    [bcx + brx * 0.7, bcy - 4, bcx + brx + rnd(r, 6, 14), bcy + rnd(r, -14, 6)],
    [bcx - rnd(r, 5, 10), bcy + bry * 0.8, bcx - rnd(r, 8, 16), Math.min(96, bcy + bry + rnd(r, 5, 10))],
    [bcx + rnd(r, 5, 10), bcy + bry * 0.8, bcx + rnd(r, 8, 16), Math.min(96, bcy + bry + rnd(r, 5, 10))],
  ];
  const limbCol = col();
  for (const [x1, y1, x2, y2] of limbs) {
    parts.push(
      `<line x1="${f1(x1)}" y1="${f1(y1)}" x2="${f1(x2)}" y2="${f1(y2)}" stroke="${ink}" stroke-width="${f1(5 + ow * 2)}" stroke-linecap="round"/>`,
      `<line x1="${f1(x1)}" y1="${f1(y1)}" x2="${f1(x2)}" y2="${f1(y2)}" stroke="${limbCol}" stroke-width="5" stroke-linecap="round"/>`,
      `<circle cx="${f1(x2)}" cy="${f1(y2)}" r="${f1(rnd(r, 3, 4.5))}" fill="${col()}" ${stroke}/>`,
    );
  }

  // Tail on one side only (asymmetry).
  const side = r() < 0.5 ? -1 : 1;
  const tx0 = bcx + side * brx * 0.8;
  const ty0 = bcy + bry * 0.3;
  const tailPts: string[] = [`${f1(tx0)},${f1(ty0)}`];
  let tx = tx0;
  let ty = ty0;
  for (let i = 0; i < 4; i++) {
    tx += side * rnd(r, 3, 6);
    ty += rnd(r, -7, 3);
    tailPts.push(`${f1(Math.max(3, Math.min(97, tx)))},${f1(Math.max(3, ty))}`);
  }
  parts.push(
    `<polyline points="${tailPts.join(' ')}" fill="none" stroke="${ink}" stroke-width="${f1(3 + ow * 2)}" stroke-linecap="round" stroke-linejoin="round"/>`,
    `<polyline points="${tailPts.join(' ')}" fill="none" stroke="${col()}" stroke-width="3" stroke-linecap="round" stroke-linejoin="round"/>`,
  );

  // Body with clipped stripes.
  parts.push(`<clipPath id="b${seed}"><polygon points="${bodyPath}"/></clipPath>`);
  parts.push(`<polygon points="${bodyPath}" fill="${bodyCol}"/>`);
  const stripeCol = palette[1];
  const nStripes = rint(r, 2, 4);
  const stripeAngle = rnd(r, -35, 35);
  const stripes: string[] = [];
  for (let i = 0; i < nStripes; i++) {
    const y = bcy - bry + ((i + 0.5) / nStripes) * bry * 2 + rnd(r, -2, 2);
    stripes.push(`<rect x="0" y="${f1(y)}" width="100" height="${f1(rnd(r, 2.5, 5))}" fill="${stripeCol}"/>`);
  }
  parts.push(
    `<g clip-path="url(#b${seed})"><g transform="rotate(${f1(stripeAngle)} ${f1(bcx)} ${f1(bcy)})">${stripes.join('')}</g></g>`,
  );
  parts.push(`<polygon points="${bodyPath}" fill="none" ${stroke}/>`);

  // Chest badge with glyph-like strokes, off-centre (asymmetry).
  const bx = bcx + side * -rnd(r, 3, 8) - 6;
  const by = bcy - rnd(r, 2, 6);
  parts.push(`<rect x="${f1(bx)}" y="${f1(by)}" width="12" height="9" rx="1.5" fill="${palette[4]}" ${stroke}/>`);
  const glyphs: string[] = [];
  for (let g = 0; g < 3; g++) {
    const gx = bx + 1.5 + g * 3.5;
    const pts: string[] = [];
    for (let k = 0; k < 3; k++) pts.push(`${f1(gx + rnd(r, 0, 2.5))},${f1(by + 1.5 + rnd(r, 0, 6))}`);
    glyphs.push(`<polyline points="${pts.join(' ')}" fill="none" stroke="${ink}" stroke-width="0.9" stroke-linecap="round"/>`);
  }
  parts.push(...glyphs);

  // Head, ears / spikes / horns.
  const hcx = 50 + rnd(r, -4, 4);
  const hcy = bcy - bry - headR * 0.55 + rnd(r, -2, 2);
  const hr = headR * rnd(r, 0.9, 1.1);
  const nEars = rint(r, 2, 4);
  for (let i = 0; i < nEars; i++) {
    const a = -Math.PI / 2 + ((i + 0.5) / nEars - 0.5) * rnd(r, 1.6, 2.4) + rnd(r, -0.15, 0.15);
    const bxa = hcx + Math.cos(a - 0.35) * hr * 0.9;
    const bya = hcy + Math.sin(a - 0.35) * hr * 0.9;
    const bxb = hcx + Math.cos(a + 0.35) * hr * 0.9;
    const byb = hcy + Math.sin(a + 0.35) * hr * 0.9;
    const len = hr * rnd(r, 0.5, 0.95);
    const txp = Math.max(2, Math.min(98, hcx + Math.cos(a) * (hr + len)));
    const typ = Math.max(2, hcy + Math.sin(a) * (hr + len));
    const fill = i % 2 === 0 ? palette[3] : palette[2];
    if (earKind === 'round') {
      parts.push(
        `<ellipse cx="${f1((bxa + bxb + txp) / 3)}" cy="${f1((bya + byb + typ) / 3)}" rx="${f1(len * 0.45)}" ry="${f1(len * 0.6)}" fill="${fill}" ${stroke}/>`,
      );
    } else {
      const bend = earKind === 'horn' ? rnd(r, -5, 5) : 0;
      parts.push(
        `<polygon points="${f1(bxa)},${f1(bya)} ${f1(txp + bend)},${f1(typ)} ${f1(bxb)},${f1(byb)}" fill="${fill}" ${stroke}/>`,
      );
    }
  }
  parts.push(`<circle cx="${f1(hcx)}" cy="${f1(hcy)}" r="${f1(hr)}" fill="${palette[0]}" ${stroke}/>`);
  // A patch on one side of the face (asymmetry).
  parts.push(
    `<ellipse cx="${f1(hcx + side * hr * 0.45)}" cy="${f1(hcy + hr * 0.35)}" rx="${f1(hr * 0.35)}" ry="${f1(hr * 0.25)}" fill="${palette[2]}"/>`,
  );

  // Eyes: white sclera, coloured iris, black pupil, highlight; different sizes.
  for (const s of [-1, 1]) {
    const ex = hcx + s * hr * rnd(r, 0.32, 0.45);
    const ey = hcy - hr * rnd(r, 0.05, 0.25);
    const er = hr * (s === side ? rnd(r, 0.22, 0.3) : rnd(r, 0.16, 0.22));
    parts.push(
      `<ellipse cx="${f1(ex)}" cy="${f1(ey)}" rx="${f1(er)}" ry="${f1(er * 1.25)}" fill="#ffffff" ${stroke}/>`,
      `<circle cx="${f1(ex + rnd(r, -1, 1))}" cy="${f1(ey + rnd(r, -0.5, 1))}" r="${f1(er * 0.6)}" fill="${palette[3]}"/>`,
      `<circle cx="${f1(ex)}" cy="${f1(ey + er * 0.1)}" r="${f1(er * 0.32)}" fill="#000000"/>`,
      `<circle cx="${f1(ex - er * 0.25)}" cy="${f1(ey - er * 0.3)}" r="${f1(er * 0.14)}" fill="#ffffff"/>`,
    );
  }
  // Mouth: zig-zag or arc.
  const my = hcy + hr * rnd(r, 0.45, 0.6);
  const mw = hr * rnd(r, 0.35, 0.6);
  if (r() < 0.5) {
    const n = rint(r, 3, 5);
    const pts: string[] = [];
    for (let i = 0; i <= n; i++) pts.push(`${f1(hcx - mw + (2 * mw * i) / n)},${f1(my + (i % 2 ? 1.8 : 0))}`);
    parts.push(`<polyline points="${pts.join(' ')}" fill="none" stroke="${ink}" stroke-width="1.1" stroke-linejoin="miter"/>`);
  } else {
    parts.push(
      `<path d="M ${f1(hcx - mw)} ${f1(my)} Q ${f1(hcx + rnd(r, -2, 2))} ${f1(my + rnd(r, 3, 6))} ${f1(hcx + mw)} ${f1(my)} Z" fill="#7a1020" ${stroke}/>`,
    );
  }

  const bg = opts.canvas ? `<rect width="100" height="100" fill="${opts.canvas}"/>` : '';
  return (
    `<svg xmlns="http://www.w3.org/2000/svg" width="${size}" height="${size}" viewBox="0 0 100 100">` +
    bg +
    parts.join('') +
    `</svg>`
  );
}

/** Render a character to a size x size PNG (RGBA; transparent unless opts.canvas is set). */
export async function renderCharacter(seed: number, size: number, opts: CharacterOptions = {}): Promise<Buffer> {
  return sharp(Buffer.from(characterSvg(seed, size, opts))).png().toBuffer();
}

// ----------------------------------------------------------------------------- backgrounds

export interface BackgroundOptions {
  /** 'busy': many random flat shapes; 'plain': one colour; 'gradient': smooth two-colour gradient. */
  style?: 'busy' | 'plain' | 'gradient';
  /** Number of shapes for 'busy' (default scales with area, ~60 for 1280x720). */
  shapes?: number;
  /** Per-pixel uniform noise amplitude in grey levels (default 0: none). */
  noise?: number;
}

export function backgroundSvg(seed: number, w: number, h: number, opts: BackgroundOptions = {}): string {
  const r = mulberry32(seed * 15485863 + 11);
  const style = opts.style ?? 'busy';
  const base = hsl(rnd(r, 0, 360), rnd(r, 10, 50), rnd(r, 30, 75));
  const parts: string[] = [];
  if (style === 'plain') {
    parts.push(`<rect width="${w}" height="${h}" fill="${base}"/>`);
  } else {
    const other = hsl(rnd(r, 0, 360), rnd(r, 10, 50), rnd(r, 30, 75));
    parts.push(
      `<defs><linearGradient id="g" x1="0" y1="0" x2="${f1(r())}" y2="1"><stop offset="0" stop-color="${base}"/><stop offset="1" stop-color="${other}"/></linearGradient></defs>`,
      `<rect width="${w}" height="${h}" fill="url(#g)"/>`,
    );
  }
  if (style === 'busy') {
    const n = opts.shapes ?? Math.round((60 * w * h) / (1280 * 720));
    const m = Math.min(w, h);
    for (let i = 0; i < n; i++) {
      const fill = hsl(rnd(r, 0, 360), rnd(r, 20, 90), rnd(r, 20, 85));
      const op = f1(rnd(r, 0.5, 1));
      const x = rnd(r, -0.05, 1.05) * w;
      const y = rnd(r, -0.05, 1.05) * h;
      const s = rnd(r, 0.02, 0.18) * m;
      const kind = rint(r, 0, 4);
      const strokeAttr = r() < 0.4 ? ` stroke="#202020" stroke-width="${f1(rnd(r, 1, 4))}"` : '';
      if (kind === 0) {
        parts.push(
          `<rect x="${f1(x)}" y="${f1(y)}" width="${f1(s * rnd(r, 0.5, 2.5))}" height="${f1(s * rnd(r, 0.5, 2.5))}" fill="${fill}" fill-opacity="${op}" transform="rotate(${f1(rnd(r, 0, 90))} ${f1(x)} ${f1(y)})"${strokeAttr}/>`,
        );
      } else if (kind === 1) {
        parts.push(`<circle cx="${f1(x)}" cy="${f1(y)}" r="${f1(s * 0.6)}" fill="${fill}" fill-opacity="${op}"${strokeAttr}/>`);
      } else if (kind === 2) {
        const k = rint(r, 3, 7);
        const pts: string[] = [];
        for (let j = 0; j < k; j++) {
          const a = (j / k) * Math.PI * 2 + rnd(r, -0.3, 0.3);
          const rr = s * rnd(r, 0.4, 1.1);
          pts.push(`${f1(x + Math.cos(a) * rr)},${f1(y + Math.sin(a) * rr)}`);
        }
        parts.push(`<polygon points="${pts.join(' ')}" fill="${fill}" fill-opacity="${op}"${strokeAttr}/>`);
      } else if (kind === 3) {
        parts.push(
          `<line x1="${f1(x)}" y1="${f1(y)}" x2="${f1(x + rnd(r, -3, 3) * s)}" y2="${f1(y + rnd(r, -3, 3) * s)}" stroke="${fill}" stroke-width="${f1(rnd(r, 2, 12))}" stroke-linecap="${pick(r, ['round', 'butt', 'square'])}"/>`,
        );
      } else {
        // A "tree"/"building": tall rectangle with window dots.
        const bw = s * rnd(r, 0.6, 1.2);
        const bh = s * rnd(r, 1.5, 4);
        parts.push(`<rect x="${f1(x)}" y="${f1(y)}" width="${f1(bw)}" height="${f1(bh)}" fill="${fill}"${strokeAttr}/>`);
        const win = hsl(rnd(r, 40, 60), 80, 80);
        for (let yy = y + bw * 0.2; yy < y + bh - bw * 0.3; yy += bw * 0.45) {
          parts.push(`<rect x="${f1(x + bw * 0.2)}" y="${f1(yy)}" width="${f1(bw * 0.2)}" height="${f1(bw * 0.2)}" fill="${win}"/>`);
          parts.push(`<rect x="${f1(x + bw * 0.6)}" y="${f1(yy)}" width="${f1(bw * 0.2)}" height="${f1(bw * 0.2)}" fill="${win}"/>`);
        }
      }
    }
  }
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${w}" height="${h}" viewBox="0 0 ${w} ${h}">${parts.join('')}</svg>`;
}

/** Render a background to a w x h PNG (RGB). */
export async function renderBackground(seed: number, w: number, h: number, opts: BackgroundOptions = {}): Promise<Buffer> {
  const { data, info } = await sharp(Buffer.from(backgroundSvg(seed, w, h, opts)))
    .removeAlpha()
    .raw()
    .toBuffer({ resolveWithObject: true });
  if (opts.noise && opts.noise > 0) addNoise(data, opts.noise, seed);
  return sharp(data, { raw: { width: info.width, height: info.height, channels: 3 } }).png().toBuffer();
}

function addNoise(data: Uint8Array, amp: number, seed: number): void {
  const r = mulberry32(seed * 31 + 5);
  for (let i = 0; i < data.length; i++) {
    const v = data[i] + (r() * 2 - 1) * amp;
    data[i] = v < 0 ? 0 : v > 255 ? 255 : v;
  }
}

// ----------------------------------------------------------------------------- compositing

export interface Box {
  x: number;
  y: number;
  width: number;
  height: number;
}

export interface Placement {
  /** Encoded image (PNG etc., with alpha for a cut-out) or a RawImage. */
  image: Buffer | RawImage;
  /** Centre of the placed image in background pixels. */
  cx: number;
  cy: number;
  /** Uniform scale applied before rotation (default 1). */
  scale?: number;
  /** Clockwise rotation in degrees (default 0). */
  rotateDeg?: number;
  /** Horizontal flip (default false). */
  mirror?: boolean;
  /** Global opacity in [0,1] (default 1). */
  opacity?: number;
}

export interface CompositeOptions {
  /** Re-encode the result as JPEG at this quality (simulates compression artefacts). */
  jpegQuality?: number;
  /** Gaussian blur sigma applied to the final image. */
  blurSigma?: number;
  /** Per-pixel noise amplitude added after compositing. */
  noise?: number;
  noiseSeed?: number;
}

export interface CompositeResult {
  /** The composed image as PNG. */
  png: Buffer;
  /** The composed image as an RGB RawImage. */
  raw: RawImage & { channels: 3 };
  /** Per placement: tight bounding box of the placed (alpha >= 128) pixels, clipped to the canvas; null if off-canvas. */
  boxes: Array<Box | null>;
}

async function toSharp(img: Buffer | RawImage): Promise<ReturnType<typeof sharp>> {
  if (Buffer.isBuffer(img)) return sharp(img);
  return sharp(Buffer.from(img.data.buffer, img.data.byteOffset, img.data.byteLength), {
    raw: { width: img.width, height: img.height, channels: img.channels },
  });
}

/** Decode an encoded image to a RawImage (RGB by default, RGBA with channels=4). */
export async function decodeToRaw(img: Buffer, channels: 3 | 4 = 3): Promise<RawImage> {
  let s = sharp(img);
  s = channels === 3 ? s.removeAlpha() : s.ensureAlpha();
  const { data, info } = await s.raw().toBuffer({ resolveWithObject: true });
  return { width: info.width, height: info.height, channels, data: new Uint8Array(data.buffer, data.byteOffset, data.byteLength) };
}

/** Alpha-blend the placements, in order, onto the background. */
export async function composite(
  background: Buffer | RawImage,
  placements: Placement[],
  opts: CompositeOptions = {},
): Promise<CompositeResult> {
  const bgS = await toSharp(background);
  const { data: bgData, info } = await bgS.removeAlpha().raw().toBuffer({ resolveWithObject: true });
  const W = info.width;
  const H = info.height;
  const out = new Uint8Array(bgData.buffer, bgData.byteOffset, bgData.byteLength);
  const boxes: Array<Box | null> = [];

  for (const p of placements) {
    let s = await toSharp(p.image);
    const meta = Buffer.isBuffer(p.image) ? await sharp(p.image).metadata() : { width: p.image.width, height: p.image.height };
    const scale = p.scale ?? 1;
    const w0 = Math.max(1, Math.round((meta.width ?? 1) * scale));
    const h0 = Math.max(1, Math.round((meta.height ?? 1) * scale));
    s = s.ensureAlpha().resize(w0, h0, { fit: 'fill', kernel: 'lanczos3' });
    if (p.mirror) s = s.flop();
    if (p.rotateDeg) {
      // Materialise first so rotation happens after resize/flip.
      const tmp = await s.png().toBuffer();
      s = sharp(tmp).rotate(p.rotateDeg, { background: { r: 0, g: 0, b: 0, alpha: 0 } });
    }
    const { data: ov, info: oi } = await s.raw().toBuffer({ resolveWithObject: true });
    const ow = oi.width;
    const oh = oi.height;
    const left = Math.round(p.cx - ow / 2);
    const top = Math.round(p.cy - oh / 2);
    const opacity = p.opacity ?? 1;
    let x0 = Infinity;
    let y0 = Infinity;
    let x1 = -Infinity;
    let y1 = -Infinity;
    for (let y = 0; y < oh; y++) {
      const by = top + y;
      if (by < 0 || by >= H) continue;
      for (let x = 0; x < ow; x++) {
        const bx = left + x;
        if (bx < 0 || bx >= W) continue;
        const o = (y * ow + x) * 4;
        const a = (ov[o + 3] / 255) * opacity;
        if (a <= 0) continue;
        if (ov[o + 3] >= 128) {
          if (bx < x0) x0 = bx;
          if (bx > x1) x1 = bx;
          if (by < y0) y0 = by;
          if (by > y1) y1 = by;
        }
        const d = (by * W + bx) * 3;
        out[d] = Math.round(out[d] * (1 - a) + ov[o] * a);
        out[d + 1] = Math.round(out[d + 1] * (1 - a) + ov[o + 1] * a);
        out[d + 2] = Math.round(out[d + 2] * (1 - a) + ov[o + 2] * a);
      }
    }
    boxes.push(x1 >= x0 ? { x: x0, y: y0, width: x1 - x0 + 1, height: y1 - y0 + 1 } : null);
  }

  if (opts.noise && opts.noise > 0) addNoise(out, opts.noise, opts.noiseSeed ?? 1);
  let fin = sharp(Buffer.from(out.buffer, out.byteOffset, out.byteLength), { raw: { width: W, height: H, channels: 3 } });
  if (opts.blurSigma && opts.blurSigma > 0.3) fin = fin.blur(opts.blurSigma);
  let encoded: Buffer;
  if (opts.jpegQuality) {
    const jpg = await fin.jpeg({ quality: opts.jpegQuality }).toBuffer();
    encoded = await sharp(jpg).png().toBuffer();
  } else {
    encoded = await fin.png().toBuffer();
  }
  const raw = (await decodeToRaw(encoded, 3)) as RawImage & { channels: 3 };
  return { png: encoded, raw, boxes };
}

/** Area of the overlap of two boxes (0 when they do not overlap). */
export function intersectionArea(a: Box, b: Box): number {
  const ix = Math.max(0, Math.min(a.x + a.width, b.x + b.width) - Math.max(a.x, b.x));
  const iy = Math.max(0, Math.min(a.y + a.height, b.y + b.height) - Math.max(a.y, b.y));
  return ix * iy;
}

/** Intersection over union of two boxes. */
export function iou(a: Box, b: Box): number {
  const inter = intersectionArea(a, b);
  const uni = a.width * a.height + b.width * b.height - inter;
  return uni > 0 ? inter / uni : 0;
}
