/**
 * The service's use cases, shared by the HTTP API and the workers. Tenancy is enforced here:
 * a rightsholder sees only its own characters, references and matches; a platform only its own
 * scans; another tenant's records look exactly like missing ones (NotFoundError → 404).
 */
import { createHmac, randomUUID } from 'node:crypto';
import { realpathSync, statSync } from 'node:fs';
import path from 'node:path';
import sharp, { type Metadata } from 'sharp';
import { isKagamiError, KagamiError, NotFoundError, ValidationError } from '../errors';
import { FsBlobStore, putFile } from '../library/blob-store';
import { checkSameRole, libraryModelOf, prepareReference, referenceId, validateCharacterId } from '../library/library';
import type { MetadataStore } from '../library/metadata-store';
import type { CharacterRecord, MatchDecisions, MatchRecord, OwnerDecision, PlatformDecision, ReferenceRecord, ScanRecord, ScanStatus, TenantRecord } from '../library/types';
import { cropToPng, decodeReference, type Region } from '../media/image';
import { probeVideo } from '../media/ffmpeg';
import type { Frame } from '../media/types';
import type { JobContext, JobQueues } from '../queue/job-queues';
import { negativeKey, negativeOf, type ReferenceSet } from '../scan/reference-set';
import type { ScanOptions, ScanReport } from '../scan/scanner';
import type { Embedder } from '../signals/embedder';
import { collectVideos } from '../media/videos';
import { Engines } from './engine';

export class ForbiddenError extends KagamiError {
  constructor(message: string) {
    super('forbidden', message, 403);
  }
}

export interface ServiceOptions {
  /** Directory scans by path may read from; undefined disables scans by path. */
  mediaRoot?: string;
  maxReferencePixels: number;
  maxWaitSec: number;
  scan: ScanOptions;
  /** How stale the in-memory references may get before a scan refreshes them. */
  refreshMs: number;
  /** Scans queued or running longer than this without a job in Redis are re-enqueued by `reconcile`. */
  reconcileAfterMs: number;
}

export interface ServiceDeps {
  store: MetadataStore;
  blobs: FsBlobStore;
  queues: JobQueues;
  /** The model to use on a library whose vectors are of `libraryModel` (undefined: none yet). */
  modelFor: (libraryModel: string | undefined) => string;
  /** Loads an embedding model; only workers need one, loaded at their first job (`libraryWeights`: see EngineDeps.loadEmbedder). */
  loadEmbedder: (modelId: string, libraryWeights?: 7 | 8) => Promise<Embedder>;
  log?: (level: 'info' | 'warn' | 'error', msg: string, extra?: Record<string, unknown>) => void;
}

export interface CharacterView extends CharacterRecord {
  references: Array<Pick<ReferenceRecord, 'id' | 'status' | 'fileName' | 'width' | 'height' | 'createdAt' | 'error'> & { warnings: string[]; negative: boolean }>;
}

/** What a match means once decisions are taken into account. */
export type EffectiveVerdict = 'match' | 'review' | 'clear' | 'allowed';

/** A match as the API shows it: the record plus the platform's name and the effective verdict. */
export type MatchView = Omit<MatchRecord, 'evidence'> & {
  evidence: Record<string, unknown>;
  platform?: string;
  characterName?: string;
  effectiveVerdict: EffectiveVerdict;
};

/**
 * The verdict after decisions: a licensed match is `allowed`; one its rightsholder calls a false
 * match, or a platform reviewer dismisses, is `clear`; one a reviewer confirms is `match`. The
 * rightsholder's decision wins over the platform's. The scan's own verdict and score are kept.
 */
export function effectiveVerdict(verdict: MatchRecord['verdict'], d: MatchDecisions | undefined): EffectiveVerdict {
  if (d?.owner) return d.owner.decision === 'licensed' ? 'allowed' : 'clear';
  if (d?.platform) return d.platform.decision === 'confirmed' ? 'match' : 'clear';
  return verdict;
}

/** The identity of a scan's video for exclusions: its blob's sha256, or its real path. */
export function videoKey(source: ScanRecord['source']): string {
  return source.kind === 'blob' ? `sha256:${source.key}` : `path:${source.path}`;
}

/** Thresholds of the reference quality warnings. */
export const REFERENCE_QUALITY = { minShortSide: 128, minForegroundFraction: 0.15, duplicateCosine: 0.995 };

const OWNER_DECISIONS: readonly string[] = ['licensed', 'false_match'];

/**
 * How much of the evidence box's size is added on each side when a false match's evidence becomes a
 * negative example: a keypoint box is the reference's silhouette projected into the frame, so a
 * little margin keeps the look-alike's own outline (and its edge keypoints) inside the cut.
 */
export const NEGATIVE_CROP_MARGIN = 0.1;

/** An image to register: a spooled upload (moved into the blob store) or bytes Kagami made. */
type ReferenceSource = { name: string; path: string } | { name: string; bytes: Buffer };

export interface ScanView {
  id: string;
  status: ScanStatus;
  progress: number;
  report: ScanReport | null;
  error?: string;
  fileName: string;
  batchId?: string;
  createdAt: string;
  startedAt?: string;
  finishedAt?: string;
}

const canScan = (t: TenantRecord) => t.role === 'platform' || t.role === 'admin';
const ownsCharacters = (t: TenantRecord) => t.role === 'rightsholder' || t.role === 'admin';

export class KagamiService {
  /** The model, references and scanner the worker's jobs use (loaded at the first job). */
  private readonly engines: Engines;

