/**
 * The networked MetadataStore: PostgreSQL (via `pg`), for deployments where several machines (API
 * servers, scan workers) share one library. Behaves exactly like SqliteStore: the contract suite in
 * test/contract runs against both.
 *
 * - Schema: optionally its own (`connect(url, { schema })`, created if missing; every pooled
 *   connection gets `search_path` set to it), otherwise the connection's default schema.
 * - Migrations: the ordered list MIGRATIONS, recorded in `kagami_migrations`, applied in one
 *   transaction under `pg_advisory_xact_lock`, so processes starting at once don't race.
 * - Embeddings are `bytea` (Float32 little-endian), keypoints `bytea`, JSON `jsonb`, timestamps
 *   `timestamptz` (records carry `Date#toISOString` strings; millisecond precision, set by the
 *   application, not the database clock).
 * - Change log (`library_changes`): each library write appends its entries in the same transaction
 *   and first takes `LOCK TABLE library_changes IN EXCLUSIVE MODE`. That serialises library writers
 *   (rare) so that seq order equals commit order: a reader that has seen seq n never later finds a
 *   newly committed entry below n (which plain BIGSERIAL under concurrent writers would allow).
 *   Readers are not blocked. `refs.ready_seq` marks the live reference_ready entry of a reference;
 *   older ones (the reference was since re-featured, failed, deleted or re-added) are skipped.
 */
import { randomUUID } from 'node:crypto';
import { Pool, type PoolClient, type QueryResultRow } from 'pg';
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

/** Schema migrations, applied in order. Append only: never edit a migration that has shipped. */
const MIGRATIONS: Array<{ name: string; sql: string }> = [
  {
    name: 'library',
    sql: `
      CREATE TABLE meta (key text PRIMARY KEY, value jsonb NOT NULL);
      CREATE TABLE characters (
        id text PRIMARY KEY,
        name text NOT NULL,
        owner text NOT NULL,
        franchise text,
        created_at timestamptz NOT NULL);
      CREATE INDEX characters_owner ON characters (owner);
      CREATE TABLE refs (
        id text PRIMARY KEY,
        character_id text NOT NULL REFERENCES characters (id) ON DELETE CASCADE,
        sha256 text NOT NULL,
        file_name text NOT NULL,
        width integer NOT NULL,
        height integer NOT NULL,
        status text NOT NULL CHECK (status IN ('pending', 'ready', 'failed')),
        error text,
        created_at timestamptz NOT NULL,
        embedding bytea,
        keypoints bytea,
        ready_seq bigint,
        UNIQUE (character_id, sha256));
      CREATE INDEX refs_character ON refs (character_id);
      CREATE TABLE library_changes (
        seq bigserial PRIMARY KEY,
        kind text NOT NULL CHECK (kind IN ('reference_ready', 'reference_removed', 'character_updated', 'character_removed')),
        reference_id text,
        character_id text NOT NULL,
        created_at timestamptz NOT NULL);`,
  },
  {
    name: 'tenants_scans_webhooks',
    sql: `
      CREATE TABLE tenants (
        id text PRIMARY KEY,
        name text NOT NULL UNIQUE,
        role text NOT NULL CHECK (role IN ('rightsholder', 'platform', 'admin')),
        created_at timestamptz NOT NULL);
      CREATE TABLE api_keys (
        id text PRIMARY KEY,
        tenant_id text NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
        hash text NOT NULL UNIQUE,
        prefix text NOT NULL,
        created_at timestamptz NOT NULL,
        revoked_at timestamptz);
      CREATE INDEX api_keys_tenant ON api_keys (tenant_id);
      CREATE TABLE batches (
        id text PRIMARY KEY,
        tenant_id text NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
        status text NOT NULL CHECK (status IN ('running', 'done')),
        total integer NOT NULL,
        created_at timestamptz NOT NULL,
        finished_at timestamptz);
      CREATE INDEX batches_tenant ON batches (tenant_id);
      CREATE TABLE scans (
        id text PRIMARY KEY,
        ord bigint GENERATED ALWAYS AS IDENTITY,
        tenant_id text NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
        batch_id text REFERENCES batches (id) ON DELETE CASCADE,
        source jsonb NOT NULL,
        file_name text NOT NULL,
        status text NOT NULL CHECK (status IN ('queued', 'running', 'done', 'failed')),
        progress double precision NOT NULL,
        report jsonb,
        error text,
        created_at timestamptz NOT NULL,
        started_at timestamptz,
        finished_at timestamptz);
      CREATE INDEX scans_tenant ON scans (tenant_id, created_at);
      CREATE INDEX scans_batch ON scans (batch_id);
      CREATE TABLE matches (
        id text PRIMARY KEY,
        ord bigint GENERATED ALWAYS AS IDENTITY,
        scan_id text NOT NULL REFERENCES scans (id) ON DELETE CASCADE,
        tenant_id text NOT NULL,
        character_id text NOT NULL,
        owner text NOT NULL,
        verdict text NOT NULL CHECK (verdict IN ('match', 'review', 'clear')),
        score double precision NOT NULL,
        kind text NOT NULL CHECK (kind IN ('copy', 'likeness')),
        segments jsonb NOT NULL,
        evidence jsonb NOT NULL,
        video text NOT NULL,
        created_at timestamptz NOT NULL);
      CREATE INDEX matches_scan ON matches (scan_id);
      CREATE INDEX matches_owner ON matches (owner, created_at);
      CREATE INDEX matches_character ON matches (character_id, created_at);
      CREATE TABLE webhooks (
        tenant_id text PRIMARY KEY REFERENCES tenants (id) ON DELETE CASCADE,
        url text NOT NULL,
        secret text NOT NULL,
        created_at timestamptz NOT NULL);
      CREATE TABLE webhook_deliveries (
        id text PRIMARY KEY,
        ord bigint GENERATED ALWAYS AS IDENTITY,
        tenant_id text NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
        event text NOT NULL,
        payload jsonb NOT NULL,
        status text NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')),
        attempts integer NOT NULL,
        last_error text,
        response_status integer,
        created_at timestamptz NOT NULL);
      CREATE INDEX webhook_deliveries_tenant ON webhook_deliveries (tenant_id, created_at);`,
  },
  {
    name: 'warnings-decisions-exclusions',
    sql: `
      ALTER TABLE refs ADD COLUMN warnings jsonb;
      CREATE INDEX refs_sha256 ON refs (sha256);
      ALTER TABLE matches ADD COLUMN owner_decision jsonb;
      ALTER TABLE matches ADD COLUMN platform_decision jsonb;
      CREATE INDEX matches_tenant ON matches (tenant_id, created_at);
      CREATE TABLE exclusions (
        character_id text NOT NULL REFERENCES characters (id) ON DELETE CASCADE,
        video text NOT NULL,
        reason text NOT NULL CHECK (reason IN ('licensed')),
        match_id text,
        created_by text NOT NULL,
        created_at timestamptz NOT NULL,
        PRIMARY KEY (character_id, video));
      CREATE INDEX exclusions_video ON exclusions (video);`,
  },
  {
    name: 'negative-examples',
    sql: `ALTER TABLE refs ADD COLUMN negative boolean NOT NULL DEFAULT false;`,
  },
];


