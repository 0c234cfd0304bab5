/**
 * The HTTP API (Express 5). Routes are thin: authenticate → validate (zod) → call the service →
 * map to a response. One error handler turns every failure into `{"error":{"code","message"}}`.
 */
import { mkdirSync, rmSync } from 'node:fs';
import express, { type NextFunction, type Request, type Response } from 'express';
import multer from 'multer';
import client from 'prom-client';
import swaggerUiDist from 'swagger-ui-dist';
import { z } from 'zod';
import { KagamiError, NotFoundError } from '../errors';
import type { TenantRecord } from '../library/types';
import type { JobQueues } from '../queue/job-queues';
import { authenticate } from '../service/keys';
import type { KagamiService } from '../service/service';
import { buildOpenApi } from './openapi';
import * as S from './schemas';

export interface ApiOptions {
  /** Where uploads are spooled before they move into the blob store (same filesystem). */
  uploadDir: string;
  maxUploadBytes: number;
  maxReferenceBytes: number;
  version: string;
  /** Extra router mounted at /admin/queues for admins (the queue dashboard). */
  adminQueues?: express.Router;
  /** Static files served at / (the web console), if built. */
  consoleDir?: string;
  metrics?: client.Registry;
  log?: (level: 'info' | 'warn' | 'error', msg: string, extra?: Record<string, unknown>) => void;
}

declare module 'express-serve-static-core' {
  interface Request {
    tenant?: TenantRecord;
  }
}

class AuthError extends KagamiError {
  constructor(message: string) {
    super('unauthorized', message, 401);
  }
}

function parse<T extends z.ZodType>(schema: T, value: unknown): z.infer<T> {
  const r = schema.safeParse(value);
  if (!r.success) {
    const msg = r.error.issues.map((i) => (i.path.length ? `${i.path.join('.')}: ${i.message}` : i.message)).join('; ');
    throw new KagamiError('invalid_request', msg, 400);
  }
  return r.data;
}

const tenantOf = (req: Request): TenantRecord => req.tenant!;

