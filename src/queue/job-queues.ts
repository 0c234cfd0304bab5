/**
 * The only module that imports bullmq. Four queues carry keys, never bytes:
 *   references  reference id → compute its features
 *   scans       scan id      → scan the video, record the report
 *   batches     batch id     → parent of a flow of scans; finalises the batch when its children end
 *   webhooks    delivery id  → POST the signed payload, retried with exponential backoff
 * Job ids are the record ids, so enqueueing the same thing twice is a no-op (idempotent retries).
 * The database stays the source of truth: if Redis loses its data, `reconcile` re-enqueues.
 */
import { FlowProducer, Queue, QueueEvents, Worker, type Job, type ConnectionOptions } from 'bullmq';

export const QUEUE_KINDS = ['references', 'scans', 'batches', 'webhooks'] as const;
export type QueueKind = (typeof QUEUE_KINDS)[number];

export interface QueueOptions {
  redisUrl: string;
  /** Prefix of every queue name, so several deployments (or test runs) can share one Redis. */
  prefix: string;
  webhookAttempts: number;
  webhookBackoffMs: number;
}

export interface JobContext {
  /** Reports progress in [0,1]; also extends nothing else. */
  progress(p: number): Promise<void>;
  attempt: number;
}

/** What the workers do; each handler is idempotent (it may run again after a crash). */
export interface JobHandlers {
  references(referenceId: string, ctx: JobContext): Promise<void>;
  scans(scanId: string, ctx: JobContext): Promise<void>;
  batches(batchId: string, ctx: JobContext): Promise<void>;
  webhooks(deliveryId: string, ctx: JobContext): Promise<void>;
}

export interface WorkerOptions {
  concurrency: number;
  lockDurationMs: number;
  stalledIntervalMs: number;
  /** Called when a job has failed for good (after its last attempt). */
  onFailed?: (kind: QueueKind, id: string, err: Error) => void;
}

function connectionOf(url: string): ConnectionOptions {
  // maxRetriesPerRequest null: commands wait through a Redis restart instead of failing.
  return { url, maxRetriesPerRequest: null, enableOfflineQueue: true } as ConnectionOptions;
}

export class JobQueues {
  private readonly queues: Record<QueueKind, Queue>;
  private readonly flow: FlowProducer;
  private events: QueueEvents | undefined;
  private readonly connection: ConnectionOptions;

  constructor(private readonly opts: QueueOptions) {
    this.connection = connectionOf(opts.redisUrl);
    const q = (k: QueueKind) => new Queue(this.name(k), { connection: this.connection });
    this.queues = { references: q('references'), scans: q('scans'), batches: q('batches'), webhooks: q('webhooks') };
    this.flow = new FlowProducer({ connection: this.connection });
  }

  name(kind: QueueKind): string {
    return `${this.opts.prefix}-${kind}`;
  }

  /** The bullmq queues, for the admin dashboard. */
  all(): Queue[] {
    return QUEUE_KINDS.map((k) => this.queues[k]);
  }

  async ping(): Promise<boolean> {
    try {
      await Promise.race([this.queues.scans.getJobCounts('waiting'), new Promise((_, no) => setTimeout(() => no(new Error('timeout')), 1000))]);
      return true;
    } catch {
      return false;
    }
  }

  private retain = { removeOnComplete: { age: 24 * 3600, count: 10_000 }, removeOnFail: { age: 7 * 24 * 3600 } };

  async addReference(id: string): Promise<void> {
    await this.queues.references.add('reference', { id }, { jobId: id, attempts: 3, backoff: { type: 'exponential', delay: 1000 }, ...this.retain });
  }

  async addScan(id: string, priority?: number): Promise<void> {
    await this.queues.scans.add('scan', { id }, { jobId: id, attempts: 3, backoff: { type: 'exponential', delay: 2000 }, priority, ...this.retain });
  }

  /** A batch as a flow: the parent runs once every child scan has ended (a failed scan does not block it). */
  async addBatch(batchId: string, scanIds: string[]): Promise<void> {
    await this.flow.add({
      name: 'batch',
      queueName: this.name('batches'),
      data: { id: batchId },
      opts: { jobId: batchId, attempts: 5, backoff: { type: 'exponential', delay: 1000 }, ...this.retain },
      children: scanIds.map((id) => ({
        name: 'scan',
        queueName: this.name('scans'),
        data: { id },
        opts: { jobId: id, attempts: 3, backoff: { type: 'exponential', delay: 2000 }, ignoreDependencyOnFailure: true, priority: 10, ...this.retain },
      })),
    });
  }

  async addWebhook(deliveryId: string): Promise<void> {
    await this.queues.webhooks.add(
      'webhook',
      { id: deliveryId },
      { jobId: deliveryId, attempts: this.opts.webhookAttempts, backoff: { type: 'exponential', delay: this.opts.webhookBackoffMs }, ...this.retain },
    );
  }

  /** Whether Redis knows a job with this id in this queue (in any state). */
  async hasJob(kind: QueueKind, id: string): Promise<boolean> {
    return !!(await this.queues[kind].getJob(id));
  }

  /** Waits until the scan job finishes or `ms` pass; true when it finished (either way). */
  async waitForScan(id: string, ms: number): Promise<boolean> {
    if (ms <= 0) return false;
    this.events ??= new QueueEvents(this.name('scans'), { connection: this.connection });
    await this.events.waitUntilReady();
    const job = await this.queues.scans.getJob(id);
    if (!job) return false;
    try {
      await job.waitUntilFinished(this.events, ms);
      return true;
    } catch (e) {
      // A timeout leaves the job running; a failed job has finished.
      return !/timed out|before finishing/i.test((e as Error).message);
    }
  }

  /** Job counts per queue, for metrics and readiness. */
  async counts(): Promise<Record<QueueKind, Record<string, number>>> {
    const out = {} as Record<QueueKind, Record<string, number>>;
    for (const k of QUEUE_KINDS) out[k] = await this.queues[k].getJobCounts('waiting', 'active', 'delayed', 'failed', 'completed', 'waiting-children', 'prioritized');
    return out;
  }

  /** Removes every job of every queue (tests). */
  async obliterate(): Promise<void> {
    for (const q of this.all()) await q.obliterate({ force: true });
  }

  async close(): Promise<void> {
    await this.events?.close();
    await this.flow.close();
    for (const q of this.all()) await q.close();
  }

  /** Starts workers for every queue; they run the handlers until `close`. */
  startWorkers(handlers: JobHandlers, w: WorkerOptions): { close(): Promise<void> } {
    const make = (kind: QueueKind, concurrency: number) => {
      const worker = new Worker(
        this.name(kind),
        async (job: Job<{ id: string }>) => {
          const ctx: JobContext = { progress: (p) => job.updateProgress(Math.round(p * 1000) / 10), attempt: job.attemptsMade + 1 };
          await handlers[kind](job.data.id, ctx);
        },
        { connection: this.connection, concurrency, lockDuration: w.lockDurationMs, stalledInterval: w.stalledIntervalMs, maxStalledCount: 2 },
      );
      worker.on('failed', (job, err) => {
        if (job && job.attemptsMade >= (job.opts.attempts ?? 1)) w.onFailed?.(kind, job.data.id, err);
      });
      worker.on('error', () => {
        /* connection errors are retried by the client; a listener keeps them from being thrown */
      });
      return worker;
    };
    const workers = [make('references', 2), make('scans', w.concurrency), make('batches', 4), make('webhooks', 8)];
    return {
      close: async () => {
        await Promise.all(workers.map((x) => x.close()));
      },
    };
  }
}
