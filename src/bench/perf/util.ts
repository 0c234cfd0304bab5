/** Small helpers shared by the perf bench sections: timing, percentiles, output, the cache folder. */
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { PACKAGE_ROOT } from '../../config';

export const CACHE_DIR = path.join(PACKAGE_ROOT, '.cache', 'bench');

export function cacheDir(...sub: string[]): string {
  const d = path.join(CACHE_DIR, ...sub);
  mkdirSync(d, { recursive: true });
  return d;
}

export const now = (): number => performance.now();

export function percentile(xs: number[], p: number): number {
  if (!xs.length) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const i = Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1));
  return s[i];
}

export const p50 = (xs: number[]): number => percentile(xs, 50);
export const p95 = (xs: number[]): number => percentile(xs, 95);

/** Rounds to `sig` significant digits for printing. */
export function fmt(v: number, sig = 3): string {
  if (v === undefined || Number.isNaN(v)) return 'na';
  if (!Number.isFinite(v)) return String(v);
  if (v === 0) return '0';
  const digits = Math.max(0, sig - 1 - Math.floor(Math.log10(Math.abs(v))));
  return v.toFixed(Math.min(digits, 6));
}

export function out(line = ''): void {
  process.stdout.write(line + '\n');
}

export function section(title: string): void {
  out('');
  out(`== ${title}`);
}

/** A table printed as aligned columns. */
export function table(header: string[], rows: Array<Array<string | number>>): void {
  const cells = [header, ...rows.map((r) => r.map((c) => (typeof c === 'number' ? fmt(c) : c)))];
  const w = header.map((_, i) => Math.max(...cells.map((r) => String(r[i] ?? '').length)));
  for (const r of cells) out('  ' + r.map((c, i) => String(c ?? '').padEnd(w[i])).join('  ').trimEnd());
}

/** Deterministic normal deviates (Box-Muller over mulberry32). */
export function gaussian(seed: number): () => number {
  let a = seed >>> 0;
  const u = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (((t ^ (t >>> 14)) >>> 0) + 0.5) / 4294967296;
  };
  let spare: number | undefined;
  return () => {
    if (spare !== undefined) {
      const s = spare;
      spare = undefined;
      return s;
    }
    const r = Math.sqrt(-2 * Math.log(u()));
    const th = 2 * Math.PI * u();
    spare = r * Math.sin(th);
    return r * Math.cos(th);
  };
}

/** Figures the final summary line is made of (filled by the sections that ran). */
export interface Summary {
  pipelineOverFloor?: number;
  clip10sP50?: number;
  realtimeX?: number;
  search1MP50Ms?: number;
  recall10?: number;
  kpFrameMs?: number;
  kpKeep?: number;
  queueOverDirect?: number;
}

export interface BenchContext {
  quick: boolean;
  summary: Summary;
}
