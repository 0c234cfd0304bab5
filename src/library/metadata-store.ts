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

/**
 * Characters, references and their features. All methods are async so that a networked database
 * implements the same contract. Ids are opaque strings chosen by callers. Owner scoping (which
 * tenant may see what) is the caller's job: these methods take an `owner` filter where it matters.
 *
 * Not covered: blobs (the reference files themselves, see BlobStore).
 */
export interface LibraryStore {
  /** The model this library's embeddings belong to; undefined for a library with no references yet. */
  getModel(): Promise<LibraryModel | undefined>;
  /** Records the model; throws LibraryError `model_mismatch` if another one is already recorded. */
  setModel(model: LibraryModel): Promise<void>;
  /**
   * Moves the library to another model in one transaction: every ready reference gets the
   * embedding given for it (and its keypoints, when given; else they stay) and the recorded model
   * becomes `model`. LibraryError `library_changed` when the ready references are not exactly
   * those given (one was added, removed or became ready meanwhile); nothing is written then. Every re-embedded reference gets
   * a new `reference_ready` change-log entry, so scanners on the same model take the new vectors at
   * their next refresh (a same-model re-embed, e.g. to pick up new reference views); scanners
   * holding another model's vectors stop with `model_mismatch` (workers that follow the library
   * reload instead: service/engine.ts).
   */
  replaceModel(model: LibraryModel, replacements: ReadonlyArray<ReferenceReplacement>): Promise<void>;

  /**
   * Creates the character or updates its name/owner/franchise (an omitted franchise keeps the stored
   * one; `createdAt` is kept); returns the stored record. A create or an actual change appends a
   * `character_updated` change-log entry; an upsert that changes nothing appends none.
   */
  upsertCharacter(c: Omit<CharacterRecord, 'createdAt'>): Promise<CharacterRecord>;
  getCharacter(id: string): Promise<CharacterRecord | undefined>;
  /** Characters ordered by id; `owner` restricts to one owner. */
  listCharacters(filter?: { owner?: string }): Promise<CharacterRecord[]>;
  /**
   * Removes the character and all its references (recorded in the change log as one
   * `character_removed` entry, which implies its references; no per-reference entries); false if it
   * did not exist.
   */
  deleteCharacter(id: string): Promise<boolean>;

  /**
   * Adds references atomically: either all are stored or none. A reference whose
   * (characterId, sha256) is already stored is left as it is and returned as stored.
   * With features the reference is `ready` (status in `ref` is ignored) and gets a `reference_ready`
   * change-log entry; without, it is `pending` (or `failed`, with `ref.error`, if `ref.status` says so).
   * Throws KagamiError `not_found` for an unknown character, `conflict` for an id already used by
   * another (characterId, sha256), LibraryError `model_mismatch` for an embedding whose length is
   * not the recorded model's dimension; nothing is stored then.
   * With `model` (the one the features were made with), it is recorded or checked in the same
   * transaction, as in setReferenceFeatures: a library moved to another model meanwhile refuses
   * with `model_mismatch` and nothing is stored.
   */
  addReferences(
    items: Array<{ ref: Omit<ReferenceRecord, 'createdAt' | 'status'> & { status?: ReferenceStatus }; features?: ReferenceFeatures }>,
    model?: LibraryModel,
  ): Promise<ReferenceRecord[]>;
  getReference(id: string): Promise<ReferenceRecord | undefined>;
  listReferences(characterId?: string): Promise<ReferenceRecord[]>;
  /**
   * Stores the features of a pending reference and marks it ready (a change-log entry). Also works on
   * a failed or ready one (re-featured: only the newest `reference_ready` entry is reported by
   * changesSince). KagamiError `not_found` for an unknown id; `model_mismatch` as in addReferences.
   * With `model` (the one the embedding was made with), the check and the write are one transaction:
   * a library with no model records it, one holding another model (moved by replaceModel
   * meanwhile) refuses with `model_mismatch` and nothing is written.
   */
  setReferenceFeatures(id: string, features: ReferenceFeatures, model?: LibraryModel): Promise<void>;
  /**
   * Marks a reference failed with a reason, dropping its features; a reference that was ready gets a
   * `reference_removed` change-log entry. KagamiError `not_found` for an unknown id.
   */
  failReference(id: string, error: string): Promise<void>;
  /**
   * Replaces the quality warnings of a reference (an empty list removes them; no change-log entry:
   * matching does not depend on them). KagamiError `not_found` for an unknown id.
   */
  setReferenceWarnings(id: string, warnings: string[]): Promise<void>;
  /** Every reference (of any character) whose file has this sha256, ordered by character id then id. */
  findReferencesBySha256(sha256: string): Promise<ReferenceRecord[]>;
  /** Removes one reference (a change-log entry); false if it did not exist. */
  deleteReference(id: string): Promise<boolean>;
  /** Features of every `ready` reference, for building the in-memory indexes, and the change-log position they reflect. */
  loadFeatures(): Promise<{ features: ReferenceFeatures[]; seq: number }>;
  /**
   * What changed after change-log position `seq`, in order: references that became ready (with
   * features) and references or characters removed. Lets a worker keep its in-memory indexes
   * current without reloading everything.
   *
   * Positions are the log's `seq`s: increasing, in commit order (a reader that has seen seq n never
   * later finds a new entry at or below n), 0 before the first entry. Pass the `seq` of
   * `loadFeatures()` or of the last entry seen. `reference_ready` entries carry the reference's
   * current features; entries made stale by a later change of the same reference (deleted,
   * failed, re-featured, its character removed) are left out. `limit` defaults to 500; fewer
   * entries than `limit` means caught up.
   */
  changesSince(seq: number, limit?: number): Promise<LibraryChange[]>;
}