export function createApp(service: KagamiService, queues: JobQueues, opts: ApiOptions): express.Express {
  const app = express();
  app.disable('x-powered-by');
  app.set('trust proxy', 'loopback');
  const registry = opts.metrics ?? new client.Registry();
  const httpDuration = new client.Histogram({
    name: 'kagami_http_request_duration_seconds',
    help: 'HTTP request duration by route and status',
    labelNames: ['method', 'route', 'status'] as const,
    buckets: [0.005, 0.02, 0.1, 0.5, 2, 10, 60],
    registers: [registry],
  });
  if (!registry.getSingleMetric('kagami_queue_jobs')) {
    new client.Gauge({
      name: 'kagami_queue_jobs',
      help: 'Jobs per queue and state',
      labelNames: ['queue', 'state'] as const,
      registers: [registry],
      async collect() {
        const counts = await queues.counts().catch(() => undefined);
        if (!counts) return;
        for (const [q, byState] of Object.entries(counts)) for (const [s, n] of Object.entries(byState)) this.set({ queue: q, state: s }, n);
      },
    });
  }

  app.use((req, res, next) => {
    const end = httpDuration.startTimer({ method: req.method });
    res.on('finish', () => end({ route: (req.route?.path as string | undefined) ?? (res.statusCode === 404 ? 'unmatched' : req.path), status: String(res.statusCode) }));
    next();
  });

  mkdirSync(opts.uploadDir, { recursive: true });
  const spool = (maxBytes: number, maxFiles: number) =>
    multer({ dest: opts.uploadDir, limits: { fileSize: maxBytes, files: maxFiles, fields: 20, parts: maxFiles + 20 } });
  const videoUpload = spool(opts.maxUploadBytes, 1).single('video');
  const imageUpload = spool(opts.maxReferenceBytes, 50).array('image', 50);
  /** Removes spooled files the handler did not take into the blob store. */
  const cleanupUploads = (req: Request) => {
    const files = ([] as Express.Multer.File[]).concat((req.files as Express.Multer.File[] | undefined) ?? [], req.file ? [req.file] : []);
    for (const f of files) rmSync(f.path, { force: true });
  };

  // ---------------------------------------------------------------- public
  app.get('/healthz', (_req, res) => {
    res.json({ ok: true });
  });
  app.get('/readyz', async (_req, res) => {
    const [db, redis] = await Promise.all([
      service.store.getModel().then(() => true, () => false),
      queues.ping(),
    ]);
    res.status(db && redis ? 200 : 503).json({ ok: db && redis, database: db, redis });
  });
  app.get('/metrics', async (_req, res) => {
    res.type(registry.contentType).send(await registry.metrics());
  });
  const openapi = buildOpenApi(opts.version);
  app.get('/openapi.json', (_req, res) => {
    res.json(openapi);
  });
  app.get('/docs', (_req, res) => {
    res.type('html').send(`<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Kagami API</title>
<link rel="stylesheet" href="/docs/assets/swagger-ui.css"></head><body><div id="ui"></div>
<script src="/docs/assets/swagger-ui-bundle.js"></script>
<script>window.ui = SwaggerUIBundle({ url: '/openapi.json', dom_id: '#ui' });</script></body></html>`);
  });
  app.use('/docs/assets', express.static(swaggerUiDist.getAbsoluteFSPath(), { index: false }));

  // ---------------------------------------------------------------- authentication
  const auth = async (req: Request, _res: Response, next: NextFunction) => {
    const header = req.get('authorization');
    const cookieKey = /(?:^|;\s*)kagami_key=([^;]+)/.exec(req.get('cookie') ?? '')?.[1];
    const key = header?.startsWith('Bearer ') ? header.slice(7).trim() : cookieKey ? decodeURIComponent(cookieKey) : undefined;
    if (!key) throw new AuthError('missing API key: send Authorization: Bearer <key>');
    const tenant = await authenticate(service.store, key);
    if (!tenant) throw new AuthError('unknown or revoked API key');
    req.tenant = tenant;
    next();
  };

  if (opts.adminQueues) {
    app.use(
      '/admin/queues',
      auth,
      (req, _res, next) => {
        if (tenantOf(req).role !== 'admin') throw new NotFoundError('page', req.originalUrl);
        next();
      },
      opts.adminQueues,
    );
  }

  const v1 = express.Router();
  v1.use(auth);
  v1.use(express.json({ limit: '1mb' }));

  v1.get('/me', (req, res) => {
    const t = tenantOf(req);
    res.json({ id: t.id, name: t.name, role: t.role });
  });

  v1.get('/characters', async (req, res) => {
    res.json({ characters: await service.listCharacters(tenantOf(req)) });
  });
  v1.post('/characters', async (req, res) => {
    res.status(201).json(await service.createCharacter(tenantOf(req), parse(S.CreateCharacter, req.body)));
  });
  v1.get('/characters/:id', async (req, res) => {
    res.json(await service.getCharacter(tenantOf(req), req.params.id as string));
  });
  v1.patch('/characters/:id', async (req, res) => {
    res.json(await service.updateCharacter(tenantOf(req), req.params.id as string, parse(S.UpdateCharacter, req.body)));
  });
  v1.delete('/characters/:id', async (req, res) => {
    await service.deleteCharacter(tenantOf(req), req.params.id as string);
    res.status(204).end();
  });
  v1.post('/characters/:id/references', async (req, res) => {
    // Check the query and ownership before accepting the upload body.
    const { negative } = parse(S.ReferenceUploadQuery, req.query);
    await service.getCharacter(tenantOf(req), req.params.id as string);
    await new Promise<void>((ok, fail) => imageUpload(req, res, (e: unknown) => (e ? fail(e) : ok())));
    try {
      const files = ((req.files as Express.Multer.File[] | undefined) ?? []).map((f) => ({ name: f.originalname, path: f.path }));
      res.status(202).json(await service.addReferenceUploads(tenantOf(req), req.params.id as string, files, { negative }));
    } finally {
      cleanupUploads(req);
    }
  });
  v1.get('/references/:id/image', async (req, res) => {
    const bytes = await service.referenceImage(tenantOf(req), req.params.id as string);
    res.type(sniffImage(bytes)).send(bytes);
  });
  v1.delete('/references/:id', async (req, res) => {
    await service.deleteReference(tenantOf(req), req.params.id as string);
    res.status(204).end();
  });

  v1.post('/scans', async (req, res) => {
    const { wait } = parse(S.WaitQuery, req.query);
    let created;
    if (req.is('multipart/form-data')) {
      await new Promise<void>((ok, fail) => videoUpload(req, res, (e: unknown) => (e ? fail(e) : ok())));
      try {
        if (!req.file) throw new KagamiError('invalid_request', "no video: send the file in the multipart field 'video'", 400);
        created = await service.createScan(tenantOf(req), { upload: { name: req.file.originalname, path: req.file.path } });
      } finally {
        cleanupUploads(req);
      }
    } else {
      created = await service.createScan(tenantOf(req), parse(S.ScanByPath, req.body ?? {}));
    }
    if (wait) {
      const v = await service.waitScan(tenantOf(req), created.id, wait);
      res.status(v.status === 'done' || v.status === 'failed' ? 200 : 202).json(v);
    } else {
      res.status(202).json(created);
    }
  });
  v1.get('/scans', async (req, res) => {
    res.json({ scans: await service.listScans(tenantOf(req), parse(S.ListQuery, req.query)) });
  });
  v1.get('/scans/:id', async (req, res) => {
    const { wait } = parse(S.WaitQuery, req.query);
    const id = req.params.id as string;
    res.json(wait ? await service.waitScan(tenantOf(req), id, wait) : await service.getScan(tenantOf(req), id));
  });
  v1.get('/scans/:id/evidence/:characterId', async (req, res) => {
    const jpeg = await service.evidenceFrame(tenantOf(req), req.params.id as string, req.params.characterId as string);
    res.type('image/jpeg').send(jpeg);
  });

  v1.get('/scans/:id/reference/:characterId', async (req, res) => {
    const bytes = await service.evidenceReference(tenantOf(req), req.params.id as string, req.params.characterId as string);
    res.type(sniffImage(bytes)).send(bytes);
  });

  v1.post('/batches', async (req, res) => {
    const b = await service.createBatch(tenantOf(req), parse(S.CreateBatch, req.body ?? {}));
    res.status(202).json(await service.getBatch(tenantOf(req), b.id));
  });
  v1.get('/batches/:id', async (req, res) => {
    res.json(await service.getBatch(tenantOf(req), req.params.id as string));
  });
  v1.get('/batches/:id/report', async (req, res) => {
    const { format } = parse(S.ReportFormatQuery, req.query);
    const body = await service.batchReport(tenantOf(req), req.params.id as string, format);
    res.type(format === 'csv' ? 'text/csv' : 'application/x-ndjson').attachment(`${req.params.id}.${format}`).send(body);
  });

  v1.get('/matches', async (req, res) => {
    res.json({ matches: await service.listMatches(tenantOf(req), parse(S.MatchQuery, req.query)) });
  });
  v1.get('/matches/:id', async (req, res) => {
    res.json(await service.getMatch(tenantOf(req), req.params.id as string));
  });
  v1.get('/matches/:id/frame', async (req, res) => {
    const jpeg = await service.matchFrame(tenantOf(req), req.params.id as string);
    res.type('image/jpeg').send(jpeg);
  });
  v1.put('/matches/:id/decision', async (req, res) => {
    res.json(await service.decideMatch(tenantOf(req), req.params.id as string, parse(S.DecideMatch, req.body ?? {})));
  });
  v1.delete('/matches/:id/decision', async (req, res) => {
    res.json(await service.undoDecision(tenantOf(req), req.params.id as string));
  });
  v1.get('/reviews', async (req, res) => {
    res.json({ reviews: await service.listReviews(tenantOf(req), parse(S.ReviewQuery, req.query)) });
  });

  v1.get('/webhook', async (req, res) => {
    const w = await service.store.getWebhook(tenantOf(req).id);
    if (!w) throw new NotFoundError('webhook', tenantOf(req).name);
    res.json({ url: w.url, createdAt: w.createdAt });
  });
  v1.put('/webhook', async (req, res) => {
    const b = parse(S.SetWebhook, req.body ?? {});
    res.json(await service.setWebhook(tenantOf(req), b.url, b.secret));
  });
  v1.delete('/webhook', async (req, res) => {
    if (!(await service.store.deleteWebhook(tenantOf(req).id))) throw new NotFoundError('webhook', tenantOf(req).name);
    res.status(204).end();
  });
  v1.get('/webhook/deliveries', async (req, res) => {
    res.json({ deliveries: await service.store.listDeliveries(tenantOf(req).id, 200) });
  });

  app.use('/v1', v1);
  if (opts.consoleDir) app.use('/', express.static(opts.consoleDir, { index: 'index.html' }));

  app.use((req, _res, next) => next(new NotFoundError('route', `${req.method} ${req.path}`)));
  // eslint-disable-next-line @typescript-eslint/no-unused-vars
  app.use((err: unknown, req: Request, res: Response, _next: NextFunction) => {
    cleanupUploads(req);
    const { status, code, message } = describeError(err);
    if (status >= 500) opts.log?.('error', 'request failed', { err: (err as Error)?.stack ?? String(err), url: req.originalUrl });
    if (!res.headersSent) res.status(status).json({ error: { code, message } });
  });
  return app;
}

