/**
 * Wiring for the long-running processes: `kagami api` and `kagami worker` build their
 * dependencies here from the validated environment, and stop cleanly on SIGTERM/SIGINT.
 */
import type { Server } from 'node:http';
import path from 'node:path';
import pino from 'pino';
import client from 'prom-client';
import { createApp } from '../api/app';
import { modelFor, modelManifestPath, PACKAGE_ROOT, type Env } from '../config';
import { FsBlobStore } from '../library/blob-store';
import type { MetadataStore } from '../library/metadata-store';
import { openStore } from '../library/open-store';
import { resolveBinaries } from '../media/ffmpeg';
import { queueBoard } from '../queue/board';
import { JobQueues } from '../queue/job-queues';
import { scanOptionsFromEnv } from '../scan/options';
import { weightsForLibrary } from '../signals/embedding/int8-weights';
import { OnnxEmbedder } from '../signals/embedding/onnx-embedder';
import { KagamiService } from './service';

export interface Runtime {
  env: Env;
  store: MetadataStore;
  blobs: FsBlobStore;
  queues: JobQueues;
  service: KagamiService;
  log: pino.Logger;
  close(): Promise<void>;
}

export async function createRuntime(env: Env, opts: { queuePrefix?: string; logger?: pino.Logger; store?: MetadataStore } = {}): Promise<Runtime> {
  const log = opts.logger ?? pino({ level: env.KAGAMI_LOG_LEVEL, base: { pid: process.pid } }, pino.destination(2));
  resolveBinaries({ ffmpeg: env.KAGAMI_FFMPEG, ffprobe: env.KAGAMI_FFPROBE });
  const dataDir = env.KAGAMI_DATA_DIR ?? env.KAGAMI_LIBRARY;
  const store = opts.store ?? (await openStore({ databaseUrl: env.DATABASE_URL, libraryDir: env.KAGAMI_LIBRARY, create: true }));
  const blobs = new FsBlobStore(path.join(dataDir, 'blobs'));
  const queues = new JobQueues({
    redisUrl: env.REDIS_URL,
    prefix: opts.queuePrefix ?? env.KAGAMI_QUEUE_PREFIX,
    webhookAttempts: env.KAGAMI_WEBHOOK_ATTEMPTS,
    webhookBackoffMs: env.KAGAMI_WEBHOOK_BACKOFF_MS,
  });
  const service = new KagamiService(
    {
      store,
      blobs,
      queues,
      modelFor: (libraryModel) => modelFor(env, libraryModel),
      loadEmbedder: (modelId, libraryWeights) => {
        const w = weightsForLibrary(libraryWeights, env.KAGAMI_INT8_WEIGHTS);
        if (w.note) log.warn({ modelId }, w.note);
        return OnnxEmbedder.create(modelManifestPath(modelId), { threads: env.KAGAMI_THREADS, modelsDir: env.KAGAMI_MODELS_DIR, int8Weights: w.bits });
      },
      log: (level, msg, extra) => log[level](extra ?? {}, msg),
    },
    {
      mediaRoot: env.KAGAMI_MEDIA_ROOT,
      maxReferencePixels: env.KAGAMI_MAX_IMAGE_PIXELS,
      maxWaitSec: env.KAGAMI_MAX_WAIT_SEC,
      scan: scanOptionsFromEnv(env),
      refreshMs: env.KAGAMI_REFRESH_MS,
      reconcileAfterMs: Math.max(env.KAGAMI_LOCK_MS * 2, 5000),
    },
  );
  return {
    env,
    store,
    blobs,
    queues,
    service,
    log,
    close: async () => {
      await service.close();
      await queues.close();
      await store.close();
    },
  };
}

function packageVersion(): string {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  return (require(path.join(PACKAGE_ROOT, 'package.json')) as { version: string }).version;
}

