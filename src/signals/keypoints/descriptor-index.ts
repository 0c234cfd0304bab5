/**
 * Fast approximate nearest-neighbour search over 256-bit ORB descriptors: bit-sampling LSH
 * (`tables` hash tables, each keyed by `keyBits` of the 256 bits) with an exact Hamming
 * re-check of every candidate.
 *
 * Why these numbers (measured on the perf bench's 1,000-reference library, 1 M descriptors,
 * frames of 2,000 keypoints, src/bench/perf/keypoints.ts): ORB bits of these references are close
 * to balanced (p(1) 0.3-0.7), but descriptors cluster (shared drawing styles): a typical frame
 * descriptor has ~500 library descriptors within 50 bits and ~1,600 within 60. The matches that end
 * up as verified inliers lie at 2-50 bits (median 21, 95th percentile 38). Any bit-sampling hash
 * that finds ~95 % of those also returns the dense 40-60-bit neighbourhood, so the work is about
 * 1,000 candidates per query whatever the layout: the old 16 disjoint 16-bit substrings returned
 * ~2,600 (recall 0.96), 24 tables of 20 bits ~1,000 (0.92-0.95), 16 x 24 bits ~280 (0.78).
 * Most of those ~1,000 come from a few dense buckets, though, and the descriptors there are the
 * ambiguous ones the ratio test rejects anyway: skipping buckets far above the mean size (see
 * BUCKET_CAP_FACTOR) halves the time per frame and keeps as many verified matches.
 * So the cost per candidate is what matters: a candidate is a random 32-byte read from a 32 MB
 * array (a cache miss); JS with a popcount table needs ~70-120 ns for it, a small WebAssembly
 * kernel (i64.popcnt, independent loads the CPU overlaps) ~10-25 ns. The kernel below is
 * assembled by hand (no toolchain); a plain-JS path does the same when WebAssembly is missing.
 *
 * Layout: per table, CSR (bucket offsets over 2^keyBits buckets + descriptor ids sorted by
 * bucket) over the descriptors present at the last full build (for an index far smaller than
 * 2^keyBits, a directory of the keys present in place of the offsets: the same candidates from
 * 15 instead of 98 MiB at 20,000 descriptors, built in about half the time), plus a small
 * "delta" CSR over descriptors appended since (hashed into fewer buckets, keys kept for an exact
 * key check), rebuilt on each append; when the delta outgrows a quarter of the main part
 * everything is rebuilt.
 * Removed descriptors keep their slots with label -1 and are skipped.
 *
 * What it answers is exactly what KeypointIndex's ratio test needs:
 *   nearestOtherLabel(): the nearest live descriptor (d1, its id; ties -> lowest id) and the
 *     nearest one whose label differs from the nearest one's (dB), both capped at `bound`;
 *   knn(): the K nearest (distance, id; ties -> lowest id), capped at `bound`.
 * Both have an `exact` mode (every live descriptor, same answer format): KeypointIndex's brute
 * force for small libraries (an `exactOnly` index keeps no tables), tests and benchmarks. The
 * kernel's `scan` streams every descriptor and returns only those within reach of the answer so
 * far, so the JS bookkeeping sees a few per cent of them.
 * The hashed answers are never better than the exact ones (every candidate is checked on all
 * 256 bits), they can only miss a neighbour.
 */

import { mulberry32 } from '../../random';

/** The part of the WebAssembly API used here (lib "ES2022" does not declare it; Node 20 has it). */
interface WasmMemory {
  readonly buffer: ArrayBuffer;
  grow(pages: number): number;
}
interface WasmApi {
  Module: new (bytes: Uint8Array) => object;
  Instance: new (module: object, imports: object) => { exports: Record<string, unknown> };
  Memory: new (desc: { initial: number }) => WasmMemory;
}
const WASM = (globalThis as unknown as { WebAssembly?: WasmApi }).WebAssembly;

/** 16-bit popcount table (the JS fallback path). */
const POPCNT16 = (() => {
  const t = new Uint8Array(65536);
  for (let i = 1; i < 65536; i++) t[i] = t[i >> 1] + (i & 1);
  return t;
})();

/**
 * Buckets far above the mean size are dense clusters of near-identical descriptors (flat fills,
 * repeated outline corners of one drawing style): every query landing there pays for hundreds of
 * candidates that the ratio test then rejects as ambiguous. Skipping buckets above 32x the mean
 * (measured on the perf bench's 1,000-reference library, 1 M descriptors, 8 frames, against brute
 * force: cap 1,500 -> 113 ms per frame keeping 0.969 of verified inliers; 250 -> 80 ms, 0.970;
 * 120 -> 66 ms, 0.971; 60 -> 50-57 ms, 0.975; 40 -> 45-55 ms, 0.972; 30 -> 39 ms, 0.964: the
 * kept fraction is flat, so the cap sits where the time levels off). Scaling with the mean keeps
 * the cap meaningful as the library grows. The floor of 60 is for small libraries (mean ~0.06 in
 * the accuracy bench's): a floor of 32 cost one new rendition its keypoint hit there, 60 changed
 * no result.
 */