/** Tenants (rightsholders, platforms, admins) and their API keys; only key hashes are stored. */
export interface TenantStore {
  /** Creates the tenant with this name and role, or returns the existing one (role must match). */
  ensureTenant(name: string, role: TenantRole): Promise<TenantRecord>;
  getTenant(id: string): Promise<TenantRecord | undefined>;
  getTenantByName(name: string): Promise<TenantRecord | undefined>;
  /**
   * `hash` is the sha256 hex of the key; `prefix` its first characters, for people to tell keys apart.
   * KagamiError `conflict` for a used id or hash, `not_found` for an unknown tenant.
   */
  addApiKey(k: { id: string; tenantId: string; hash: string; prefix: string }): Promise<ApiKeyRecord>;
  /** The tenant owning the (unrevoked) key with this hash. */
  findTenantByKeyHash(hash: string): Promise<TenantRecord | undefined>;
  /** True if the key existed and was not revoked yet. */
  revokeApiKey(id: string): Promise<boolean>;
}

/** Filters of ScanStore.listMatches; all given ones must hold. */
export interface MatchFilter {
  /** The owner recorded with the match (a rightsholder's name). */
  owner?: string;
  characterId?: string;
  scanId?: string;
  /** The platform tenant whose scan found it. */
  tenantId?: string;
  /** The verdict the scan gave (not changed by decisions). */
  verdict?: MatchRecord['verdict'];
  /** Only matches without a decision on this side. */
  undecided?: DecisionSide;
  limit?: number;
  before?: string;
}

