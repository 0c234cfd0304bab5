/**
 * The embedder's onnxruntime session runs in a worker thread: the real descriptor model, real crops.
 */
import { modelManifestPath } from '../../src/config';
import type { RawImage } from '../../src/media/types';
import { OnnxEmbedder } from '../../src/signals/embedding/onnx-embedder';

const crops = (n: number): RawImage[] =>
  Array.from({ length: n }, (_, k) => ({ width: 128, height: 128, channels: 3 as const, data: Uint8Array.from({ length: 128 * 128 * 3 }, (_, i) => (i * (k + 3)) % 251) }));

test('inference leaves the event loop free: timers fire while a batch is embedded', async () => {
  const e = await OnnxEmbedder.create(modelManifestPath('kagami-descriptor-v2'));
  try {
    const batch = crops(64);
    await e.embed(batch.slice(0, 2)); // warm-up
    let ticks = 0;
    const timer = setInterval(() => ticks++, 1);
    const t0 = performance.now();
    const vectors = await e.embed(batch);
    const ms = performance.now() - t0;
    clearInterval(timer);
    expect(vectors).toHaveLength(64);
    // A blocked loop gets one tick whatever the duration; a free one about one per millisecond.
    expect(ticks).toBeGreaterThan(Math.min(20, ms / 10));
  } finally {
    await e.dispose();
  }
});

test('batches give the same vectors whether embedded together or one by one, in order', async () => {
  const e = await OnnxEmbedder.create(modelManifestPath('kagami-descriptor-v2'));
  try {
    const batch = crops(5);
    const together = await e.embed(batch);
    const apart = await Promise.all(batch.map(async (c) => (await e.embed([c]))[0]));
    together.forEach((v, i) => v.forEach((x, j) => expect(x).toBeCloseTo(apart[i][j], 5)));
  } finally {
    await e.dispose();
  }
});

test('a disposed embedder rejects further work with a clear error', async () => {
  const e = await OnnxEmbedder.create(modelManifestPath('kagami-descriptor-v2'));
  await e.dispose();
  await expect(e.embed(crops(1))).rejects.toThrow(/inference thread is closed/);
});

test('disposing during a run lets the run end first: its vectors still arrive, later work is refused', async () => {
  const e = await OnnxEmbedder.create(modelManifestPath('kagami-descriptor-v2'));
  await e.embed(crops(1)); // the worker and its session are up
  const running = e.embed(crops(64));
  await new Promise((r) => setTimeout(r, 50)); // inside the run by now
  await e.dispose();
  expect(await running).toHaveLength(64);
  await expect(e.embed(crops(1))).rejects.toThrow(/inference thread is closed/);
});