  constructor(
    private readonly deps: ServiceDeps,
    readonly opts: ServiceOptions,
  ) {
    this.engines = new Engines({
      store: deps.store,
      modelFor: deps.modelFor,
      loadEmbedder: deps.loadEmbedder,
      scan: opts.scan,
      refreshMs: opts.refreshMs,
      log: deps.log,
    });
  }

  get store(): MetadataStore {
    return this.deps.store;
  }

  private log(level: 'info' | 'warn' | 'error', msg: string, extra?: Record<string, unknown>) {
    this.deps.log?.(level, msg, extra);
  }

  // ---------------------------------------------------------------- characters

  private async ownCharacter(t: TenantRecord, id: string): Promise<CharacterRecord> {
    const c = await this.store.getCharacter(id);
    if (!c || (t.role !== 'admin' && c.owner !== t.name)) throw new NotFoundError('character', id);
    return c;
  }

  private async view(c: CharacterRecord): Promise<CharacterView> {
    const refs = await this.store.listReferences(c.id);
    return {
      ...c,
      references: refs.map((r) => ({
        id: r.id,
        status: r.status,
        fileName: r.fileName,
        width: r.width,
        height: r.height,
        createdAt: r.createdAt,
        ...(r.error ? { error: r.error } : {}),
        warnings: r.warnings ?? [],
        negative: !!r.negative,
      })),
    };
  }

  async createCharacter(t: TenantRecord, input: { id: string; name: string; franchise?: string; owner?: string }): Promise<CharacterView> {
    if (!ownsCharacters(t)) throw new ForbiddenError('only rightsholders register characters');
    validateCharacterId(input.id);
    const owner = t.role === 'admin' && input.owner ? input.owner : t.name;
    if (await this.store.getCharacter(input.id)) throw new KagamiError('character_exists', `character id '${input.id}' is already registered`, 409);
    return this.view(await this.store.upsertCharacter({ id: input.id, name: input.name, owner, franchise: input.franchise }));
  }

  async getCharacter(t: TenantRecord, id: string): Promise<CharacterView> {
    return this.view(await this.ownCharacter(t, id));
  }

  async listCharacters(t: TenantRecord): Promise<CharacterView[]> {
    if (!ownsCharacters(t)) return [];
    const list = await this.store.listCharacters(t.role === 'admin' ? {} : { owner: t.name });
    return Promise.all(list.map((c) => this.view(c)));
  }

  async updateCharacter(t: TenantRecord, id: string, patch: { name?: string; franchise?: string }): Promise<CharacterView> {
    const c = await this.ownCharacter(t, id);
    return this.view(await this.store.upsertCharacter({ id, name: patch.name ?? c.name, owner: c.owner, franchise: patch.franchise ?? c.franchise }));
  }

  async deleteCharacter(t: TenantRecord, id: string): Promise<void> {
    await this.ownCharacter(t, id);
    await this.store.deleteCharacter(id);
  }

  // ---------------------------------------------------------------- references

  /**
   * Accepts uploaded reference images: each is checked (a readable image within the pixel limit)
   * before anything is stored, then stored as a blob and queued for feature extraction. With
   * `negative`, they are negative examples: look-alikes the character is not (ReferenceRecord.negative).
   */
  async addReferenceUploads(t: TenantRecord, characterId: string, files: Array<{ name: string; path: string }>, opts: { negative?: boolean } = {}): Promise<CharacterView> {
    const c = await this.ownCharacter(t, characterId);
    await this.registerReferences(c, files, !!opts.negative);
    return this.view(c);
  }

  /**
   * The one way images become references of a character, whether uploaded (a spooled file, moved
   * into the blob store) or made by Kagami (bytes, e.g. a false match's evidence): every image is
   * checked before anything is stored; an image already registered for the character in the same
   * role is the existing reference (ids are stable per content), one in the other role is a
   * `conflict`; new ones are queued for feature extraction. Returns the records, in input order.
   */
  private async registerReferences(c: CharacterRecord, files: ReferenceSource[], negative: boolean): Promise<ReferenceRecord[]> {
    if (!files.length) throw new ValidationError("no images: send one or more files in the multipart field 'image'");
    const metas: Metadata[] = [];
    for (const f of files) {
      let meta: Metadata;
      try {
        meta = await sharp('bytes' in f ? f.bytes : f.path, { limitInputPixels: false }).metadata();
      } catch {
        throw new KagamiError('invalid_media', `${f.name}: not a supported image (PNG, JPEG, WebP, GIF, TIFF, AVIF)`, 422);
      }
      const px = (meta.width ?? 0) * (meta.height ?? 0);
      if (!px) throw new KagamiError('invalid_media', `${f.name}: image has no size`, 422);
      if (px > this.opts.maxReferencePixels) {
        throw new KagamiError('invalid_media', `${f.name}: image is ${meta.width}×${meta.height} = ${px} pixels, over the limit of ${this.opts.maxReferencePixels}`, 422);
      }
      metas.push(meta);
    }
    const existing = await this.store.listReferences(c.id);
    const items = [];
    for (const [i, f] of files.entries()) {
      const { key } = 'bytes' in f ? await this.deps.blobs.put(f.bytes) : await putFile(this.deps.blobs, f.path);
      checkSameRole(existing, c.id, key, negative, f.name);
      const id = referenceId(c.id, key);
      items.push({ ref: { id, characterId: c.id, sha256: key, fileName: path.basename(f.name), width: metas[i].width ?? 0, height: metas[i].height ?? 0, status: 'pending' as const, ...(negative ? { negative } : {}) } });
    }
    const stored = await this.store.addReferences(items);
    for (const r of stored) if (r.status === 'pending') await this.deps.queues.addReference(r.id);
    return stored;
  }

