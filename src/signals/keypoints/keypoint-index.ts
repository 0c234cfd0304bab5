/**
 * In-memory index of reference keypoints with Hamming matching and geometric
 * (similarity-transform) verification.
 *
 * Search: brute force (exact; in DescriptorIndex's WebAssembly kernel, or a JS loop without
 * WebAssembly) below HASHED_MIN_DESCRIPTORS live reference descriptors; above, a hashed index
 * (descriptor-index.ts: bit-sampling LSH, WebAssembly distance kernel) answers the same two
 * questions approximately (it can miss a neighbour, never invent a closer one): at 1,000
 * references (1 M descriptors) it keeps ~0.97 of brute force's verified inliers at ~1/1000 of
 * the cost (src/bench/perf/keypoints.ts). The hashed index is built on the first query after a
 * bulk load, then kept current incrementally: added references are appended to small side tables,
 * removed ones are skipped; it is rebuilt only when the appended part outgrows a quarter of it.
 *
 * Matching (per frame descriptor):
 *   d1 = distance to the nearest reference descriptor (any reference, normal or mirrored).
 *   d2 = distance to the nearest descriptor of a DIFFERENT character than the nearest one's.
 *   Keep the match if d1 <= maxDistance and d1 < ratio * d2.
 *   Fallback when no other character is registered (d2 undefined): d2 is the second-nearest
 *   descriptor that is not a near-duplicate of the nearest one, i.e. it belongs to another
 *   reference image, or to the other (mirrored/normal) appearance, or to a keypoint of the same
 *   appearance lying more than half a keypoint size away (ORB often detects one corner on
 *   two pyramid levels; those twins must not veto each other). It is searched among the 4
 *   nearest; if none of them qualifies the 4th-nearest distance is used (a conservative bound).
 *
 * Verification (per (referenceId, mirrored) group with >= minMatches matches):
 *   2-point RANSAC for a similarity (s, theta, tx, ty) from reference pixels to frame pixels.
 *   Hypotheses must be plausible (projected silhouette height within [minBoxFrac, maxBoxFrac] of
 *   the frame height, |theta| <= maxRotationDeg) and agree with the two sampled matches' ORB
 *   keypoint scale and orientation. Inliers: reprojection error below the threshold AND
 *   keypoint-size ratio within sizeTolerance of s AND orientation difference within
 *   angleToleranceDeg of theta; one-to-one in both frame and reference keypoints. The best
 *   hypothesis is refined by least squares on its inliers and re-scored.
 *
 * Hit: inliers >= minInliers (7) AND inliers spread over >= minCells (4) cells of a 6x6 grid on
 * the reference silhouette box; inlier score = 1 - exp(-(inliers - minInliers + 1) / 24), so 7
 * inliers -> 0.04, 20 -> 0.44, 40 -> 0.76, 80 -> 0.96. The floor was 10 inliers over 5 cells
 * before the appearance check existed; with the check carrying precision, the lower floor finds
 * small, re-encoded and captioned appearances (own accuracy benchmark: µAP 0.60 -> 0.73, near
 * copies AP 0.78 -> 0.85, new renditions 0.39 -> 0.56, look-alike alarms unchanged; the
 * look-alike test set still has none).
 *
 * Appearance check (open set): an unregistered look-alike drawn in the same style shares eyes,
 * cheek patch, chest badge and ears at similar relative positions, and verified with 25-55
 * inliers over 6-11 cells (scores up to 0.8) when it was not registered itself, so nothing in
 * the ratio test could veto it. So every surviving hypothesis is checked against the whole
 * silhouette (appearance.ts): the frame is resampled under the fitted transform onto a 64 px
 * template of the reference, and the doubled-angle gradient fields are compared by cosine
 * inside the silhouette mask. The score is multiplied by a ramp of that similarity a:
 * 0 at a <= minAppearance (0.4), 1 at a >= fullAppearance (0.7), linear in between. Measured
 * (test/unit/keypoints-lookalikes.test.ts and the CLI clips): true appearances 0.74-0.98 (small,
 * mirrored, tilted, hue-shifted, blurred, JPEG/H.264, 25-30 % occluded; lowest at 15 % of the
 * frame height and under occlusion), look-alikes 0.12-0.45. Skipped (score = inlier score) when
 * the reference has no template (format version 1) or the frame set carries no luma image.
 *
 * Unverified hits: the ramp weighs a hit's inlier score by at least unverifiedWeight (0.2), and a
 * hit at or below minAppearance is kept at that share, with `verified: false`, instead of being
 * dropped. Keypoints agreeing on one transform are evidence even when the whole silhouette does
 * not: a new pose of the character shares its head or badge, and shaded or shadowed sprites (3D
 * renders with soft, semi-transparent shadows) reach only 0.3-0.4 against their own template in a
 * busy frame. At 0.2 of the inlier score such a hit stays below the review threshold on its own
 * (look-alikes of the test set: at most 0.15), and the report calls it a likeness, never a copy.
 * Accuracy bench, 200 clips, 150 characters: see README, Benchmarks.
 */
import type { Box, KeypointSet } from './features';
import { DESCRIPTOR_BYTES } from './features';
import { compareAppearance } from './appearance';
import { DescriptorIndex, wasmKernelAvailable } from './descriptor-index';
import { mulberry32 } from '../../random';

