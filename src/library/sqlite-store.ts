/**
 * The embedded, single-machine MetadataStore: one SQLite file (WAL mode, better-sqlite3).
 *
 * Behaves exactly like PostgresStore (test/contract/metadata-store.contract.ts runs one suite against
 * both); see postgres-store.ts for the networked twin. Notes on the shared design:
 *
 * - Timestamps are ISO-8601 strings with milliseconds and `Z` (`Date#toISOString`), also the ones
 *   callers pass in (they are normalised), so they sort as text.
 * - Embeddings are Float32 little-endian BLOBs, keypoints opaque BLOBs, JSON values TEXT.
 * - "Newest first" lists order by `created_at DESC` and, for equal timestamps, latest inserted first.
 * - Change log: see `library_changes` in MIGRATIONS and `LibraryStore.changesSince`. Every library
 *   write appends its entries in the same (IMMEDIATE) transaction; SQLite has one writer at a time,
 *   so seq order is commit order and a reader never sees seq n+1 before seq n.
 */
import { randomUUID } from 'node:crypto';
import Database from 'better-sqlite3';
import { KagamiError, LibraryError, NotFoundError, ValidationError } from '../errors';
import type { MatchFilter, MetadataStore } from './metadata-store';
import type {
  ApiKeyRecord,
  BatchRecord,
  CharacterRecord,
  DecisionSide,
  ExclusionRecord,
  LibraryChange,
  LibraryModel,
  MatchDecision,
  MatchRecord,
  OwnerDecision,
  PlatformDecision,
  ReferenceFeatures,
  ReferenceRecord,
  ReferenceReplacement,
  ReferenceStatus,
  ScanRecord,
  ScanStatus,
  TenantRecord,
  TenantRole,
  WebhookDeliveryRecord,
  WebhookRecord,
} from './types';
import { checkFeatures, checkReplacement, clampProgress, decisionJson, decodeEmbedding, DEFAULT_CHANGES_LIMIT, DEFAULT_LIST_LIMIT, emptyCounts, encodeEmbedding, isoTimestamp, limitOf, modelJson, modelMismatch, now } from './store-values';

/**
 * Schema migrations, applied in order, each in its own transaction; `user_version` records how many
 * ran. Append only: never edit a migration that has shipped.
 */
const MIGRATIONS: string[] = [
  // 1: the CLI's library (characters, references with their features, the model).
  `CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
   CREATE TABLE characters (
     id TEXT PRIMARY KEY, name TEXT NOT NULL, owner TEXT NOT NULL, franchise TEXT,
     created_at TEXT NOT NULL);
   CREATE INDEX characters_owner ON characters(owner);
   CREATE TABLE refs (
     id TEXT PRIMARY KEY,
     character_id TEXT NOT NULL REFERENCES characters(id) ON DELETE CASCADE,
     sha256 TEXT NOT NULL, file_name TEXT NOT NULL, width INTEGER NOT NULL, height INTEGER NOT NULL,
     status TEXT NOT NULL, error TEXT, created_at TEXT NOT NULL,
     embedding BLOB, keypoints BLOB,
     UNIQUE (character_id, sha256));
   CREATE INDEX refs_character ON refs(character_id);`,

  // 2: the library change log. `refs.ready_seq` is the seq of the entry that made the reference
  // ready; an older reference_ready entry for the same id is stale and skipped when read. References
  // that were already ready get an entry each, so reading from seq 0 replays the whole library.
  `ALTER TABLE refs ADD COLUMN ready_seq INTEGER;
   CREATE TABLE library_changes (
     seq INTEGER PRIMARY KEY AUTOINCREMENT,
     kind TEXT NOT NULL CHECK (kind IN ('reference_ready', 'reference_removed', 'character_updated', 'character_removed')),
     reference_id TEXT,
     character_id TEXT NOT NULL,
     created_at TEXT NOT NULL);
   INSERT INTO library_changes (kind, reference_id, character_id, created_at)
     SELECT 'reference_ready', id, character_id, strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
     FROM refs WHERE status = 'ready' ORDER BY character_id, created_at, id;
   UPDATE refs SET ready_seq = (SELECT max(c.seq) FROM library_changes c WHERE c.kind = 'reference_ready' AND c.reference_id = refs.id)
     WHERE status = 'ready';`,

  // 3: tenants and API keys, batches, scans, matches, webhooks.
  `CREATE TABLE tenants (
     id TEXT PRIMARY KEY,
     name TEXT NOT NULL UNIQUE,
     role TEXT NOT NULL CHECK (role IN ('rightsholder', 'platform', 'admin')),
     created_at TEXT NOT NULL);
   CREATE TABLE api_keys (
     id TEXT PRIMARY KEY,
     tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
     hash TEXT NOT NULL UNIQUE,
     prefix TEXT NOT NULL,
     created_at TEXT NOT NULL,
     revoked_at TEXT);
   CREATE INDEX api_keys_tenant ON api_keys(tenant_id);
   CREATE TABLE batches (
     id TEXT PRIMARY KEY,
     tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
     status TEXT NOT NULL CHECK (status IN ('running', 'done')),
     total INTEGER NOT NULL,
     created_at TEXT NOT NULL,
     finished_at TEXT);
   CREATE INDEX batches_tenant ON batches(tenant_id);
   CREATE TABLE scans (
     id TEXT PRIMARY KEY,
     tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
     batch_id TEXT REFERENCES batches(id) ON DELETE CASCADE,
     source TEXT NOT NULL,
     file_name TEXT NOT NULL,
     status TEXT NOT NULL CHECK (status IN ('queued', 'running', 'done', 'failed')),
     progress REAL NOT NULL,
     report TEXT,
     error TEXT,
     created_at TEXT NOT NULL,
     started_at TEXT,
     finished_at TEXT);
   CREATE INDEX scans_tenant ON scans(tenant_id, created_at);
   CREATE INDEX scans_batch ON scans(batch_id);
   CREATE TABLE matches (
     id TEXT PRIMARY KEY,
     scan_id TEXT NOT NULL REFERENCES scans(id) ON DELETE CASCADE,
     tenant_id TEXT NOT NULL,
     character_id TEXT NOT NULL,
     owner TEXT NOT NULL,
     verdict TEXT NOT NULL CHECK (verdict IN ('match', 'review', 'clear')),
     score REAL NOT NULL,
     kind TEXT NOT NULL CHECK (kind IN ('copy', 'likeness')),
     segments TEXT NOT NULL,
     evidence TEXT NOT NULL,
     video TEXT NOT NULL,
     created_at TEXT NOT NULL);
   CREATE INDEX matches_scan ON matches(scan_id);
   CREATE INDEX matches_owner ON matches(owner, created_at);
   CREATE INDEX matches_character ON matches(character_id, created_at);
   CREATE TABLE webhooks (
     tenant_id TEXT PRIMARY KEY REFERENCES tenants(id) ON DELETE CASCADE,
     url TEXT NOT NULL,
     secret TEXT NOT NULL,
     created_at TEXT NOT NULL);
   CREATE TABLE webhook_deliveries (
     id TEXT PRIMARY KEY,
     tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
     event TEXT NOT NULL,
     payload TEXT NOT NULL,
     status TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')),
     attempts INTEGER NOT NULL,
     last_error TEXT,
     response_status INTEGER,
     created_at TEXT NOT NULL);
   CREATE INDEX webhook_deliveries_tenant ON webhook_deliveries(tenant_id, created_at);`,

  // 4: reference quality warnings, decisions on matches (JSON per side), licensed-video exclusions.
  `ALTER TABLE refs ADD COLUMN warnings TEXT;
   CREATE INDEX refs_sha256 ON refs(sha256);
   ALTER TABLE matches ADD COLUMN owner_decision TEXT;
   ALTER TABLE matches ADD COLUMN platform_decision TEXT;
   CREATE INDEX matches_tenant ON matches(tenant_id, created_at);
   CREATE TABLE exclusions (
     character_id TEXT NOT NULL REFERENCES characters(id) ON DELETE CASCADE,
     video TEXT NOT NULL,
     reason TEXT NOT NULL CHECK (reason IN ('licensed')),
     match_id TEXT,
     created_by TEXT NOT NULL,
     created_at TEXT NOT NULL,
     PRIMARY KEY (character_id, video));
   CREATE INDEX exclusions_video ON exclusions(video);`,

  // 5: negative examples (look-alikes a character is not).
  `ALTER TABLE refs ADD COLUMN negative INTEGER NOT NULL DEFAULT 0;`,
];