  async referenceImage(t: TenantRecord, refId: string): Promise<Buffer> {
    const r = await this.store.getReference(refId);
    if (!r) throw new NotFoundError('reference', refId);
    await this.ownCharacter(t, r.characterId);
    return this.deps.blobs.get(r.sha256);
  }

  async deleteReference(t: TenantRecord, refId: string): Promise<void> {
    const r = await this.store.getReference(refId);
    if (!r) throw new NotFoundError('reference', refId);
    await this.ownCharacter(t, r.characterId);
    await this.store.deleteReference(refId);
  }

  /** Job: decode the stored file, compute its features, mark it ready (or failed with the reason). */
  async processReference(refId: string): Promise<void> {
    const r = await this.store.getReference(refId);
    if (!r || r.status !== 'pending') return;
    try {
      // Fresh references: a library just moved to another model is followed before this one is embedded.
      await this.engines.use(
        async ({ embedder, refs }) => {
          try {
            const bytes = await this.deps.blobs.get(r.sha256);
            const p = await prepareReference({ name: r.fileName, bytes }, embedder, { maxPixels: this.opts.maxReferencePixels, minSide: 16 });
            const warnings = await this.referenceWarnings(r, bytes, p.embedding, refs, embedder.calibration?.ceil).catch((e: unknown) => {
              this.log('warn', 'reference quality check failed', { referenceId: refId, err: (e as Error).message });
              return [] as string[];
            });
            await this.store.setReferenceWarnings(refId, warnings);
            // The vector's model is checked (or recorded, in a new library) in the same write.
            const model = libraryModelOf(embedder);
            await this.store.setReferenceFeatures(refId, { referenceId: refId, characterId: r.characterId, embedding: p.embedding, keypoints: p.keypoints }, model);
          } catch (e) {
            if (isKagamiError(e) && e.code === 'model_mismatch' && (await this.engines.movedFrom(embedder.modelId))) {
              // Moved by `library reembed` while this reference was embedded: the job's retry embeds it with the new model.
              throw new Error(`the library moved to another embedding model while reference ${refId} was embedded; it is embedded again`);
            }
            throw e;
          }
        },
        { fresh: true },
      );
    } catch (e) {
      // The file's or the library's own problem (a pinned model that is not the library's included): final.
      if (e instanceof KagamiError) {
        await this.store.failReference(refId, e.message);
        return;
      }
      throw e;
    }
  }

  /**
   * Quality warnings of a reference being processed: the character too small after trimming the
   * background, mostly background, or a duplicate of another character's reference (the same file,
   * or a near-identical embedding). Another owner's character is not named.
   */
  private async referenceWarnings(r: ReferenceRecord, bytes: Buffer, embedding: Float32Array, refs: ReferenceSet, sameImageCosine = REFERENCE_QUALITY.duplicateCosine): Promise<string[]> {
    const q = REFERENCE_QUALITY;
    const out: string[] = [];
    const decoded = await decodeReference(r.fileName, bytes, { maxPixels: this.opts.maxReferencePixels, minSide: 1 });
    const { width: tw, height: th } = decoded.image;
    if (Math.min(tw, th) < q.minShortSide) {
      out.push(`too_small: the character is only ${tw}×${th} px after trimming the background; use art at least ${q.minShortSide} px on the short side`);
    }
    const frac = (tw * th) / Math.max(1, decoded.originalWidth * decoded.originalHeight);
    if (frac < q.minForegroundFraction) {
      out.push(`mostly_background: the character fills only ${Math.round(frac * 100)}% of the image; crop it closer`);
    }
    const owner = (await this.store.getCharacter(r.characterId))?.owner;
    const describe = async (characterId: string) => {
      const c = await this.store.getCharacter(characterId);
      return c && c.owner === owner ? `'${c.name}' (${c.id})` : "another rightsholder's character";
    };
    // A negative example is expected to look like someone else's character: no duplicate check.
    const same = r.negative ? undefined : (await this.store.findReferencesBySha256(r.sha256)).find((x) => x.characterId !== r.characterId);
    if (same) {
      out.push(`duplicate: the same image is registered for ${await describe(same.characterId)}`);
    } else {
      const near = refs.vectors.search([embedding], 5)[0].filter((h) => h.id !== r.id);
      // The character's own references vs its negatives: a pair as alike as the model's "same image"
      // cosine (its calibration ceiling) would cancel out wherever either is seen.
      const own = r.negative ? r.characterId : negativeKey(r.characterId);
      const clash = near.find((h) => h.key === own && h.similarity >= Math.min(sameImageCosine, q.duplicateCosine));
      if (clash) {
        out.push(
          r.negative
            ? `conflicts_with_reference: nearly identical to this character's own reference ${clash.id} (similarity ${clash.similarity.toFixed(3)}); it would hide matches of it`
            : `conflicts_with_negative: nearly identical to this character's negative example ${clash.id} (similarity ${clash.similarity.toFixed(3)}); one of them would hide the other`,
        );
      }
      const hit = r.negative ? undefined : near.find((h) => h.key !== r.characterId && negativeOf(h.key) === undefined && h.similarity >= q.duplicateCosine);
      if (hit) out.push(`duplicate: nearly identical to a reference of ${await describe(hit.key)} (similarity ${hit.similarity.toFixed(3)})`);
    }
    return out;
  }

