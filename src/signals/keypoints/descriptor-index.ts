/**
 * Fast nearest-neighbour search over 256-bit ORB descriptors: multi-index hashing (MIH,
 * Norouzi et al.) with exact Hamming re-check of every candidate.
 *
 * The 256 bits are split into `substrings` (default 16) disjoint 16-bit substrings; each
 * substring has a hash table (CSR layout: bucket offsets + descriptor ids) keyed by its exact
 * value. A query looks up its own value in every table (and, with `probeRadius` 1, the 16
 * one-bit neighbours of it too), and every descriptor found is compared on all 256 bits.
 * By the pigeonhole principle a reference within Hamming distance < substrings * (probeRadius + 1)
 * of the query is always found (16 at radius 0, 32 at radius 1); farther ones are found when
 * one substring happens to agree, which for ORB true matches (typically 10-40 bits) is the
 * common case. So the search is exact for close neighbours and approximate beyond.
 *
 * Bits are assigned to substrings so that every substring gets a balanced mix of informative
 * (p(bit = 1) near 0.5) and skewed bits (ORB bits are far from uniform; a substring of only
 * skewed bits would pile most descriptors into a few huge buckets). The assignment is computed
 * from the data at build time.
 *
 * What it answers is exactly what KeypointIndex's ratio test needs:
 *   nearestOtherLabel(): the nearest descriptor (d1, its id) and the nearest descriptor whose
 *     label (character) differs from the nearest one's (dB), both capped at `bound`;
 *   knn(): the K nearest (distance, id), capped at `bound`.
 * Both have an `exact` mode (brute force over every descriptor, same answers format) for tests
 * and benchmarks.
 */

/** 16-bit popcount table (the same trick as keypoint-index.ts: two loads per 32-bit word). */
const POPCNT16 = (() => {
  const t = new Uint8Array(65536);
  for (let i = 1; i < 65536; i++) t[i] = t[i >> 1] + (i & 1);
  return t;
})();

export const DESCRIPTOR_WORDS = 8; // 8 x 32-bit little-endian words per 32-byte descriptor

export interface DescriptorIndexOptions {
  /** Number of 16-bit substrings/tables (1..16; default 16). Fewer tables: faster, lower recall. */
  substrings?: number;
  /** Also probe the buckets one bit away in each table (0 or 1; default 0). ~17x the lookups. */
  probeRadius?: 0 | 1;
  /** Balanced bit assignment from the data (default true); false = contiguous 16-bit halves of words. */
  balanceBits?: boolean;
}

export interface NearestOtherResult {
  /** Per query: id of the nearest descriptor, -1 if none below `bound`. */
  i1: Int32Array;
  /** Per query: its distance (bound when none). */
  d1: Int32Array;
  /** Per query: distance to the nearest descriptor of another label than i1's (bound when none found). */
  dB: Int32Array;
  /** Candidates compared on all 256 bits (a cost measure). */
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

export class DescriptorIndex {
  readonly size: number;
  private readonly m: number;
  private readonly radius: 0 | 1;
  /** Per table: the 16 bit positions (0..255) its key is made of. */
  private readonly bits: Uint8Array[];
  /** Per table: bucket start offsets (65537) and descriptor ids sorted by bucket. */
  private readonly offsets: Uint32Array[];
  private readonly ids: Int32Array[];
  /** Per-descriptor stamp of the last query that saw it (dedupes candidates across tables). */
  private readonly stamp: Uint32Array;
  private query = 0;

  /**
   * @param words  packed descriptors, 8 words each (see packDescriptorWords); not copied, do not mutate
   * @param labels per-descriptor label (e.g. character index) for nearestOtherLabel; not copied
   */
  constructor(
    private readonly words: Uint32Array,
    private readonly labels: Int32Array,
    opts: DescriptorIndexOptions = {},
  ) {
    const n = Math.floor(words.length / DESCRIPTOR_WORDS);
    if (labels.length < n) throw new Error(`DescriptorIndex: ${labels.length} labels for ${n} descriptors`);
    this.size = n;
    this.m = opts.substrings ?? 16;
    if (!Number.isInteger(this.m) || this.m < 1 || this.m > 16) throw new Error(`DescriptorIndex: substrings must be 1..16, got ${this.m}`);
    this.radius = opts.probeRadius ?? 0;
    this.bits = assignBits(words, n, this.m, opts.balanceBits ?? true);
    this.offsets = [];
    this.ids = [];
    const keys = new Uint16Array(n);
    for (let t = 0; t < this.m; t++) {
      const off = new Uint32Array(65537);
      for (let j = 0; j < n; j++) {
        const k = this.keyOf(words, j, t);
        keys[j] = k;
        off[k + 1]++;
      }
      for (let k = 0; k < 65536; k++) off[k + 1] += off[k];
      const fill = off.slice(0, 65536);
      const ids = new Int32Array(n);
      for (let j = 0; j < n; j++) ids[fill[keys[j]]++] = j;
      this.offsets.push(off);
      this.ids.push(ids);
    }
    this.stamp = new Uint32Array(n);
  }