export interface SimilarityTransform {
  /** Uniform scale: frame pixels per reference pixel. */
  scale: number;
  /** Rotation in radians (image coordinates, y down: positive = clockwise on screen). */
  rotation: number;
  tx: number;
  ty: number;
}

export interface KeypointHit {
  referenceId: string;
  characterId: string;
  /** True if the mirrored (horizontally flipped) appearance of the reference matched. */
  mirrored: boolean;
  /** Verified inliers (one-to-one). */
  inliers: number;
  /** Distinct cells of a GRID x GRID grid over the reference silhouette box that hold an inlier. */
  cells: number;
  /** Matches in this (reference, mirrored) group that survived the ratio test. */
  matches: number;
  /**
   * The inlier score 1 - exp(-(inliers - minInliers + 1) / scoreScale), times the appearance ramp
   * (see QueryOptions minAppearance / fullAppearance) or unverifiedWeight, whichever is larger:
   * in (0, 1].
   */
  score: number;
  /**
   * Whether the appearance check passed (or did not run): a copy. False when the keypoints agree
   * on a transform but the silhouette under it does not (appearance at or below minAppearance), and
   * the score is the down-weighted shape agreement (QueryOptions.unverifiedWeight): evidence of a
   * likeness, not a copy.
   */
  verified: boolean;
  /**
   * Appearance similarity of the frame under the fitted transform to the reference template
   * (doubled-angle gradient cosine over the visible silhouette, see appearance.ts), when the
   * check ran (the reference has a template and the frame carries its luma image).
   */
  appearance?: number;
  /** Maps reference pixel coordinates (of the matched appearance) to frame pixels. */
  transform: SimilarityTransform;
  /** The reference's silhouette bounding box projected into the frame (axis-aligned, frame pixels). */
  box: Box;
}

export interface QueryOptions {
  /** Lowe-style ratio against the nearest other-character descriptor (default 0.8). */
  ratio?: number;
  /** Absolute Hamming cap on d1, bits out of 256 (default 64). */
  maxDistance?: number;
  /** Minimum ratio-test survivors in a group before RANSAC runs (default 3). */
  minMatches?: number;
  /** Minimum verified inliers for a hit (default 10). */
  minInliers?: number;
  /**
   * Minimum spatial spread: inliers must fall in at least this many cells of a 6x6 grid over
   * the reference silhouette box (default 5). Look-alikes drawn in the same style match a
   * cluster of shared parts (eyes, badges) with many inliers in few cells.
   */
  minCells?: number;
  /** Score constant k in 1 - exp(-(inliers - minInliers + 1) / k) (default 24). */
  scoreScale?: number;
  /** Inlier threshold as a fraction of the projected silhouette diagonal (default 0.04) ... */
  inlierFraction?: number;
  /** ... clamped to [minInlierPx, maxInlierFrameFraction * frame diagonal] (defaults 3 px, 0.015). */
  minInlierPx?: number;
  maxInlierFrameFraction?: number;
  /** Plausible projected silhouette height as fractions of the frame height (defaults 0.05, 1.5). */
  minBoxFrac?: number;
  maxBoxFrac?: number;
  /** Maximum |rotation| in degrees (default 45; 180 disables). */
  maxRotationDeg?: number;
  /** Allowed keypoint-size ratio deviation factor vs the transform's scale (default 1.8). */
  sizeTolerance?: number;
  /** Allowed keypoint-orientation deviation vs the transform's rotation, degrees (default 30). */
  angleToleranceDeg?: number;
  /** RANSAC iterations per group (default 400; exhaustive when fewer pairs exist). */
  ransacIterations?: number;
  /** Seed for RANSAC sampling, for reproducibility (default 1). */
  seed?: number;
  /** Verify hits by appearance when both the reference template and the frame luma exist (default true). */
  appearanceCheck?: boolean;
  /** Appearance similarity at or below which a hit is dropped (default 0.4) ... */
  minAppearance?: number;
  /** ... and at or above which its score is not reduced; linear in between (default 0.7). */
  fullAppearance?: number;
  /**
   * The least the appearance ramp may weigh a hit's inlier score: a hit whose appearance check
   * fails still counts, unverified, at this share of its inlier score (default 0.2, so never above
   * 0.2; 0 drops it as before). See the header comment.
   */
  unverifiedWeight?: number;
}

export const QUERY_DEFAULTS: Required<QueryOptions> = {
  ratio: 0.8,
  maxDistance: 64,
  minMatches: 3,
  minInliers: 7,
  minCells: 4,
  scoreScale: 24,
  inlierFraction: 0.04,
  minInlierPx: 3,
  maxInlierFrameFraction: 0.015,
  minBoxFrac: 0.05,
  maxBoxFrac: 1.5,
  maxRotationDeg: 45,
  sizeTolerance: 1.8,
  angleToleranceDeg: 30,
  ransacIterations: 400,
  seed: 1,
  appearanceCheck: true,
  minAppearance: 0.4,
  fullAppearance: 0.7,
  unverifiedWeight: 0.2,
};

export interface ReferenceFeatures {
  referenceId: string;
  characterId: string;
  features: { normal: KeypointSet; mirrored: KeypointSet };
}

interface RefEntry {
  referenceId: string;
  characterId: string;
  charIdx: number;
  sets: [KeypointSet, KeypointSet]; // [normal, mirrored]
  /** Slot in refList and first descriptor in the flat arrays, once packed (-1 before). */
  slot: number;
  start: number;
}