// ---------------------------------------------------------------------------------------------
// Rows and their records

interface CharacterRow {
  id: string;
  name: string;
  owner: string;
  franchise: string | null;
  created_at: string;
}
interface RefRow {
  id: string;
  character_id: string;
  sha256: string;
  file_name: string;
  width: number;
  height: number;
  status: ReferenceStatus;
  error: string | null;
  created_at: string;
  ready_seq: number | null;
  warnings: string | null;
  negative: number;
}
interface FeatureRow {
  id: string;
  character_id: string;
  embedding: Buffer | null;
  keypoints: Buffer | null;
}
interface TenantRow {
  id: string;
  name: string;
  role: TenantRole;
  created_at: string;
}
interface ApiKeyRow {
  id: string;
  tenant_id: string;
  prefix: string;
  created_at: string;
  revoked_at: string | null;
}
interface ScanRow {
  id: string;
  tenant_id: string;
  batch_id: string | null;
  source: string;
  file_name: string;
  status: ScanStatus;
  progress: number;
  report: string | null;
  error: string | null;
  created_at: string;
  started_at: string | null;
  finished_at: string | null;
}
interface MatchRow {
  id: string;
  scan_id: string;
  tenant_id: string;
  character_id: string;
  owner: string;
  verdict: MatchRecord['verdict'];
  score: number;
  kind: MatchRecord['kind'];
  segments: string;
  evidence: string;
  video: string;
  created_at: string;
  owner_decision: string | null;
  platform_decision: string | null;
}
interface ExclusionRow {
  character_id: string;
  video: string;
  reason: 'licensed';
  match_id: string | null;
  created_by: string;
  created_at: string;
}
interface BatchRow {
  id: string;
  tenant_id: string;
  status: BatchRecord['status'];
  total: number;
  created_at: string;
  finished_at: string | null;
}
interface WebhookRow {
  tenant_id: string;
  url: string;
  secret: string;
  created_at: string;
}
interface DeliveryRow {
  id: string;
  tenant_id: string;
  event: string;
  payload: string;
  status: WebhookDeliveryRecord['status'];
  attempts: number;
  last_error: string | null;
  response_status: number | null;
  created_at: string;
}