  /** Bytes held by the tables (not counting the descriptors themselves). */
  get memoryBytes(): number {
    return this.m * (65537 * 4 + this.size * 4) + this.size * 4;
  }

  /** Largest bucket over all tables (a skew diagnostic). */
  get largestBucket(): number {
    let max = 0;
    for (const off of this.offsets) for (let k = 0; k < 65536; k++) max = Math.max(max, off[k + 1] - off[k]);
    return max;
  }

  private keyOf(W: Uint32Array, j: number, t: number): number {
    const b = this.bits[t];
    const base = j * DESCRIPTOR_WORDS;
    let k = 0;
    for (let i = 0; i < 16; i++) {
      const bit = b[i];
      k |= ((W[base + (bit >>> 5)] >>> (bit & 31)) & 1) << i;
    }
    return k;
  }

  /**
   * For each query descriptor: the nearest reference descriptor and the nearest one with a
   * different label than it. Distances >= bound are not tracked (reported as bound).
   */
  nearestOtherLabel(queries: Uint32Array, count: number, opts: { bound?: number; exact?: boolean } = {}): NearestOtherResult {
    const bound = opts.bound ?? 257;
    const i1s = new Int32Array(count).fill(-1);
    const d1s = new Int32Array(count).fill(bound);
    const dBs = new Int32Array(count).fill(bound);
    let candidates = 0;
    const W = this.words;
    const L = this.labels;
    const P = POPCNT16;
    // State of the current query, updated by `visit`.
    let dA = bound, iA = -1, cA = -1, dB = bound, lim = bound;
    let q0 = 0, q1 = 0, q2 = 0, q3 = 0, q4 = 0, q5 = 0, q6 = 0, q7 = 0;
    let x = 0;
    const visit = (j: number): void => {
      const o8 = j * 8;
      let d =
        P[(x = W[o8] ^ q0) & 0xffff] + P[x >>> 16] +
        P[(x = W[o8 + 1] ^ q1) & 0xffff] + P[x >>> 16] +
        P[(x = W[o8 + 2] ^ q2) & 0xffff] + P[x >>> 16] +
        P[(x = W[o8 + 3] ^ q3) & 0xffff] + P[x >>> 16];
      if (d >= lim) return;
      d +=
        P[(x = W[o8 + 4] ^ q4) & 0xffff] + P[x >>> 16] +
        P[(x = W[o8 + 5] ^ q5) & 0xffff] + P[x >>> 16] +
        P[(x = W[o8 + 6] ^ q6) & 0xffff] + P[x >>> 16] +
        P[(x = W[o8 + 7] ^ q7) & 0xffff] + P[x >>> 16];
      if (d >= lim) return;
      // Exact top-2 over distinct labels: (dA, cA) best overall, dB best with label != cA.
      const c = L[j];
      if (c === cA) {
        if (d < dA) {
          dA = d;
          iA = j;
        }
      } else if (d < dA) {
        dB = dA;
        dA = d;
        iA = j;
        cA = c;
      } else if (d < dB) {
        dB = d;
      }
      lim = dB; // nothing at >= dB can change dA (<= dB) or dB
    };
    for (let qi = 0; qi < count; qi++) {
      const b = qi * 8;
      q0 = queries[b]; q1 = queries[b + 1]; q2 = queries[b + 2]; q3 = queries[b + 3];
      q4 = queries[b + 4]; q5 = queries[b + 5]; q6 = queries[b + 6]; q7 = queries[b + 7];
      dA = bound; iA = -1; cA = -1; dB = bound; lim = bound;
      candidates += opts.exact ? this.scanAll(visit) : this.probe(queries, qi, visit);
      i1s[qi] = iA;
      d1s[qi] = dA;
      dBs[qi] = dB;
    }
    return { i1: i1s, d1: d1s, dB: dBs, candidates };
  }