const BUCKET_CAP_FACTOR = 32;
const MIN_BUCKET_CAP = 60;

/**
 * The main part of an index with fewer descriptors than 1/SPARSE_FACTOR of the buckets (2^keyBits)
 * uses keyed tables (rebuildMain). At 20-bit keys: below 65,536 descriptors, i.e. libraries of
 * up to ~60 references of 500 keypoints and their mirror images.
 */
const SPARSE_FACTOR = 16;

export const DESCRIPTOR_WORDS = 8; // 8 x 32-bit little-endian words per 32-byte descriptor

export interface DescriptorIndexOptions {
  /** Number of hash tables (1..64; default 24). More: better recall, more candidates. */
  tables?: number;
  /** Bits per key (8..22; default 20). More: fewer candidates, lower recall per table. */
  keyBits?: number;
  /** Seed of the bit assignment (default 1). */
  seed?: number;
  /**
   * Skip buckets holding more than this many descriptors (uninformative keys). Default: 32 times the
   * mean bucket size at the last full build, at least 60 (60 at 1 M descriptors of 20-bit keys).
   */
  maxBucket?: number;
  /** Use the WebAssembly distance kernel when available (default true). */
  wasm?: boolean;
  /**
   * Keyed tables (a directory of the keys present) for the main part when it holds fewer
   * descriptors than 1/16 of the buckets (default true; false: always 2^keyBits buckets). The
   * answers are the same either way.
   */
  sparseTables?: boolean;
  /**
   * No hash tables: only exact queries (`exact: true`) are answered, for an index small enough to
   * be searched exhaustively (KeypointIndex below HASHED_MIN_DESCRIPTORS). Default false.
   */
  exactOnly?: boolean;
}

export interface NearestOtherResult {
  /** Per query: id of the nearest descriptor, -1 if none below `bound`. */
  i1: Int32Array;
  /** Per query: its distance (bound when none). */
  d1: Int32Array;
  /** Per query: distance to the nearest descriptor of another label than i1's (bound when none found). */
  dB: Int32Array;
  /** Candidate distances computed (a cost measure; duplicates across tables count). */
  candidates: number;
}

export interface KnnResult {
  /** K ids per query (row-major), -1 where fewer were found below `bound`. */
  ids: Int32Array;
  /** K distances per query (bound + 1 where none). */
  dists: Int32Array;
  candidates: number;
}

/** Packs 32-byte descriptors into 8 little-endian 32-bit words each. */
export function packDescriptorWords(d: Uint8Array, n: number, out = new Uint32Array(n * DESCRIPTOR_WORDS), offsetWords = 0): Uint32Array {
  if (d.length < n * 32) throw new Error(`packDescriptorWords: ${d.length} bytes for ${n} descriptors`);
  for (let i = 0; i < n * DESCRIPTOR_WORDS; i++) {
    const b = i * 4;
    out[offsetWords + i] = (d[b] | (d[b + 1] << 8) | (d[b + 2] << 16) | (d[b + 3] << 24)) >>> 0;
  }
  return out;
}

/** Hamming distance between descriptor a of A and descriptor b of B (word arrays). */
export function hamming(A: Uint32Array, a: number, B: Uint32Array, b: number): number {
  const P = POPCNT16;
  let d = 0;
  for (let w = 0; w < DESCRIPTOR_WORDS; w++) {
    const x = A[a * DESCRIPTOR_WORDS + w] ^ B[b * DESCRIPTOR_WORDS + w];
    d += P[x & 0xffff] + P[x >>> 16];
  }
  return d;
}

// ----------------------------------------------------------------------------- wasm kernel

// Pieces of bytecode both kernel functions use (opcodes as in the WAT comments below).
/** Query words a_k = i64.load (q + 8k), k < 4, into locals a .. a + 3 (q is parameter 0). */
const loadQuery = (a: number): number[] => [0, 1, 2, 3].flatMap((k) => [0x20, 0x00, 0x29, 0x03, 8 * k, 0x21, a + k]);
/** popcount(descriptor ^ query) as an i64 on the stack: the descriptor at address local b, the query in locals a .. a + 3. */
const popcount256 = (b: number, a: number): number[] =>
  [0, 1, 2, 3].flatMap((k) => [0x20, b, 0x29, 0x03, 8 * k, 0x20, a + k, 0x85, 0x7b, ...(k > 0 ? [0x7c] : [])]);

/**
 * dists(q, ids, n, out, wbase): for p < n, out[p] (u8) = popcount(desc[ids[p]] ^ query), where
 * desc j lives at wbase + 32 j and the query at q (byte addresses in the imported memory).
 * WAT:
 *   (func (param $q i32) (param $ids i32) (param $n i32) (param $out i32) (param $wb i32)
 *     (local $p i32) (local $b i32) (local $a0 i64) (local $a1 i64) (local $a2 i64) (local $a3 i64)
 *     a0..a3 = i64.load q+0/8/16/24
 *     block  (br_if 0 (i32.ge_u p n))
 *       loop  b = (i32.load (ids + 4p)) << 5 + wb
 *             i32.store8 (out + p) (wrap (sum_k popcnt (i64.load b+8k ^ ak)))
 *             br_if 0 ((p = p + 1) < n)
 */