// ---------------------------------------------------------------------------------------------
// Rows and their records

interface CharacterRow {
  id: string;
  name: string;
  owner: string;
  franchise: string | null;
  created_at: Date;
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
  created_at: Date;
  warnings: string[] | null;
  negative: boolean;
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
  created_at: Date;
}
interface ApiKeyRow {
  id: string;
  tenant_id: string;
  prefix: string;
  created_at: Date;
  revoked_at: Date | null;
}
interface ScanRow {
  id: string;
  tenant_id: string;
  batch_id: string | null;
  source: ScanRecord['source'];
  file_name: string;
  status: ScanStatus;
  progress: number;
  report: unknown;
  error: string | null;
  created_at: Date;
  started_at: Date | null;
  finished_at: Date | null;
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
  segments: MatchRecord['segments'];
  evidence: MatchRecord['evidence'];
  video: string;
  created_at: Date;
  owner_decision: MatchDecision<OwnerDecision> | null;
  platform_decision: MatchDecision<PlatformDecision> | null;
}
interface ExclusionRow {
  character_id: string;
  video: string;
  reason: 'licensed';
  match_id: string | null;
  created_by: string;
  created_at: Date;
}
interface BatchRow {
  id: string;
  tenant_id: string;
  status: BatchRecord['status'];
  total: number;
  created_at: Date;
  finished_at: Date | null;
}
interface WebhookRow {
  tenant_id: string;
  url: string;
  secret: string;
  created_at: Date;
}
interface DeliveryRow {
  id: string;
  tenant_id: string;
  event: string;
  payload: unknown;
  status: WebhookDeliveryRecord['status'];
  attempts: number;
  last_error: string | null;
  response_status: number | null;
  created_at: Date;
}

const iso = (d: Date): string => d.toISOString();

const toCharacter = (r: CharacterRow): CharacterRecord => ({
  id: r.id,
  name: r.name,
  owner: r.owner,
  ...(r.franchise ? { franchise: r.franchise } : {}),
  createdAt: iso(r.created_at),
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
  ...(r.warnings && r.warnings.length ? { warnings: r.warnings } : {}),
  ...(r.negative ? { negative: true } : {}),
  createdAt: iso(r.created_at),
});
const toFeatures = (r: FeatureRow): ReferenceFeatures => ({
  referenceId: r.id,
  characterId: r.character_id,
  embedding: decodeEmbedding(r.embedding!),
  keypoints: r.keypoints!,
});
const toTenant = (r: TenantRow): TenantRecord => ({ id: r.id, name: r.name, role: r.role, createdAt: iso(r.created_at) });
const toApiKey = (r: ApiKeyRow): ApiKeyRecord => ({
  id: r.id,
  tenantId: r.tenant_id,
  prefix: r.prefix,
  createdAt: iso(r.created_at),
  ...(r.revoked_at ? { revokedAt: iso(r.revoked_at) } : {}),
});
const toScan = (r: ScanRow): ScanRecord => ({
  id: r.id,
  tenantId: r.tenant_id,
  ...(r.batch_id ? { batchId: r.batch_id } : {}),
  source: r.source,
  fileName: r.file_name,
  status: r.status,
  progress: r.progress,
  ...(r.report !== null && r.report !== undefined ? { report: r.report } : {}),
  ...(r.error !== null ? { error: r.error } : {}),
  createdAt: iso(r.created_at),
  ...(r.started_at ? { startedAt: iso(r.started_at) } : {}),
  ...(r.finished_at ? { finishedAt: iso(r.finished_at) } : {}),
});
const toMatch = (r: MatchRow): MatchRecord => ({
  id: r.id,
  scanId: r.scan_id,
  tenantId: r.tenant_id,
  characterId: r.character_id,
  owner: r.owner,
  verdict: r.verdict,
  score: r.score,
  kind: r.kind,
  segments: r.segments,
  evidence: r.evidence,
  video: r.video,
  createdAt: iso(r.created_at),
  ...(r.owner_decision || r.platform_decision
    ? { decisions: { ...(r.owner_decision ? { owner: r.owner_decision } : {}), ...(r.platform_decision ? { platform: r.platform_decision } : {}) } }
    : {}),
});
const toExclusion = (r: ExclusionRow): ExclusionRecord => ({
  characterId: r.character_id,
  video: r.video,
  reason: r.reason,
  ...(r.match_id ? { matchId: r.match_id } : {}),
  createdBy: r.created_by,
  createdAt: iso(r.created_at),
});
const toBatch = (r: BatchRow): BatchRecord => ({
  id: r.id,
  tenantId: r.tenant_id,
  status: r.status,
  total: r.total,
  createdAt: iso(r.created_at),
  ...(r.finished_at ? { finishedAt: iso(r.finished_at) } : {}),
});
const toWebhook = (r: WebhookRow): WebhookRecord => ({ tenantId: r.tenant_id, url: r.url, secret: r.secret, createdAt: iso(r.created_at) });
const toDelivery = (r: DeliveryRow): WebhookDeliveryRecord => ({
  id: r.id,
  tenantId: r.tenant_id,
  event: r.event,
  payload: r.payload,
  status: r.status,
  attempts: r.attempts,
  ...(r.last_error !== null ? { lastError: r.last_error } : {}),
  ...(r.response_status !== null ? { responseStatus: r.response_status } : {}),
  createdAt: iso(r.created_at),
});