const toCharacter = (r: CharacterRow): CharacterRecord => ({
  id: r.id,
  name: r.name,
  owner: r.owner,
  ...(r.franchise ? { franchise: r.franchise } : {}),
  createdAt: r.created_at,
});
const toRef = (r: RefRow): ReferenceRecord => ({
  id: r.id,
  characterId: r.character_id,
  sha256: r.sha256,
  fileName: r.file_name,
  width: r.width,
  height: r.height,
  status: r.status,
  ...(r.error ? { error: r.error } : {}),
  ...(r.warnings ? { warnings: JSON.parse(r.warnings) as string[] } : {}),
  ...(r.negative ? { negative: true } : {}),
  createdAt: r.created_at,
});
const toFeatures = (r: FeatureRow): ReferenceFeatures => ({
  referenceId: r.id,
  characterId: r.character_id,
  embedding: decodeEmbedding(r.embedding!),
  keypoints: r.keypoints!,
});
const toTenant = (r: TenantRow): TenantRecord => ({ id: r.id, name: r.name, role: r.role, createdAt: r.created_at });
const toApiKey = (r: ApiKeyRow): ApiKeyRecord => ({
  id: r.id,
  tenantId: r.tenant_id,
  prefix: r.prefix,
  createdAt: r.created_at,
  ...(r.revoked_at ? { revokedAt: r.revoked_at } : {}),
});
const toScan = (r: ScanRow): ScanRecord => {
  const report = r.report === null ? null : (JSON.parse(r.report) as unknown);
  return {
    id: r.id,
    tenantId: r.tenant_id,
    ...(r.batch_id ? { batchId: r.batch_id } : {}),
    source: JSON.parse(r.source) as ScanRecord['source'],
    fileName: r.file_name,
    status: r.status,
    progress: r.progress,
    ...(report !== null ? { report } : {}),
    ...(r.error !== null ? { error: r.error } : {}),
    createdAt: r.created_at,
    ...(r.started_at ? { startedAt: r.started_at } : {}),
    ...(r.finished_at ? { finishedAt: r.finished_at } : {}),
  };
};
const toMatch = (r: MatchRow): MatchRecord => ({
  id: r.id,
  scanId: r.scan_id,
  tenantId: r.tenant_id,
  characterId: r.character_id,
  owner: r.owner,
  verdict: r.verdict,
  score: r.score,
  kind: r.kind,
  segments: JSON.parse(r.segments) as MatchRecord['segments'],
  evidence: JSON.parse(r.evidence) as MatchRecord['evidence'],
  video: r.video,
  createdAt: r.created_at,
  ...(r.owner_decision || r.platform_decision
    ? {
        decisions: {
          ...(r.owner_decision ? { owner: JSON.parse(r.owner_decision) as MatchDecision<OwnerDecision> } : {}),
          ...(r.platform_decision ? { platform: JSON.parse(r.platform_decision) as MatchDecision<PlatformDecision> } : {}),
        },
      }
    : {}),
});
const toExclusion = (r: ExclusionRow): ExclusionRecord => ({
  characterId: r.character_id,
  video: r.video,
  reason: r.reason,
  ...(r.match_id ? { matchId: r.match_id } : {}),
  createdBy: r.created_by,
  createdAt: r.created_at,
});
const toBatch = (r: BatchRow): BatchRecord => ({
  id: r.id,
  tenantId: r.tenant_id,
  status: r.status,
  total: r.total,
  createdAt: r.created_at,
  ...(r.finished_at ? { finishedAt: r.finished_at } : {}),
});
const toWebhook = (r: WebhookRow): WebhookRecord => ({ tenantId: r.tenant_id, url: r.url, secret: r.secret, createdAt: r.created_at });
const toDelivery = (r: DeliveryRow): WebhookDeliveryRecord => ({
  id: r.id,
  tenantId: r.tenant_id,
  event: r.event,
  payload: JSON.parse(r.payload) as unknown,
  status: r.status,
  attempts: r.attempts,
  ...(r.last_error !== null ? { lastError: r.last_error } : {}),
  ...(r.response_status !== null ? { responseStatus: r.response_status } : {}),
  createdAt: r.created_at,
});

// ---------------------------------------------------------------------------------------------
// Values

/** Constraint violations as the KagamiErrors both stores throw. */
function translate(e: unknown): unknown {
  const code = (e as { code?: unknown }).code;
  if (typeof code !== 'string' || !code.startsWith('SQLITE_CONSTRAINT')) return e;
  const msg = (e as Error).message;
  if (code === 'SQLITE_CONSTRAINT_FOREIGNKEY') {
    return new KagamiError('not_found', `refers to a record that does not exist (${msg})`, 404, { cause: e });
  }
  if (code === 'SQLITE_CONSTRAINT_PRIMARYKEY' || code === 'SQLITE_CONSTRAINT_UNIQUE') {
    return new KagamiError('conflict', `already exists (${msg})`, 409, { cause: e });
  }
  return new ValidationError(`invalid value (${msg})`);
}

// ---------------------------------------------------------------------------------------------

/** The embedded, single-machine MetadataStore: one SQLite file (WAL mode). */
export class SqliteStore implements MetadataStore {
  readonly kind = 'sqlite';
  private readonly db: Database.Database;

  constructor(file: string, opts: { readonly?: boolean } = {}) {
    try {
      this.db = new Database(file, { readonly: opts.readonly ?? false, fileMustExist: opts.readonly ?? false });
    } catch (e) {
      throw new LibraryError('library_unreadable', `cannot open library database ${file}: ${(e as Error).message}`);
    }
    this.db.pragma('foreign_keys = ON');
    this.db.pragma('busy_timeout = 5000');
    if (!opts.readonly) {
      this.db.pragma('journal_mode = WAL');
      this.migrate();
    } else {
      const version = this.db.pragma('user_version', { simple: true }) as number;
      if (version < MIGRATIONS.length) {
        throw new LibraryError('library_outdated', `library database ${file} needs migrating: run any 'kagami library' command on it`);
      }
      if (version > MIGRATIONS.length) {
        throw new LibraryError('library_too_new', `library database ${file} was written by a newer Kagami (schema ${version})`);
      }
    }
  }

  /** Applies the missing migrations, each with its `user_version` bump in one IMMEDIATE transaction. */
  private migrate(): void {
    for (;;) {
      const done = this.db
        .transaction(() => {
          // Re-read inside the write lock: another process may have migrated meanwhile.
          const v = this.db.pragma('user_version', { simple: true }) as number;
          if (v > MIGRATIONS.length) {
            throw new LibraryError('library_too_new', `library database was written by a newer Kagami (schema ${v})`);
          }
          if (v === MIGRATIONS.length) return true;
          this.db.exec(MIGRATIONS[v]);
          this.db.pragma(`user_version = ${v + 1}`);
          return false;
        })
        .immediate();
      if (done) return;
    }
  }