/**
 * Below this many live reference descriptors matching is brute force (exact); at or above it,
 * hashed. Speed alone would switch much earlier: per 2,000-keypoint frame on the 2-core dev box,
 * the JS loop took 170 ms at 5k descriptors, 280 at 10k, 480 at 20k, 1,060 at 50k; hashed 6-21 ms
 * at all of these. Brute force now runs in the WebAssembly kernel, 4-5x faster (a later, slower
 * machine: 5k 177 -> 39 ms, 19k 693 -> 146 ms). The threshold keeps small libraries (up to ~20
 * references of 2 x 500 keypoints) exact, where a missed neighbour weighs most: on the perf
 * bench's synthetic references (12 frames of two of them, queried whole), hashing kept 0.88 /
 * 0.90 / 0.93 / 0.94 of brute force's inliers at 3 / 5 / 10 / 19 references, and the same
 * verified hits on 9 / 11 / 12 / 12 of the frames, for 42-125 -> 23-38 ms a frame.
 */
export const HASHED_MIN_DESCRIPTORS = 20_000;
/** Removed descriptors still held in the flat arrays before they are compacted. */
const MAX_DEAD_FRACTION = 0.25;

const WORDS = DESCRIPTOR_BYTES / 4;
const GRID = 6; // 8 x 32-bit words per ORB descriptor

/**
 * 16-bit popcount lookup table (64 KiB). In V8 two table loads per 32-bit word beat the
 * SWAR bit-twiddling popcount by ~2.5x (Math.imul and the shift chain do not get fused).
 */
const POPCNT16 = (() => {
  const t = new Uint8Array(65536);
  for (let i = 1; i < 65536; i++) t[i] = t[i >> 1] + (i & 1);
  return t;
})();

/** Pack 32-byte descriptors into 8 little-endian 32-bit words each. */
function packDescriptors(d: Uint8Array, n: number, out: Uint32Array, offsetWords: number): void {
  for (let i = 0; i < n * WORDS; i++) {
    const b = i * 4;
    out[offsetWords + i] = (d[b] | (d[b + 1] << 8) | (d[b + 2] << 16) | (d[b + 3] << 24)) >>> 0;
  }
}

export class KeypointIndex {
  private refs = new Map<string, RefEntry>();
  private charIds = new Map<string, number>();
  /** Flat arrays must be rebuilt from scratch (else only `pending` is appended). */
  private dirty = true;
  private pending: RefEntry[] = [];

  /**
   * Flat arrays over every packed descriptor in refList order (= insertion order); removed
   * references keep their slots (dChar = -1, skipped) until compaction.
   */
  private words = new Uint32Array(0);
  private dRef: Int32Array = new Int32Array(0); // slot in refList
  private dSet: Uint8Array = new Uint8Array(0); // 0 normal, 1 mirrored
  private dKp: Int32Array = new Int32Array(0); // keypoint index within the set
  private dChar: Int32Array = new Int32Array(0); // character index, -1 = removed
  private refList: RefEntry[] = [];
  private nDesc = 0; // packed descriptors (live + removed)
  private nDead = 0;
  private nChars = 0; // distinct characters among live references
  /** Hashed search over the same descriptor ids (null: brute force). */
  private hashed: DescriptorIndex | null = null;
  /**
   * Brute force through DescriptorIndex's exact search (its WebAssembly kernel hands back only the
   * descriptors near enough to matter): the same answers as the JS loop in match(), 4-5x faster
   * (19,000 descriptors, a 2,000-keypoint frame: 693 -> 146 ms). Null without WebAssembly.
   */
  private exact: DescriptorIndex | null = null;
  /** Force the matcher (tests, benchmarks); default: by library size (HASHED_MIN_DESCRIPTORS). */
  matcher: 'auto' | 'brute' | 'hashed' = 'auto';

  add(ref: ReferenceFeatures): void {
    const { normal, mirrored } = ref.features;
    for (const s of [normal, mirrored]) {
      if (s.descriptors.length < s.count * DESCRIPTOR_BYTES) throw new Error('KeypointIndex.add: descriptor array too short');
    }
    if (this.refs.has(ref.referenceId)) this.remove(ref.referenceId);
    let ci = this.charIds.get(ref.characterId);
    if (ci === undefined) {
      ci = this.charIds.size;
      this.charIds.set(ref.characterId, ci);
    }
    const e: RefEntry = { referenceId: ref.referenceId, characterId: ref.characterId, charIdx: ci, sets: [normal, mirrored], slot: -1, start: -1 };
    this.refs.set(ref.referenceId, e);
    this.pending.push(e);
  }

  remove(referenceId: string): void {
    const e = this.refs.get(referenceId);
    if (!e) return;
    this.refs.delete(referenceId);
    if (e.slot < 0) {
      this.pending = this.pending.filter((p) => p !== e);
      return;
    }
    // Packed: leave its descriptors in place, marked removed.
    const n = e.sets[0].count + e.sets[1].count;
    this.dChar.fill(-1, e.start, e.start + n);
    this.hashed?.remove(e.start, e.start + n);
    this.exact?.remove(e.start, e.start + n);
    this.nDead += n;
    if (this.nDead > MAX_DEAD_FRACTION * this.nDesc) this.dirty = true;
    this.nChars = this.characterCount;
  }

  has(referenceId: string): boolean {
    return this.refs.has(referenceId);
  }