// ---------------------------------------------------------------------------------------------
// Values

const quoteIdent = (name: string): string => `"${name.replace(/"/g, '""')}"`;

/** Constraint violations as the KagamiErrors both stores throw. */
function translate(e: unknown): unknown {
  const code = (e as { code?: unknown }).code;
  const msg = (e as Error).message;
  switch (code) {
    case '23503': // foreign_key_violation
      return new KagamiError('not_found', `refers to a record that does not exist (${msg})`, 404, { cause: e });
    case '23505': // unique_violation
      return new KagamiError('conflict', `already exists (${msg})`, 409, { cause: e });
    case '23502': // not_null_violation
    case '23514': // check_violation
    case '22P02': // invalid_text_representation
    case '22007': // invalid_datetime_format
    case '22008': // datetime_field_overflow
      return new ValidationError(`invalid value (${msg})`);
    default:
      return e;
  }
}

type Queryable = Pick<PoolClient, 'query'>;

async function rows<R extends QueryResultRow>(db: Queryable, sql: string, params: unknown[] = []): Promise<R[]> {
  return (await db.query<R>(sql, params)).rows;
}
async function one<R extends QueryResultRow>(db: Queryable, sql: string, params: unknown[] = []): Promise<R | undefined> {
  return (await db.query<R>(sql, params)).rows[0];
}

// ---------------------------------------------------------------------------------------------

export class PostgresStore implements MetadataStore {
  readonly kind = 'postgres';
  private closed = false;

  private constructor(
    private readonly pool: Pool,
    private readonly schema: string | undefined,
  ) {}

  /**
   * Connects (a pool) and brings the schema up to date. With `schema`, everything lives in that
   * schema (created if missing); otherwise in the connection's default one.
   */
  static async connect(url: string, opts: { schema?: string } = {}): Promise<PostgresStore> {
    if (opts.schema !== undefined && !/^[A-Za-z_][A-Za-z0-9_]{0,62}$/.test(opts.schema)) {
      throw new ValidationError(`invalid schema name '${opts.schema}'`);
    }
    // With a schema, every pooled connection starts with it as search_path (a startup parameter,
    // so no query can run before it is set).
    const pool = new Pool({ connectionString: url, ...(opts.schema ? { options: `-c search_path=${opts.schema}` } : {}) });
    // An idle pooled connection that breaks must not crash the process; the next query reconnects.
    pool.on('error', () => undefined);
    const store = new PostgresStore(pool, opts.schema);
    try {
      await store.migrate();
    } catch (e) {
      await pool.end().catch(() => undefined);
      if (e instanceof KagamiError) throw e;
      throw new LibraryError('library_unreadable', `cannot open the metadata database: ${(e as Error).message}`);
    }
    return store;
  }

  /** Applies the missing migrations in one transaction, under an advisory lock per schema. */
  private async migrate(): Promise<void> {
    const c = await this.pool.connect();
    try {
      await c.query('BEGIN');
      await c.query(`SELECT pg_advisory_xact_lock(hashtext('kagami_migrations'), hashtext(coalesce($1::text, current_schema())))`, [
        this.schema ?? null,
      ]);
      if (this.schema !== undefined) {
        await c.query(`CREATE SCHEMA IF NOT EXISTS ${quoteIdent(this.schema)}`);
        await c.query(`SET LOCAL search_path TO ${quoteIdent(this.schema)}`);
      }
      await c.query(
        `CREATE TABLE IF NOT EXISTS kagami_migrations (
           version integer PRIMARY KEY,
           name text NOT NULL,
           applied_at timestamptz NOT NULL DEFAULT now())`,
      );
      const { v } = (await one<{ v: number }>(c, `SELECT coalesce(max(version), 0)::integer AS v FROM kagami_migrations`))!;
      if (v > MIGRATIONS.length) {
        throw new LibraryError('library_too_new', `metadata database was written by a newer Kagami (schema ${v})`);
      }
      for (let i = v; i < MIGRATIONS.length; i++) {
        await c.query(MIGRATIONS[i].sql);
        await c.query(`INSERT INTO kagami_migrations (version, name) VALUES ($1, $2)`, [i + 1, MIGRATIONS[i].name]);
      }
      await c.query('COMMIT');
      c.release();
    } catch (e) {
      await c.query('ROLLBACK').catch(() => undefined);
      c.release(true);
      throw e;
    }
  }

