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
import { existsSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { MODELS_DIR, modelManifestPath } from '../../config';
import { binaryVersion, outputSize, packagedBinaries, probeVideo, resolveBinaries, sampleFrames, samplingSelection, type SampleOptions } from '../../media/ffmpeg';
import { resizeRaw } from '../../media/image';
import type { RawImage } from '../../media/types';
import { DEFAULT_SCAN_OPTIONS } from '../../scan/scanner';
import { cosineDrift, neighbourAgreement } from '../../signals/embedding/drift';
import { listManifestFiles, loadManifest, type LoadedManifest } from '../../signals/embedding/manifest';
import { OnnxEmbedder } from '../../signals/embedding/onnx-embedder';
import { referenceViews, windowCrops } from '../../synthetic/crops';
import { benchClip, loadEmbedder, PRODUCT_MODEL_ID } from './fixtures';
import { cacheDir, now, out, p50, section, table, type BenchContext } from './util';

/** ffmpeg only: the same selection, scaling and pixel format as sampleFrames; returns frames decoded. */
async function floorRun(file: string, opts: SampleOptions, width: number, height: number, ffmpeg = resolveBinaries().ffmpeg): Promise<number> {
  const { inputArgs, select } = samplingSelection(opts);
  const filter = [select, `scale=${width}:${height}:flags=area`, 'format=rgb24'].join(',');
  const args = ['-nostdin', '-hide_banner', '-loglevel', 'error', ...inputArgs, '-i', file, '-t', String(opts.maxDurationSec), '-vf', filter, '-vsync', '0', '-an', '-sn', '-f', 'rawvideo', '-pix_fmt', 'rgb24', 'pipe:1'];
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

/**
 * As the scanner does it: sampling alone (no probe unless it fails), frames embedded in batches,
 * one batch embedded (in the inference thread) while the next one is decoded, at most two in memory.
 */
async function kagamiRun(file: string, opts: SampleOptions, embedder: OnnxEmbedder | null, batchSize: number): Promise<number> {
  let n = 0;
  let pending: RawImage[] = [];
  let running: Promise<unknown> | undefined;
  const embed = async (batch: RawImage[]) => {
    if (!embedder || !batch.length) return;
    await embedder.embed(await Promise.all(batch.map((f) => resizeRaw(f, embedder.inputWidth, embedder.inputHeight, 'fill'))));
  };
  for await (const f of sampleFrames(file, opts)) {
    n++;
    if (embedder) {
      pending.push(f);
      if (pending.length >= batchSize) {
        await running;
        running = embed(pending);
        running.catch(() => undefined); // reported where it is awaited
        pending = [];
      }
    }
  }
  await running;
  await embed(pending);
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
      [`kagami sampleFrames + resize + embed (batch ${DEFAULT_SCAN_OPTIONS.batchSize}, 1 thread)`, p50(t.kagami), fps('kagami'), fps('kagami') / fps('floor')],
    ],
  );
  out(`  ${frames} sampled frames of ${width}x${height} per run, ${reps} runs each, interleaved; ffmpeg: ${binaryVersion(resolveBinaries().ffmpeg)}`);
  ctx.summary.pipelineOverFloor = fps('kagami') / fps('floor');
  await embedder.dispose();
  await compareBinaries(file, opts, width, height, reps);
}

/**
 * When a system ffmpeg is used, the same floor with the static build from npm (the fallback), so
 * operators see what installing one buys: the 2018 static build's scene detection converts every
 * decoded frame to RGB first, newer builds score scenes on the planes as decoded.
 */