  // ---------------------------------------------------------------- scans

  /**
   * The scan as the API shows it. A finished report's matches get their match id, the decisions
   * on them and the effective verdict (and the report its effective clip verdict).
   */
  private async toView(s: ScanRecord): Promise<ScanView> {
    let report = (s.report as ScanReport | undefined) ?? null;
    if (report && s.status === 'done') {
      const recs = new Map((await this.store.listMatches({ scanId: s.id, limit: 10_000 })).map((m) => [m.characterId, m]));
      const matches = report.matches.map((m) => {
        const rec = recs.get(m.characterId);
        if (!rec) return m;
        return { ...m, matchId: rec.id, ...(rec.decisions ? { decisions: rec.decisions } : {}), effectiveVerdict: effectiveVerdict(m.verdict, rec.decisions) };
      });
      const ev = matches.map((m) => ('effectiveVerdict' in m ? m.effectiveVerdict : m.verdict));
      report = { ...report, matches, effectiveVerdict: ev.includes('match') ? 'match' : ev.includes('review') ? 'review' : 'clear' } as ScanReport;
    }
    return {
      id: s.id,
      status: s.status,
      progress: s.progress,
      report,
      ...(s.error ? { error: s.error } : {}),
      fileName: s.fileName,
      ...(s.batchId ? { batchId: s.batchId } : {}),
      createdAt: s.createdAt,
      ...(s.startedAt ? { startedAt: s.startedAt } : {}),
      ...(s.finishedAt ? { finishedAt: s.finishedAt } : {}),
    };
  }

  /** Resolves a client-given path inside the media root; anything outside it is refused. */
  resolveMediaPath(p: string): string {
    if (!this.opts.mediaRoot) throw new KagamiError('paths_disabled', 'scans by path are disabled: the server has no KAGAMI_MEDIA_ROOT', 400);
    const root = realpathSync(this.opts.mediaRoot);
    const abs = path.resolve(root, p);
    const inside = (x: string) => x === root || x.startsWith(root + path.sep);
    if (!inside(abs)) throw new KagamiError('path_outside_media_root', `${p}: outside the media root`, 400);
    let real: string;
    try {
      real = realpathSync(abs);
    } catch {
      throw new KagamiError('file_not_found', `${p}: no such file under the media root`, 400);
    }
    if (!inside(real)) throw new KagamiError('path_outside_media_root', `${p}: outside the media root`, 400);
    return real;
  }

  /** Creates a scan of an uploaded file (moved into the blob store) or of a path under the media root. */
  async createScan(t: TenantRecord, input: { upload?: { name: string; path: string }; path?: string }): Promise<ScanView> {
    if (!canScan(t)) throw new ForbiddenError('only platforms screen clips');
    let source: ScanRecord['source'];
    let fileName: string;
    if (input.upload) {
      await probeVideo(input.upload.path).catch((e) => {
        throw e instanceof KagamiError ? new KagamiError(e.code, e.message.replace(input.upload!.path, input.upload!.name), 422) : e;
      });
      const { key } = await putFile(this.deps.blobs, input.upload.path);
      source = { kind: 'blob', key };
      fileName = path.basename(input.upload.name);
    } else if (input.path) {
      const real = this.resolveMediaPath(input.path);
      if (!statSync(real).isFile()) throw new KagamiError('not_a_file', `${input.path}: not a file (use /v1/batches for directories)`, 400);
      await probeVideo(real).catch((e) => {
        throw e instanceof KagamiError ? new KagamiError(e.code, e.message.replace(real, input.path!), 422) : e;
      });
      source = { kind: 'path', path: real };
      fileName = input.path;
    } else {
      throw new ValidationError("send a video in the multipart field 'video', or JSON {\"path\"}");
    }
    const s = await this.store.createScan({ id: `scan_${randomUUID()}`, tenantId: t.id, source, fileName });
    await this.deps.queues.addScan(s.id);
    return await this.toView(s);
  }

  async getScan(t: TenantRecord, id: string): Promise<ScanView> {
    const s = await this.store.getScan(id, t.role === 'admin' ? undefined : t.id);
    if (!s) throw new NotFoundError('scan', id);
    return await this.toView(s);
  }

  async listScans(t: TenantRecord, filter: { status?: ScanStatus; limit?: number }): Promise<ScanView[]> {
    return Promise.all((await this.store.listScans({ tenantId: t.role === 'admin' ? undefined : t.id, ...filter })).map((s) => this.toView(s)));
  }

  /** Waits up to `sec` seconds for the scan to finish, then returns its current state. */
  async waitScan(t: TenantRecord, id: string, sec: number): Promise<ScanView> {
    const wait = Math.min(Math.max(0, sec), this.opts.maxWaitSec);
    const deadline = Date.now() + wait * 1000;
    let v = await this.getScan(t, id);
    while ((v.status === 'queued' || v.status === 'running') && Date.now() < deadline) {
      await this.deps.queues.waitForScan(id, Math.min(2000, deadline - Date.now()));
      v = await this.getScan(t, id);
    }
    return v;
  }

  async evidenceFrame(t: TenantRecord, scanId: string, characterId: string): Promise<Buffer> {
    const s = await this.store.getScan(scanId, t.role === 'admin' ? undefined : t.id);
    if (!s) throw new NotFoundError('scan', scanId);
    const m = (await this.store.listMatches({ scanId })).find((x) => x.characterId === characterId);
    const key = m?.evidence.frameBlob;
    if (typeof key !== 'string') throw new NotFoundError('evidence frame', `${scanId}/${characterId}`);
    return this.deps.blobs.get(key);
  }