  /**
   * Runs `fn` in a transaction. `library`: a library write, which takes the change-log lock first
   * (see the file's TSDoc). `snapshot`: a read-only REPEATABLE READ transaction (one snapshot).
   */
  private async tx<T>(fn: (c: PoolClient) => Promise<T>, opts: { library?: boolean; snapshot?: boolean } = {}): Promise<T> {
    const c = await this.pool.connect();
    let result: T;
    try {
      await c.query(opts.snapshot ? 'BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY' : 'BEGIN');
      if (opts.library) await c.query('LOCK TABLE library_changes IN EXCLUSIVE MODE');
      result = await fn(c);
      await c.query('COMMIT');
    } catch (e) {
      let broken = false;
      await c.query('ROLLBACK').catch(() => (broken = true));
      c.release(broken);
      throw translate(e);
    }
    c.release();
    return result;
  }

  /** One statement outside a transaction, with constraint errors translated. */
  private async q<R extends QueryResultRow>(sql: string, params: unknown[] = []): Promise<R[]> {
    try {
      return await rows<R>(this.pool, sql, params);
    } catch (e) {
      throw translate(e);
    }
  }

  private async appendChange(c: Queryable, kind: LibraryChange['kind'], characterId: string, referenceId: string | null = null): Promise<number> {
    const r = await one<{ seq: string }>(
      c,
      `INSERT INTO library_changes (kind, reference_id, character_id, created_at) VALUES ($1, $2, $3, $4) RETURNING seq`,
      [kind, referenceId, characterId, now()],
    );
    return Number(r!.seq);
  }

  private async modelOf(c: Queryable): Promise<LibraryModel | undefined> {
    const r = await one<{ value: LibraryModel }>(c, `SELECT value FROM meta WHERE key = 'model'`);
    return r?.value;
  }

  // --- library -------------------------------------------------------------------------------

  async getModel(): Promise<LibraryModel | undefined> {
    return this.modelOf(this.pool);
  }

  async setModel(model: LibraryModel): Promise<void> {
    try {
      await this.setModelOn(this.pool, model);
    } catch (e) {
      throw translate(e);
    }
  }

  /** setModel on `c` (the pool, or a transaction's client). */
  private async setModelOn(c: Queryable, model: LibraryModel): Promise<void> {
    await c.query(`INSERT INTO meta (key, value) VALUES ('model', $1::jsonb) ON CONFLICT (key) DO NOTHING`, [
      modelJson(model),
    ]);
    const current = (await this.modelOf(c))!;
    if (current.modelId !== model.modelId || current.dimension !== model.dimension) throw modelMismatch(current, model);
  }

  async replaceModel(model: LibraryModel, replacements: ReadonlyArray<ReferenceReplacement>): Promise<void> {
    await this.tx(
      async (c) => {
        // The change-log lock (library: true) keeps references from being added or becoming ready meanwhile.
        const ready = (await rows<{ id: string }>(c, `SELECT id FROM refs WHERE status = 'ready'`)).map((r) => r.id);
        checkReplacement(model, ready, replacements);
        for (let i = 0; i < replacements.length; i += 500) {
          const part = replacements.slice(i, i + 500);
          // A new reference_ready entry per reference (in the order given) carries the new vector
          // to scanners on the same model.
          await c.query(
            `WITH v AS (SELECT * FROM unnest($1::text[], $2::bytea[], $4::bytea[]) WITH ORDINALITY AS v(id, embedding, keypoints, n)),
                  ch AS (INSERT INTO library_changes (kind, reference_id, character_id, created_at)
                         SELECT 'reference_ready', r.id, r.character_id, $3 FROM v JOIN refs r ON r.id = v.id ORDER BY v.n
                         RETURNING seq, reference_id)
             UPDATE refs SET embedding = v.embedding, keypoints = COALESCE(v.keypoints, refs.keypoints), ready_seq = ch.seq
             FROM v JOIN ch ON ch.reference_id = v.id WHERE refs.id = v.id`,
            [part.map((e) => e.referenceId), part.map((e) => encodeEmbedding(e.embedding)), now(), part.map((e) => e.keypoints ?? null)],
          );
        }
        await c.query(`INSERT INTO meta (key, value) VALUES ('model', $1::jsonb) ON CONFLICT (key) DO UPDATE SET value = excluded.value`, [
          modelJson(model),
        ]);
      },
      { library: true },
    );
  }

  async upsertCharacter(ch: Omit<CharacterRecord, 'createdAt'>): Promise<CharacterRecord> {
    return this.tx(
      async (c) => {
        const existing = await one<CharacterRow>(c, `SELECT * FROM characters WHERE id = $1`, [ch.id]);
        if (!existing) {
          await c.query(`INSERT INTO characters (id, name, owner, franchise, created_at) VALUES ($1, $2, $3, $4, $5)`, [
            ch.id,
            ch.name,
            ch.owner,
            ch.franchise ?? null,
            now(),
          ]);
          await this.appendChange(c, 'character_updated', ch.id);
        } else {
          const franchise = ch.franchise ?? existing.franchise;
          if (existing.name !== ch.name || existing.owner !== ch.owner || existing.franchise !== franchise) {
            await c.query(`UPDATE characters SET name = $1, owner = $2, franchise = $3 WHERE id = $4`, [ch.name, ch.owner, franchise, ch.id]);
            await this.appendChange(c, 'character_updated', ch.id);
          }
        }
        return toCharacter((await one<CharacterRow>(c, `SELECT * FROM characters WHERE id = $1`, [ch.id]))!);
      },
      { library: true },
    );
  }

  async getCharacter(id: string): Promise<CharacterRecord | undefined> {
    const row = await one<CharacterRow>(this.pool, `SELECT * FROM characters WHERE id = $1`, [id]);
    return row && toCharacter(row);
  }

  async listCharacters(filter: { owner?: string } = {}): Promise<CharacterRecord[]> {
    const found =
      filter.owner !== undefined
        ? await rows<CharacterRow>(this.pool, `SELECT * FROM characters WHERE owner = $1 ORDER BY id COLLATE "C"`, [filter.owner])
        : await rows<CharacterRow>(this.pool, `SELECT * FROM characters ORDER BY id COLLATE "C"`);
    return found.map(toCharacter);
  }