const KERNEL_BODY = [
  0x02, 0x02, 0x7f, 0x04, 0x7e, // locals: 2 x i32 (p=5, b=6), 4 x i64 (7..10)
  ...loadQuery(7),
  0x02, 0x40, // block
  0x20, 0x05, 0x20, 0x02, 0x4f, 0x0d, 0x00, // p >= n -> exit
  0x03, 0x40, // loop
  0x20, 0x01, 0x20, 0x05, 0x41, 0x02, 0x74, 0x6a, 0x28, 0x02, 0x00, // i32.load(ids + (p << 2))
  0x41, 0x05, 0x74, 0x20, 0x04, 0x6a, 0x21, 0x06, // b = (.. << 5) + wb
  0x20, 0x03, 0x20, 0x05, 0x6a, // out + p
  ...popcount256(6, 7),
  0xa7, 0x3a, 0x00, 0x00, // i32.wrap_i64, i32.store8
  0x20, 0x05, 0x41, 0x01, 0x6a, 0x22, 0x05, 0x20, 0x02, 0x49, 0x0d, 0x00, // ++p < n -> loop
  0x0b, 0x0b, 0x0b,
];

/**
 * scan(q, start, n, outIds, outD, bound, wbase) -> count: for j in start .. start + n - 1, the
 * descriptors within `bound` bits of the query (d <= bound), in ascending j: outIds[c] (i32) = j,
 * outD[c] (u8) = d. Exact search streams the whole index through it, so only the few descriptors
 * near enough to matter reach JS (dists() would send every one).
 * WAT:
 *   (func (param $q i32) (param $start i32) (param $n i32) (param $outIds i32) (param $outD i32)
 *         (param $bound i32) (param $wb i32) (result i32)
 *     (local $p i32) (local $b i32) (local $c i32) (local $d i32) (local $a0 i64) .. (local $a3 i64)
 *     a0..a3 = i64.load q+0/8/16/24
 *     block  (br_if 0 (i32.ge_u p n))
 *       loop  b = ((start + p) << 5) + wb
 *             d = wrap (sum_k popcnt (i64.load b+8k ^ ak))
 *             if (i32.le_u d bound)  i32.store (outIds + 4c) (start + p); i32.store8 (outD + c) d; c++
 *             br_if 0 ((p = p + 1) < n)
 *     c
 */
const SCAN_BODY = [
  0x02, 0x04, 0x7f, 0x04, 0x7e, // locals: 4 x i32 (p=7, b=8, c=9, d=10), 4 x i64 (11..14)
  ...loadQuery(11),
  0x02, 0x40, // block
  0x20, 0x07, 0x20, 0x02, 0x4f, 0x0d, 0x00, // p >= n -> exit
  0x03, 0x40, // loop
  0x20, 0x01, 0x20, 0x07, 0x6a, 0x41, 0x05, 0x74, 0x20, 0x06, 0x6a, 0x21, 0x08, // b = ((start + p) << 5) + wb
  ...popcount256(8, 11),
  0xa7, 0x22, 0x0a, // d = i32.wrap_i64 (local.tee)
  0x20, 0x05, 0x4d, // d <= bound
  0x04, 0x40, // if
  0x20, 0x03, 0x20, 0x09, 0x41, 0x02, 0x74, 0x6a, // outIds + (c << 2)
  0x20, 0x01, 0x20, 0x07, 0x6a, // start + p
  0x36, 0x02, 0x00, // i32.store
  0x20, 0x04, 0x20, 0x09, 0x6a, 0x20, 0x0a, 0x3a, 0x00, 0x00, // i32.store8 (outD + c) d
  0x20, 0x09, 0x41, 0x01, 0x6a, 0x21, 0x09, // c++
  0x0b, // end if
  0x20, 0x07, 0x41, 0x01, 0x6a, 0x22, 0x07, 0x20, 0x02, 0x49, 0x0d, 0x00, // ++p < n -> loop
  0x0b, 0x0b,
  0x20, 0x09, // c
  0x0b,
];