  /** The reference image a scan's match was found with (so platform reviewers can compare). */
  async evidenceReference(t: TenantRecord, scanId: string, characterId: string): Promise<Buffer> {
    const s = await this.store.getScan(scanId, t.role === 'admin' ? undefined : t.id);
    if (!s) throw new NotFoundError('scan', scanId);
    const m = (await this.store.listMatches({ scanId, characterId, limit: 1 }))[0];
    const refId = m?.evidence.referenceId;
    const r = typeof refId === 'string' ? await this.store.getReference(refId) : undefined;
    if (!r) throw new NotFoundError('evidence reference', `${scanId}/${characterId}`);
    return this.deps.blobs.get(r.sha256);
  }

  /** Ends the model's inference thread and the scanner's keypoint threads (stores and queues are closed by their owner). */
  async close(): Promise<void> {
    await this.engines.close();
  }

  /**
   * Loads the model and references and runs each part of a scan once, so that a worker's first job
   * is as fast as the next (it would otherwise load them and start the keypoint threads itself).
   */
  async warmUp(): Promise<void> {
    await this.engines.use(({ scanner }) => scanner.warmUp());
  }

  /** Keeps the worker's in-memory references current between scans, and follows a library moved to another model. */
  async refreshReferences(): Promise<void> {
    await this.engines.refresh();
  }

  /** Job: scan the video, record report and matches, notify. Runs again safely after a crash. */
  async processScan(scanId: string, ctx: JobContext): Promise<void> {
    const s = await this.store.getScan(scanId);
    if (!s || s.status === 'done' || s.status === 'failed') return;
    await this.store.updateScan(scanId, { status: 'running', startedAt: s.startedAt ?? new Date().toISOString(), progress: 0 });
    const file = s.source.kind === 'blob' ? this.deps.blobs.pathOf(s.source.key) : s.source.path;
    const frames = new Map<string, Frame>();
    let lastProgress = 0;
    let report: ScanReport;
    try {
      report = await this.engines.use(({ scanner }) => scanner.scan({
        file,
        minScore: this.opts.scan.aggregate.thresholds.review,
        top: 50,
        onProgress: (p) => {
          const now = Date.now();
          if (now - lastProgress < 500) return;
          lastProgress = now;
          const frac = Math.min(0.99, p.framesDone / p.framesExpected);
          void this.store.updateScan(scanId, { progress: frac }).catch(() => undefined);
          void ctx.progress(frac).catch(() => undefined);
        },
        onEvidenceFrame: (cid, frame) => frames.set(cid, frame),
      }));
    } catch (e) {
      if (e instanceof KagamiError) {
        await this.finishScan(s, { status: 'failed', error: e.message });
        return;
      }
      throw e;
    }
    report.video = s.fileName;
    // Licensed uses: characters whose rightsholder allowed them in this very video come out clear.
    const licensed = new Set((await this.store.listExclusions({ video: videoKey(s.source) })).map((x) => x.characterId));
    if (licensed.size && report.matches.some((m) => licensed.has(m.characterId))) {
      for (const m of report.matches) {
        if (!licensed.has(m.characterId)) continue;
        m.verdict = 'clear';
        m.reason = 'licensed';
      }
      const v = report.matches.map((m) => m.verdict);
      report.verdict = v.includes('match') ? 'match' : v.includes('review') ? 'review' : 'clear';
    }
    // Evidence frames as JPEG blobs, so reviewers see the frame beside the reference.
    const evidenceBlobs = new Map<string, string>();
    for (const m of report.matches) {
      const f = frames.get(m.characterId);
      if (!f) continue;
      const jpg = await sharp(f.data, { raw: { width: f.width, height: f.height, channels: 3 } }).jpeg({ quality: 85 }).toBuffer();
      evidenceBlobs.set(m.characterId, (await this.deps.blobs.put(jpg)).key);
    }
    await this.store.putMatches(
      scanId,
      report.matches.map((m) => ({
        tenantId: s.tenantId,
        characterId: m.characterId,
        owner: m.owner,
        verdict: m.verdict,
        score: m.score,
        kind: m.kind,
        segments: m.segments,
        evidence: {
          ...m.evidence,
          // Kept with the match so that views of it need not read the scan (another tenant's).
          durationSec: report.durationSec,
          reason: m.reason,
          ...(evidenceBlobs.has(m.characterId) ? { frameBlob: evidenceBlobs.get(m.characterId) } : {}),
        },
        video: s.fileName,
      })),
    );
    await this.finishScan(s, { status: 'done', report });
  }

  private async finishScan(s: ScanRecord, r: { status: 'done'; report: ScanReport } | { status: 'failed'; error: string }): Promise<void> {
    const current = await this.store.getScan(s.id);
    if (current?.status === 'done' || current?.status === 'failed') return; // finished by another attempt
    await this.store.updateScan(s.id, {
      status: r.status,
      progress: 1,
      finishedAt: new Date().toISOString(),
      ...(r.status === 'done' ? { report: r.report, error: null } : { error: r.error }),
    });
    const tenant = await this.store.getTenant(s.tenantId);
    await this.notify(s.tenantId, r.status === 'done' ? 'scan.completed' : 'scan.failed', s.id, {
      scanId: s.id,
      status: r.status,
      ...(r.status === 'done' ? { verdict: r.report.verdict, report: r.report } : { error: r.error }),
    });
    if (r.status === 'done') {
      // Each rightsholder hears about matches of its own characters, and nothing else.
      const byOwner = new Map<string, typeof r.report.matches>();
      for (const m of r.report.matches) if (m.verdict !== 'clear') byOwner.set(m.owner, [...(byOwner.get(m.owner) ?? []), m]);
      for (const [owner, matches] of byOwner) {
        const holder = await this.store.getTenantByName(owner);
        if (holder) await this.notify(holder.id, 'match.found', s.id, { scanId: s.id, platform: tenant?.name, video: s.fileName, matches });
      }
    }
    if (s.batchId) await this.maybeFinishBatch(s.batchId);
  }