  async deleteCharacter(id: string): Promise<boolean> {
    return this.tx(
      async (c) => {
        const deleted = ((await c.query(`DELETE FROM characters WHERE id = $1`, [id])).rowCount ?? 0) > 0;
        if (deleted) await this.appendChange(c, 'character_removed', id);
        return deleted;
      },
      { library: true },
    );
  }

  async addReferences(
    items: Array<{ ref: Omit<ReferenceRecord, 'createdAt' | 'status'> & { status?: ReferenceStatus }; features?: ReferenceFeatures }>,
    libraryModel?: LibraryModel,
  ): Promise<ReferenceRecord[]> {
    return this.tx(
      async (c) => {
        if (libraryModel) await this.setModelOn(c, libraryModel);
        const model = await this.modelOf(c);
        const createdAt = now();
        const out: ReferenceRecord[] = [];
        for (const { ref, features } of items) {
          const existing = await one<RefRow>(c, `SELECT * FROM refs WHERE character_id = $1 AND sha256 = $2`, [ref.characterId, ref.sha256]);
          if (existing) {
            out.push(toRef(existing));
            continue;
          }
          if (!(await one(c, `SELECT 1 FROM characters WHERE id = $1`, [ref.characterId]))) throw new NotFoundError('character', ref.characterId);
          const clash = await one<RefRow>(c, `SELECT * FROM refs WHERE id = $1`, [ref.id]);
          if (clash) {
            throw new KagamiError('conflict', `reference ${ref.id} already exists for ${clash.character_id}/${clash.sha256}, not ${ref.characterId}/${ref.sha256}`, 409);
          }
          if (features) checkFeatures(model, ref.id, features);
          const status: ReferenceStatus = features ? 'ready' : ref.status === 'failed' ? 'failed' : 'pending';
          const readySeq = features ? await this.appendChange(c, 'reference_ready', ref.characterId, ref.id) : null;
          const row = await one<RefRow>(
            c,
            `INSERT INTO refs (id, character_id, sha256, file_name, width, height, status, error, created_at, embedding, keypoints, ready_seq, negative)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) RETURNING *`,
            [
              ref.id,
              ref.characterId,
              ref.sha256,
              ref.fileName,
              ref.width,
              ref.height,
              status,
              status === 'failed' ? (ref.error ?? null) : null,
              createdAt,
              features ? encodeEmbedding(features.embedding) : null,
              features ? features.keypoints : null,
              readySeq,
              !!ref.negative,
            ],
          );
          out.push(toRef(row!));
        }
        return out;
      },
      { library: true },
    );
  }

  async getReference(id: string): Promise<ReferenceRecord | undefined> {
    const row = await one<RefRow>(this.pool, `SELECT * FROM refs WHERE id = $1`, [id]);
    return row && toRef(row);
  }

  async listReferences(characterId?: string): Promise<ReferenceRecord[]> {
    const found =
      characterId !== undefined
        ? await rows<RefRow>(this.pool, `SELECT * FROM refs WHERE character_id = $1 ORDER BY created_at, id COLLATE "C"`, [characterId])
        : await rows<RefRow>(this.pool, `SELECT * FROM refs ORDER BY character_id COLLATE "C", created_at, id COLLATE "C"`);
    return found.map(toRef);
  }

  async setReferenceFeatures(id: string, features: ReferenceFeatures, model?: LibraryModel): Promise<void> {
    await this.tx(
      async (c) => {
        const ref = await one<RefRow>(c, `SELECT * FROM refs WHERE id = $1`, [id]);
        if (!ref) throw new NotFoundError('reference', id);
        if (model) await this.setModelOn(c, model);
        checkFeatures(await this.modelOf(c), id, features);
        const seq = await this.appendChange(c, 'reference_ready', ref.character_id, id);
        await c.query(`UPDATE refs SET status = 'ready', error = NULL, embedding = $1, keypoints = $2, ready_seq = $3 WHERE id = $4`, [
          encodeEmbedding(features.embedding),
          features.keypoints,
          seq,
          id,
        ]);
      },
      { library: true },
    );
  }

  async failReference(id: string, error: string): Promise<void> {
    await this.tx(
      async (c) => {
        const ref = await one<RefRow>(c, `SELECT * FROM refs WHERE id = $1`, [id]);
        if (!ref) throw new NotFoundError('reference', id);
        await c.query(`UPDATE refs SET status = 'failed', error = $1, embedding = NULL, keypoints = NULL, ready_seq = NULL WHERE id = $2`, [error, id]);
        // A ready reference is in the workers' indexes: tell them to drop it.
        if (ref.status === 'ready') await this.appendChange(c, 'reference_removed', ref.character_id, id);
      },
      { library: true },
    );
  }

  async setReferenceWarnings(id: string, warnings: string[]): Promise<void> {
    const updated = await this.q(`UPDATE refs SET warnings = $1::jsonb WHERE id = $2 RETURNING id`, [warnings.length ? JSON.stringify(warnings) : null, id]);
    if (!updated.length) throw new NotFoundError('reference', id);
  }

  async findReferencesBySha256(sha256: string): Promise<ReferenceRecord[]> {
    const found = await rows<RefRow>(this.pool, `SELECT * FROM refs WHERE sha256 = $1 ORDER BY character_id COLLATE "C", id COLLATE "C"`, [sha256]);
    return found.map(toRef);
  }

  async deleteReference(id: string): Promise<boolean> {
    return this.tx(
      async (c) => {
        const ref = await one<{ character_id: string }>(c, `DELETE FROM refs WHERE id = $1 RETURNING character_id`, [id]);
        if (!ref) return false;
        await this.appendChange(c, 'reference_removed', ref.character_id, id);
        return true;
      },
      { library: true },
    );
  }