  /** Runs `fn` in an IMMEDIATE transaction (takes the write lock at once), translating constraint errors. */
  private write<T>(fn: () => T): T {
    try {
      return this.db.transaction(fn).immediate();
    } catch (e) {
      throw translate(e);
    }
  }

  /** Runs `fn` in a read transaction: one consistent snapshot (WAL). */
  private read<T>(fn: () => T): T {
    return this.db.transaction(fn).deferred();
  }

  private appendChange(kind: LibraryChange['kind'], characterId: string, referenceId: string | null = null): number {
    const r = this.db
      .prepare(`INSERT INTO library_changes (kind, reference_id, character_id, created_at) VALUES (?, ?, ?, ?)`)
      .run(kind, referenceId, characterId, now());
    return Number(r.lastInsertRowid);
  }

  private modelSync(): LibraryModel | undefined {
    const row = this.db.prepare(`SELECT value FROM meta WHERE key = 'model'`).get() as { value: string } | undefined;
    return row ? (JSON.parse(row.value) as LibraryModel) : undefined;
  }

  // --- library -------------------------------------------------------------------------------

  async getModel(): Promise<LibraryModel | undefined> {
    return this.modelSync();
  }

  async setModel(model: LibraryModel): Promise<void> {
    this.write(() => this.setModelSync(model));
  }

  /** setModel inside the caller's write. */
  private setModelSync(model: LibraryModel): void {
    const current = this.modelSync();
    if (current && (current.modelId !== model.modelId || current.dimension !== model.dimension)) throw modelMismatch(current, model);
    if (!current) {
      this.db
        .prepare(`INSERT INTO meta (key, value) VALUES ('model', ?)`)
        .run(modelJson(model));
    }
  }

  async replaceModel(model: LibraryModel, replacements: ReadonlyArray<ReferenceReplacement>): Promise<void> {
    this.write(() => {
      const ready = this.db.prepare(`SELECT id, character_id FROM refs WHERE status = 'ready'`).all() as Array<{ id: string; character_id: string }>;
      checkReplacement(model, ready.map((r) => r.id), replacements);
      const characterOf = new Map(ready.map((r) => [r.id, r.character_id]));
      const update = this.db.prepare(`UPDATE refs SET embedding = ?, keypoints = COALESCE(?, keypoints), ready_seq = ? WHERE id = ?`);
      for (const e of replacements) {
        const seq = this.appendChange('reference_ready', characterOf.get(e.referenceId)!, e.referenceId);
        update.run(encodeEmbedding(e.embedding), e.keypoints ?? null, seq, e.referenceId);
      }
      this.db
        .prepare(`INSERT INTO meta (key, value) VALUES ('model', ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value`)
        .run(modelJson(model));
    });
  }

  async upsertCharacter(c: Omit<CharacterRecord, 'createdAt'>): Promise<CharacterRecord> {
    return this.write(() => {
      const existing = this.db.prepare(`SELECT * FROM characters WHERE id = ?`).get(c.id) as CharacterRow | undefined;
      if (!existing) {
        this.db
          .prepare(`INSERT INTO characters (id, name, owner, franchise, created_at) VALUES (?, ?, ?, ?, ?)`)
          .run(c.id, c.name, c.owner, c.franchise ?? null, now());
        this.appendChange('character_updated', c.id);
      } else {
        const franchise = c.franchise ?? existing.franchise;
        if (existing.name !== c.name || existing.owner !== c.owner || existing.franchise !== franchise) {
          this.db.prepare(`UPDATE characters SET name = ?, owner = ?, franchise = ? WHERE id = ?`).run(c.name, c.owner, franchise, c.id);
          this.appendChange('character_updated', c.id);
        }
      }
      return toCharacter(this.db.prepare(`SELECT * FROM characters WHERE id = ?`).get(c.id) as CharacterRow);
    });
  }

  async getCharacter(id: string): Promise<CharacterRecord | undefined> {
    const row = this.db.prepare(`SELECT * FROM characters WHERE id = ?`).get(id) as CharacterRow | undefined;
    return row && toCharacter(row);
  }

  async listCharacters(filter: { owner?: string } = {}): Promise<CharacterRecord[]> {
    const rows = (filter.owner !== undefined
      ? this.db.prepare(`SELECT * FROM characters WHERE owner = ? ORDER BY id`).all(filter.owner)
      : this.db.prepare(`SELECT * FROM characters ORDER BY id`).all()) as CharacterRow[];
    return rows.map(toCharacter);
  }

  async deleteCharacter(id: string): Promise<boolean> {
    return this.write(() => {
      const deleted = this.db.prepare(`DELETE FROM characters WHERE id = ?`).run(id).changes > 0;
      if (deleted) this.appendChange('character_removed', id);
      return deleted;
    });
  }