  /** The k nearest reference descriptors of each query below `bound` (ascending distance, then id). */
  knn(queries: Uint32Array, count: number, k: number, opts: { bound?: number; exact?: boolean } = {}): KnnResult {
    const bound = opts.bound ?? 257;
    const ids = new Int32Array(count * k).fill(-1);
    const dists = new Int32Array(count * k).fill(bound + 1);
    let candidates = 0;
    const W = this.words;
    const P = POPCNT16;
    const topD = new Int32Array(k);
    const topI = new Int32Array(k);
    let lim = bound;
    let q0 = 0, q1 = 0, q2 = 0, q3 = 0, q4 = 0, q5 = 0, q6 = 0, q7 = 0;
    let x = 0;
    const visit = (j: number): void => {
      const o8 = j * 8;
      let d =
        P[(x = W[o8] ^ q0) & 0xffff] + P[x >>> 16] +
        P[(x = W[o8 + 1] ^ q1) & 0xffff] + P[x >>> 16] +
        P[(x = W[o8 + 2] ^ q2) & 0xffff] + P[x >>> 16] +
        P[(x = W[o8 + 3] ^ q3) & 0xffff] + P[x >>> 16];
      if (d > lim) return;
      d +=
        P[(x = W[o8 + 4] ^ q4) & 0xffff] + P[x >>> 16] +
        P[(x = W[o8 + 5] ^ q5) & 0xffff] + P[x >>> 16] +
        P[(x = W[o8 + 6] ^ q6) & 0xffff] + P[x >>> 16] +
        P[(x = W[o8 + 7] ^ q7) & 0xffff] + P[x >>> 16];
      if (d > lim) return;
      let p = k - 1;
      if (d > topD[p] || (d === topD[p] && j > topI[p])) return;
      while (p > 0 && (topD[p - 1] > d || (topD[p - 1] === d && topI[p - 1] > j))) {
        topD[p] = topD[p - 1];
        topI[p] = topI[p - 1];
        p--;
      }
      topD[p] = d;
      topI[p] = j;
      if (topI[k - 1] >= 0) lim = topD[k - 1];
    };
    for (let qi = 0; qi < count; qi++) {
      const b = qi * 8;
      q0 = queries[b]; q1 = queries[b + 1]; q2 = queries[b + 2]; q3 = queries[b + 3];
      q4 = queries[b + 4]; q5 = queries[b + 5]; q6 = queries[b + 6]; q7 = queries[b + 7];
      topD.fill(bound + 1);
      topI.fill(-1);
      lim = bound;
      candidates += opts.exact ? this.scanAll(visit) : this.probe(queries, qi, visit);
      ids.set(topI, qi * k);
      dists.set(topD, qi * k);
    }
    return { ids, dists, candidates };
  }

  private scanAll(visit: (j: number) => void): number {
    for (let j = 0; j < this.size; j++) visit(j);
    return this.size;
  }

  /** Visits every distinct descriptor sharing a (radius-r) substring with query qi; returns how many. */
  private probe(queries: Uint32Array, qi: number, visit: (j: number) => void): number {
    if (++this.query === 0xffffffff) {
      this.stamp.fill(0);
      this.query = 1;
    }
    const s = this.query;
    const stamp = this.stamp;
    let seen = 0;
    const maxFlip = this.radius === 1 ? 16 : 0;
    for (let t = 0; t < this.m; t++) {
      const key = this.keyOf(queries, qi, t);
      const off = this.offsets[t];
      const ids = this.ids[t];
      for (let flip = -1; flip < maxFlip; flip++) {
        const k = flip < 0 ? key : key ^ (1 << flip);
        for (let p = off[k], e = off[k + 1]; p < e; p++) {
          const j = ids[p];
          if (stamp[j] === s) continue;
          stamp[j] = s;
          seen++;
          visit(j);
        }
      }
    }
    return seen;
  }
}

/**
 * Assign the 256 bit positions to m substrings of 16 bits. Balanced: bits sorted by how far
 * p(1) is from 0.5 and dealt out round-robin (snake order), so each table mixes informative and
 * skewed bits. Unbalanced: table t takes bits 16t .. 16t+15.
 */
function assignBits(words: Uint32Array, n: number, m: number, balance: boolean): Uint8Array[] {
  const out: Uint8Array[] = [];
  if (!balance || n === 0) {
    for (let t = 0; t < m; t++) out.push(Uint8Array.from({ length: 16 }, (_, i) => t * 16 + i));
    return out;
  }
  const ones = new Float64Array(256);
  const step = Math.max(1, Math.floor(n / 20000)); // a sample is enough
  let seen = 0;
  for (let j = 0; j < n; j += step, seen++) {
    for (let w = 0; w < DESCRIPTOR_WORDS; w++) {
      const v = words[j * DESCRIPTOR_WORDS + w];
      for (let b = 0; b < 32; b++) ones[w * 32 + b] += (v >>> b) & 1;
    }
  }
  const order = Array.from({ length: 256 }, (_, i) => i).sort(
    (a, b) => Math.abs(ones[a] / seen - 0.5) - Math.abs(ones[b] / seen - 0.5) || a - b,
  );
  const tables: number[][] = Array.from({ length: m }, () => []);
  // Deal the most informative bits first, snake order, until every table has 16.
  let i = 0;
  for (let round = 0; round < 16; round++) {
    for (let s = 0; s < m; s++) {
      const t = round % 2 === 0 ? s : m - 1 - s;
      tables[t].push(order[i++]);
    }
  }
  for (const t of tables) out.push(Uint8Array.from(t));
  return out;
}
