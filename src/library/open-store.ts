/**
 * Opens the deployment's MetadataStore: PostgreSQL when a database URL is configured (several
 * machines share one library), otherwise the embedded SQLite file `<libraryDir>/kagami.db`.
 */
import { existsSync, mkdirSync, statSync } from 'node:fs';
import path from 'node:path';
import { LibraryError } from '../errors';
import type { MetadataStore } from './metadata-store';
import { PostgresStore } from './postgres-store';
import { SqliteStore } from './sqlite-store';

/** The SQLite file's name inside the library directory. */
export const SQLITE_FILE = 'kagami.db';

/**
 * `databaseUrl` set: connects to PostgreSQL (the schema is migrated; `libraryDir` and `create` are
 * not used for metadata). Otherwise opens `<libraryDir>/kagami.db`: with `create` the directory and
 * database are made if missing; without, a missing library is a LibraryError `library_not_found`.
 */
export async function openStore(opts: { databaseUrl?: string; libraryDir: string; create: boolean }): Promise<MetadataStore> {
  if (opts.databaseUrl) return PostgresStore.connect(opts.databaseUrl);
  const dir = opts.libraryDir;
  const file = path.join(dir, SQLITE_FILE);
  if (opts.create) {
    mkdirSync(dir, { recursive: true });
  } else {
    const hint = `(register a character first with 'kagami library add')`;
    if (!existsSync(dir)) throw new LibraryError('library_not_found', `library not found: ${dir} does not exist ${hint}`);
    if (!statSync(dir).isDirectory()) throw new LibraryError('library_not_found', `library not found: ${dir} is not a directory`);
    if (!existsSync(file)) throw new LibraryError('library_not_found', `library not found: ${dir} has no ${SQLITE_FILE} ${hint}`);
  }
  return new SqliteStore(file);
}