  async addReferences(
    items: Array<{ ref: Omit<ReferenceRecord, 'createdAt' | 'status'> & { status?: ReferenceStatus }; features?: ReferenceFeatures }>,
    libraryModel?: LibraryModel,
  ): Promise<ReferenceRecord[]> {
    const findByKey = this.db.prepare(`SELECT * FROM refs WHERE character_id = ? AND sha256 = ?`);
    const findById = this.db.prepare(`SELECT * FROM refs WHERE id = ?`);
    const characterExists = this.db.prepare(`SELECT 1 FROM characters WHERE id = ?`);
    const insert = this.db.prepare(
      `INSERT INTO refs (id, character_id, sha256, file_name, width, height, status, error, created_at, embedding, keypoints, negative)
       VALUES (@id, @characterId, @sha256, @fileName, @width, @height, @status, @error, @createdAt, @embedding, @keypoints, @negative)`,
    );
    const setReadySeq = this.db.prepare(`UPDATE refs SET ready_seq = ? WHERE id = ?`);
    return this.write(() => {
      if (libraryModel) this.setModelSync(libraryModel);
      const model = this.modelSync();
      const createdAt = now();
      return items.map(({ ref, features }) => {
        const existing = findByKey.get(ref.characterId, ref.sha256) as RefRow | undefined;
        if (existing) return toRef(existing);
        if (!characterExists.get(ref.characterId)) throw new NotFoundError('character', ref.characterId);
        const clash = findById.get(ref.id) as RefRow | undefined;
        if (clash) {
          throw new KagamiError('conflict', `reference ${ref.id} already exists for ${clash.character_id}/${clash.sha256}, not ${ref.characterId}/${ref.sha256}`, 409);
        }
        if (features) checkFeatures(model, ref.id, features);
        const status: ReferenceStatus = features ? 'ready' : ref.status === 'failed' ? 'failed' : 'pending';
        insert.run({
          id: ref.id,
          characterId: ref.characterId,
          sha256: ref.sha256,
          fileName: ref.fileName,
          width: ref.width,
          height: ref.height,
          status,
          error: status === 'failed' ? (ref.error ?? null) : null,
          createdAt,
          embedding: features ? encodeEmbedding(features.embedding) : null,
          keypoints: features ? features.keypoints : null,
          negative: ref.negative ? 1 : 0,
        });
        if (features) setReadySeq.run(this.appendChange('reference_ready', ref.characterId, ref.id), ref.id);
        return toRef(findById.get(ref.id) as RefRow);
      });
    });
  }

  async getReference(id: string): Promise<ReferenceRecord | undefined> {
    const row = this.db.prepare(`SELECT * FROM refs WHERE id = ?`).get(id) as RefRow | undefined;
    return row && toRef(row);
  }

  async listReferences(characterId?: string): Promise<ReferenceRecord[]> {
    const rows = (characterId !== undefined
      ? this.db.prepare(`SELECT * FROM refs WHERE character_id = ? ORDER BY created_at, id`).all(characterId)
      : this.db.prepare(`SELECT * FROM refs ORDER BY character_id, created_at, id`).all()) as RefRow[];
    return rows.map(toRef);
  }

  async setReferenceFeatures(id: string, features: ReferenceFeatures, model?: LibraryModel): Promise<void> {
    this.write(() => {
      const ref = this.db.prepare(`SELECT * FROM refs WHERE id = ?`).get(id) as RefRow | undefined;
      if (!ref) throw new NotFoundError('reference', id);
      if (model) this.setModelSync(model);
      checkFeatures(this.modelSync(), id, features);
      const seq = this.appendChange('reference_ready', ref.character_id, id);
      this.db
        .prepare(`UPDATE refs SET status = 'ready', error = NULL, embedding = ?, keypoints = ?, ready_seq = ? WHERE id = ?`)
        .run(encodeEmbedding(features.embedding), features.keypoints, seq, id);
    });
  }

  async failReference(id: string, error: string): Promise<void> {
    this.write(() => {
      const ref = this.db.prepare(`SELECT * FROM refs WHERE id = ?`).get(id) as RefRow | undefined;
      if (!ref) throw new NotFoundError('reference', id);
      this.db
        .prepare(`UPDATE refs SET status = 'failed', error = ?, embedding = NULL, keypoints = NULL, ready_seq = NULL WHERE id = ?`)
        .run(error, id);
      // A ready reference is in the workers' indexes: tell them to drop it.
      if (ref.status === 'ready') this.appendChange('reference_removed', ref.character_id, id);
    });
  }

  async setReferenceWarnings(id: string, warnings: string[]): Promise<void> {
    this.write(() => {
      const r = this.db.prepare(`UPDATE refs SET warnings = ? WHERE id = ?`).run(warnings.length ? JSON.stringify(warnings) : null, id);
      if (!r.changes) throw new NotFoundError('reference', id);
    });
  }

  async findReferencesBySha256(sha256: string): Promise<ReferenceRecord[]> {
    const rows = this.db.prepare(`SELECT * FROM refs WHERE sha256 = ? ORDER BY character_id, id`).all(sha256) as RefRow[];
    return rows.map(toRef);
  }

  async deleteReference(id: string): Promise<boolean> {
    return this.write(() => {
      const ref = this.db.prepare(`SELECT character_id FROM refs WHERE id = ?`).get(id) as { character_id: string } | undefined;
      if (!ref) return false;
      this.db.prepare(`DELETE FROM refs WHERE id = ?`).run(id);
      this.appendChange('reference_removed', ref.character_id, id);
      return true;
    });
  }

  async loadFeatures(): Promise<{ features: ReferenceFeatures[]; seq: number }> {
    return this.read(() => {
      const rows = this.db
        .prepare(`SELECT id, character_id, embedding, keypoints FROM refs WHERE status = 'ready' ORDER BY id`)
        .all() as FeatureRow[];
      const { seq } = this.db.prepare(`SELECT COALESCE(max(seq), 0) AS seq FROM library_changes`).get() as { seq: number };
      return { features: rows.filter((r) => r.embedding && r.keypoints).map(toFeatures), seq };
    });
  }