  async loadFeatures(): Promise<{ features: ReferenceFeatures[]; seq: number }> {
    return this.tx(
      async (c) => {
        const found = await rows<FeatureRow>(
          c,
          `SELECT id, character_id, embedding, keypoints FROM refs WHERE status = 'ready' ORDER BY id COLLATE "C"`,
        );
        const { seq } = (await one<{ seq: string }>(c, `SELECT coalesce(max(seq), 0) AS seq FROM library_changes`))!;
        return { features: found.filter((r) => r.embedding && r.keypoints).map(toFeatures), seq: Number(seq) };
      },
      { snapshot: true },
    );
  }

  async changesSince(seq: number, limit?: number): Promise<LibraryChange[]> {
    const found = await rows<{
      seq: string;
      kind: LibraryChange['kind'];
      reference_id: string | null;
      character_id: string;
      embedding: Buffer | null;
      keypoints: Buffer | null;
    }>(
      this.pool,
      `SELECT c.seq, c.kind, c.reference_id, c.character_id, r.embedding, r.keypoints
       FROM library_changes c
       LEFT JOIN refs r ON c.kind = 'reference_ready' AND r.id = c.reference_id AND r.ready_seq = c.seq
       WHERE c.seq > $1 AND (c.kind <> 'reference_ready' OR r.id IS NOT NULL)
       ORDER BY c.seq
       LIMIT $2`,
      [seq, limitOf(limit, DEFAULT_CHANGES_LIMIT)],
    );
    return found.map((r): LibraryChange => {
      const s = Number(r.seq);
      switch (r.kind) {
        case 'reference_ready':
          return { seq: s, kind: r.kind, features: toFeatures({ id: r.reference_id!, character_id: r.character_id, embedding: r.embedding, keypoints: r.keypoints }) };
        case 'reference_removed':
          return { seq: s, kind: r.kind, referenceId: r.reference_id!, characterId: r.character_id };
        default:
          return { seq: s, kind: r.kind, characterId: r.character_id };
      }
    });
  }

  // --- tenants -------------------------------------------------------------------------------

  async ensureTenant(name: string, role: TenantRole): Promise<TenantRecord> {
    await this.q(`INSERT INTO tenants (id, name, role, created_at) VALUES ($1, $2, $3, $4) ON CONFLICT (name) DO NOTHING`, [
      randomUUID(),
      name,
      role,
      now(),
    ]);
    const t = toTenant((await one<TenantRow>(this.pool, `SELECT * FROM tenants WHERE name = $1`, [name]))!);
    if (t.role !== role) throw new KagamiError('tenant_role_mismatch', `tenant '${name}' exists with role ${t.role}, not ${role}`, 409);
    return t;
  }

  async getTenant(id: string): Promise<TenantRecord | undefined> {
    const row = await one<TenantRow>(this.pool, `SELECT * FROM tenants WHERE id = $1`, [id]);
    return row && toTenant(row);
  }

  async getTenantByName(name: string): Promise<TenantRecord | undefined> {
    const row = await one<TenantRow>(this.pool, `SELECT * FROM tenants WHERE name = $1`, [name]);
    return row && toTenant(row);
  }

  async addApiKey(k: { id: string; tenantId: string; hash: string; prefix: string }): Promise<ApiKeyRecord> {
    const [row] = await this.q<ApiKeyRow>(
      `INSERT INTO api_keys (id, tenant_id, hash, prefix, created_at) VALUES ($1, $2, $3, $4, $5) RETURNING *`,
      [k.id, k.tenantId, k.hash, k.prefix, now()],
    );
    return toApiKey(row);
  }

  async findTenantByKeyHash(hash: string): Promise<TenantRecord | undefined> {
    const row = await one<TenantRow>(
      this.pool,
      `SELECT t.* FROM api_keys k JOIN tenants t ON t.id = k.tenant_id WHERE k.hash = $1 AND k.revoked_at IS NULL`,
      [hash],
    );
    return row && toTenant(row);
  }

  async revokeApiKey(id: string): Promise<boolean> {
    const revoked = await this.q(`UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL RETURNING id`, [now(), id]);
    return revoked.length > 0;
  }

  // --- scans ---------------------------------------------------------------------------------

  async createScan(s: Omit<ScanRecord, 'createdAt' | 'status' | 'progress'>): Promise<ScanRecord> {
    const [row] = await this.q<ScanRow>(
      `INSERT INTO scans (id, tenant_id, batch_id, source, file_name, status, progress, report, error, created_at, started_at, finished_at)
       VALUES ($1, $2, $3, $4::jsonb, $5, 'queued', 0, $6::jsonb, $7, $8, $9, $10) RETURNING *`,
      [
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
      ],
    );
    return toScan(row);
  }

  async getScan(id: string, tenantId?: string): Promise<ScanRecord | undefined> {
    const row =
      tenantId !== undefined
        ? await one<ScanRow>(this.pool, `SELECT * FROM scans WHERE id = $1 AND tenant_id = $2`, [id, tenantId])
        : await one<ScanRow>(this.pool, `SELECT * FROM scans WHERE id = $1`, [id]);
    return row && toScan(row);
  }

  async listScans(filter: { tenantId?: string; batchId?: string; status?: ScanStatus; limit?: number }): Promise<ScanRecord[]> {
    const where: string[] = [];
    const args: unknown[] = [];
    const add = (cond: string, value: unknown) => (args.push(value), where.push(cond.replace('?', `$${args.length}`)));
    if (filter.tenantId !== undefined) add('tenant_id = ?', filter.tenantId);
    if (filter.batchId !== undefined) add('batch_id = ?', filter.batchId);
    if (filter.status !== undefined) add('status = ?', filter.status);
    args.push(limitOf(filter.limit, DEFAULT_LIST_LIMIT));
    const found = await rows<ScanRow>(
      this.pool,
      `SELECT * FROM scans ${where.length ? 'WHERE ' + where.join(' AND ') : ''}
       ORDER BY created_at DESC, ord DESC LIMIT $${args.length}`,
      args,
    );
    return found.map(toScan);
  }

