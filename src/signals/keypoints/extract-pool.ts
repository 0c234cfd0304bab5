/**
 * Frame keypoints (ORB, OpenCV WASM: single-threaded and the scan's biggest cost) in worker
 * threads, so the ORB of several frames overlaps with each other and with the main thread's work
 * (window crops, onnxruntime inference, keypoint matching).
 *
 * The main thread computes the frame's luma and transfers it; the worker transfers back the same
 * KeypointSet extractGrayFeatures gives in-thread (luma included, as `gray`). Each worker loads
 * opencv-js once, at start. Workers are started on first use and unref'd while idle, so a pool
 * never keeps a process alive; close() ends them. A worker that fails or dies rejects its task (and
 * is replaced for the next one): a scan never hangs on a lost frame.
 */
import { Worker, type ResourceLimits } from 'node:worker_threads';
import type { RawImage } from '../../media/types';
import type { GrayImage } from './appearance';
import { frameLuma, type FrameFeatureOptions, type KeypointSet } from './features';
import { compiledWorkerScript } from '../worker-script';

/** A KeypointSet from a worker, with the time the worker spent on it. */
export type PooledKeypointSet = KeypointSet & { workerMs: number };

interface Task {
  id: number;
  gray: GrayImage;
  opts: FrameFeatureOptions;
  resolve: (s: PooledKeypointSet) => void;
  reject: (e: Error) => void;
}

interface Slot {
  worker: Worker;
  task?: Task;
}

export interface ExtractPoolOptions {
  /** Per-worker heap limits (node:worker_threads); a worker over them dies and its frame fails. */
  resourceLimits?: ResourceLimits;
}

export class ExtractPool {
  private readonly slots: Slot[] = [];
  private readonly queue: Task[] = [];
  private nextId = 1;
  private closed = false;

  constructor(
    readonly size: number,
    private readonly opts: ExtractPoolOptions = {},
  ) {
    if (!Number.isInteger(size) || size < 1) throw new Error(`keypoint pool size must be a positive integer, got ${size}`);
  }

  /** Worker threads running now (started on first use or by warmUp, at most `size`). */
  get started(): number {
    return this.slots.length;
  }

  /** ORB features of a frame, as extractFrameFeatures gives them. */
  extract(frame: RawImage, opts: FrameFeatureOptions = {}): Promise<PooledKeypointSet> {
    let gray: GrayImage;
    try {
      gray = frameLuma(frame);
    } catch (e) {
      return Promise.reject(e);
    }
    return this.extractGray(gray, opts);
  }

  /** ORB features of a luma image, as extractGrayFeatures gives them. `gray.data`'s buffer is transferred (detached here) when it is not shared. */
  extractGray(gray: GrayImage, opts: FrameFeatureOptions = {}): Promise<PooledKeypointSet> {
    if (this.closed) return Promise.reject(new Error('keypoint pool is closed'));
    return new Promise<PooledKeypointSet>((resolve, reject) => {
      this.queue.push({ id: this.nextId++, gray, opts, resolve, reject });
      this.pump();
    });
  }

  /**
   * Starts every worker and has each extract the keypoints of `gray` once (their OpenCV load and
   * first ORB, ~0.3-0.5 s each, then happen before the first real frame). Resolves with the features.
   */
  async warmUp(gray: GrayImage, opts: FrameFeatureOptions = {}): Promise<KeypointSet> {
    const sets = await Promise.all(Array.from({ length: this.size }, () => this.extractGray({ ...gray, data: gray.data.slice() }, opts)));
    return sets[0];
  }

  /** Ends the workers; queued and running frames are rejected. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const t of this.queue.splice(0)) t.reject(new Error('keypoint pool is closed'));
    await Promise.all(this.slots.map((s) => s.worker.terminate()));
  }

  private pump(): void {
    while (this.queue.length && !this.closed) {
      let slot = this.slots.find((s) => !s.task);
      if (!slot) {
        if (this.slots.length >= this.size) return;
        slot = this.spawn();
      }
      const task = this.queue.shift()!;
      slot.task = task;
      slot.worker.ref();
      const { width, height } = task.gray;
      let data = task.gray.data;
      if (data.byteOffset !== 0 || data.byteLength !== data.buffer.byteLength) data = data.slice();
      slot.worker.postMessage({ id: task.id, width, height, data, opts: task.opts }, [data.buffer as ArrayBuffer]);
    }
  }

  private spawn(): Slot {
    const worker = new Worker(compiledWorkerScript(__dirname, 'signals/keypoints/extract-worker.js'), { resourceLimits: this.opts.resourceLimits });
    const slot: Slot = { worker };
    worker.unref();
    const settle = (): Task | undefined => {
      const t = slot.task;
      slot.task = undefined;
      if (!this.closed) worker.unref();
      return t;
    };
    worker.on('message', (m: { id: number; set?: KeypointSet; ms: number; error?: string }) => {
      const t = settle();
      if (t && t.id === m.id) {
        if (m.error !== undefined || !m.set) t.reject(new Error(`keypoint worker: ${m.error}`));
        else t.resolve(Object.assign(m.set, { workerMs: m.ms }));
      }
      this.pump();
    });
    const lost = (why: string) => {
      const i = this.slots.indexOf(slot);
      if (i < 0) return;
      this.slots.splice(i, 1);
      settle()?.reject(new Error(this.closed ? 'keypoint pool is closed' : `keypoint worker died: ${why}`));
      this.pump(); // a fresh worker for what is queued
    };
    worker.on('error', (e) => lost(e.message));
    worker.on('exit', (code) => lost(`exit code ${code}`));
    this.slots.push(slot);
    return slot;
  }
}