  async changesSince(seq: number, limit?: number): Promise<LibraryChange[]> {
    const rows = this.db
      .prepare(
        `SELECT c.seq, c.kind, c.reference_id, c.character_id, r.embedding, r.keypoints
         FROM library_changes c
         LEFT JOIN refs r ON c.kind = 'reference_ready' AND r.id = c.reference_id AND r.ready_seq = c.seq
         WHERE c.seq > ? AND (c.kind <> 'reference_ready' OR r.id IS NOT NULL)
         ORDER BY c.seq
         LIMIT ?`,
      )
      .all(seq, limitOf(limit, DEFAULT_CHANGES_LIMIT)) as Array<{
      seq: number;
      kind: LibraryChange['kind'];
      reference_id: string | null;
      character_id: string;
      embedding: Buffer | null;
      keypoints: Buffer | null;
    }>;
    return rows.map((r): LibraryChange => {
      switch (r.kind) {
        case 'reference_ready':
          return { seq: r.seq, kind: r.kind, features: toFeatures({ id: r.reference_id!, character_id: r.character_id, embedding: r.embedding, keypoints: r.keypoints }) };
        case 'reference_removed':
          return { seq: r.seq, kind: r.kind, referenceId: r.reference_id!, characterId: r.character_id };
        default:
          return { seq: r.seq, kind: r.kind, characterId: r.character_id };
      }
    });
  }

  // --- tenants -------------------------------------------------------------------------------

  async ensureTenant(name: string, role: TenantRole): Promise<TenantRecord> {
    return this.write(() => {
      this.db
        .prepare(`INSERT INTO tenants (id, name, role, created_at) VALUES (?, ?, ?, ?) ON CONFLICT (name) DO NOTHING`)
        .run(randomUUID(), name, role, now());
      const t = toTenant(this.db.prepare(`SELECT * FROM tenants WHERE name = ?`).get(name) as TenantRow);
      if (t.role !== role) throw new KagamiError('tenant_role_mismatch', `tenant '${name}' exists with role ${t.role}, not ${role}`, 409);
      return t;
    });
  }

  async getTenant(id: string): Promise<TenantRecord | undefined> {
    const row = this.db.prepare(`SELECT * FROM tenants WHERE id = ?`).get(id) as TenantRow | undefined;
    return row && toTenant(row);
  }

  async getTenantByName(name: string): Promise<TenantRecord | undefined> {
    const row = this.db.prepare(`SELECT * FROM tenants WHERE name = ?`).get(name) as TenantRow | undefined;
    return row && toTenant(row);
  }

  async addApiKey(k: { id: string; tenantId: string; hash: string; prefix: string }): Promise<ApiKeyRecord> {
    return this.write(() => {
      this.db
        .prepare(`INSERT INTO api_keys (id, tenant_id, hash, prefix, created_at) VALUES (?, ?, ?, ?, ?)`)
        .run(k.id, k.tenantId, k.hash, k.prefix, now());
      return toApiKey(this.db.prepare(`SELECT * FROM api_keys WHERE id = ?`).get(k.id) as ApiKeyRow);
    });
  }

  async findTenantByKeyHash(hash: string): Promise<TenantRecord | undefined> {
    const row = this.db
      .prepare(`SELECT t.* FROM api_keys k JOIN tenants t ON t.id = k.tenant_id WHERE k.hash = ? AND k.revoked_at IS NULL`)
      .get(hash) as TenantRow | undefined;
    return row && toTenant(row);
  }

  async revokeApiKey(id: string): Promise<boolean> {
    return this.write(() => this.db.prepare(`UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL`).run(now(), id).changes > 0);
  }

  // --- scans ---------------------------------------------------------------------------------

  async createScan(s: Omit<ScanRecord, 'createdAt' | 'status' | 'progress'>): Promise<ScanRecord> {
    return this.write(() => {
      this.db
        .prepare(
          `INSERT INTO scans (id, tenant_id, batch_id, source, file_name, status, progress, report, error, created_at, started_at, finished_at)
           VALUES (?, ?, ?, ?, ?, 'queued', 0, ?, ?, ?, ?, ?)`,
        )
        .run(
          s.id,
          s.tenantId,
          s.batchId ?? null,
          JSON.stringify(s.source),
          s.fileName,
          s.report === undefined || s.report === null ? null : JSON.stringify(s.report),
          s.error ?? null,
          now(),
          s.startedAt === undefined ? null : isoTimestamp(s.startedAt, 'startedAt'),
          s.finishedAt === undefined ? null : isoTimestamp(s.finishedAt, 'finishedAt'),
        );
      return toScan(this.db.prepare(`SELECT * FROM scans WHERE id = ?`).get(s.id) as ScanRow);
    });
  }

  async getScan(id: string, tenantId?: string): Promise<ScanRecord | undefined> {
    const row = (tenantId !== undefined
      ? this.db.prepare(`SELECT * FROM scans WHERE id = ? AND tenant_id = ?`).get(id, tenantId)
      : this.db.prepare(`SELECT * FROM scans WHERE id = ?`).get(id)) as ScanRow | undefined;
    return row && toScan(row);
  }

  async listScans(filter: { tenantId?: string; batchId?: string; status?: ScanStatus; limit?: number }): Promise<ScanRecord[]> {
    const where: string[] = [];
    const args: unknown[] = [];
    if (filter.tenantId !== undefined) where.push('tenant_id = ?'), args.push(filter.tenantId);
    if (filter.batchId !== undefined) where.push('batch_id = ?'), args.push(filter.batchId);
    if (filter.status !== undefined) where.push('status = ?'), args.push(filter.status);
    const rows = this.db
      .prepare(
        `SELECT * FROM scans ${where.length ? 'WHERE ' + where.join(' AND ') : ''}
         ORDER BY created_at DESC, rowid DESC LIMIT ?`,
      )
      .all(...args, limitOf(filter.limit, DEFAULT_LIST_LIMIT)) as ScanRow[];
    return rows.map(toScan);
  }