  async updateScan(
    id: string,
    patch: { status?: ScanStatus; progress?: number; report?: unknown; error?: string | null; startedAt?: string; finishedAt?: string },
  ): Promise<ScanRecord | undefined> {
    const set: string[] = [];
    const args: unknown[] = [];
    const add = (col: string, value: unknown, cast = '') => (args.push(value), set.push(`${col} = $${args.length}${cast}`));
    if (patch.status !== undefined) add('status', patch.status);
    if (patch.progress !== undefined) add('progress', clampProgress(patch.progress));
    if (patch.report !== undefined) add('report', patch.report === null ? null : JSON.stringify(patch.report), '::jsonb');
    if (patch.error !== undefined) add('error', patch.error);
    if (patch.startedAt !== undefined) add('started_at', isoTimestamp(patch.startedAt, 'startedAt'));
    if (patch.finishedAt !== undefined) add('finished_at', isoTimestamp(patch.finishedAt, 'finishedAt'));
    args.push(id);
    const [row] = set.length
      ? await this.q<ScanRow>(`UPDATE scans SET ${set.join(', ')} WHERE id = $${args.length} RETURNING *`, args)
      : await this.q<ScanRow>(`SELECT * FROM scans WHERE id = $1`, [id]);
    return row && toScan(row);
  }

  async putMatches(scanId: string, matches: Array<Omit<MatchRecord, 'id' | 'createdAt' | 'scanId'>>): Promise<void> {
    await this.tx(async (c) => {
      // Lock the scan row: concurrent puts for one scan run one after the other.
      if (!(await one(c, `SELECT 1 FROM scans WHERE id = $1 FOR UPDATE`, [scanId]))) throw new NotFoundError('scan', scanId);
      await c.query(`DELETE FROM matches WHERE scan_id = $1`, [scanId]);
      const createdAt = now();
      // Inserted last-to-first: lists order equal timestamps latest-inserted first, so one scan's
      // matches come back in the order given.
      for (let i = matches.length - 1; i >= 0; i--) {
        const m = matches[i];
        await c.query(
          `INSERT INTO matches (id, scan_id, tenant_id, character_id, owner, verdict, score, kind, segments, evidence, video, created_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::jsonb, $10::jsonb, $11, $12)`,
          [
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
          ],
        );
      }
    });
  }

  async listMatches(filter: MatchFilter): Promise<MatchRecord[]> {
    const where: string[] = [];
    const args: unknown[] = [];
    const add = (cond: string, value: unknown) => (args.push(value), where.push(cond.replace('?', `$${args.length}`)));
    if (filter.owner !== undefined) add('owner = ?', filter.owner);
    if (filter.characterId !== undefined) add('character_id = ?', filter.characterId);
    if (filter.scanId !== undefined) add('scan_id = ?', filter.scanId);
    if (filter.tenantId !== undefined) add('tenant_id = ?', filter.tenantId);
    if (filter.verdict !== undefined) add('verdict = ?', filter.verdict);
    if (filter.undecided === 'owner') where.push('owner_decision IS NULL');
    if (filter.undecided === 'platform') where.push('platform_decision IS NULL');
    if (filter.before !== undefined) add('created_at < ?', isoTimestamp(filter.before, 'before'));
    args.push(limitOf(filter.limit, DEFAULT_LIST_LIMIT));
    const found = await rows<MatchRow>(
      this.pool,
      `SELECT * FROM matches ${where.length ? 'WHERE ' + where.join(' AND ') : ''}
       ORDER BY created_at DESC, ord DESC LIMIT $${args.length}`,
      args,
    );
    return found.map(toMatch);
  }

  async getMatch(id: string): Promise<MatchRecord | undefined> {
    const row = await one<MatchRow>(this.pool, `SELECT * FROM matches WHERE id = $1`, [id]);
    return row && toMatch(row);
  }

  async decideMatch(id: string, side: DecisionSide, decision: Omit<MatchDecision, 'at'> | null): Promise<MatchRecord | undefined> {
    const column = side === 'owner' ? 'owner_decision' : 'platform_decision';
    const value = decisionJson(decision);
    const [row] = await this.q<MatchRow>(`UPDATE matches SET ${column} = $1::jsonb WHERE id = $2 RETURNING *`, [value, id]);
    return row && toMatch(row);
  }

  async putExclusion(e: Omit<ExclusionRecord, 'createdAt'>): Promise<ExclusionRecord> {
    const [row] = await this.q<ExclusionRow>(
      `INSERT INTO exclusions (character_id, video, reason, match_id, created_by, created_at) VALUES ($1, $2, $3, $4, $5, $6)
       ON CONFLICT (character_id, video) DO UPDATE SET reason = EXCLUDED.reason, match_id = EXCLUDED.match_id,
         created_by = EXCLUDED.created_by, created_at = EXCLUDED.created_at
       RETURNING *`,
      [e.characterId, e.video, e.reason, e.matchId ?? null, e.createdBy, now()],
    ).catch((err: unknown) => {
      throw err instanceof KagamiError && err.code === 'not_found' ? new NotFoundError('character', e.characterId) : err;
    });
    return toExclusion(row);
  }

  async deleteExclusion(characterId: string, video: string): Promise<boolean> {
    return (await this.q(`DELETE FROM exclusions WHERE character_id = $1 AND video = $2 RETURNING video`, [characterId, video])).length > 0;
  }