function describeError(err: unknown): { status: number; code: string; message: string } {
  if (err instanceof KagamiError) return { status: err.httpStatus, code: err.code, message: err.message };
  if (err instanceof multer.MulterError) {
    const map: Record<string, [number, string]> = {
      LIMIT_FILE_SIZE: [413, 'file_too_large'],
      LIMIT_FILE_COUNT: [413, 'too_many_files'],
      LIMIT_UNEXPECTED_FILE: [400, 'unexpected_field'],
      LIMIT_PART_COUNT: [413, 'too_many_parts'],
      LIMIT_FIELD_COUNT: [413, 'too_many_fields'],
    };
    const [status, code] = map[err.code] ?? [400, 'invalid_upload'];
    return { status, code, message: err.field ? `${err.message} (field '${err.field}')` : err.message };
  }
  const e = err as { type?: string; status?: number; message?: string };
  if (e?.type === 'entity.parse.failed') return { status: 400, code: 'invalid_json', message: 'request body is not valid JSON' };
  if (e?.type === 'entity.too.large') return { status: 413, code: 'body_too_large', message: 'request body too large' };
  if (typeof e?.status === 'number' && e.status >= 400 && e.status < 500) return { status: e.status, code: 'invalid_request', message: e.message ?? 'bad request' };
  if (e?.message && /Unexpected end of form|Malformed part header|Multipart: Boundary not found/i.test(e.message)) {
    return { status: 400, code: 'invalid_upload', message: `malformed multipart body: ${e.message}` };
  }
  return { status: 500, code: 'internal', message: 'internal error' };
}

function sniffImage(b: Buffer): string {
  if (b[0] === 0x89 && b[1] === 0x50) return 'image/png';
  if (b[0] === 0xff && b[1] === 0xd8) return 'image/jpeg';
  if (b.subarray(0, 4).toString('latin1') === 'RIFF') return 'image/webp';
  if (b.subarray(0, 3).toString('latin1') === 'GIF') return 'image/gif';
  return 'application/octet-stream';
}

