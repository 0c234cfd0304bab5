/**
 * The in-memory side of the reference library that scans match against: characters, references
 * and the two indexes (embedding vectors, keypoints). Loaded once, then kept current from the
 * store's change log (`refresh`), so a long-running worker sees new references within seconds
 * without reloading everything.
 */
import { LibraryError } from '../errors';
import { unpackKeypoints } from '../library/keypoint-pack';
import type { LibraryStore } from '../library/metadata-store';
import type { CharacterRecord, LibraryChange, ReferenceFeatures, ReferenceRecord } from '../library/types';
import type { Embedder } from '../signals/embedder';
import type { BackgroundBank } from '../signals/embedding/background-bank';
import { createVectorIndex, type VectorIndex } from '../signals/embedding/ann-index';
import { KeypointIndex } from '../signals/keypoints';

/**
 * The index key of a character's negative examples. Negatives sit in both indexes under this key, as
 * if they were another character: the keypoint ratio test then tells them apart from the character,
 * and the scanner drops the character's hits in a frame that are no stronger than its negatives' there;
 * the negatives' own hits are never reported but rival the character's likeness in the clip's
 * aggregation, as another character's would. (`~` cannot start a character id.)
 */
export const negativeKey = (characterId: string): string => `~neg~${characterId}`;
/** The character whose negatives `key` holds, or undefined for a character's own key. */
export const negativeOf = (key: string): string | undefined => (key.startsWith('~neg~') ? key.slice(5) : undefined);

export class ReferenceSet {
  readonly characters = new Map<string, CharacterRecord>();
  readonly references = new Map<string, ReferenceRecord>();
  readonly vectors: VectorIndex;
  readonly keypoints = new KeypointIndex();
  /**
   * Crop models calibrated against a background bank: the bank, and each reference's highest cosine
   * to it (the reference side of the likeness margin; see background-bank.ts).
   */
  background?: BackgroundBank;
  private readonly backgroundMax = new Map<string, number>();
  /** The negative examples' reference ids (hasNegatives). */
  private readonly negativeIds = new Set<string>();
  private seq = 0;
  private refreshing: Promise<number> | undefined;
  private readonly modelId: string;
  private readonly dimension: number;
  /** The int8 weights the library recorded for its vectors, as last read (load or refresh). */
  libraryWeightBits?: 7 | 8;

  private constructor(
    private readonly store: LibraryStore,
    embedder: Embedder,
    expectedSize: number,
  ) {
    // Exact search for small libraries, HNSW for large ones (chosen by size at load time).
    this.vectors = createVectorIndex(embedder.modelId, embedder.dimension, expectedSize);
    this.modelId = embedder.modelId;
    this.dimension = embedder.dimension;
  }

  /** Loads every ready reference; refuses a library whose embeddings come from another model. */
  static async load(store: LibraryStore, embedder: Embedder): Promise<ReferenceSet> {
    const model = await store.getModel();
    if (model && (model.modelId !== embedder.modelId || model.dimension !== embedder.dimension)) {
      throw new LibraryError('model_mismatch', `library holds ${model.modelId} embeddings but this Kagami uses ${embedder.modelId}`);
    }
    const { features, seq } = await store.loadFeatures();
    const set = new ReferenceSet(store, embedder, features.length);
    set.libraryWeightBits = model?.weightBits;
    set.background = embedder.backgroundBank ? await embedder.backgroundBank() : undefined;
    for (const c of await store.listCharacters()) set.characters.set(c.id, c);
    for (const r of await store.listReferences()) set.references.set(r.id, r);
    for (const f of features) set.addFeatures(f);
    set.seq = seq;
    return set;
  }

  /** Change-log position this set reflects. */
  get position(): number {
    return this.seq;
  }

  /** The reference's highest cosine to the background bank (undefined without a bank). */
  referenceBackground(referenceId: string): number | undefined {
    return this.backgroundMax.get(referenceId);
  }

  /** Whether any character has negative examples. */
  get hasNegatives(): boolean {
    return this.negativeIds.size > 0;
  }

  private addFeatures(f: ReferenceFeatures): void {
    if (this.background) this.backgroundMax.set(f.referenceId, this.background.maxSimilarity(f.embedding));
    const negative = !!this.references.get(f.referenceId)?.negative;
    if (negative) this.negativeIds.add(f.referenceId);
    const key = negative ? negativeKey(f.characterId) : f.characterId;
    this.vectors.add(f.referenceId, key, f.embedding);
    this.keypoints.add({ referenceId: f.referenceId, characterId: key, features: unpackKeypoints(f.keypoints) });
  }

  private removeReference(id: string): void {
    this.vectors.remove(id);
    this.keypoints.remove(id);
    this.references.delete(id);
    this.backgroundMax.delete(id);
    this.negativeIds.delete(id);
  }

  /**
   * Applies what changed since the last load/refresh; returns how many changes were applied.
   * Concurrent callers share one refresh.
   */
  refresh(): Promise<number> {
    this.refreshing ??= this.doRefresh().finally(() => (this.refreshing = undefined));
    return this.refreshing;
  }

  private async doRefresh(): Promise<number> {
    // A library moved to another model (reembedLibrary) holds vectors this set's embedder cannot
    // compare with: stop with a clear error instead of matching across two models.
    const model = await this.store.getModel();
    if (model && (model.modelId !== this.modelId || model.dimension !== this.dimension)) {
      throw new LibraryError('model_mismatch', `library now holds ${model.modelId} embeddings but this Kagami uses ${this.modelId}: run it with KAGAMI_MODEL unset (it follows the library) or =${model.modelId}`);
    }
    this.libraryWeightBits = model?.weightBits;
    let applied = 0;
    for (;;) {
      const changes = await this.store.changesSince(this.seq, 500);
      if (!changes.length) return applied;
      for (const c of changes) await this.apply(c);
      applied += changes.length;
      this.seq = changes[changes.length - 1].seq;
    }
  }

  private async apply(c: LibraryChange): Promise<void> {
    switch (c.kind) {
      case 'reference_ready': {
        const ref = await this.store.getReference(c.features.referenceId);
        if (!ref) return; // removed since
        this.references.set(ref.id, ref);
        if (!this.characters.has(ref.characterId)) await this.loadCharacter(ref.characterId);
        this.addFeatures(c.features);
        return;
      }
      case 'reference_removed':
        this.removeReference(c.referenceId);
        return;
      case 'character_updated':
        await this.loadCharacter(c.characterId);
        return;
      case 'character_removed':
        this.characters.delete(c.characterId);
        for (const r of [...this.references.values()]) if (r.characterId === c.characterId) this.removeReference(r.id);
        return;
    }
  }

  private async loadCharacter(id: string): Promise<void> {
    const ch = await this.store.getCharacter(id);
    if (ch) this.characters.set(id, ch);
    else this.characters.delete(id);
  }
}
