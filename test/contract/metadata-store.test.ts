/**
 * Runs the MetadataStore contract against SQLite (a temp dir per test) and PostgreSQL (a random
 * schema per test, dropped afterwards), plus what only one backend has: SQLite migrating a
 * schema-1 library, PostgreSQL processes migrating one schema at once, and openStore.
 *
 * PostgreSQL: KAGAMI_TEST_DATABASE_URL, default postgres://postgres@127.0.0.1:5432/test.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import Database from 'better-sqlite3';
import { Client } from 'pg';
import { KagamiError } from '../../src/errors';
import { openStore } from '../../src/library/open-store';
import { PostgresStore } from '../../src/library/postgres-store';
import { SqliteStore } from '../../src/library/sqlite-store';
import { runMetadataStoreContract } from './metadata-store.contract';

const PG_URL = process.env.KAGAMI_TEST_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test';

const tempDir = () => mkdtempSync(path.join(tmpdir(), 'kagami-store-'));
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const randomSchema = () => `kagami_test_${process.pid}_${randomBytes(6).toString('hex')}`;

async function dropSchema(schema: string): Promise<void> {
  const c = new Client({ connectionString: PG_URL });
  await c.connect();
  try {
    await c.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
  } finally {
    await c.end();
  }
}

runMetadataStoreContract('sqlite', async () => {
  const dir = tempDir();
  const store = new SqliteStore(path.join(dir, 'kagami.db'));
  return {
    store,
    cleanup: async () => {
      await store.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
});

runMetadataStoreContract('postgres', async () => {
  const schema = randomSchema();
  const store = await PostgresStore.connect(PG_URL, { schema });
  return {
    store,
    cleanup: async () => {
      await store.close();
      await dropSchema(schema);
    },
  };
});

describe('PostgresStore', () => {
  it('migrates one fresh schema from two processes starting at once', async () => {
    const schema = randomSchema();
    try {
      const stores = await Promise.all([PostgresStore.connect(PG_URL, { schema }), PostgresStore.connect(PG_URL, { schema })]);
      try {
        await stores[0].upsertCharacter({ id: 'c1', name: 'One', owner: 'acme' });
        expect(await stores[1].getCharacter('c1')).toMatchObject({ id: 'c1' });
        const c = new Client({ connectionString: PG_URL });
        await c.connect();
        try {
          const { rows } = await c.query(`SELECT version FROM "${schema}".kagami_migrations ORDER BY version`);
          expect(rows.map((r: { version: number }) => r.version)).toEqual([1, 2, 3, 4]);
        } finally {
          await c.end();
        }
      } finally {
        await Promise.all(stores.map((s) => s.close()));
      }
    } finally {
      await dropSchema(schema);
    }
  });

  it('keeps schemas apart and reconnects to a migrated one', async () => {
    const a = randomSchema();
    const b = randomSchema();
    try {
      const sa = await PostgresStore.connect(PG_URL, { schema: a });
      const sb = await PostgresStore.connect(PG_URL, { schema: b });
      await sa.upsertCharacter({ id: 'c1', name: 'One', owner: 'acme' });
      expect(await sb.getCharacter('c1')).toBeUndefined();
      await sa.close();
      await sb.close();
      const again = await PostgresStore.connect(PG_URL, { schema: a });
      expect(await again.getCharacter('c1')).toMatchObject({ name: 'One' });
      expect(again.kind).toBe('postgres');
      await again.close();
      await again.close(); // twice is fine
    } finally {
      await dropSchema(a);
      await dropSchema(b);
    }
  });

  it('commits change-log entries in seq order (a library write waits for an earlier uncommitted one)', async () => {
    const schema = randomSchema();
    const store = await PostgresStore.connect(PG_URL, { schema });
    const other = new Client({ connectionString: PG_URL });
    await other.connect();
    try {
      // Another writer has taken seq 1 but not committed yet.
      await other.query('BEGIN');
      await other.query(`INSERT INTO "${schema}".characters (id, name, owner, created_at) VALUES ('c0', 'Zero', 'acme', now())`);
      await other.query(`INSERT INTO "${schema}".library_changes (kind, character_id, created_at) VALUES ('character_updated', 'c0', now())`);
      let done = false;
      const write = store.upsertCharacter({ id: 'c1', name: 'One', owner: 'acme' }).then(() => (done = true));
      await sleep(300);
      // Had the store committed seq 2 now, a reader at seq 2 would never see seq 1.
      expect(done).toBe(false);
      expect(await store.changesSince(0)).toEqual([]);
      await other.query('COMMIT');
      await write;
      expect((await store.changesSince(0)).map((c) => [c.seq, c.kind === 'character_updated' && c.characterId])).toEqual([
        [1, 'c0'],
        [2, 'c1'],
      ]);
    } finally {
      await other.query('ROLLBACK').catch(() => undefined);
      await other.end();
      await store.close();
      await dropSchema(schema);
    }
  });

  it('takes concurrent library writes from two processes', async () => {
    const schema = randomSchema();
    const stores = await Promise.all([PostgresStore.connect(PG_URL, { schema }), PostgresStore.connect(PG_URL, { schema })]);
    try {
      await Promise.all(
        Array.from({ length: 20 }, (_, i) => stores[i % 2].upsertCharacter({ id: `c${i}`, name: `C${i}`, owner: 'acme' })),
      );
      const changes = await stores[0].changesSince(0);
      expect(changes).toHaveLength(20);
      for (let i = 1; i < changes.length; i++) expect(changes[i].seq).toBeGreaterThan(changes[i - 1].seq);
    } finally {
      await Promise.all(stores.map((s) => s.close()));
      await dropSchema(schema);
    }
  });
});

describe('SqliteStore', () => {
  let dir: string;
  beforeEach(() => {
    dir = tempDir();
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('migrates a schema-1 library forward, keeping its references and features', async () => {
    const file = path.join(dir, 'kagami.db');
    // A library as the first release wrote it.
    const old = new Database(file);
    old.exec(`CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
      CREATE TABLE characters (id TEXT PRIMARY KEY, name TEXT NOT NULL, owner TEXT NOT NULL, franchise TEXT, created_at TEXT NOT NULL);
      CREATE INDEX characters_owner ON characters(owner);
      CREATE TABLE refs (
        id TEXT PRIMARY KEY, character_id TEXT NOT NULL REFERENCES characters(id) ON DELETE CASCADE,
        sha256 TEXT NOT NULL, file_name TEXT NOT NULL, width INTEGER NOT NULL, height INTEGER NOT NULL,
        status TEXT NOT NULL, error TEXT, created_at TEXT NOT NULL, embedding BLOB, keypoints BLOB,
        UNIQUE (character_id, sha256));
      CREATE INDEX refs_character ON refs(character_id);`);
    old.pragma('user_version = 1');
    const emb = new Float32Array([0.5, -0.25, 0.125, -0]);
    old.prepare(`INSERT INTO meta VALUES ('model', ?)`).run(JSON.stringify({ modelId: 'm1', dimension: 4 }));
    old.prepare(`INSERT INTO characters VALUES ('c1', 'One', 'acme', NULL, '2024-01-01T00:00:00.000Z')`).run();
    const insertRef = old.prepare(`INSERT INTO refs VALUES (?, 'c1', ?, 'a.png', 10, 20, ?, NULL, '2024-01-01T00:00:00.000Z', ?, ?)`);
    insertRef.run('r1', 'sha1', 'ready', Buffer.from(emb.buffer), Buffer.from([1, 2, 3]));
    insertRef.run('r2', 'sha2', 'pending', null, null);
    old.close();

    const store = new SqliteStore(file);
    try {
      expect(await store.getModel()).toEqual({ modelId: 'm1', dimension: 4 });
      const loaded = await store.loadFeatures();
      expect(loaded.features).toHaveLength(1);
      expect(Array.from(loaded.features[0].embedding)).toEqual(Array.from(emb));
      expect(Object.is(loaded.features[0].embedding[3], -0)).toBe(true);
      const changes = await store.changesSince(0);
      expect(changes.map((c) => c.kind)).toEqual(['reference_ready']);
      expect(loaded.seq).toBe(changes[0].seq);
      await store.setReferenceFeatures('r2', { referenceId: 'r2', characterId: 'c1', embedding: emb, keypoints: Buffer.from([4]) });
      expect((await store.changesSince(loaded.seq)).map((c) => c.kind)).toEqual(['reference_ready']);
      await store.ensureTenant('t', 'admin');
    } finally {
      await store.close();
    }
    // Opening again (migrated) changes nothing.
    const again = new SqliteStore(file, { readonly: true });
    expect((await again.loadFeatures()).features).toHaveLength(2);
    await again.close();
  });

  it('refuses a library written by a newer Kagami', () => {
    const file = path.join(dir, 'kagami.db');
    const db = new Database(file);
    db.pragma('user_version = 99');
    db.close();
    expect(() => new SqliteStore(file)).toThrow(expect.objectContaining({ code: 'library_too_new' }));
  });
});

describe('openStore', () => {
  let dir: string;
  beforeEach(() => {
    dir = tempDir();
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('opens SQLite in the library dir, creating it when asked', async () => {
    const lib = path.join(dir, 'nested', 'lib');
    const err = await openStore({ libraryDir: lib, create: false }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(KagamiError);
    expect((err as KagamiError).code).toBe('library_not_found');
    expect((err as KagamiError).message).toContain(lib);

    const store = await openStore({ libraryDir: lib, create: true });
    expect(store.kind).toBe('sqlite');
    await store.upsertCharacter({ id: 'c1', name: 'One', owner: 'acme' });
    await store.close();
    const reopened = await openStore({ libraryDir: lib, create: false });
    expect(await reopened.getCharacter('c1')).toBeDefined();
    await reopened.close();
  });

  it('reports a library dir without a database, or a file in its place', async () => {
    await expect(openStore({ libraryDir: dir, create: false })).rejects.toMatchObject({ code: 'library_not_found' });
    const file = path.join(dir, 'plain-file');
    writeFileSync(file, 'x');
    await expect(openStore({ libraryDir: file, create: false })).rejects.toMatchObject({ code: 'library_not_found' });
  });

  it('opens PostgreSQL when a database URL is given', async () => {
    // Into a schema of its own, chosen by the URL (not the shared default one).
    const schema = randomSchema();
    const c = new Client({ connectionString: PG_URL });
    await c.connect();
    await c.query(`CREATE SCHEMA "${schema}"`);
    await c.end();
    const url = `${PG_URL}${PG_URL.includes('?') ? '&' : '?'}options=${encodeURIComponent(`-c search_path=${schema}`)}`;
    try {
      const store = await openStore({ databaseUrl: url, libraryDir: path.join(dir, 'unused'), create: false });
      try {
        expect(store.kind).toBe('postgres');
        await store.upsertCharacter({ id: 'c1', name: 'One', owner: 'acme' });
        const check = new Client({ connectionString: PG_URL });
        await check.connect();
        const { rows } = await check.query(`SELECT id FROM "${schema}".characters`);
        await check.end();
        expect(rows).toEqual([{ id: 'c1' }]);
      } finally {
        await store.close();
      }
    } finally {
      await dropSchema(schema);
    }
  });
});
