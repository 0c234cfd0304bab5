import type { CharacterRecord, LibraryModel, ReferenceFeatures, ReferenceRecord } from './types';

/**
 * Where characters, references and their features are kept. All methods are async so that a
 * networked database can implement the same contract. Ids are opaque strings chosen by callers.
 *
 * Not covered: blobs (the reference files themselves, see BlobStore) and scan results.
 */
export interface MetadataStore {
  /** The model this library's embeddings belong to; undefined for a library with no references yet. */
  getModel(): Promise<LibraryModel | undefined>;
  /** Records the model; throws LibraryError `model_mismatch` if another one is already recorded. */
  setModel(model: LibraryModel): Promise<void>;

  /** Creates the character or updates its name/owner/franchise; returns the stored record. */
  upsertCharacter(c: Omit<CharacterRecord, 'createdAt'>): Promise<CharacterRecord>;
  getCharacter(id: string): Promise<CharacterRecord | undefined>;
  /** Characters ordered by id; `owner` restricts to one owner. */
  listCharacters(filter?: { owner?: string }): Promise<CharacterRecord[]>;
  /** Removes the character and all its references; false if it did not exist. */
  deleteCharacter(id: string): Promise<boolean>;

  /**
   * Adds references with their features atomically: either all are stored or none. A reference
   * whose (characterId, sha256) is already stored is left as it is and returned.
   */
  addReferences(items: Array<{ ref: Omit<ReferenceRecord, 'createdAt'>; features?: ReferenceFeatures }>): Promise<ReferenceRecord[]>;
  listReferences(characterId?: string): Promise<ReferenceRecord[]>;
  /** Features of every `ready` reference, for building the in-memory indexes. */
  loadFeatures(): Promise<ReferenceFeatures[]>;

  close(): Promise<void>;
}