  /** Number of references. */
  get size(): number {
    return this.refs.size;
  }

  /** Number of reference descriptors (normal + mirrored). */
  get descriptorCount(): number {
    let n = 0;
    for (const r of this.refs.values()) n += r.sets[0].count + r.sets[1].count;
    return n;
  }

  /** Number of distinct characters currently registered. */
  get characterCount(): number {
    return new Set(Array.from(this.refs.values(), (r) => r.characterId)).size;
  }

  /** Which matcher the next query uses. */
  get activeMatcher(): 'brute' | 'hashed' {
    this.rebuild();
    return this.hashed ? 'hashed' : 'brute';
  }

  private rebuild(): void {
    if (this.dirty) this.repack();
    else if (this.pending.length) this.appendPending();
    this.nChars = this.characterCount;
    const live = this.nDesc - this.nDead;
    const wantHashed = this.matcher === 'hashed' || (this.matcher === 'auto' && live >= HASHED_MIN_DESCRIPTORS);
    if (!wantHashed) {
      this.hashed = null;
      if (!this.exact && this.nDesc > 0 && wasmKernelAvailable()) {
        this.exact = new DescriptorIndex(this.words.subarray(0, this.nDesc * WORDS), this.dChar, { exactOnly: true });
      }
    } else {
      this.exact = null;
      if (!this.hashed) this.hashed = new DescriptorIndex(this.words.subarray(0, this.nDesc * WORDS), this.dChar);
    }
  }

  /** Everything from scratch (first use, or too many removed descriptors). */
  private repack(): void {
    for (const r of this.refs.values()) r.slot = r.start = -1;
    this.refList = [];
    this.nDesc = 0;
    this.nDead = 0;
    this.hashed = null;
    this.exact = null;
    this.pending = Array.from(this.refs.values());
    this.words = new Uint32Array(0);
    this.dirty = false;
    this.appendPending();
  }

  /** Packs the references added since the last query after the existing ones. */
  private appendPending(): void {
    let add = 0;
    for (const r of this.pending) add += r.sets[0].count + r.sets[1].count;
    const from = this.nDesc;
    const n = from + add;
    if (n * WORDS > this.words.length) {
      const cap = Math.max(n, Math.ceil(this.nDesc * 1.5));
      const grow = <T extends Uint32Array | Int32Array | Uint8Array>(a: T, per: number, make: (len: number) => T): T => {
        const b = make(cap * per);
        b.set(a.subarray(0, from * per));
        return b;
      };
      this.words = grow(this.words, WORDS, (l) => new Uint32Array(l));
      this.dRef = grow(this.dRef, 1, (l) => new Int32Array(l));
      this.dSet = grow(this.dSet, 1, (l) => new Uint8Array(l));
      this.dKp = grow(this.dKp, 1, (l) => new Int32Array(l));
      this.dChar = grow(this.dChar, 1, (l) => new Int32Array(l));
    }
    let o = from;
    for (const r of this.pending) {
      r.slot = this.refList.length;
      r.start = o;
      this.refList.push(r);
      for (let si = 0; si < 2; si++) {
        const s = r.sets[si];
        packDescriptors(s.descriptors, s.count, this.words, o * WORDS);
        for (let k = 0; k < s.count; k++) {
          this.dRef[o + k] = r.slot;
          this.dSet[o + k] = si;
          this.dKp[o + k] = k;
          this.dChar[o + k] = r.charIdx;
        }
        o += s.count;
      }
    }
    this.pending = [];
    this.nDesc = n;
    if (this.hashed && add > 0) this.hashed.append(this.words.subarray(from * WORDS, n * WORDS), this.dChar.subarray(from, n), add);
    if (this.exact && add > 0) this.exact.append(this.words.subarray(from * WORDS, n * WORDS), this.dChar.subarray(from, n), add);
  }

  /** Find and verify the references visible in a frame. Hits sorted by score (best first). */
  query(frame: KeypointSet, opts: QueryOptions = {}): KeypointHit[] {
    const o: Required<QueryOptions> = { ...QUERY_DEFAULTS };
    for (const [k, v] of Object.entries(opts)) if (v !== undefined) (o as any)[k] = v;
    this.rebuild();
    if (this.nDesc - this.nDead === 0 || frame.count === 0) return [];
    const matches = this.match(frame, o);
    return this.verify(frame, matches, o);
  }

  // --------------------------------------------------------------------------- matching

