/** Worker thread of ExtractPool (extract-pool.ts): one frame's ORB at a time; opencv-js loaded once, at start. */
import { parentPort } from 'node:worker_threads';
import { extractGrayFeatures, type FrameFeatureOptions } from './features';
import { getCv } from './opencv';

interface Request {
  id: number;
  width: number;
  height: number;
  data: Uint8Array;
  opts: FrameFeatureOptions;
}

const port = parentPort;
if (!port) throw new Error('extract-worker.js runs as a worker thread of ExtractPool');
void getCv().catch(() => undefined); // the first frame reports a failed load

port.on('message', (m: Request) => {
  const t0 = performance.now();
  extractGrayFeatures({ width: m.width, height: m.height, data: m.data }, m.opts).then(
    (set) => {
      const transfer = [set.xy.buffer, set.size.buffer, set.angle.buffer, set.descriptors.buffer, set.gray!.data.buffer] as ArrayBuffer[];
      port.postMessage({ id: m.id, set, ms: performance.now() - t0 }, transfer);
    },
    (e: unknown) => port.postMessage({ id: m.id, error: (e as Error)?.message ?? String(e), ms: performance.now() - t0 }),
  );
});
