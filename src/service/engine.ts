/**
 * What a worker matches with: the embedding model, the references in memory (ReferenceSet) and
 * the Scanner over them, kept current between jobs.
 *
 * When the model follows the library (KAGAMI_MODEL unset, or set to the library's new model), a
 * library moved to another model by `kagami library reembed` is picked up at the next refresh:
 * the new model and the references' new vectors are loaded, later jobs use them, and the old
 * model is closed once the jobs still holding it have finished. A worker pinned to another model
 * stops its jobs with `model_mismatch`, as it always did.
 */
import { isKagamiError } from '../errors';
import type { MetadataStore } from '../library/metadata-store';
import { ReferenceSet } from '../scan/reference-set';
import { Scanner, type ScanOptions } from '../scan/scanner';
import type { Embedder } from '../signals/embedder';

export interface Engine {
  readonly modelId: string;
  readonly embedder: Embedder;
  readonly refs: ReferenceSet;
  readonly scanner: Scanner;
}

export interface EngineDeps {
  store: MetadataStore;
  /** The model to use on a library whose vectors are of `libraryModel` (undefined: a library with none yet). */
  modelFor(libraryModel: string | undefined): string;
  /** `libraryWeights`: the int8 weights the library recorded for this model's vectors (LibraryModel.weightBits), if any. */
  loadEmbedder(modelId: string, libraryWeights?: 7 | 8): Promise<Embedder>;
  scan: ScanOptions;
  /** How stale the references may get before a job refreshes them. */
  refreshMs: number;
  log?: (level: 'info' | 'warn' | 'error', msg: string, extra?: Record<string, unknown>) => void;
}

interface Held extends Engine {
  /** The library's recorded weights it was loaded for (a `reembed` on another CPU may change them). */
  libraryWeights?: 7 | 8;
  /** Jobs running with it. */
  users: number;
  /** Replaced (or closing): closed when the last job holding it ends. */
  retired: boolean;
}

export class Engines {
  private current: Promise<Held> | undefined;
  private lastRefresh = 0;
  private readonly closing = new Set<Promise<void>>();

  constructor(private readonly deps: EngineDeps) {}

  /**
   * Runs `fn` with the current engine, refreshed first when older than refreshMs (always with
   * `fresh`); the engine stays open until `fn` ends even if the library moves meanwhile.
   */
  async use<T>(fn: (e: Engine) => Promise<T>, opts: { fresh?: boolean } = {}): Promise<T> {
    const e = await this.acquire(opts.fresh ?? false);
    try {
      return await fn(e);
    } finally {
      e.users--;
      if (e.retired && e.users === 0) this.dispose(e);
    }
  }

  /** Brings the references up to date now, following the library to a new model (the refresh timer). */
  async refresh(): Promise<void> {
    if (!this.current) return; // nothing loaded yet: the first job loads it
    await this.use(async () => undefined, { fresh: true });
  }

  /** Whether the library now holds vectors of a model this worker would follow, other than `modelId`. */
  async movedFrom(modelId: string): Promise<string | undefined> {
    const m = await this.deps.store.getModel();
    if (!m || m.modelId === modelId || this.deps.modelFor(m.modelId) !== m.modelId) return undefined;
    return m.modelId;
  }

  /** Closes the current engine once its jobs have ended (callers stop taking jobs first). */
  async close(): Promise<void> {
    const p = this.current;
    this.current = undefined;
    const e = await p?.catch(() => undefined);
    if (e) {
      e.retired = true;
      if (e.users === 0) this.dispose(e);
    }
    await Promise.all([...this.closing]);
  }

  /** The current engine with one more user (counted before any other job can retire it). */
  private async acquire(fresh: boolean): Promise<Held> {
    // A second pass only when the library moved (or another job replaced the engine) meanwhile.
    for (let pass = 0; ; pass++) {
      const p = (this.current ??= this.load());
      let e: Held;
      try {
        e = await p;
      } catch (err) {
        if (this.current === p) this.current = undefined; // the next job tries again
        throw err;
      }
      if (this.current !== p) continue;
      if (fresh || Date.now() - this.lastRefresh >= this.deps.refreshMs) {
        try {
          await e.refs.refresh();
          this.lastRefresh = Date.now();
        } catch (err) {
          const to = isKagamiError(err) && err.code === 'model_mismatch' && pass < 3 ? await this.movedFrom(e.modelId) : undefined;
          if (!to) throw err;
          if (this.current === p) this.replace(e, to);
          continue;
        }
        if (this.current !== p) continue;
        if (e.refs.libraryWeightBits !== e.libraryWeights && e.refs.libraryWeightBits !== undefined) {
          // Re-embedded with the same model but other int8 weights (`library reembed` on a CPU that
          // runs the other ones): load the model again with those, as for a new model.
          this.replace(e, e.modelId);
          continue;
        }
      }
      e.users++;
      return e;
    }
  }

  private replace(old: Held, to: string): void {
    if (to === old.modelId) this.deps.log?.('info', "the library's references were embedded again with other int8 weights: loading them", { modelId: to, weightBits: old.refs.libraryWeightBits });
    else this.deps.log?.('info', 'the library moved to another embedding model: loading it', { from: old.modelId, to });
    this.current = this.load();
    old.retired = true;
    if (old.users === 0) this.dispose(old);
  }

  private async load(): Promise<Held> {
    const stored = await this.deps.store.getModel();
    const modelId = this.deps.modelFor(stored?.modelId);
    const libraryWeights = stored?.modelId === modelId ? stored.weightBits : undefined;
    const embedder = await this.deps.loadEmbedder(modelId, libraryWeights);
    let refs: ReferenceSet;
    try {
      refs = await ReferenceSet.load(this.deps.store, embedder);
    } catch (e) {
      await embedder.dispose?.();
      throw e;
    }
    this.lastRefresh = Date.now();
    return { modelId: embedder.modelId, embedder, refs, scanner: new Scanner(embedder, refs, this.deps.scan), users: 0, retired: false, libraryWeights: libraryWeights ?? embedder.weightBits };
  }

  private dispose(e: Held): void {
    const done = (async () => {
      await e.scanner.dispose();
      await e.embedder.dispose?.();
    })()
      .catch((err: unknown) => this.deps.log?.('warn', 'closing a replaced model failed', { modelId: e.modelId, err: (err as Error).message }))
      .finally(() => this.closing.delete(done));
    this.closing.add(done);
  }
}
