import Database from 'better-sqlite3';
import { LibraryError } from '../errors';
import type { MetadataStore } from './metadata-store';
import type { CharacterRecord, LibraryModel, ReferenceFeatures, ReferenceRecord, ReferenceStatus } from './types';

/** Schema migrations, applied in order; `user_version` records how many ran. */
const MIGRATIONS: string[] = [
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
];

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
  createdAt: r.created_at,
});

/** The embedded, single-machine MetadataStore: one SQLite file (WAL mode). */
export class SqliteStore implements MetadataStore {
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
    } else if ((this.db.pragma('user_version', { simple: true }) as number) < MIGRATIONS.length) {
      throw new LibraryError('library_outdated', `library database ${file} needs migrating: run any 'kagami library' command on it`);
    }
  }

  private migrate(): void {
    const version = this.db.pragma('user_version', { simple: true }) as number;
    if (version > MIGRATIONS.length) {
      throw new LibraryError('library_too_new', `library database was written by a newer Kagami (schema ${version})`);
    }
    for (let v = version; v < MIGRATIONS.length; v++) {
      this.db.transaction(() => {
        this.db.exec(MIGRATIONS[v]);
        this.db.pragma(`user_version = ${v + 1}`);
      })();
    }
  }

  async getModel(): Promise<LibraryModel | undefined> {
    const row = this.db.prepare(`SELECT value FROM meta WHERE key = 'model'`).get() as { value: string } | undefined;
    return row ? (JSON.parse(row.value) as LibraryModel) : undefined;
  }

  async setModel(model: LibraryModel): Promise<void> {
    const current = await this.getModel();
    if (current && (current.modelId !== model.modelId || current.dimension !== model.dimension)) {
      throw new LibraryError(
        'model_mismatch',
        `library holds embeddings of model ${current.modelId} (${current.dimension}-d), not ${model.modelId} (${model.dimension}-d)`,
      );
    }
    if (!current) this.db.prepare(`INSERT INTO meta (key, value) VALUES ('model', ?)`).run(JSON.stringify(model));
  }

  async upsertCharacter(c: Omit<CharacterRecord, 'createdAt'>): Promise<CharacterRecord> {
    this.db
      .prepare(
        `INSERT INTO characters (id, name, owner, franchise, created_at) VALUES (@id, @name, @owner, @franchise, @createdAt)
         ON CONFLICT (id) DO UPDATE SET name = excluded.name, owner = excluded.owner,
           franchise = COALESCE(excluded.franchise, characters.franchise)`,
      )
      .run({ id: c.id, name: c.name, owner: c.owner, franchise: c.franchise ?? null, createdAt: new Date().toISOString() });
    return (await this.getCharacter(c.id))!;
  }

  async getCharacter(id: string): Promise<CharacterRecord | undefined> {
    const row = this.db.prepare(`SELECT * FROM characters WHERE id = ?`).get(id) as CharacterRow | undefined;
    return row && toCharacter(row);
  }

  async listCharacters(filter: { owner?: string } = {}): Promise<CharacterRecord[]> {
    const rows = (filter.owner
      ? this.db.prepare(`SELECT * FROM characters WHERE owner = ? ORDER BY id`).all(filter.owner)
      : this.db.prepare(`SELECT * FROM characters ORDER BY id`).all()) as CharacterRow[];
    return rows.map(toCharacter);
  }

  async deleteCharacter(id: string): Promise<boolean> {
    return this.db.prepare(`DELETE FROM characters WHERE id = ?`).run(id).changes > 0;
  }

  async addReferences(
    items: Array<{ ref: Omit<ReferenceRecord, 'createdAt'>; features?: ReferenceFeatures }>,
  ): Promise<ReferenceRecord[]> {
    const insert = this.db.prepare(
      `INSERT INTO refs (id, character_id, sha256, file_name, width, height, status, error, created_at, embedding, keypoints)
       VALUES (@id, @characterId, @sha256, @fileName, @width, @height, @status, @error, @createdAt, @embedding, @keypoints)
       ON CONFLICT (character_id, sha256) DO NOTHING`,
    );
    const find = this.db.prepare(`SELECT * FROM refs WHERE character_id = ? AND sha256 = ?`);
    const now = new Date().toISOString();
    return this.db.transaction(() =>
      items.map(({ ref, features }) => {
        insert.run({
          ...ref,
          error: ref.error ?? null,
          createdAt: now,
          embedding: features ? Buffer.from(features.embedding.buffer, features.embedding.byteOffset, features.embedding.byteLength) : null,
          keypoints: features?.keypoints ?? null,
        });
        return toRef(find.get(ref.characterId, ref.sha256) as RefRow);
      }),
    )();
  }

  async listReferences(characterId?: string): Promise<ReferenceRecord[]> {
    const rows = (characterId
      ? this.db.prepare(`SELECT * FROM refs WHERE character_id = ? ORDER BY created_at, id`).all(characterId)
      : this.db.prepare(`SELECT * FROM refs ORDER BY character_id, created_at, id`).all()) as RefRow[];
    return rows.map(toRef);
  }

  async loadFeatures(): Promise<ReferenceFeatures[]> {
    const rows = this.db
      .prepare(`SELECT id, character_id, embedding, keypoints FROM refs WHERE status = 'ready' ORDER BY id`)
      .all() as Array<{ id: string; character_id: string; embedding: Buffer | null; keypoints: Buffer | null }>;
    return rows
      .filter((r) => r.embedding && r.keypoints)
      .map((r) => {
        const e = r.embedding!;
        // Copy into an aligned buffer: the row's Buffer may start at an odd offset.
        const embedding = new Float32Array(e.byteLength / 4);
        new Uint8Array(embedding.buffer).set(e);
        return { referenceId: r.id, characterId: r.character_id, embedding, keypoints: r.keypoints! };
      });
  }

  async close(): Promise<void> {
    if (this.db.open) this.db.close();
  }
}
