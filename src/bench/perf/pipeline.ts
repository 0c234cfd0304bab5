/**
 * Frame pipeline vs its physical floor, and embedding throughput.
 *
 * Floor: ffmpeg alone decoding the clip, selecting the same frames and scaling them to the same
 * raw RGB size, written to a pipe that is only drained (no timestamps, no JS work per frame).
 * Kagami: sampleFrames (showinfo timestamps, frame assembly) + resize to the model input + embed
 * in batches, i.e. the scanner's embedding tier without keypoints. Runs alternate so both see
 * the same machine load; medians are compared.
 */
import { spawn } from 'node:child_process';
import { outputSize, probeVideo, resolveBinaries, sampleFrames, type SampleOptions } from '../../media/ffmpeg';
import { resizeRaw } from '../../media/image';
import type { RawImage } from '../../media/types';
import { DEFAULT_SCAN_OPTIONS } from '../../scan/scanner';
import type { OnnxEmbedder } from '../../signals/embedding/onnx-embedder';
import { benchClip, loadEmbedder } from './fixtures';
import { fmt, now, out, p50, section, table, type BenchContext } from './util';

/** ffmpeg only: the same selection, scaling and pixel format as sampleFrames; returns frames decoded. */
async function floorRun(file: string, opts: SampleOptions, width: number, height: number): Promise<number> {
  const { ffmpeg } = resolveBinaries();
  const keep = [`isnan(prev_selected_t)`, `gt(floor(t*${opts.fps})\\,floor(prev_selected_t*${opts.fps}))`];
  if (opts.sceneThreshold > 0) keep.push(`gt(scene\\,${opts.sceneThreshold})`);
  const filter = [`select='${keep.join('+')}'`, `scale=${width}:${height}:flags=area`, 'format=rgb24'].join(',');
  const args = ['-nostdin', '-hide_banner', '-loglevel', 'error', '-i', file, '-t', String(opts.maxDurationSec), '-vf', filter, '-vsync', '0', '-an', '-sn', '-f', 'rawvideo', '-pix_fmt', 'rgb24', 'pipe:1'];
  return new Promise((resolve, reject) => {
    const p = spawn(ffmpeg, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let bytes = 0;
    let err = '';
    p.stdout.on('data', (c: Buffer) => (bytes += c.length));
    p.stderr.on('data', (c: Buffer) => (err += c.toString()));
    p.on('error', reject);
    p.on('close', (code) => (code === 0 ? resolve(Math.round(bytes / (width * height * 3))) : reject(new Error(`ffmpeg exited ${code}: ${err.slice(-300)}`))));
  });
}

async function kagamiRun(file: string, opts: SampleOptions, embedder: OnnxEmbedder | null, batchSize: number): Promise<number> {
  const info = await probeVideo(file);
  let n = 0;
  const pending: RawImage[] = [];
  const flush = async () => {
    if (!embedder || !pending.length) return;
    const batch = pending.splice(0);
    await embedder.embed(await Promise.all(batch.map((f) => resizeRaw(f, embedder.inputWidth, embedder.inputHeight, 'fill'))));
  };
  for await (const f of sampleFrames(file, info, opts)) {
    n++;
    if (embedder) {
      pending.push(f);
      if (pending.length >= batchSize) await flush();
    }
  }
  await flush();
  return n;
}

export async function benchPipeline(ctx: BenchContext): Promise<void> {
  section('frame pipeline vs floor (10 s 720p clip, 2 fps + scene changes, frames scaled into 960x960)');
  const file = await benchClip(0);
  const info = await probeVideo(file);
  const opts = DEFAULT_SCAN_OPTIONS.sampling;
  const { width, height } = outputSize(info.width, info.height, opts.maxWidth, opts.maxHeight);
  const embedder = await loadEmbedder(1);
  const reps = ctx.quick ? 5 : 8;
  const t: Record<'floor' | 'sample' | 'kagami', number[]> = { floor: [], sample: [], kagami: [] };
  let frames = 0;
  await kagamiRun(file, opts, embedder, 8); // warm-up (model, page cache)
  for (let r = 0; r < reps; r++) {
    let t0 = now();
    frames = await floorRun(file, opts, width, height);
    t.floor.push((now() - t0) / 1000);
    t0 = now();
    await kagamiRun(file, opts, null, 8);
    t.sample.push((now() - t0) / 1000);
    t0 = now();
    await kagamiRun(file, opts, embedder, DEFAULT_SCAN_OPTIONS.batchSize);
    t.kagami.push((now() - t0) / 1000);
  }
  const fps = (k: keyof typeof t) => frames / p50(t[k]);
  table(
    ['stage', 'p50_s', 'frames/s', 'x floor'],
    [
      ['floor: ffmpeg decode+select+scale -> raw RGB pipe', p50(t.floor), fps('floor'), 1],
      ['kagami sampleFrames only', p50(t.sample), fps('sample'), fps('sample') / fps('floor')],
      ['kagami sampleFrames + resize + embed (batch 8, 1 thread)', p50(t.kagami), fps('kagami'), fps('kagami') / fps('floor')],
    ],
  );
  out(`  ${frames} sampled frames of ${width}x${height} per run, ${reps} runs each, interleaved`);
  ctx.summary.pipelineOverFloor = fps('kagami') / fps('floor');
  await embedder.dispose();
}

export async function benchEmbedding(ctx: BenchContext): Promise<void> {
  section('embedding: images/s by batch size and intra-op threads (fp32 ONNX, 224x224)');
  const file = await benchClip(0);
  const info = await probeVideo(file);
  const imgs: RawImage[] = [];
  for await (const f of sampleFrames(file, info, { ...DEFAULT_SCAN_OPTIONS.sampling, maxFrames: 16 })) imgs.push(await resizeRaw(f, 224, 224, 'fill'));
  const total = ctx.quick ? 32 : 96;
  const rows: Array<Array<string | number>> = [];
  const vecs: Record<string, Float32Array[]> = {};
  for (const threads of [1, 2]) {
    const e = await loadEmbedder(threads);
    await e.embed(imgs.slice(0, 4));
    for (const batch of ctx.quick ? [1, 8] : [1, 4, 8, 16]) {
      const times: number[] = [];
      let done = 0;
      while (done < total) {
        const b = Array.from({ length: batch }, (_, i) => imgs[(done + i) % imgs.length]);
        const t0 = now();
        const v = await e.embed(b);
        times.push(now() - t0);
        if (!vecs[`t${threads}`]) vecs[`t${threads}`] = v;
        done += batch;
      }
      const perBatch = p50(times);
      rows.push([threads, batch, (1000 * batch) / perBatch, perBatch / batch]);
    }
    await e.dispose();
  }
  table(['threads', 'batch', 'images/s', 'ms/image'], rows);
  out('  quantised variant: not built (tfjs-to-onnx writes fp32 weights only; see the report for the plan)');
  void fmt;
}