/** Scans, batches and the matches they found. */
export interface ScanStore {
  /** A `queued` scan at progress 0. KagamiError `conflict` for a used id, `not_found` for an unknown tenant or batch. */
  createScan(s: Omit<ScanRecord, 'createdAt' | 'status' | 'progress'>): Promise<ScanRecord>;
  /** `tenantId` scopes the lookup: another tenant's scan is undefined. */
  getScan(id: string, tenantId?: string): Promise<ScanRecord | undefined>;
  /** Newest first (equal timestamps: latest created first); `limit` defaults to 100. */
  listScans(filter: { tenantId?: string; batchId?: string; status?: ScanStatus; limit?: number }): Promise<ScanRecord[]>;
  /**
   * Moves a scan along; `report` and `error` only with the final states. Returns the updated record
   * (undefined for an unknown id). Omitted fields are left as they are; `error: null` clears the
   * error; progress is clamped to 0..1; timestamps are stored as `toISOString()` of what is given.
   */
  updateScan(id: string, patch: { status?: ScanStatus; progress?: number; report?: unknown; error?: string | null; startedAt?: string; finishedAt?: string }): Promise<ScanRecord | undefined>;
  /**
   * Replaces the matches recorded for a scan (idempotent: a retried scan records them once); ids and
   * `createdAt` are generated; decisions on the replaced matches go with them (`decisions` given
   * here are ignored). KagamiError `not_found` for an unknown scan.
   */
  putMatches(scanId: string, matches: Array<Omit<MatchRecord, 'id' | 'createdAt' | 'scanId'>>): Promise<void>;
  /**
   * Matches against characters of `owner` (a rightsholder's transparency view), newest first. `owner`
   * is the owner recorded with the match. One scan's matches come in the order given to putMatches.
   * `before`: an ISO timestamp; only matches created strictly earlier. `limit` defaults to 100.
   */
  listMatches(filter: MatchFilter): Promise<MatchRecord[]>;
  getMatch(id: string): Promise<MatchRecord | undefined>;
  /**
   * Records (or with `null`, removes) one side's decision on a match, with its `note` and
   * `negativeReferenceId` when given; `at` is the time of the call.
   * The other side's decision is kept. Returns the updated match, undefined for an unknown id.
   */
  decideMatch(id: string, side: DecisionSide, decision: Omit<MatchDecision, 'at'> | null): Promise<MatchRecord | undefined>;

  /**
   * Creates or replaces the exclusion of (characterId, video) (`createdAt` becomes now).
   * KagamiError `not_found` for an unknown character; exclusions go when their character does.
   */
  putExclusion(e: Omit<ExclusionRecord, 'createdAt'>): Promise<ExclusionRecord>;
  /** False if there was none. */
  deleteExclusion(characterId: string, video: string): Promise<boolean>;
  /** Ordered by video, then character id. */
  listExclusions(filter: { video?: string; characterId?: string }): Promise<ExclusionRecord[]>;

  createBatch(b: Omit<BatchRecord, 'createdAt' | 'status'>): Promise<BatchRecord>;
  getBatch(id: string, tenantId?: string): Promise<BatchRecord | undefined>;
  /** Counts of the batch's scans by status. */
  batchCounts(id: string): Promise<Record<ScanStatus, number>>;
  updateBatch(id: string, patch: { status?: BatchRecord['status']; finishedAt?: string }): Promise<void>;
}

/** Per-tenant webhook endpoints and the log of deliveries. */
export interface WebhookStore {
  /** Creates or replaces the tenant's webhook (`createdAt` becomes the time of this call). */
  setWebhook(w: Omit<WebhookRecord, 'createdAt'>): Promise<WebhookRecord>;
  getWebhook(tenantId: string): Promise<WebhookRecord | undefined>;
  deleteWebhook(tenantId: string): Promise<boolean>;
  addDelivery(d: Omit<WebhookDeliveryRecord, 'createdAt' | 'attempts' | 'status' | 'lastError' | 'responseStatus'>): Promise<WebhookDeliveryRecord>;
  /** Omitted `lastError` / `responseStatus` are left as they are; null clears them. */
  updateDelivery(id: string, patch: { status: WebhookDeliveryRecord['status']; attempts: number; lastError?: string | null; responseStatus?: number | null }): Promise<void>;
  /** Newest first; `limit` defaults to 100. */
  /** One delivery by id, whoever it belongs to (workers look deliveries up by the id their job carries). */
  getDelivery(id: string): Promise<WebhookDeliveryRecord | undefined>;
  listDeliveries(tenantId: string, limit?: number): Promise<WebhookDeliveryRecord[]>;
}

/** Everything a Kagami deployment keeps in its metadata database. */
export interface MetadataStore extends LibraryStore, TenantStore, ScanStore, WebhookStore {
  /** Which backend this is, e.g. `sqlite` or `postgres`. */
  readonly kind: string;
  close(): Promise<void>;
}
