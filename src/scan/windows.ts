/**
 * Where the likeness tier looks in a frame when its model describes one character at a time
 * (manifest `usage: "crop"`): square windows at a few sizes relative to the frame height, sliding
 * with half-window steps, so a character between ~15 % and ~90 % of the frame height (at the default
 * sizes) falls mostly inside some window of a size the descriptor was trained for. Pure functions; the
 * crops are resampled in JS (bilinear from a box-filtered half- or quarter-size copy of the frame when
 * the window is much larger than the model's input), no sharp round trip.
 */
import type { RawImage } from '../media/types';

export interface Window {
  x: number;
  y: number;
  size: number;
}

/** A window size (side as a fraction of the frame height) and the sampled frames it is slid over: every `frameStep`-th. */
export interface WindowScale {
  size: number;
  frameStep: number;
}

/** The windows of sampled frame `index`: those of the scales whose frameStep divides it. */
export function frameWindows(width: number, height: number, scales: readonly WindowScale[], index: number): Window[] {
  return slidingWindows(width, height, scales.filter((s) => index % s.frameStep === 0).map((s) => s.size));
}

/** Windows per sampled frame on average (each scale's windows over its frameStep). */
export function meanWindowsPerFrame(width: number, height: number, scales: readonly WindowScale[]): number {
  return scales.reduce((n, s) => n + slidingWindows(width, height, [s.size]).length / s.frameStep, 0);
}

/** Square windows of side `f`·height for each f in `sizes`, stepping half a window, covering the frame. */
export function slidingWindows(width: number, height: number, sizes: number[]): Window[] {
  const out: Window[] = [];
  for (const f of sizes) {
    const size = Math.max(8, Math.round(Math.min(width, height, f * height)));
    const step = Math.max(1, Math.round(size / 2));
    const xs = positions(width, size, step);
    const ys = positions(height, size, step);
    for (const y of ys) for (const x of xs) out.push({ x, y, size });
  }
  return out;
}

/** Start positions of a window of `size` along `length`, `step` apart, the last one flush with the end. */
function positions(length: number, size: number, step: number): number[] {
  if (size >= length) return [0];
  const out: number[] = [];
  for (let p = 0; p + size < length; p += step) out.push(p);
  out.push(length - size);
  return out;
}

/** The window-to-crop size ratio from which cropWindows samples a halved copy of the frame. */
export const ANTIALIAS_FROM = 1.8;

/**
 * The crops of `windows` at `w`×`h`, without aliasing: a window of ANTIALIAS_FROM times the crop's
 * side or more is cut from a copy of the frame halved (2×2 box filter) once or twice, so that
 * bilinear sampling never skips more than about one source pixel in two. Bilinear sampling
 * alone reads 4 pixels per output pixel: a 486 px window brought to 128 px would see one pixel in
 * ~14 and turn fine texture into noise the descriptor never saw in training (its views and the
 * references are resampled with a filter that averages every pixel they cover).
 */
export function cropWindows(img: RawImage, windows: readonly Window[], w: number, h: number): RawImage[] {
  const levels: RawImage[] = [img];
  const side = Math.max(w, h);
  return windows.map((win) => {
    let level = 0;
    while (level < 4 && win.size / 2 ** level >= ANTIALIAS_FROM * side) level++;
    if (level === 0) return cropResize(img, win, w, h);
    for (let l = levels.length; l <= level; l++) levels.push(halve(levels[l - 1]));
    const f = 2 ** level;
    const src = levels[level];
    const size = Math.max(1, Math.min(src.width, src.height, Math.round(win.size / f)));
    const x = Math.min(src.width - size, Math.round(win.x / f));
    const y = Math.min(src.height - size, Math.round(win.y / f));
    return cropResize(src, { x, y, size }, w, h);
  });
}

/** An RGB(A) image at half its size (odd last row or column dropped), each pixel the mean of 2×2; RGB out. */
export function halve(img: RawImage): RawImage {
  const c = img.channels;
  const w = img.width >> 1;
  const h = img.height >> 1;
  const src = img.data;
  const out = new Uint8Array(w * h * 3);
  const stride = img.width * c;
  let o = 0;
  for (let y = 0; y < h; y++) {
    let a = 2 * y * stride;
    let b = a + stride;
    for (let x = 0; x < w; x++) {
      out[o] = (src[a] + src[a + c] + src[b] + src[b + c] + 2) >> 2;
      out[o + 1] = (src[a + 1] + src[a + c + 1] + src[b + 1] + src[b + c + 1] + 2) >> 2;
      out[o + 2] = (src[a + 2] + src[a + c + 2] + src[b + 2] + src[b + c + 2] + 2) >> 2;
      o += 3;
      a += 2 * c;
      b += 2 * c;
    }
  }
  return { width: w, height: h, channels: 3, data: out };
}

/**
 * The window of an RGB image, resampled (bilinear) to `w`×`h`. Fixed point (8-bit weights): the
 * source columns and weights of each output column are computed once per crop, so the inner loop
 * is integer loads, multiplies and shifts (about 4x less time than per-pixel float sampling; a
 * window scan resamples ~30 crops a frame). Matches float bilinear sampling to within 1 level.
 */
export function cropResize(img: RawImage, win: Window, w: number, h: number): RawImage {
  const c = img.channels;
  const src = img.data;
  const out = new Uint8Array(w * h * 3);
  const sx = win.size / w;
  const sy = win.size / h;
  const left = new Int32Array(w);
  const right = new Int32Array(w);
  const wx = new Int32Array(w);
  for (let i = 0; i < w; i++) {
    const fx = Math.min(img.width - 1, Math.max(0, win.x + (i + 0.5) * sx - 0.5));
    const x0 = Math.floor(fx);
    left[i] = x0 * c;
    right[i] = Math.min(img.width - 1, x0 + 1) * c;
    wx[i] = Math.round((fx - x0) * 256);
  }
  const stride = img.width * c;
  let o = 0;
  for (let j = 0; j < h; j++) {
    const fy = Math.min(img.height - 1, Math.max(0, win.y + (j + 0.5) * sy - 0.5));
    const y0 = Math.floor(fy);
    const top = y0 * stride;
    const bottom = Math.min(img.height - 1, y0 + 1) * stride;
    const ty = Math.round((fy - y0) * 256);
    for (let i = 0; i < w; i++) {
      const tx = wx[i];
      const a = top + left[i];
      const b = top + right[i];
      const d = bottom + left[i];
      const e = bottom + right[i];
      // 8.8 fixed point along x, then along y: at most 255·2^16, well inside int32. Unrolled over RGB.
      let t = (src[a] << 8) + (src[b] - src[a]) * tx;
      let u = (src[d] << 8) + (src[e] - src[d]) * tx;
      out[o] = ((t << 8) + (u - t) * ty + 32768) >> 16;
      t = (src[a + 1] << 8) + (src[b + 1] - src[a + 1]) * tx;
      u = (src[d + 1] << 8) + (src[e + 1] - src[d + 1]) * tx;
      out[o + 1] = ((t << 8) + (u - t) * ty + 32768) >> 16;
      t = (src[a + 2] << 8) + (src[b + 2] - src[a + 2]) * tx;
      u = (src[d + 2] << 8) + (src[e + 2] - src[d + 2]) * tx;
      out[o + 2] = ((t << 8) + (u - t) * ty + 32768) >> 16;
      o += 3;
    }
  }
  return { width: w, height: h, channels: 3, data: out };
}