  /** Ratio-test survivors: parallel arrays of frame keypoint, reference descriptor, distance. */
  private match(frame: KeypointSet, o: Required<QueryOptions>): { f: Int32Array; r: Int32Array; d: Int32Array; n: number } {
    if (this.hashed) return this.matchIndexed(this.hashed, frame, o, false);
    if (this.exact) return this.matchIndexed(this.exact, frame, o, true);
    const W = this.words;
    const N = this.nDesc;
    const dChar = this.dChar;
    const multiChar = this.nChars > 1;
    const P = POPCNT16;
    let x = 0;
    const q = new Uint32Array(WORDS);
    const fq = frame.descriptors;
    const cap = o.maxDistance;
    // If d2 >= ceil(cap / ratio) its exact value cannot change the decision for any d1 <= cap.
    const d2Enough = Math.ceil(cap / o.ratio) + 1;
    const outF = new Int32Array(frame.count);
    const outR = new Int32Array(frame.count);
    const outD = new Int32Array(frame.count);
    let nOut = 0;
    const K = 4;
    const topD = new Int32Array(K);
    const topI = new Int32Array(K);

    for (let fi = 0; fi < frame.count; fi++) {
      const b = fi * DESCRIPTOR_BYTES;
      for (let w = 0; w < WORDS; w++) {
        const p = b + w * 4;
        q[w] = (fq[p] | (fq[p + 1] << 8) | (fq[p + 2] << 16) | (fq[p + 3] << 24)) >>> 0;
      }
      const q0 = q[0], q1 = q[1], q2 = q[2], q3 = q[3], q4 = q[4], q5 = q[5], q6 = q[6], q7 = q[7];
      if (multiChar) {
        // best (d1, c1) and best among characters != c1 (dB).
        let d1 = 257;
        let i1 = -1;
        let c1 = -1;
        let dB = d2Enough;
        // Candidates at d >= bound cannot change the outcome: they are not nearer than d1 and
        // cannot bring dB down to d1 / ratio or below.
        let bound = d2Enough;
        for (let j = 0, o8 = 0; j < N; j++, o8 += 8) {
          // Hamming distance, first 128 bits (x is assigned before its high half is read:
          // JS evaluates + operands left to right).
          let d =
            P[(x = W[o8] ^ q0) & 0xffff] + P[x >>> 16] +
            P[(x = W[o8 + 1] ^ q1) & 0xffff] + P[x >>> 16] +
            P[(x = W[o8 + 2] ^ q2) & 0xffff] + P[x >>> 16] +
            P[(x = W[o8 + 3] ^ q3) & 0xffff] + P[x >>> 16];
          if (d >= bound) continue;
          d +=
            P[(x = W[o8 + 4] ^ q4) & 0xffff] + P[x >>> 16] +
            P[(x = W[o8 + 5] ^ q5) & 0xffff] + P[x >>> 16] +
            P[(x = W[o8 + 6] ^ q6) & 0xffff] + P[x >>> 16] +
            P[(x = W[o8 + 7] ^ q7) & 0xffff] + P[x >>> 16];
          if (d >= bound) continue;
          const c = dChar[j];
          if (c < 0) continue; // removed
          if (d < d1) {
            if (c !== c1) dB = d1 < dB ? d1 : dB;
            d1 = d;
            i1 = j;
            c1 = c;
          } else if (c !== c1) {
            dB = d;
          } else {
            continue;
          }
          const lim = Math.floor(d1 / o.ratio) + 1;
          bound = dB < lim ? dB : lim;
        }
        if (i1 >= 0 && d1 <= cap && d1 < o.ratio * dB) {
          outF[nOut] = fi;
          outR[nOut] = i1;
          outD[nOut] = d1;
          nOut++;
        }
      } else {
        // Single character: keep the K nearest, then pick the first non-twin as d2.
        topD.fill(257);
        topI.fill(-1);
        let bound = d2Enough;
        for (let j = 0, o8 = 0; j < N; j++, o8 += 8) {
          // Hamming distance, first 128 bits (x is assigned before its high half is read:
          // JS evaluates + operands left to right).
          let d =
            P[(x = W[o8] ^ q0) & 0xffff] + P[x >>> 16] +
            P[(x = W[o8 + 1] ^ q1) & 0xffff] + P[x >>> 16] +
            P[(x = W[o8 + 2] ^ q2) & 0xffff] + P[x >>> 16] +
            P[(x = W[o8 + 3] ^ q3) & 0xffff] + P[x >>> 16];
          if (d >= bound) continue;
          d +=
            P[(x = W[o8 + 4] ^ q4) & 0xffff] + P[x >>> 16] +
            P[(x = W[o8 + 5] ^ q5) & 0xffff] + P[x >>> 16] +
            P[(x = W[o8 + 6] ^ q6) & 0xffff] + P[x >>> 16] +
            P[(x = W[o8 + 7] ^ q7) & 0xffff] + P[x >>> 16];
          if (d >= bound || dChar[j] < 0) continue;
          let k = K - 1;
          while (k > 0 && topD[k - 1] > d) {
            topD[k] = topD[k - 1];
            topI[k] = topI[k - 1];
            k--;
          }
          topD[k] = d;
          topI[k] = j;
          bound = topD[K - 1];
        }
        const i1 = topI[0];
        const d1 = topD[0];
        if (i1 < 0 || d1 > cap) continue;
        let d2 = topD[K - 1];
        for (let k = 1; k < K; k++) {
          const j = topI[k];
          if (j < 0) break;
          if (!this.isTwin(i1, j)) {
            d2 = topD[k];
            break;
          }
        }
        if (d1 < o.ratio * d2) {
          outF[nOut] = fi;
          outR[nOut] = i1;
          outD[nOut] = d1;
          nOut++;
        }
      }
    }
    return { f: outF, r: outR, d: outD, n: nOut };
  }