  async listExclusions(filter: { video?: string; characterId?: string }): Promise<ExclusionRecord[]> {
    const where: string[] = [];
    const args: unknown[] = [];
    if (filter.video !== undefined) args.push(filter.video), where.push(`video = $${args.length}`);
    if (filter.characterId !== undefined) args.push(filter.characterId), where.push(`character_id = $${args.length}`);
    const found = await rows<ExclusionRow>(
      this.pool,
      `SELECT * FROM exclusions ${where.length ? 'WHERE ' + where.join(' AND ') : ''} ORDER BY video COLLATE "C", character_id COLLATE "C"`,
      args,
    );
    return found.map(toExclusion);
  }

  async createBatch(b: Omit<BatchRecord, 'createdAt' | 'status'>): Promise<BatchRecord> {
    const [row] = await this.q<BatchRow>(
      `INSERT INTO batches (id, tenant_id, status, total, created_at, finished_at) VALUES ($1, $2, 'running', $3, $4, $5) RETURNING *`,
      [b.id, b.tenantId, b.total, now(), b.finishedAt === undefined ? null : isoTimestamp(b.finishedAt, 'finishedAt')],
    );
    return toBatch(row);
  }

  async getBatch(id: string, tenantId?: string): Promise<BatchRecord | undefined> {
    const row =
      tenantId !== undefined
        ? await one<BatchRow>(this.pool, `SELECT * FROM batches WHERE id = $1 AND tenant_id = $2`, [id, tenantId])
        : await one<BatchRow>(this.pool, `SELECT * FROM batches WHERE id = $1`, [id]);
    return row && toBatch(row);
  }

  async batchCounts(id: string): Promise<Record<ScanStatus, number>> {
    const found = await rows<{ status: ScanStatus; n: string }>(
      this.pool,
      `SELECT status, count(*) AS n FROM scans WHERE batch_id = $1 GROUP BY status`,
      [id],
    );
    const counts = emptyCounts();
    for (const r of found) counts[r.status] = Number(r.n);
    return counts;
  }

  async updateBatch(id: string, patch: { status?: BatchRecord['status']; finishedAt?: string }): Promise<void> {
    const set: string[] = [];
    const args: unknown[] = [];
    const add = (col: string, value: unknown) => (args.push(value), set.push(`${col} = $${args.length}`));
    if (patch.status !== undefined) add('status', patch.status);
    if (patch.finishedAt !== undefined) add('finished_at', isoTimestamp(patch.finishedAt, 'finishedAt'));
    if (!set.length) return;
    args.push(id);
    await this.q(`UPDATE batches SET ${set.join(', ')} WHERE id = $${args.length}`, args);
  }

  // --- webhooks ------------------------------------------------------------------------------

  async setWebhook(w: Omit<WebhookRecord, 'createdAt'>): Promise<WebhookRecord> {
    const [row] = await this.q<WebhookRow>(
      `INSERT INTO webhooks (tenant_id, url, secret, created_at) VALUES ($1, $2, $3, $4)
       ON CONFLICT (tenant_id) DO UPDATE SET url = excluded.url, secret = excluded.secret, created_at = excluded.created_at
       RETURNING *`,
      [w.tenantId, w.url, w.secret, now()],
    );
    return toWebhook(row);
  }

  async getWebhook(tenantId: string): Promise<WebhookRecord | undefined> {
    const row = await one<WebhookRow>(this.pool, `SELECT * FROM webhooks WHERE tenant_id = $1`, [tenantId]);
    return row && toWebhook(row);
  }

  async deleteWebhook(tenantId: string): Promise<boolean> {
    return (await this.q(`DELETE FROM webhooks WHERE tenant_id = $1 RETURNING tenant_id`, [tenantId])).length > 0;
  }

  async addDelivery(
    d: Omit<WebhookDeliveryRecord, 'createdAt' | 'attempts' | 'status' | 'lastError' | 'responseStatus'>,
  ): Promise<WebhookDeliveryRecord> {
    const [row] = await this.q<DeliveryRow>(
      `INSERT INTO webhook_deliveries (id, tenant_id, event, payload, status, attempts, created_at)
       VALUES ($1, $2, $3, $4::jsonb, 'pending', 0, $5) RETURNING *`,
      [d.id, d.tenantId, d.event, JSON.stringify(d.payload ?? null), now()],
    );
    return toDelivery(row);
  }

  async updateDelivery(
    id: string,
    patch: { status: WebhookDeliveryRecord['status']; attempts: number; lastError?: string | null; responseStatus?: number | null },
  ): Promise<void> {
    const set = ['status = $1', 'attempts = $2'];
    const args: unknown[] = [patch.status, patch.attempts];
    const add = (col: string, value: unknown) => (args.push(value), set.push(`${col} = $${args.length}`));
    if (patch.lastError !== undefined) add('last_error', patch.lastError);
    if (patch.responseStatus !== undefined) add('response_status', patch.responseStatus);
    args.push(id);
    await this.q(`UPDATE webhook_deliveries SET ${set.join(', ')} WHERE id = $${args.length}`, args);
  }

  async getDelivery(id: string): Promise<WebhookDeliveryRecord | undefined> {
    const [row] = await rows<DeliveryRow>(this.pool, `SELECT * FROM webhook_deliveries WHERE id = $1`, [id]);
    return row && toDelivery(row);
  }

  async listDeliveries(tenantId: string, limit?: number): Promise<WebhookDeliveryRecord[]> {
    const found = await rows<DeliveryRow>(
      this.pool,
      `SELECT * FROM webhook_deliveries WHERE tenant_id = $1 ORDER BY created_at DESC, ord DESC LIMIT $2`,
      [tenantId, limitOf(limit, DEFAULT_LIST_LIMIT)],
    );
    return found.map(toDelivery);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.pool.end();
  }
}