/** Starts the API on `port` (0 = any free port); resolves once listening. */
export async function startApi(rt: Runtime, port: number): Promise<{ server: Server; port: number; close(): Promise<void> }> {
  const registry = new client.Registry();
  client.collectDefaultMetrics({ register: registry });
  const app = createApp(rt.service, rt.queues, {
    uploadDir: path.join(rt.env.KAGAMI_DATA_DIR ?? rt.env.KAGAMI_LIBRARY, 'uploads'),
    maxUploadBytes: rt.env.KAGAMI_MAX_UPLOAD_MB * 1024 * 1024,
    maxReferenceBytes: rt.env.KAGAMI_MAX_REFERENCE_MB * 1024 * 1024,
    version: packageVersion(),
    adminQueues: queueBoard(rt.queues),
    consoleDir: path.join(PACKAGE_ROOT, 'dist', 'console'),
    metrics: registry,
    log: (level, msg, extra) => rt.log[level](extra ?? {}, msg),
  });
  const server = await new Promise<Server>((resolve, reject) => {
    const s = app.listen(port, (err?: Error) => (err ? reject(err) : resolve(s)));
  });
  const actual = (server.address() as { port: number }).port;
  rt.log.info({ port: actual }, 'api listening');
  return {
    server,
    port: actual,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

/**
 * Starts the job workers plus the timers that keep references current and recover lost jobs, and
 * warms the scanner up (`ready` settles when it is; a job arriving before waits for the same load).
 */
export function startWorker(rt: Runtime): { ready: Promise<void>; close(): Promise<void> } {
  const svc = rt.service;
  const scanSeconds = new client.Histogram({ name: 'kagami_scan_seconds', help: 'Scan duration', buckets: [0.5, 1, 2, 5, 10, 30, 120, 600], registers: [] });
  const workers = rt.queues.startWorkers(
    {
      references: (id) => svc.processReference(id),
      scans: async (id, ctx) => {
        const end = scanSeconds.startTimer();
        await svc.processScan(id, ctx);
        end();
      },
      batches: (id) => svc.maybeFinishBatch(id),
      webhooks: (id, ctx) => svc.deliverWebhook(id, ctx),
    },
    {
      concurrency: rt.env.KAGAMI_WORKER_CONCURRENCY,
      lockDurationMs: rt.env.KAGAMI_LOCK_MS,
      stalledIntervalMs: rt.env.KAGAMI_STALLED_INTERVAL_MS,
      onFailed: (kind, id, err) => {
        rt.log.error({ kind, id, err: err.message }, 'job failed for good');
        if (kind === 'webhooks') void svc.failDelivery(id, err.message);
        if (kind === 'scans') void svc.failScan(id, err.message);
        if (kind === 'references') void rt.store.failReference(id, err.message);
      },
    },
  );
  let stopping = false;
  const every = (ms: number, fn: () => Promise<unknown>) => {
    let running = false;
    const t = setInterval(() => {
      if (running || stopping) return;
      running = true;
      fn()
        .catch((e) => rt.log.warn({ err: (e as Error).message }, 'background task failed'))
        .finally(() => (running = false));
    }, ms);
    t.unref();
    return t;
  };
  const timers = [every(rt.env.KAGAMI_REFRESH_MS, () => svc.refreshReferences()), every(rt.env.KAGAMI_RECONCILE_MS, () => svc.reconcile())];
  void svc.reconcile().catch(() => undefined);
  rt.log.info({ concurrency: rt.env.KAGAMI_WORKER_CONCURRENCY }, 'worker started');
  const t0 = performance.now();
  // A failed warm-up is only logged: the first job loads the engine again and reports its error.
  const ready = svc.warmUp().then(
    () => rt.log.info({ ms: Math.round(performance.now() - t0) }, 'worker warmed up'),
    (e: unknown) => rt.log.warn({ err: (e as Error).message }, 'warm-up failed'),
  );
  return {
    ready,
    close: async () => {
      stopping = true;
      for (const t of timers) clearInterval(t);
      await ready;
      await workers.close();
    },
  };
}

/** Runs until SIGTERM/SIGINT, then closes `parts` in order. */
export function closeOnSignals(log: pino.Logger, ...parts: Array<{ close(): Promise<void> }>): Promise<void> {
  return new Promise((resolve) => {
    const stop = async (sig: string) => {
      log.info({ signal: sig }, 'shutting down');
      for (const p of parts) await p.close().catch((e) => log.error({ err: (e as Error).message }, 'close failed'));
      resolve();
    };
    process.once('SIGTERM', () => void stop('SIGTERM'));
    process.once('SIGINT', () => void stop('SIGINT'));
  });
}