async function compareBinaries(file: string, opts: SampleOptions, width: number, height: number, reps: number): Promise<void> {
  const used = resolveBinaries().ffmpeg;
  const fallback = packagedBinaries().ffmpeg;
  if (!fallback || fallback === used) return;
  const t: Record<'used' | 'fallback', number[]> = { used: [], fallback: [] };
  for (let r = 0; r < reps; r++) {
    for (const k of r % 2 ? (['fallback', 'used'] as const) : (['used', 'fallback'] as const)) {
      const t0 = now();
      await floorRun(file, opts, width, height, k === 'used' ? used : fallback);
      t[k].push((now() - t0) / 1000);
    }
  }
  table(
    ['floor by ffmpeg build', 'p50_s', 'x npm static build'],
    [
      [`used: ${binaryVersion(used)}`, p50(t.used), p50(t.fallback) / p50(t.used)],
      [`npm static build: ${binaryVersion(fallback)}`, p50(t.fallback), 1],
    ],
  );
}

export async function benchEmbedding(ctx: BenchContext): Promise<void> {
  section('embedding: images/s by batch size and intra-op threads (fp32 ONNX, 224x224)');
  const file = await benchClip(0);
  const imgs: RawImage[] = [];
  for await (const f of sampleFrames(file, { ...DEFAULT_SCAN_OPTIONS.sampling, maxFrames: 16 })) imgs.push(await resizeRaw(f, 224, 224, 'fill'));
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
  await benchQuantised(ctx);
}

/** The product's crop model and its int8 variant (a manifest whose `quantised.from` names it), if any. */
function quantisedPair(): { fp32: string; int8: LoadedManifest } | undefined {
  const manifests = listManifestFiles(MODELS_DIR).map((f) => loadManifest(f));
  const product = manifests.find((m) => m.id === PRODUCT_MODEL_ID);
  const fp32 = product?.quantised ? product.quantised.from : PRODUCT_MODEL_ID;
  const int8 = manifests.find((m) => m.quantised?.from === fp32);
  return int8 ? { fp32, int8 } : undefined;
}

/** Crops for the int8 comparison (seeds disjoint from its calibration crops), cached as raw pixels. */
async function quantCrops(count: number): Promise<{ crops: RawImage[]; labels: number[]; refs: RawImage[] }> {
  const file = path.join(cacheDir('int8'), `crops-${count}-v1.bin`);
  const side = 128;
  const px = side * side * 3;
  const chars = Array.from({ length: 200 }, (_, i) => 80000 + i);
  const styleOf = (s: number) => 81000 + Math.floor((s - 80000) / 4);
  if (!existsSync(file)) {
    const crops = await windowCrops({ count, seed: 80000, characters: chars, styleOf, backgroundSeed: 82000, backgrounds: 24 });
    const refs = await referenceViews(chars, styleOf, side);
    const buf = Buffer.alloc(4 * count + (count + refs.length) * px);
    crops.forEach((c, i) => buf.writeInt32LE(c.character, 4 * i));
    [...crops.map((c) => c.image), ...refs].forEach((img, i) => buf.set(img.data, 4 * count + i * px));
    writeFileSync(file + '.tmp', buf);
    renameSync(file + '.tmp', file);
  }
  const buf = readFileSync(file);
  const img = (i: number): RawImage => ({ width: side, height: side, channels: 3, data: new Uint8Array(buf.buffer, buf.byteOffset + 4 * count + i * px, px) });
  return {
    crops: Array.from({ length: count }, (_, i) => img(i)),
    labels: Array.from({ length: count }, (_, i) => buf.readInt32LE(4 * i)),
    refs: chars.map((_, j) => img(count + j)),
  };
}

/**
 * fp32 vs int8 crop model, in the same run: ms per crop at batch 64 through the product's embedder
 * (the models' batches alternate, so all see the same machine load), and each int8 file's drift:
 * cosine to the fp32 vector of the same crop, and nearest-reference agreement among 200 characters.
 * An int8 manifest with an 8-bit weights variant (`weights8`) is measured with each weights file.
 */