  async updateScan(
    id: string,
    patch: { status?: ScanStatus; progress?: number; report?: unknown; error?: string | null; startedAt?: string; finishedAt?: string },
  ): Promise<ScanRecord | undefined> {
    const set: string[] = [];
    const args: unknown[] = [];
    if (patch.status !== undefined) set.push('status = ?'), args.push(patch.status);
    if (patch.progress !== undefined) set.push('progress = ?'), args.push(clampProgress(patch.progress));
    if (patch.report !== undefined) set.push('report = ?'), args.push(patch.report === null ? null : JSON.stringify(patch.report));
    if (patch.error !== undefined) set.push('error = ?'), args.push(patch.error);
    if (patch.startedAt !== undefined) set.push('started_at = ?'), args.push(isoTimestamp(patch.startedAt, 'startedAt'));
    if (patch.finishedAt !== undefined) set.push('finished_at = ?'), args.push(isoTimestamp(patch.finishedAt, 'finishedAt'));
    return this.write(() => {
      if (set.length) this.db.prepare(`UPDATE scans SET ${set.join(', ')} WHERE id = ?`).run(...args, id);
      const row = this.db.prepare(`SELECT * FROM scans WHERE id = ?`).get(id) as ScanRow | undefined;
      return row && toScan(row);
    });
  }