  /**
   * match() through a DescriptorIndex: the same ratio test on its neighbours, approximate (the
   * hashed index) or exact (`exact`, brute force in its kernel).
   */
  private matchIndexed(h: DescriptorIndex, frame: KeypointSet, o: Required<QueryOptions>, exact: boolean): { f: Int32Array; r: Int32Array; d: Int32Array; n: number } {
    const q = new Uint32Array(frame.count * WORDS);
    packDescriptors(frame.descriptors, frame.count, q, 0);
    const cap = o.maxDistance;
    const d2Enough = Math.ceil(cap / o.ratio) + 1;
    const outF = new Int32Array(frame.count);
    const outR = new Int32Array(frame.count);
    const outD = new Int32Array(frame.count);
    let nOut = 0;
    if (this.nChars > 1) {
      const r = h.nearestOtherLabel(q, frame.count, { bound: d2Enough, exact });
      for (let fi = 0; fi < frame.count; fi++) {
        const d1 = r.d1[fi];
        if (r.i1[fi] >= 0 && d1 <= cap && d1 < o.ratio * r.dB[fi]) {
          outF[nOut] = fi;
          outR[nOut] = r.i1[fi];
          outD[nOut] = d1;
          nOut++;
        }
      }
    } else {
      const K = 4;
      const r = h.knn(q, frame.count, K, { bound: d2Enough, exact });
      for (let fi = 0; fi < frame.count; fi++) {
        const i1 = r.ids[fi * K];
        const d1 = r.dists[fi * K];
        if (i1 < 0 || d1 > cap) continue;
        let d2 = r.dists[fi * K + K - 1];
        for (let k = 1; k < K; k++) {
          const j = r.ids[fi * K + k];
          if (j < 0) break;
          if (!this.isTwin(i1, j)) {
            d2 = r.dists[fi * K + k];
            break;
          }
        }
        if (d1 < o.ratio * d2) {
          outF[nOut] = fi;
          outR[nOut] = i1;
          outD[nOut] = d1;
          nOut++;
        }
      }
    }
    return { f: outF, r: outR, d: outD, n: nOut };
  }

  /** Same appearance of the same reference and (nearly) the same spot: a pyramid-level twin. */
  private isTwin(a: number, b: number): boolean {
    if (this.dRef[a] !== this.dRef[b] || this.dSet[a] !== this.dSet[b]) return false;
    const s = this.refList[this.dRef[a]].sets[this.dSet[a]];
    const ka = this.dKp[a];
    const kb = this.dKp[b];
    const dx = s.xy[2 * ka] - s.xy[2 * kb];
    const dy = s.xy[2 * ka + 1] - s.xy[2 * kb + 1];
    const r = 0.5 * Math.max(s.size[ka], s.size[kb]);
    return dx * dx + dy * dy <= r * r;
  }

  // --------------------------------------------------------------------------- verification

