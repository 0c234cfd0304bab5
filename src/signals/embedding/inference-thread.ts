/**
 * An onnxruntime session in a worker thread, so inference leaves the calling thread's event loop
 * free (onnxruntime-node's own `run` blocks it; see inference-worker.ts). Inputs are transferred,
 * not copied; outputs come back the same way. The worker starts on first use and is unref'd while
 * idle, so it never keeps a process alive; a worker that dies rejects what it was running, and the
 * next run starts a new one. close() ends it.
 */
import { Worker } from 'node:worker_threads';
import { compiledWorkerScript } from '../worker-script';

interface Pending {
  resolve: (r: { data: Float32Array; dims: readonly number[] }) => void;
  reject: (e: Error) => void;
}

/** One named input of a run: float32 or int64 values and their shape. */
export interface Feed {
  data: Float32Array | BigInt64Array;
  dims: number[];
}

export class InferenceThread {
  private worker: Worker | undefined;
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  private closed = false;
  private closing: Promise<void> | undefined;
  /** Called once nothing is pending any more (close() waits on it). */
  private whenIdle: (() => void) | undefined;

  constructor(
    /** The model file's bytes (already checked by the caller). */
    private readonly model: Uint8Array,
    private readonly threads: number,
    private readonly input: string,
    private readonly output: string,
  ) {}

  /** One run of the session on a float32 input of `dims`; `data`'s buffer is transferred (detached here). */
  run(data: Float32Array, dims: number[]): Promise<{ data: Float32Array; dims: readonly number[] }> {
    return this.runFeeds({ [this.input]: { data, dims } });
  }

  /** One run on named inputs (a model with several, e.g. an image and boxes); their buffers are transferred. */
  runFeeds(feeds: Record<string, Feed>): Promise<{ data: Float32Array; dims: readonly number[] }> {
    if (this.closed) return Promise.reject(new Error('inference thread is closed'));
    const w = this.ensureWorker();
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      w.ref();
      w.postMessage({ id, feeds }, Object.values(feeds).map((f) => f.data.buffer as ArrayBuffer));
    });
  }

  /**
   * Refuses new runs, lets those under way end (their callers get their results), then ends the
   * worker. A worker terminated in the middle of onnxruntime's native run takes the whole process
   * down (`terminate called after throwing an instance of 'Napi::Error'`), so it is never cut short.
   */
  close(): Promise<void> {
    return (this.closing ??= this.end());
  }

  private async end(): Promise<void> {
    this.closed = true;
    const w = this.worker;
    if (w && this.pending.size) await new Promise<void>((resolve) => (this.whenIdle = resolve));
    this.worker = undefined;
    this.failAll(new Error('inference thread is closed'));
    if (w) await w.terminate();
  }

  private ensureWorker(): Worker {
    if (this.worker) return this.worker;
    const w = new Worker(compiledWorkerScript(__dirname, 'signals/embedding/inference-worker.js'), {
      workerData: { model: this.model, threads: this.threads, output: this.output },
    });
    w.on('message', (m: { id: number; data?: Float32Array; dims?: number[]; error?: string }) => {
      const p = this.pending.get(m.id);
      if (!p) return;
      this.pending.delete(m.id);
      if (!this.pending.size) {
        w.unref();
        this.whenIdle?.();
      }
      if (m.error !== undefined) p.reject(new Error(`inference failed: ${m.error}`));
      else p.resolve({ data: m.data!, dims: m.dims! });
    });
    const lost = (e: Error) => {
      if (this.worker === w) this.worker = undefined;
      this.failAll(e);
    };
    w.on('error', (e) => lost(new Error(`inference worker failed: ${e.message}`)));
    w.on('exit', (code) => lost(new Error(`inference worker exited (code ${code})`)));
    w.unref();
    this.worker = w;
    return w;
  }

  private failAll(e: Error): void {
    const all = [...this.pending.values()];
    this.pending.clear();
    for (const p of all) p.reject(e);
    this.whenIdle?.();
  }
}