  async putMatches(scanId: string, matches: Array<Omit<MatchRecord, 'id' | 'createdAt' | 'scanId'>>): Promise<void> {
    const insert = this.db.prepare(
      `INSERT INTO matches (id, scan_id, tenant_id, character_id, owner, verdict, score, kind, segments, evidence, video, created_at)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
    );
    this.write(() => {
      if (!this.db.prepare(`SELECT 1 FROM scans WHERE id = ?`).get(scanId)) throw new NotFoundError('scan', scanId);
      this.db.prepare(`DELETE FROM matches WHERE scan_id = ?`).run(scanId);
      const createdAt = now();
      // Inserted last-to-first: lists order equal timestamps latest-inserted first, so one scan's
      // matches come back in the order given.
      for (let i = matches.length - 1; i >= 0; i--) {
        const m = matches[i];
        insert.run(
          randomUUID(),
          scanId,
          m.tenantId,
          m.characterId,
          m.owner,
          m.verdict,
          m.score,
          m.kind,
          JSON.stringify(m.segments),
          JSON.stringify(m.evidence),
          m.video,
          createdAt,
        );
      }
    });
  }

  async listMatches(filter: MatchFilter): Promise<MatchRecord[]> {
    const where: string[] = [];
    const args: unknown[] = [];
    if (filter.owner !== undefined) where.push('owner = ?'), args.push(filter.owner);
    if (filter.characterId !== undefined) where.push('character_id = ?'), args.push(filter.characterId);
    if (filter.scanId !== undefined) where.push('scan_id = ?'), args.push(filter.scanId);
    if (filter.tenantId !== undefined) where.push('tenant_id = ?'), args.push(filter.tenantId);
    if (filter.verdict !== undefined) where.push('verdict = ?'), args.push(filter.verdict);
    if (filter.undecided === 'owner') where.push('owner_decision IS NULL');
    if (filter.undecided === 'platform') where.push('platform_decision IS NULL');
    if (filter.before !== undefined) where.push('created_at < ?'), args.push(isoTimestamp(filter.before, 'before'));
    const rows = this.db
      .prepare(
        `SELECT * FROM matches ${where.length ? 'WHERE ' + where.join(' AND ') : ''}
         ORDER BY created_at DESC, rowid DESC LIMIT ?`,
      )
      .all(...args, limitOf(filter.limit, DEFAULT_LIST_LIMIT)) as MatchRow[];
    return rows.map(toMatch);
  }

  async getMatch(id: string): Promise<MatchRecord | undefined> {
    const row = this.db.prepare(`SELECT * FROM matches WHERE id = ?`).get(id) as MatchRow | undefined;
    return row && toMatch(row);
  }

  async decideMatch(id: string, side: DecisionSide, decision: Omit<MatchDecision, 'at'> | null): Promise<MatchRecord | undefined> {
    const column = side === 'owner' ? 'owner_decision' : 'platform_decision';
    const value = decisionJson(decision);
    return this.write(() => {
      this.db.prepare(`UPDATE matches SET ${column} = ? WHERE id = ?`).run(value, id);
      const row = this.db.prepare(`SELECT * FROM matches WHERE id = ?`).get(id) as MatchRow | undefined;
      return row && toMatch(row);
    });
  }

  async putExclusion(e: Omit<ExclusionRecord, 'createdAt'>): Promise<ExclusionRecord> {
    return this.write(() => {
      if (!this.db.prepare(`SELECT 1 FROM characters WHERE id = ?`).get(e.characterId)) throw new NotFoundError('character', e.characterId);
      this.db
        .prepare(
          `INSERT INTO exclusions (character_id, video, reason, match_id, created_by, created_at) VALUES (?, ?, ?, ?, ?, ?)
           ON CONFLICT (character_id, video) DO UPDATE SET reason = excluded.reason, match_id = excluded.match_id,
             created_by = excluded.created_by, created_at = excluded.created_at`,
        )
        .run(e.characterId, e.video, e.reason, e.matchId ?? null, e.createdBy, now());
      return toExclusion(this.db.prepare(`SELECT * FROM exclusions WHERE character_id = ? AND video = ?`).get(e.characterId, e.video) as ExclusionRow);
    });
  }

  async deleteExclusion(characterId: string, video: string): Promise<boolean> {
    return this.write(() => this.db.prepare(`DELETE FROM exclusions WHERE character_id = ? AND video = ?`).run(characterId, video).changes > 0);
  }

  async listExclusions(filter: { video?: string; characterId?: string }): Promise<ExclusionRecord[]> {
    const where: string[] = [];
    const args: unknown[] = [];
    if (filter.video !== undefined) where.push('video = ?'), args.push(filter.video);
    if (filter.characterId !== undefined) where.push('character_id = ?'), args.push(filter.characterId);
    const rows = this.db
      .prepare(`SELECT * FROM exclusions ${where.length ? 'WHERE ' + where.join(' AND ') : ''} ORDER BY video, character_id`)
      .all(...args) as ExclusionRow[];
    return rows.map(toExclusion);
  }

  async createBatch(b: Omit<BatchRecord, 'createdAt' | 'status'>): Promise<BatchRecord> {
    return this.write(() => {
      this.db
        .prepare(`INSERT INTO batches (id, tenant_id, status, total, created_at, finished_at) VALUES (?, ?, 'running', ?, ?, ?)`)
        .run(b.id, b.tenantId, b.total, now(), b.finishedAt === undefined ? null : isoTimestamp(b.finishedAt, 'finishedAt'));
      return toBatch(this.db.prepare(`SELECT * FROM batches WHERE id = ?`).get(b.id) as BatchRow);
    });
  }

  async getBatch(id: string, tenantId?: string): Promise<BatchRecord | undefined> {
    const row = (tenantId !== undefined
      ? this.db.prepare(`SELECT * FROM batches WHERE id = ? AND tenant_id = ?`).get(id, tenantId)
      : this.db.prepare(`SELECT * FROM batches WHERE id = ?`).get(id)) as BatchRow | undefined;
    return row && toBatch(row);
  }

  async batchCounts(id: string): Promise<Record<ScanStatus, number>> {
    const rows = this.db.prepare(`SELECT status, count(*) AS n FROM scans WHERE batch_id = ? GROUP BY status`).all(id) as Array<{
      status: ScanStatus;
      n: number;
    }>;
    const counts = emptyCounts();
    for (const r of rows) counts[r.status] = r.n;
    return counts;
  }

  async updateBatch(id: string, patch: { status?: BatchRecord['status']; finishedAt?: string }): Promise<void> {
    const set: string[] = [];
    const args: unknown[] = [];
    if (patch.status !== undefined) set.push('status = ?'), args.push(patch.status);
    if (patch.finishedAt !== undefined) set.push('finished_at = ?'), args.push(isoTimestamp(patch.finishedAt, 'finishedAt'));
    if (set.length) this.write(() => this.db.prepare(`UPDATE batches SET ${set.join(', ')} WHERE id = ?`).run(...args, id));
  }

  // --- webhooks ------------------------------------------------------------------------------

  async setWebhook(w: Omit<WebhookRecord, 'createdAt'>): Promise<WebhookRecord> {
    return this.write(() => {
      this.db
        .prepare(
          `INSERT INTO webhooks (tenant_id, url, secret, created_at) VALUES (?, ?, ?, ?)
           ON CONFLICT (tenant_id) DO UPDATE SET url = excluded.url, secret = excluded.secret, created_at = excluded.created_at`,
        )
        .run(w.tenantId, w.url, w.secret, now());
      return toWebhook(this.db.prepare(`SELECT * FROM webhooks WHERE tenant_id = ?`).get(w.tenantId) as WebhookRow);
    });
  }

  async getWebhook(tenantId: string): Promise<WebhookRecord | undefined> {
    const row = this.db.prepare(`SELECT * FROM webhooks WHERE tenant_id = ?`).get(tenantId) as WebhookRow | undefined;
    return row && toWebhook(row);
  }

  async deleteWebhook(tenantId: string): Promise<boolean> {
    return this.write(() => this.db.prepare(`DELETE FROM webhooks WHERE tenant_id = ?`).run(tenantId).changes > 0);
  }

  async addDelivery(
    d: Omit<WebhookDeliveryRecord, 'createdAt' | 'attempts' | 'status' | 'lastError' | 'responseStatus'>,
  ): Promise<WebhookDeliveryRecord> {
    return this.write(() => {
      this.db
        .prepare(
          `INSERT INTO webhook_deliveries (id, tenant_id, event, payload, status, attempts, created_at)
           VALUES (?, ?, ?, ?, 'pending', 0, ?)`,
        )
        .run(d.id, d.tenantId, d.event, JSON.stringify(d.payload ?? null), now());
      return toDelivery(this.db.prepare(`SELECT * FROM webhook_deliveries WHERE id = ?`).get(d.id) as DeliveryRow);
    });
  }

  async updateDelivery(
    id: string,
    patch: { status: WebhookDeliveryRecord['status']; attempts: number; lastError?: string | null; responseStatus?: number | null },
  ): Promise<void> {
    const set = ['status = ?', 'attempts = ?'];
    const args: unknown[] = [patch.status, patch.attempts];
    if (patch.lastError !== undefined) set.push('last_error = ?'), args.push(patch.lastError);
    if (patch.responseStatus !== undefined) set.push('response_status = ?'), args.push(patch.responseStatus);
    this.write(() => this.db.prepare(`UPDATE webhook_deliveries SET ${set.join(', ')} WHERE id = ?`).run(...args, id));
  }

  async getDelivery(id: string): Promise<WebhookDeliveryRecord | undefined> {
    const row = this.db.prepare(`SELECT * FROM webhook_deliveries WHERE id = ?`).get(id) as DeliveryRow | undefined;
    return row && toDelivery(row);
  }

  async listDeliveries(tenantId: string, limit?: number): Promise<WebhookDeliveryRecord[]> {
    const rows = this.db
      .prepare(`SELECT * FROM webhook_deliveries WHERE tenant_id = ? ORDER BY created_at DESC, rowid DESC LIMIT ?`)
      .all(tenantId, limitOf(limit, DEFAULT_LIST_LIMIT)) as DeliveryRow[];
    return rows.map(toDelivery);
  }

  async close(): Promise<void> {
    if (this.db.open) this.db.close();
  }
}