  /** A scan whose job failed for good (an unexpected error on every attempt) is recorded as failed. */
  async failScan(scanId: string, error: string): Promise<void> {
    const s = await this.store.getScan(scanId);
    if (s && s.status !== 'done' && s.status !== 'failed') await this.finishScan(s, { status: 'failed', error });
  }

  // ---------------------------------------------------------------- batches

  async createBatch(t: TenantRecord, input: { paths?: string[]; directory?: string }): Promise<{ id: string; total: number }> {
    if (!canScan(t)) throw new ForbiddenError('only platforms screen clips');
    let files: Array<{ real: string; name: string }>;
    if (input.directory !== undefined) {
      const dir = this.resolveMediaPath(input.directory);
      const root = realpathSync(this.opts.mediaRoot!);
      files = collectVideos([dir]).map((real) => ({ real, name: path.relative(root, real) }));
    } else if (input.paths?.length) {
      files = input.paths.map((p) => ({ real: this.resolveMediaPath(p), name: p }));
    } else {
      throw new ValidationError('give "paths" (a non-empty list) or "directory"');
    }
    if (!files.length) throw new KagamiError('no_videos', 'no video files found', 400);
    const batchId = `batch_${randomUUID()}`;
    await this.store.createBatch({ id: batchId, tenantId: t.id, total: files.length });
    const ids: string[] = [];
    for (const f of files) {
      const s = await this.store.createScan({ id: `scan_${randomUUID()}`, tenantId: t.id, batchId, source: { kind: 'path', path: f.real }, fileName: f.name });
      ids.push(s.id);
    }
    await this.deps.queues.addBatch(batchId, ids);
    return { id: batchId, total: files.length };
  }

  async getBatch(t: TenantRecord, id: string) {
    const b = await this.store.getBatch(id, t.role === 'admin' ? undefined : t.id);
    if (!b) throw new NotFoundError('batch', id);
    const counts = await this.store.batchCounts(id);
    const finished = counts.done + counts.failed;
    return { ...b, counts, progress: b.total ? finished / b.total : 1 };
  }