export function kernelModuleBytes(): Uint8Array {
  const leb = (v: number): number[] => {
    const o: number[] = [];
    do {
      o.push((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
      v >>>= 7;
    } while (v);
    return o;
  };
  const sec = (id: number, body: number[]) => [id, ...leb(body.length), ...body];
  const name = (s: string) => [s.length, ...Array.from(s, (c) => c.charCodeAt(0))];
  const I32 = 0x7f;
  return Uint8Array.from([
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00,
    // types: 0 = (i32 x 5) -> (), 1 = (i32 x 7) -> i32
    ...sec(1, [0x02, 0x60, 0x05, I32, I32, I32, I32, I32, 0x00, 0x60, 0x07, I32, I32, I32, I32, I32, I32, I32, 0x01, I32]),
    ...sec(2, [0x01, ...name('env'), ...name('mem'), 0x02, 0x00, 0x01]),
    ...sec(3, [0x02, 0x00, 0x01]),
    ...sec(7, [0x02, ...name('dists'), 0x00, 0x00, ...name('scan'), 0x00, 0x01]),
    ...sec(10, [0x02, ...leb(KERNEL_BODY.length), ...KERNEL_BODY, ...leb(SCAN_BODY.length), ...SCAN_BODY]),
  ]);
}

/** True when the WebAssembly kernel can be used here (DescriptorIndex.usesWasm, before building one). */
export function wasmKernelAvailable(): boolean {
  return getKernelModule() !== null;
}

type Kernel = (q: number, ids: number, n: number, out: number, wbase: number) => void;
type ScanKernel = (q: number, start: number, n: number, outIds: number, outD: number, bound: number, wbase: number) => number;
let kernelModule: object | null | undefined;
function getKernelModule(): object | null {
  if (kernelModule === undefined) {
    try {
      kernelModule = WASM ? new WASM.Module(kernelModuleBytes()) : null;
    } catch {
      kernelModule = null;
    }
  }
  return kernelModule;
}

/** Candidates per kernel call (scratch size). */
const CHUNK = 16384;
const Q_OFF = 0; // query (32 bytes)
const IDS_OFF = 64; // CHUNK x i32
const OUT_OFF = IDS_OFF + CHUNK * 4; // CHUNK x u8
const W_OFF = OUT_OFF + CHUNK; // descriptors (multiple of 64)
const PAGE = 65536;

// ----------------------------------------------------------------------------- index

interface Csr {
  /** Bucket offsets (buckets + 1; empty in a keyed table). */
  off: Uint32Array;
  /** Descriptor ids sorted by bucket. */
  ids: Int32Array;
  /** Delta tables only: the full key of each entry (buckets are hashed). */
  keys: Uint32Array | null;
  shift: number; // delta: bucket = (key * golden) >>> shift; keyed: first slot tried, the same way
  /**
   * Keyed tables (the main part of a small index): an open-addressing directory of the keys
   * present, slot h at [2h] = key (EMPTY_KEY when free) and [2h + 1] = where its ids start in
   * `ids`; they end where slot h + 1's start (slots h + 1 .. 2S hold prefix sums for that).
   */
  dir?: Uint32Array;
  /** Slots - 1 (a power of two minus one). */
  mask?: number;
}

const EMPTY_KEY = 0xffffffff;

/** A keyed table's slot for key k: the one holding it, or the free one where it would go (linear probing). */
function keySlot(dir: Uint32Array, k: number, shift: number, mask: number): number {
  let h = Math.imul(k, 0x9e3779b1) >>> shift;
  while (dir[2 * h] !== k && dir[2 * h] !== EMPTY_KEY) h = (h + 1) & mask;
  return h;
}

export class DescriptorIndex {
  private readonly m: number;
  private readonly L: number;
  private readonly maxBucketOpt: number | undefined;
  private readonly sparseTables: boolean;
  private readonly exactOnly: boolean;
  /** Buckets larger than this are skipped (set at each full build; see DescriptorIndexOptions.maxBucket). */
  private maxBucket = 0;
  /** Per table: the key's bit positions (0..255). */
  private readonly bits: Uint8Array[];
  private main: Csr[] = [];
  private delta: Csr[] = [];
  private nMain = 0;
  private n = 0;
  private dead = 0;
  private labels: Int32Array;
  // Storage: in WebAssembly memory when the kernel is used, else a plain array.
  private mem: WasmMemory | null = null;
  private kernel: Kernel | null = null;
  private scanKernel: ScanKernel | null = null;
  private W!: Uint32Array; // descriptor words (view)
  private scratchIds!: Int32Array;
  private scratchOut!: Uint8Array;
  private scratchQ!: Uint32Array;
  private readonly keysScratch: Uint32Array;
  /** Per main table: the query's bucket as [rangeFrom, rangeTo) in its ids (search's scratch). */
  private readonly rangeFrom: Uint32Array;
  private readonly rangeTo: Uint32Array;

  /**
   * @param words  packed descriptors, 8 words each (see packDescriptorWords); copied
   * @param labels per-descriptor label (e.g. character index; -1 = removed); copied
   */
  constructor(words: Uint32Array, labels: Int32Array, opts: DescriptorIndexOptions = {}) {
    const n = Math.floor(words.length / DESCRIPTOR_WORDS);
    if (labels.length < n) throw new Error(`DescriptorIndex: ${labels.length} labels for ${n} descriptors`);
    this.m = opts.tables ?? 24;
    this.L = opts.keyBits ?? 20;
    if (!Number.isInteger(this.m) || this.m < 1 || this.m > 64) throw new Error(`DescriptorIndex: tables must be 1..64, got ${this.m}`);
    if (!Number.isInteger(this.L) || this.L < 8 || this.L > 22) throw new Error(`DescriptorIndex: keyBits must be 8..22, got ${this.L}`);
    this.maxBucketOpt = opts.maxBucket;
    this.sparseTables = opts.sparseTables ?? true;
    this.exactOnly = opts.exactOnly ?? false;
    this.bits = assignBits(this.m, this.L, opts.seed ?? 1);
    this.keysScratch = new Uint32Array(this.m);
    this.rangeFrom = new Uint32Array(this.m);
    this.rangeTo = new Uint32Array(this.m);
    const mod = opts.wasm === false ? null : getKernelModule();
    if (mod) {
      this.mem = new WASM!.Memory({ initial: Math.ceil((W_OFF + n * 32 + 64) / PAGE) + 1 });
      const inst = new WASM!.Instance(mod, { env: { mem: this.mem } });
      this.kernel = inst.exports.dists as unknown as Kernel;
      this.scanKernel = inst.exports.scan as unknown as ScanKernel;
    }
    this.labels = new Int32Array(Math.max(16, n));
    this.ensureCapacity(n);
    this.W.set(words.subarray(0, n * DESCRIPTOR_WORDS));
    this.labels.set(labels.subarray(0, n));
    this.n = n;
    for (let j = 0; j < n; j++) if (labels[j] < 0) this.dead++;
    this.rebuildMain();
  }

  /** Descriptors held (live and removed). */
  get size(): number {
    return this.n;
  }

  /** Descriptors not removed. */
  get liveCount(): number {
    return this.n - this.dead;
  }

  /** True when the WebAssembly kernel computes the distances. */
  get usesWasm(): boolean {
    return this.kernel !== null;
  }

  /** Bytes held (descriptor copy, labels, tables). */
  get memoryBytes(): number {
    let b = this.W.byteLength + this.labels.byteLength;
    for (const c of [...this.main, ...this.delta]) b += c.off.byteLength + c.ids.byteLength + (c.keys?.byteLength ?? 0) + (c.dir?.byteLength ?? 0);
    return b;
  }

  /** Largest bucket over all main tables (a skew diagnostic). */
  get largestBucket(): number {
    let max = 0;
    for (const { off, dir } of this.main) {
      if (dir) {
        for (let h = 0; 2 * h + 3 < dir.length; h++) max = Math.max(max, dir[2 * h + 3] - dir[2 * h + 1]);
        continue;
      }
      for (let k = 0; k + 1 < off.length; k++) max = Math.max(max, off[k + 1] - off[k]);
    }
    return max;
  }

  /** The stored descriptor words (a view; valid until the next append). */
  get words(): Uint32Array {
    return this.W.subarray(0, this.n * DESCRIPTOR_WORDS);
  }

  /**
   * Appends descriptors (ids size .. size + count - 1). Cheap while the appended part is small
   * (its own small tables are rebuilt); rebuilds everything when it exceeds a quarter of the rest.
   */
  append(words: Uint32Array, labels: Int32Array, count: number): void {
    if (words.length < count * DESCRIPTOR_WORDS || labels.length < count) throw new Error('DescriptorIndex.append: arrays too short');
    this.ensureCapacity(this.n + count);
    this.W.set(words.subarray(0, count * DESCRIPTOR_WORDS), this.n * DESCRIPTOR_WORDS);
    this.labels.set(labels.subarray(0, count), this.n);
    for (let j = 0; j < count; j++) if (labels[j] < 0) this.dead++;
    this.n += count;
    if (this.n - this.nMain > Math.max(4096, this.nMain / 4)) this.rebuildMain();
    else this.rebuildDelta();
  }

  /** Marks descriptors from .. to-1 removed (they are skipped from now on). */
  remove(from: number, to: number): void {
    for (let j = Math.max(0, from); j < Math.min(to, this.n); j++) {
      if (this.labels[j] >= 0) {
        this.labels[j] = -1;
        this.dead++;
      }
    }
  }

  private ensureCapacity(n: number): void {
    const cur = this.W ? this.W.length / DESCRIPTOR_WORDS : -1;
    if (n <= cur) return;
    const cap = Math.max(n, cur > 0 ? Math.ceil(cur * 1.5) : n, 16);
    const old = this.W;
    if (this.mem) {
      const need = W_OFF + cap * 32;
      if (need > this.mem.buffer.byteLength) this.mem.grow(Math.ceil((need - this.mem.buffer.byteLength) / PAGE));
      const buf = this.mem.buffer;
      this.W = new Uint32Array(buf, W_OFF, cap * DESCRIPTOR_WORDS);
      this.scratchIds = new Int32Array(buf, IDS_OFF, CHUNK);
      this.scratchOut = new Uint8Array(buf, OUT_OFF, CHUNK);
      this.scratchQ = new Uint32Array(buf, Q_OFF, DESCRIPTOR_WORDS);
    } else {
      this.W = new Uint32Array(cap * DESCRIPTOR_WORDS);
      if (old) this.W.set(old.subarray(0, this.n * DESCRIPTOR_WORDS));
      this.scratchIds ??= new Int32Array(CHUNK);
      this.scratchOut ??= new Uint8Array(CHUNK);
      this.scratchQ ??= new Uint32Array(DESCRIPTOR_WORDS);
    }
    if (this.labels.length < cap) {
      const l = new Int32Array(cap);
      l.set(this.labels.subarray(0, this.n));
      this.labels = l;
    }
  }

  private keyOf(W: Uint32Array, j: number, t: number): number {
    const b = this.bits[t];
    const base = j * DESCRIPTOR_WORDS;
    let k = 0;
    for (let i = 0; i < b.length; i++) {
      const bit = b[i];
      k |= ((W[base + (bit >>> 5)] >>> (bit & 31)) & 1) << i;
    }
    return k >>> 0;
  }

  private rebuildMain(): void {
    const n = this.n;
    const nb = 1 << this.L;
    this.main = [];
    this.delta = [];
    this.nMain = n;
    this.maxBucket = this.maxBucketOpt ?? Math.max(MIN_BUCKET_CAP, Math.round((BUCKET_CAP_FACTOR * n) / nb));
    if (this.exactOnly) return;
    if (this.sparseTables && n * SPARSE_FACTOR < nb) {
      // Far fewer descriptors than buckets (a small library): 2^keyBits offsets per table would be
      // mostly empty (4 MiB each at 20 bits) and slow to build. A directory of the keys present
      // instead (keyedTables): a query gets the same candidates, in the same order.
      this.main = this.keyedTables(n);
      return;
    }
    const keys = new Uint32Array(n);
    for (let t = 0; t < this.m; t++) {
      const off = new Uint32Array(nb + 1);
      for (let j = 0; j < n; j++) {
        const k = this.keyOf(this.W, j, t);
        keys[j] = k;
        off[k + 1]++;
      }
      for (let k = 0; k < nb; k++) off[k + 1] += off[k];
      const fill = off.slice(0, nb);
      const ids = new Int32Array(n);
      for (let j = 0; j < n; j++) ids[fill[keys[j]]++] = j;
      this.main.push({ off, ids, keys: null, shift: 0 });
    }
  }

  private rebuildDelta(): void {
    const from = this.nMain;
    const nd = this.n - from;
    this.delta = [];
    if (nd <= 0 || this.exactOnly) return;
    const hb = Math.min(this.L, Math.max(4, Math.ceil(Math.log2(nd)) + 1));
    const nb = 1 << hb;
    const shift = 32 - hb;
    const keys = new Uint32Array(nd);
    const hk = new Uint32Array(nd);
    for (let t = 0; t < this.m; t++) {
      const off = new Uint32Array(nb + 1);
      for (let i = 0; i < nd; i++) {
        const k = this.keyOf(this.W, from + i, t);
        keys[i] = k;
        hk[i] = Math.imul(k, 0x9e3779b1) >>> shift;
        off[hk[i] + 1]++;
      }
      for (let k = 0; k < nb; k++) off[k + 1] += off[k];
      const fill = off.slice(0, nb);
      const ids = new Int32Array(nd);
      const kk = new Uint32Array(nd);
      for (let i = 0; i < nd; i++) {
        const p = fill[hk[i]]++;
        ids[p] = from + i;
        kk[p] = keys[i];
      }
      this.delta.push({ off, ids, keys: kk, shift });
    }
  }

  /**
   * Keyed tables over descriptors 0 .. n-1: per table, a directory of the keys present (about
   * twice as many slots as descriptors, linear probing), and the ids of each key in ascending
   * order, as a full table's bucket lists them: the same candidates, in the same order.
   */
  private keyedTables(n: number): Csr[] {
    const bits = Math.max(4, Math.ceil(Math.log2(Math.max(1, n))) + 1);
    const S = 1 << bits;
    const mask = S - 1;
    const shift = 32 - bits; // the product's high bits (Fibonacci hashing; its low bits repeat the key's)
    const slotOf = new Uint32Array(n);
    const tables: Csr[] = [];
    for (let t = 0; t < this.m; t++) {
      const dir = new Uint32Array(2 * S + 2);
      for (let h = 0; h < S; h++) dir[2 * h] = EMPTY_KEY;
      const count = new Uint32Array(S);
      for (let j = 0; j < n; j++) {
        const k = this.keyOf(this.W, j, t);
        const h = keySlot(dir, k, shift, mask);
        dir[2 * h] = k;
        count[h]++;
        slotOf[j] = h;
      }
      let start = 0;
      for (let h = 0; h < S; h++) {
        dir[2 * h + 1] = start;
        start += count[h];
      }
      dir[2 * S + 1] = start;
      const fill = new Uint32Array(S);
      for (let h = 0; h < S; h++) fill[h] = dir[2 * h + 1];
      const ids = new Int32Array(n);
      for (let j = 0; j < n; j++) ids[fill[slotOf[j]]++] = j;
      tables.push({ off: new Uint32Array(0), ids, keys: null, shift, dir, mask });
    }
    return tables;
  }

  /**
   * Runs `onChunk` over the candidate ids of query qi (or every descriptor when exact), with
   * their distances in scratchOut. Returns the number of candidates.
   */
  private search(queries: Uint32Array, qi: number, exact: boolean, onChunk: (count: number) => void, reach: () => number): number {
    const Q = this.scratchQ;
    for (let w = 0; w < DESCRIPTOR_WORDS; w++) Q[w] = queries[qi * DESCRIPTOR_WORDS + w];
    const S = this.scratchIds;
    let c = 0;
    let total = 0;
    const flush = (): void => {
      this.distances(c);
      onChunk(c);
      total += c;
      c = 0;
    };
    if (exact && this.scanKernel) {
      // Every descriptor in the kernel, a chunk at a time; only those within reach (which narrows
      // as the answer improves) come back to onChunk, in ascending id as below.
      for (let j = 0; j < this.n; j += CHUNK) {
        const n = Math.min(CHUNK, this.n - j);
        const found = this.scanKernel(Q_OFF, j, n, IDS_OFF, OUT_OFF, reach(), W_OFF);
        if (found > 0) onChunk(found);
        total += n;
      }
      return total;
    }
    if (exact) {
      for (let j = 0; j < this.n; j++) {
        S[c++] = j;
        if (c === CHUNK) flush();
      }
    } else {
      const keys = this.keysScratch;
      for (let t = 0; t < this.m; t++) keys[t] = this.keyOf(Q, 0, t);
      const cap = this.maxBucket;
      if (this.main.length > 0 && this.main[0].dir) {
        // keyed tables (a small index, in cache): find the key's slot, then its ids as from a full table
        for (let t = 0; t < this.main.length; t++) {
          const { ids, dir, mask, shift } = this.main[t];
          const h = keySlot(dir!, keys[t], shift, mask!);
          if (dir![2 * h] === EMPTY_KEY) continue;
          let p = dir![2 * h + 1];
          const e = dir![2 * h + 3];
          if (e - p > cap) continue;
          for (; p < e; p++) {
            S[c++] = ids[p];
            if (c === CHUNK) flush();
          }
        }
      } else {
        // Full tables: every table's bucket bounds first, then the buckets. The bounds' loads (a
        // cache miss each in a large index) are independent of each other and overlap, where
        // looking each bucket up just before walking it would wait for them one at a time.
        const from = this.rangeFrom;
        const to = this.rangeTo;
        for (let t = 0; t < this.main.length; t++) {
          const off = this.main[t].off;
          const k = keys[t];
          const p = off[k];
          const e = off[k + 1];
          from[t] = p;
          to[t] = e - p > cap ? p : e;
        }
        for (let t = 0; t < this.main.length; t++) {
          const ids = this.main[t].ids;
          for (let p = from[t], e = to[t]; p < e; p++) {
            S[c++] = ids[p];
            if (c === CHUNK) flush();
          }
        }
      }
      for (let t = 0; t < this.delta.length; t++) {
        const { off, ids, keys: kk, shift } = this.delta[t];
        const k = keys[t];
        const h = Math.imul(k, 0x9e3779b1) >>> shift;
        for (let p = off[h], e = off[h + 1]; p < e; p++) {
          if (kk![p] !== k) continue;
          S[c++] = ids[p];
          if (c === CHUNK) flush();
        }
      }
    }
    if (c > 0) flush();
    return total;
  }

  /** scratchOut[p] = distance(query, scratchIds[p]) for p < count. */
  private distances(count: number): void {
    if (this.kernel) {
      this.kernel(Q_OFF, IDS_OFF, count, OUT_OFF, W_OFF);
      return;
    }
    const W = this.W, S = this.scratchIds, O = this.scratchOut, Q = this.scratchQ, P = POPCNT16;
    const q0 = Q[0], q1 = Q[1], q2 = Q[2], q3 = Q[3], q4 = Q[4], q5 = Q[5], q6 = Q[6], q7 = Q[7];
    let x = 0;
    for (let p = 0; p < count; p++) {
      const o8 = S[p] * 8;
      O[p] =
        P[(x = W[o8] ^ q0) & 0xffff] + P[x >>> 16] +
        P[(x = W[o8 + 1] ^ q1) & 0xffff] + P[x >>> 16] +
        P[(x = W[o8 + 2] ^ q2) & 0xffff] + P[x >>> 16] +
        P[(x = W[o8 + 3] ^ q3) & 0xffff] + P[x >>> 16] +
        P[(x = W[o8 + 4] ^ q4) & 0xffff] + P[x >>> 16] +
        P[(x = W[o8 + 5] ^ q5) & 0xffff] + P[x >>> 16] +
        P[(x = W[o8 + 6] ^ q6) & 0xffff] + P[x >>> 16] +
        P[(x = W[o8 + 7] ^ q7) & 0xffff] + P[x >>> 16];
    }
  }

  /**
   * For each query descriptor: the nearest live reference descriptor (ties: lowest id) and the
   * nearest one with a different label than it. Distances >= bound are not tracked (reported as bound).
   */
  nearestOtherLabel(queries: Uint32Array, count: number, opts: { bound?: number; exact?: boolean } = {}): NearestOtherResult {
    const bound = opts.bound ?? 257;
    const i1s = new Int32Array(count).fill(-1);
    const d1s = new Int32Array(count).fill(bound);
    const dBs = new Int32Array(count).fill(bound);
    let candidates = 0;
    const L = this.labels;
    const S = this.scratchIds;
    let dA = bound, iA = -1, cA = -1, dB = bound;
    const onChunk = (c: number): void => {
      const O = this.scratchOut;
      for (let p = 0; p < c; p++) {
        const d = O[p];
        // Only d < dB, or d == dA (a tie with the best: the lowest id wins), can change anything.
        if (d >= bound || (d > dA && d >= dB)) continue;
        const j = S[p];
        const l = L[j];
        if (l < 0) continue;
        if (l === cA) {
          if (d < dA || (d === dA && j < iA)) {
            dA = d;
            iA = j;
          }
        } else if (d < dA || (d === dA && j < iA)) {
          dB = dA;
          dA = d;
          iA = j;
          cA = l;
        } else if (d < dB) {
          dB = d;
        }
      }
    };
    // Farthest distance that can still change the answer: d < bound, and d <= dB (a candidate
    // beyond dB and dA changes nothing; at dB it may still tie with dA).
    const reach = (): number => Math.min(bound - 1, dB);
    for (let qi = 0; qi < count; qi++) {
      dA = bound; iA = -1; cA = -1; dB = bound;
      candidates += this.search(queries, qi, !!opts.exact, onChunk, reach);
      i1s[qi] = iA;
      d1s[qi] = dA;
      dBs[qi] = dB;
    }
    return { i1: i1s, d1: d1s, dB: dBs, candidates };
  }

  /** The k nearest live reference descriptors of each query below `bound` (ascending distance, then id). */
  knn(queries: Uint32Array, count: number, k: number, opts: { bound?: number; exact?: boolean } = {}): KnnResult {
    const bound = opts.bound ?? 257;
    const ids = new Int32Array(count * k).fill(-1);
    const dists = new Int32Array(count * k).fill(bound + 1);
    let candidates = 0;
    const topD = new Int32Array(k);
    const topI = new Int32Array(k);
    const L = this.labels;
    const S = this.scratchIds;
    const onChunk = (c: number): void => {
      const O = this.scratchOut;
      for (let p = 0; p < c; p++) {
        const d = O[p];
        if (d >= bound || d > topD[k - 1]) continue;
        const j = S[p];
        if (d === topD[k - 1] && j >= topI[k - 1] && topI[k - 1] >= 0) continue;
        if (L[j] < 0) continue;
        let dup = false;
        for (let t = 0; t < k; t++) if (topI[t] === j) dup = true;
        if (dup) continue;
        let q = k - 1;
        while (q > 0 && (topD[q - 1] > d || (topD[q - 1] === d && (topI[q - 1] > j || topI[q - 1] < 0)))) {
          topD[q] = topD[q - 1];
          topI[q] = topI[q - 1];
          q--;
        }
        topD[q] = d;
        topI[q] = j;
      }
    };
    // Farthest distance that can still enter the top k: d < bound and d <= the k-th distance.
    const reach = (): number => Math.min(bound - 1, topD[k - 1]);
    for (let qi = 0; qi < count; qi++) {
      topD.fill(bound + 1);
      topI.fill(-1);
      candidates += this.search(queries, qi, !!opts.exact, onChunk, reach);
      ids.set(topI, qi * k);
      dists.set(topD, qi * k);
    }
    return { ids, dists, candidates };
  }
}

/**
 * Bit positions of each table's key: a deterministic shuffle of 0..255, walked cyclically (each
 * bit used about tables * keyBits / 256 times, never twice in one key).
 */
function assignBits(m: number, L: number, seed: number): Uint8Array[] {
  const rnd = mulberry32(seed);
  const shuffled = (): number[] => {
    const a = Array.from({ length: 256 }, (_, i) => i);
    for (let i = 255; i > 0; i--) {
      const k = Math.floor(rnd() * (i + 1));
      [a[i], a[k]] = [a[k], a[i]];
    }
    return a;
  };
  let pool = shuffled();
  const out: Uint8Array[] = [];
  for (let t = 0; t < m; t++) {
    const key: number[] = [];
    while (key.length < L) {
      if (!pool.length) pool = shuffled();
      const b = pool.pop()!;
      if (key.includes(b)) pool.unshift(b);
      else key.push(b);
    }
    out.push(Uint8Array.from(key));
  }
  return out;
}