  private verify(frame: KeypointSet, m: { f: Int32Array; r: Int32Array; d: Int32Array; n: number }, o: Required<QueryOptions>): KeypointHit[] {
    // Group by (reference slot, set).
    const groups = new Map<number, number[]>();
    for (let i = 0; i < m.n; i++) {
      const j = m.r[i];
      const key = this.dRef[j] * 2 + this.dSet[j];
      let g = groups.get(key);
      if (!g) groups.set(key, (g = []));
      g.push(i);
    }
    const hits: KeypointHit[] = [];
    const frameDiag = Math.hypot(frame.width, frame.height);
    const rng = mulberry32(o.seed);
    for (const [key, idx] of groups) {
      if (idx.length < Math.max(2, o.minMatches)) continue;
      const ref = this.refList[key >> 1];
      const mirrored = (key & 1) === 1;
      const set = ref.sets[key & 1];
      const n = idx.length;
      // Gather coordinates and local (per-match) scale / rotation estimates.
      const rx = new Float64Array(n), ry = new Float64Array(n), fx = new Float64Array(n), fy = new Float64Array(n);
      const lsz = new Float64Array(n); // log(sizeF / sizeR)
      const lang = new Float64Array(n); // angleF - angleR, radians, wrapped to (-pi, pi]
      const fk = new Int32Array(n), rk = new Int32Array(n), dist = new Int32Array(n);
      for (let t = 0; t < n; t++) {
        const i = idx[t];
        const f = m.f[i];
        const k = this.dKp[m.r[i]];
        fk[t] = f;
        rk[t] = k;
        dist[t] = m.d[i];
        rx[t] = set.xy[2 * k];
        ry[t] = set.xy[2 * k + 1];
        fx[t] = frame.xy[2 * f];
        fy[t] = frame.xy[2 * f + 1];
        lsz[t] = Math.log(Math.max(1e-3, frame.size[f]) / Math.max(1e-3, set.size[k]));
        lang[t] = wrapPi(((frame.angle[f] - set.angle[k]) * Math.PI) / 180);
      }
      const bbox = set.bbox ?? { x: 0, y: 0, width: set.width, height: set.height };
      const boxDiag = Math.hypot(bbox.width, bbox.height);
      const ctx: VerifyCtx = {
        n, rx, ry, fx, fy, lsz, lang, fk, rk, dist, o,
        frameH: frame.height, frameDiag, boxH: bbox.height, boxDiag,
        logSizeTol: Math.log(o.sizeTolerance),
        angTol: (o.angleToleranceDeg * Math.PI) / 180,
        maxRot: (o.maxRotationDeg * Math.PI) / 180,
        candI: new Int32Array(n),
        candE: new Float64Array(n),
        usedF: new Uint32Array(frame.count),
        usedR: new Uint32Array(set.count),
        stamp: 0,
      };

      let best: SimilarityTransform | null = null;
      let bestCount = 0;
      const totalPairs = (n * (n - 1)) / 2;
      const exhaustive = totalPairs <= o.ransacIterations;
      const iters = exhaustive ? totalPairs : o.ransacIterations;
      let a = 0;
      let b = 1;
      for (let it = 0; it < iters; it++) {
        let i: number, j: number;
        if (exhaustive) {
          i = a;
          j = b;
          if (++b >= n) {
            a++;
            b = a + 1;
          }
        } else {
          i = Math.floor(rng() * n);
          j = Math.floor(rng() * (n - 1));
          if (j >= i) j++;
        }
        if (fk[i] === fk[j] || rk[i] === rk[j]) continue;
        const T = fitTwo(rx[i], ry[i], fx[i], fy[i], rx[j], ry[j], fx[j], fy[j]);
        if (!T || !plausible(T, ctx)) continue;
        if (!locallyConsistent(T, i, ctx) || !locallyConsistent(T, j, ctx)) continue;
        const c = countInliers(T, ctx, null, bestCount);
        if (c > bestCount) {
          bestCount = c;
          best = T;
        }
      }
      if (!best || bestCount < Math.min(o.minInliers, 3)) continue;
      // Refine by least squares on the inliers (twice), keep the refinement unless it loses more
      // than 5 % (at least 1) of the inliers.
      let T = best;
      let count = bestCount;
      for (let r = 0; r < 2; r++) {
        const mask = new Uint8Array(n);
        countInliers(T, ctx, mask);
        const T2 = fitLeastSquares(ctx, mask);
        if (!T2 || !plausible(T2, ctx)) break;
        const c2 = countInliers(T2, ctx, null);
        // A 2-point hypothesis can be a few degrees off and still collect most inliers within the
        // threshold; the least-squares fit to them is the better estimate even when a match or
        // two on the threshold's edge drops out (the appearance check needs the better alignment).
        if (c2 < count - Math.max(1, Math.floor(0.05 * count))) break;
        T = T2;
        count = c2;
      }
      if (count < o.minInliers) continue;
      const finalMask = new Uint8Array(n);
      countInliers(T, ctx, finalMask);
      const cells = new Set<number>();
      for (let i = 0; i < n; i++) {
        if (!finalMask[i]) continue;
        const gx = Math.min(GRID - 1, Math.max(0, Math.floor(((rx[i] - bbox.x) / bbox.width) * GRID)));
        const gy = Math.min(GRID - 1, Math.max(0, Math.floor(((ry[i] - bbox.y) / bbox.height) * GRID)));
        cells.add(gy * GRID + gx);
      }
      if (cells.size < o.minCells) continue;
      const inlierScore = 1 - Math.exp(-(count - o.minInliers + 1) / o.scoreScale);
      let score = inlierScore;
      let verified = true;
      let appearance: number | undefined;
      if (o.appearanceCheck && set.template && frame.gray) {
        appearance = compareAppearance(frame.gray, T, set.template).similarity;
        const ramp = Math.min(1, Math.max(0, (appearance - o.minAppearance) / Math.max(1e-9, o.fullAppearance - o.minAppearance)));
        if (ramp <= 0) {
          if (!(o.unverifiedWeight > 0)) continue;
          verified = false;
        }
        score = inlierScore * Math.max(ramp, o.unverifiedWeight);
      }
      hits.push({
        referenceId: ref.referenceId,
        characterId: ref.characterId,
        mirrored,
        inliers: count,
        cells: cells.size,
        matches: n,
        score,
        verified,
        ...(appearance !== undefined ? { appearance } : {}),
        transform: T,
        box: projectBox(T, bbox),
      });
    }
    hits.sort((p, q) => q.score - p.score || q.inliers - p.inliers);
    return hits;
  }
}

// ----------------------------------------------------------------------------- geometry

interface VerifyCtx {
  n: number;
  rx: Float64Array;
  ry: Float64Array;
  fx: Float64Array;
  fy: Float64Array;
  lsz: Float64Array;
  lang: Float64Array;
  fk: Int32Array;
  rk: Int32Array;
  dist: Int32Array;
  o: Required<QueryOptions>;
  frameH: number;
  frameDiag: number;
  boxH: number;
  boxDiag: number;
  logSizeTol: number;
  angTol: number;
  maxRot: number;
  /** Scratch of countInliers: candidate inliers and their squared errors (by match index). */
  candI: Int32Array;
  candE: Float64Array;
  /** Frame / reference keypoints already taken in the current count: marked with `stamp`. */
  usedF: Uint32Array;
  usedR: Uint32Array;
  stamp: number;
}

function wrapPi(a: number): number {
  a = a % (2 * Math.PI);
  if (a > Math.PI) a -= 2 * Math.PI;
  else if (a <= -Math.PI) a += 2 * Math.PI;
  return a;
}

/** Similarity mapping (x1,y1)->(u1,v1), (x2,y2)->(u2,v2). */
function fitTwo(x1: number, y1: number, u1: number, v1: number, x2: number, y2: number, u2: number, v2: number): SimilarityTransform | null {
  const dx = x2 - x1;
  const dy = y2 - y1;
  const du = u2 - u1;
  const dv = v2 - v1;
  const l2 = dx * dx + dy * dy;
  if (l2 < 9 || du * du + dv * dv < 4) return null; // points too close to define scale/rotation
  // [u;v] = [a -b; b a][x;y] + t
  const a = (dx * du + dy * dv) / l2;
  const b = (dx * dv - dy * du) / l2;
  const scale = Math.hypot(a, b);
  const rotation = Math.atan2(b, a);
  return { scale, rotation, tx: u1 - (a * x1 - b * y1), ty: v1 - (b * x1 + a * y1) };
}