  /** The batch's reports: one line per video (JSONL) or one row per (video, character) (CSV). */
  async batchReport(t: TenantRecord, id: string, format: 'jsonl' | 'csv'): Promise<string> {
    await this.getBatch(t, id);
    const scans = (await this.store.listScans({ batchId: id, limit: 1_000_000 })).reverse();
    if (format === 'jsonl') {
      return scans.map((s) => JSON.stringify(s.report ?? { video: s.fileName, status: s.status, ...(s.error ? { error: s.error } : {}) })).join('\n') + (scans.length ? '\n' : '');
    }
    const q = (v: unknown) => {
      const str = v === undefined || v === null ? '' : String(v);
      return /[",\n\r]/.test(str) || /^[=+\-@\t]/.test(str) ? `"${str.replace(/^([=+\-@\t])/, "'$1").replace(/"/g, '""')}"` : str;
    };
    const rows = [['video', 'status', 'clip_verdict', 'character_id', 'name', 'owner', 'verdict', 'score', 'kind', 'segments', 'evidence_time_sec', 'error']];
    for (const s of scans) {
      const rep = s.report as ScanReport | undefined;
      if (!rep || !rep.matches.length) rows.push([s.fileName, s.status, rep?.verdict ?? '', '', '', '', '', '', '', '', '', s.error ?? '']);
      else
        for (const m of rep.matches)
          rows.push([s.fileName, s.status, rep.verdict, m.characterId, m.name, m.owner, m.verdict, String(m.score), m.kind, m.segments.map((x) => `${x.startSec}-${x.endSec}`).join(' '), String(m.evidence.timeSec), '']);
    }
    return rows.map((r) => r.map(q).join(',')).join('\n') + '\n';
  }

  /** Job (flow parent) and scan epilogue: marks the batch done once all its scans have ended. */
  async maybeFinishBatch(batchId: string): Promise<void> {
    const b = await this.store.getBatch(batchId);
    if (!b || b.status === 'done') return;
    const c = await this.store.batchCounts(batchId);
    if (c.done + c.failed < b.total) return;
    await this.store.updateBatch(batchId, { status: 'done', finishedAt: new Date().toISOString() });
    await this.notify(b.tenantId, 'batch.completed', batchId, { batchId, total: b.total, done: c.done, failed: c.failed });
  }

  // ---------------------------------------------------------------- matches (transparency)

  async listMatches(t: TenantRecord, filter: { characterId?: string; limit?: number; before?: string }): Promise<MatchView[]> {
    if (!ownsCharacters(t)) throw new ForbiddenError('matches are listed for rightsholders (platforms read their scans)');
    return this.matchViews(await this.store.listMatches({ owner: t.role === 'admin' ? undefined : t.name, ...filter }));
  }

  private async matchViews(list: MatchRecord[]): Promise<MatchView[]> {
    const tenants = new Map<string, string | undefined>();
    const names = new Map<string, string | undefined>();
    const out: MatchView[] = [];
    for (const m of list) {
      if (!tenants.has(m.tenantId)) tenants.set(m.tenantId, (await this.store.getTenant(m.tenantId))?.name);
      if (!names.has(m.characterId)) names.set(m.characterId, (await this.store.getCharacter(m.characterId))?.name);
      const { frameBlob: _blob, ...evidence } = m.evidence;
      void _blob;
      out.push({
        ...m,
        evidence,
        platform: tenants.get(m.tenantId),
        ...(names.get(m.characterId) ? { characterName: names.get(m.characterId) } : {}),
        effectiveVerdict: effectiveVerdict(m.verdict, m.decisions),
      });
    }
    return out;
  }

  /** A match its character's owner or the platform whose scan found it may see; anyone else: 404. */
  private async visibleMatch(t: TenantRecord, matchId: string): Promise<MatchRecord> {
    const m = await this.store.getMatch(matchId);
    if (!m) throw new NotFoundError('match', matchId);
    if (t.role === 'admin') return m;
    if (t.role === 'rightsholder' && m.owner === t.name) return m;
    if (t.role === 'platform' && m.tenantId === t.id) return m;
    throw new NotFoundError('match', matchId);
  }

  async getMatch(t: TenantRecord, matchId: string): Promise<MatchView> {
    return (await this.matchViews([await this.visibleMatch(t, matchId)]))[0];
  }

  async matchFrame(t: TenantRecord, matchId: string): Promise<Buffer> {
    const m = await this.visibleMatch(t, matchId);
    const key = m.evidence.frameBlob;
    if (typeof key !== 'string') throw new NotFoundError('evidence frame', matchId);
    return this.deps.blobs.get(key);
  }

  /**
   * Records a decision on a match. Rightsholders mark matches of their characters `licensed`
   * (allowed use: later scans of the same video come out clear for that character) or
   * `false_match`; platforms mark matches in their scans `confirmed` or `dismissed`.
   *
   * With `addNegative` (false_match only), the evidence region also becomes a negative example of
   * the character, registered exactly like an uploaded one, so the look-alike that fooled the scan
   * stops being reported as the character in later scans; the decision records which reference. It is
   * registered before the decision is stored, so a refusal (no evidence frame, a conflict) leaves
   * the match as it was.
   */
  async decideMatch(t: TenantRecord, matchId: string, input: { decision: OwnerDecision | PlatformDecision; note?: string; addNegative?: boolean }): Promise<MatchView> {
    const side = OWNER_DECISIONS.includes(input.decision) ? 'owner' : 'platform';
    if (side === 'owner' && !ownsCharacters(t)) throw new ForbiddenError(`only the character's rightsholder marks a match ${input.decision}`);
    if (side === 'platform' && !canScan(t)) throw new ForbiddenError(`only the platform that scanned the clip marks a match ${input.decision}`);
    if (input.addNegative && input.decision !== 'false_match') throw new ValidationError('addNegative: only with the decision false_match');
    const m = await this.visibleMatch(t, matchId);
    const negative = input.addNegative ? await this.learnNegative(t, m) : undefined;
    const updated = await this.store.decideMatch(m.id, side, {
      decision: input.decision,
      by: t.name,
      ...(input.note ? { note: input.note } : {}),
      ...(negative ? { negativeReferenceId: negative.id } : {}),
    });
    if (!updated) throw new NotFoundError('match', matchId);
    if (side === 'owner') await this.syncExclusion(updated, t.name);
    return (await this.matchViews([updated]))[0];
  }

  /**
   * Registers a match's evidence as a negative example of its character: the stored evidence frame
   * cut at the evidence box plus NEGATIVE_CROP_MARGIN (the whole frame when the match has no box),
   * as PNG. The same match gives the same bytes, so deciding twice finds the same reference.
   * KagamiError `no_evidence_frame` (409) when the match kept no frame to learn from.
   */
  private async learnNegative(t: TenantRecord, m: MatchRecord): Promise<ReferenceRecord> {
    const c = await this.ownCharacter(t, m.characterId);
    const key = m.evidence.frameBlob;
    const noFrame = () => new KagamiError('no_evidence_frame', `match ${m.id} has no stored evidence frame to add as a negative example`, 409);
    if (typeof key !== 'string') throw noFrame();
    const frame = await this.deps.blobs.get(key).catch((e: NodeJS.ErrnoException) => {
      throw e.code === 'ENOENT' ? noFrame() : e;
    });
    const box = m.evidence.box as Region | undefined;
    const { png } = await cropToPng(frame, box, NEGATIVE_CROP_MARGIN);
    const time = typeof m.evidence.timeSec === 'number' ? `-${m.evidence.timeSec.toFixed(2)}s` : '';
    const stem = path.parse(m.video).name.replace(/[^A-Za-z0-9._-]+/g, '_').slice(0, 80);
    const [ref] = await this.registerReferences(c, [{ name: `false-match-${stem}${time}.png`, bytes: png }], true);
    this.log('info', 'false match added as a negative example', { matchId: m.id, characterId: c.id, referenceId: ref.id });
    return ref;
  }

  /**
   * Removes the caller's side's decision (an admin's: both). A negative example the decision added
   * stays: it is a reference of the character like any other, which its owner removes (or keeps) on
   * its own; deleting library items as a side effect of an undo would be a surprise.
   */
  async undoDecision(t: TenantRecord, matchId: string): Promise<MatchView> {
    const m = await this.visibleMatch(t, matchId);
    const sides = t.role === 'admin' ? (['owner', 'platform'] as const) : t.role === 'rightsholder' ? (['owner'] as const) : (['platform'] as const);
    let updated: MatchRecord | undefined = m;
    for (const side of sides) updated = await this.store.decideMatch(m.id, side, null);
    if (!updated) throw new NotFoundError('match', matchId);
    await this.syncExclusion(updated, t.name);
    return (await this.matchViews([updated]))[0];
  }

  /** Keeps the exclusion of (character, video) in step with the owner's decision on the match. */
  private async syncExclusion(m: MatchRecord, by: string): Promise<void> {
    const s = await this.store.getScan(m.scanId);
    if (!s) return;
    const video = videoKey(s.source);
    if (m.decisions?.owner?.decision === 'licensed') {
      if (await this.store.getCharacter(m.characterId)) await this.store.putExclusion({ characterId: m.characterId, video, reason: 'licensed', matchId: m.id, createdBy: by });
    } else {
      const existing = (await this.store.listExclusions({ video, characterId: m.characterId }))[0];
      if (existing && (!existing.matchId || existing.matchId === m.id)) await this.store.deleteExclusion(m.characterId, video);
    }
  }

  /** A platform's review queue: matches in its scans with verdict `review` that nobody on its side decided yet. */
  async listReviews(t: TenantRecord, filter: { limit?: number; before?: string }): Promise<MatchView[]> {
    if (!canScan(t)) throw new ForbiddenError('the review queue is for platforms');
    const list = await this.store.listMatches({ tenantId: t.role === 'admin' ? undefined : t.id, verdict: 'review', undecided: 'platform', ...filter });
    return this.matchViews(list.filter((m) => effectiveVerdict(m.verdict, m.decisions) === 'review'));
  }

  // ---------------------------------------------------------------- webhooks

  async setWebhook(t: TenantRecord, url: string, secret?: string) {
    const u = new URL(url);
    if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new ValidationError('webhook url must be http(s)');
    const w = await this.store.setWebhook({ tenantId: t.id, url, secret: secret ?? randomUUID().replace(/-/g, '') });
    return { url: w.url, secret: w.secret, createdAt: w.createdAt };
  }

  /** Records a delivery for the tenant's webhook (if any) and queues it; the id makes it happen once per event. */
  private async notify(tenantId: string, event: string, subject: string, payload: Record<string, unknown>): Promise<void> {
    const hook = await this.store.getWebhook(tenantId);
    if (!hook) return;
    const id = `dlv_${createHmac('sha256', 'kagami').update(`${event}\0${subject}\0${tenantId}`).digest('hex').slice(0, 24)}`;
    if (!(await this.store.getDelivery(id))) await this.store.addDelivery({ id, tenantId, event, payload: { id, event, createdAt: new Date().toISOString(), data: payload } });
    await this.deps.queues.addWebhook(id);
  }

  /** Job: POSTs one delivery with its HMAC-SHA256 signature; throws (so it is retried) on failure. */
  async deliverWebhook(deliveryId: string, ctx: JobContext, fetchImpl: typeof fetch = fetch): Promise<void> {
    const d = await this.store.getDelivery(deliveryId);
    if (!d || d.status === 'delivered') return;
    const hook = await this.store.getWebhook(d.tenantId);
    if (!hook) return;
    const body = JSON.stringify(d.payload);
    const ts = Math.floor(Date.now() / 1000);
    const sig = createHmac('sha256', hook.secret).update(`${ts}.${body}`).digest('hex');
    let status: number | null = null;
    try {
      const res = await fetchImpl(hook.url, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'kagami-event': d.event, 'kagami-delivery': d.id, 'kagami-signature': `t=${ts},v1=${sig}` },
        body,
        signal: AbortSignal.timeout(10_000),
      });
      status = res.status;
      if (!res.ok) throw new Error(`HTTP ${res.status}`);
      await this.store.updateDelivery(d.id, { status: 'delivered', attempts: ctx.attempt, lastError: null, responseStatus: status });
    } catch (e) {
      await this.store.updateDelivery(d.id, { status: 'pending', attempts: ctx.attempt, lastError: (e as Error).message, responseStatus: status });
      throw e;
    }
  }

  /** A delivery whose retries are used up is marked failed (it stays in the log with its last error). */
  async failDelivery(deliveryId: string, error: string): Promise<void> {
    const d = await this.store.getDelivery(deliveryId);
    if (d && d.status !== 'delivered') await this.store.updateDelivery(deliveryId, { status: 'failed', attempts: d.attempts, lastError: error });
  }

  // ---------------------------------------------------------------- recovery

  /**
   * Re-enqueues work the database says is unfinished but Redis no longer knows (e.g. after Redis
   * lost its data): pending references, queued/running scans, unfinished batches.
   */
  async reconcile(): Promise<number> {
    let n = 0;
    for (const r of await this.store.listReferences()) {
      if (r.status === 'pending' && !(await this.deps.queues.hasJob('references', r.id))) {
        await this.deps.queues.addReference(r.id);
        n++;
      }
    }
    for (const status of ['queued', 'running'] as const) {
      for (const s of await this.store.listScans({ status, limit: 10_000 })) {
        if (Date.now() - Date.parse(s.createdAt) < this.opts.reconcileAfterMs) continue;
        if (!(await this.deps.queues.hasJob('scans', s.id))) {
          await this.deps.queues.addScan(s.id);
          n++;
        }
      }
    }
    if (n) this.log('warn', 'reconcile: re-enqueued lost jobs', { count: n });
    return n;
  }
}
