/**
 * Where the likeness tier looks in a frame when its model describes one character at a time
 * (manifest `usage: "crop"`): square windows at a few sizes relative to the frame height, sliding
 * with half-window steps, so a character between ~25 % and ~80 % of the frame height falls mostly
 * inside some window. Pure functions; the crops are resampled in JS (bilinear), no sharp round trip.
 */
import type { RawImage } from '../media/types';

export interface Window {
  x: number;
  y: number;
  size: number;
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

/** The window of an RGB image, resampled (bilinear) to `w`×`h`. */
export function cropResize(img: RawImage, win: Window, w: number, h: number): RawImage {
  const c = img.channels;
  const out = new Uint8Array(w * h * 3);
  const sx = win.size / w;
  const sy = win.size / h;
  for (let j = 0; j < h; j++) {
    const fy = Math.min(img.height - 1, Math.max(0, win.y + (j + 0.5) * sy - 0.5));
    const y0 = Math.floor(fy);
    const y1 = Math.min(img.height - 1, y0 + 1);
    const ty = fy - y0;
    for (let i = 0; i < w; i++) {
      const fx = Math.min(img.width - 1, Math.max(0, win.x + (i + 0.5) * sx - 0.5));
      const x0 = Math.floor(fx);
      const x1 = Math.min(img.width - 1, x0 + 1);
      const tx = fx - x0;
      const a = (y0 * img.width + x0) * c;
      const b = (y0 * img.width + x1) * c;
      const d = (y1 * img.width + x0) * c;
      const e = (y1 * img.width + x1) * c;
      const o = (j * w + i) * 3;
      for (let k = 0; k < 3; k++) {
        const top = img.data[a + k] * (1 - tx) + img.data[b + k] * tx;
        const bot = img.data[d + k] * (1 - tx) + img.data[e + k] * tx;
        out[o + k] = Math.round(top * (1 - ty) + bot * ty);
      }
    }
  }
  return { width: w, height: h, channels: 3, data: out };
}