function plausible(T: SimilarityTransform, c: VerifyCtx): boolean {
  const h = T.scale * c.boxH;
  if (h < c.o.minBoxFrac * c.frameH || h > c.o.maxBoxFrac * c.frameH) return false;
  return Math.abs(T.rotation) <= c.maxRot + 1e-9;
}

function locallyConsistent(T: SimilarityTransform, i: number, c: VerifyCtx): boolean {
  if (Math.abs(c.lsz[i] - Math.log(T.scale)) > c.logSizeTol) return false;
  return Math.abs(wrapPi(c.lang[i] - T.rotation)) <= c.angTol;
}

function inlierThreshold(T: SimilarityTransform, c: VerifyCtx): number {
  const t = c.o.inlierFraction * T.scale * c.boxDiag;
  return Math.min(Math.max(t, c.o.minInlierPx), Math.max(c.o.minInlierPx, c.o.maxInlierFrameFraction * c.frameDiag));
}

/**
 * One-to-one inlier count: among geometrically and locally consistent matches, each frame
 * keypoint and each reference keypoint is used once (smallest reprojection error wins; ties: the
 * lower match index).
 *
 * With `beat` >= 0 (RANSAC's best count so far, no mask): when no more than `beat` matches are
 * even consistent, their number is returned as it stands, an upper bound of the one-to-one count
 * that cannot beat the best either; the caller's comparison comes out as with the exact count, and
 * most hypotheses skip the sort and the one-to-one pass.
 */
function countInliers(T: SimilarityTransform, c: VerifyCtx, mask: Uint8Array | null, beat = -1): number {
  const thr = inlierThreshold(T, c);
  const thr2 = thr * thr;
  const a = T.scale * Math.cos(T.rotation);
  const b = T.scale * Math.sin(T.rotation);
  const ls = Math.log(T.scale);
  // First pass: candidate inliers with their errors.
  const cand = c.candI;
  const err = c.candE;
  let nc = 0;
  for (let i = 0; i < c.n; i++) {
    const px = a * c.rx[i] - b * c.ry[i] + T.tx;
    const py = b * c.rx[i] + a * c.ry[i] + T.ty;
    const ex = px - c.fx[i];
    const ey = py - c.fy[i];
    const e2 = ex * ex + ey * ey;
    if (e2 > thr2) continue;
    if (Math.abs(c.lsz[i] - ls) > c.logSizeTol) continue;
    if (Math.abs(wrapPi(c.lang[i] - T.rotation)) > c.angTol) continue;
    err[i] = e2;
    cand[nc++] = i;
  }
  if (!mask && nc <= beat) return nc;
  const order = cand.subarray(0, nc);
  if (nc > 1) order.sort((p, q) => err[p] - err[q] || p - q);
  const usedF = c.usedF;
  const usedR = c.usedR;
  const stamp = ++c.stamp;
  let count = 0;
  for (let t = 0; t < nc; t++) {
    const i = order[t];
    if (usedF[c.fk[i]] === stamp || usedR[c.rk[i]] === stamp) continue;
    usedF[c.fk[i]] = stamp;
    usedR[c.rk[i]] = stamp;
    count++;
    if (mask) mask[i] = 1;
  }
  return count;
}

/** Least-squares similarity on the masked correspondences. */
function fitLeastSquares(c: VerifyCtx, mask: Uint8Array): SimilarityTransform | null {
  let n = 0, mx = 0, my = 0, mu = 0, mv = 0;
  for (let i = 0; i < c.n; i++) {
    if (!mask[i]) continue;
    n++;
    mx += c.rx[i];
    my += c.ry[i];
    mu += c.fx[i];
    mv += c.fy[i];
  }
  if (n < 2) return null;
  mx /= n;
  my /= n;
  mu /= n;
  mv /= n;
  let sxx = 0, sab = 0, sba = 0;
  for (let i = 0; i < c.n; i++) {
    if (!mask[i]) continue;
    const x = c.rx[i] - mx;
    const y = c.ry[i] - my;
    const u = c.fx[i] - mu;
    const v = c.fy[i] - mv;
    sxx += x * x + y * y;
    sab += x * u + y * v;
    sba += x * v - y * u;
  }
  if (sxx < 1e-9) return null;
  const a = sab / sxx;
  const b = sba / sxx;
  return { scale: Math.hypot(a, b), rotation: Math.atan2(b, a), tx: mu - (a * mx - b * my), ty: mv - (b * mx + a * my) };
}

function projectBox(T: SimilarityTransform, b: Box): Box {
  const a = T.scale * Math.cos(T.rotation);
  const s = T.scale * Math.sin(T.rotation);
  let x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
  for (const [x, y] of [
    [b.x, b.y],
    [b.x + b.width, b.y],
    [b.x, b.y + b.height],
    [b.x + b.width, b.y + b.height],
  ]) {
    const u = a * x - s * y + T.tx;
    const v = s * x + a * y + T.ty;
    x0 = Math.min(x0, u);
    y0 = Math.min(y0, v);
    x1 = Math.max(x1, u);
    y1 = Math.max(y1, v);
  }
  return { x: x0, y: y0, width: x1 - x0, height: y1 - y0 };
}