async function benchQuantised(ctx: BenchContext): Promise<void> {
  const pair = quantisedPair();
  if (!pair) {
    out(`  quantised variant: none for ${PRODUCT_MODEL_ID} (training/quantise.sh builds one)`);
    return;
  }
  const int8 = pair.int8;
  const variants: Array<{ name: string; id: string; int8Weights?: 7 | 8 }> = [
    { name: 'fp32', id: pair.fp32 },
    ...(int8.weights8
      ? [{ name: 'int8 7-bit', id: int8.id, int8Weights: 7 as const }, { name: 'int8 8-bit', id: int8.id, int8Weights: 8 as const }]
      : [{ name: 'int8', id: int8.id }]),
  ];
  const here = int8.weightBits ? ` (this CPU runs the ${int8.weightBits}-bit weights)` : '';
  section(`likeness crop model fp32 vs int8: ${pair.fp32} vs ${int8.id}${here} (128x128, batch 64, interleaved)`);
  const { crops, labels, refs } = await quantCrops(ctx.quick ? 128 : 512);
  const batch = crops.slice(0, 64);
  const reps = ctx.quick ? 3 : 8;
  const rows: Array<Array<string | number>> = [];
  const vecs: Float32Array[][][] = variants.map(() => []);
  for (const threads of [1, 2]) {
    const e = await Promise.all(variants.map((v) => OnnxEmbedder.create(modelManifestPath(v.id), { threads, int8Weights: v.int8Weights })));
    const t: number[][] = variants.map(() => []);
    // Warm-up: onnxruntime's first two or three runs of a session are 1.5-2.5x slower (the int8 one's
    // too: with a single warm-up run its 1-thread median read slower than fp32's in quick runs).
    for (let w = 0; w < 3; w++) for (const x of e) await x.embed(batch);
    for (let r = 0; r < reps; r++) {
      const order = variants.map((_, k) => k);
      if (r % 2) order.reverse();
      for (const k of order) {
        const t0 = now();
        await e[k].embed(batch);
        t[k].push(now() - t0);
      }
    }
    const ms = t.map((x) => p50(x) / batch.length);
    rows.push([threads, ...ms.map((m) => 1000 / m), ...ms, ...ms.slice(1).map((m) => ms[0] / m)]);
    if (threads === 1) {
      for (let k = 0; k < variants.length; k++) {
        const all: Float32Array[] = [];
        for (let i = 0; i < crops.length; i += 64) all.push(...(await e[k].embed(crops.slice(i, i + 64))));
        vecs[k] = [all, await e[k].embed(refs)];
      }
    }
    await Promise.all(e.map((x) => x.dispose()));
  }
  const names = variants.map((v) => v.name);
  table(['threads', ...names.map((n) => `${n} images/s`), ...names.map((n) => `${n} ms/crop`), ...names.slice(1).map((n) => `${n} speed-up`)], rows);
  out(`  ${reps} batches of 64 each, median; drift over ${crops.length} synthetic window crops (not calibration crops):`);
  const withChar = labels.flatMap((l, i) => (l >= 0 ? [i] : []));
  const pc = (v: number | undefined) => `${(100 * (v ?? NaN)).toFixed(1)} %`;
  for (let k = 1; k < variants.length; k++) {
    const d = cosineDrift(vecs[0][0], vecs[k][0]);
    const nn = neighbourAgreement(
      withChar.map((i) => vecs[0][0][i]), vecs[0][1],
      withChar.map((i) => vecs[k][0][i]), vecs[k][1],
      withChar.map((i) => labels[i]),
    );
    out(`  ${names[k]}: cosine to fp32 median ${d.median.toFixed(4)}, p5 ${d.p5.toFixed(4)}, min ${d.min.toFixed(4)}`);
    out(`    nearest of ${refs.length} characters' references (${nn.queries} crops with one): same ${pc(nn.agreement)}, same where fp32 is right ${pc(nn.agreementWhereARight)}; top-1 fp32 ${pc(nn.top1A)}, ${names[k]} ${pc(nn.top1B)}`);
  }
}
