/**
 * Worker thread of InferenceThread (inference-thread.ts): one onnxruntime session, one run at a
 * time. onnxruntime-node's `run` is synchronous under its promise (it only defers the call with
 * setImmediate; onnxruntime issues #19611, #26968), so in the scanning thread it blocks the event
 * loop for every batch: ffmpeg's pipe is not drained and the ORB pool gets no new frames meanwhile.
 */
import { parentPort, workerData } from 'node:worker_threads';
import * as ort from 'onnxruntime-node';
import type { Feed } from './inference-thread';

interface Init {
  model: Uint8Array;
  threads: number;
  output: string;
}

interface Request {
  id: number;
  feeds: Record<string, Feed>;
}

const port = parentPort;
if (!port) throw new Error('inference-worker.js runs as a worker thread of InferenceThread');
const init = workerData as Init;
const session = ort.InferenceSession.create(init.model, {
  intraOpNumThreads: init.threads,
  interOpNumThreads: 1,
  executionMode: 'sequential',
  graphOptimizationLevel: 'all',
  extra: { session: { intra_op: { allow_spinning: '0' } } },
});
session.catch(() => undefined); // reported with the first request

port.on('message', (m: Request) => {
  session
    .then((s) => {
      const feeds: Record<string, ort.Tensor> = {};
      for (const [name, f] of Object.entries(m.feeds)) {
        feeds[name] = f.data instanceof BigInt64Array ? new ort.Tensor('int64', f.data, f.dims) : new ort.Tensor('float32', f.data, f.dims);
      }
      return s.run(feeds, [init.output]);
    })
    .then(
      (result) => {
        const out = result[init.output];
        const data = out.data as Float32Array;
        port.postMessage({ id: m.id, data, dims: out.dims }, [data.buffer as ArrayBuffer]);
      },
      (e: unknown) => port.postMessage({ id: m.id, error: (e as Error)?.message ?? String(e) }),
    );
});
