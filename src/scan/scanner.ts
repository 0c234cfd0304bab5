/**
 * The scan use case: the only place that knows the order of the steps.
 * video → sampled frames → (keypoints → verified hits) + (embedding → nearest references)
 *       → per-frame, per-character observations → per-character results → report.
 * The CLI and the workers both call this; indexes are built once per Scanner and reused across clips.
 * With scanThreads > 1 the frames' ORB runs in a pool of worker threads, started as each frame is
 * decoded, while the main thread does the likeness windows and the matching of the previous batch.
 */
import { availableParallelism } from 'node:os';
import { checkMediaFile, probeVideo, sampleFrames, type FfmpegBinaries, type SampleOptions, resolveBinaries } from '../media/ffmpeg';
import { InvalidMediaError } from '../errors';
import type { Frame } from '../media/types';
import { aggregateClip, clipVerdict, DEFAULT_AGGREGATE, withLikenessReview, type AggregateParams } from '../matching/aggregate';
import { calibrateCosine } from '../matching/fuse';
import type { Box, FrameObservation, Verdict } from '../matching/types';
import type { Embedder } from '../signals/embedder';
import { extractFrameFeatures, frameLuma, type KeypointSet } from '../signals/keypoints';
import { ExtractPool, type PooledKeypointSet } from '../signals/keypoints/extract-pool';
import type { SearchHit } from '../signals/embedding/exact-index';
import { mulberry32 } from '../random';
import { objectnessOf } from '../signals/embedding/objectness';
import { cropWindows, frameWindows, type WindowScale } from './windows';
import { negativeOf, type ReferenceSet } from './reference-set';

export interface ScanOptions {
  sampling: SampleOptions;
  aggregate: AggregateParams;
  /** Cosine of the embedding model between unrelated images (→ 0) and identical ones (→ 1). */
  embeddingCalibration: { floor: number; ceil: number };
  maxKeypoints: number;
  /** Frames embedded per inference call. */
  batchSize: number;
  /** References retrieved per frame (or per window; 1 with windowWinnerOnly and no background margin) by the embedding index. */
  embeddingTopK: number;
  /**
   * For models that describe crops: window sides, as fractions of the frame height, each slid over
   * every frameStep-th sampled frame only (a window costs an inference).
   */
  windows: WindowScale[];
  /** Threads for the frames' keypoints (a worker pool); 1 = in the calling thread, one frame after the other. */
  scanThreads: number;
  /**
   * The keypoint tier on every sampled frame (1), or (2) on every other one, the odd-numbered, the
   * likeness windows' even-numbered ones in between, and on an even-numbered frame too where its
   * neighbours' verified hits call for it (keypointBetween): a clip where no registered drawing is
   * copied costs half the ORB. A neighbour in another batch counts only when it came before
   * (batches of an even size keep every pair together).
   */
  keypointFrameStep: 1 | 2;
  /**
   * With keypointFrameStep 2, which even-numbered frames the keypoint tier looks at too: `hits`,
   * those next to a frame with a verified hit (every frame around a copy); `edges`, only those
   * where a verified copy starts or ends, i.e. whose two neighbours verified different characters
   * (between two frames that verified the same ones the copy's segment spans the frame anyway).
   * A neighbour not yet decoded (the clip's or a batch's end) counts as `hits` would.
   */
  keypointBetween: 'hits' | 'edges';
  /**
   * Crop models: a window counts only for the character it resembles most (its nearest reference's
   * character, or that character's negative examples), not for every character among its nearest
   * references. In a large library many characters resemble any window a little; only the winner
   * keeps the window's evidence.
   */
  windowWinnerOnly: boolean;
  /**
   * Search beam of an approximate (HNSW) index for the windows' nearest reference; an exact index
   * ignores it. Frames of a frame model search with the index's own beam.
   */
  windowBeam: number;
  /**
   * Crop models with a dense form (manifest `dense`): windows up to this fraction of the frame
   * height share one pass of the network per window size over the scaled frame instead of one
   * inference per window crop (0: none, 1: all). Unset: the model's own (manifest `dense.upTo`: 1
   * for a model trained to see past its windows' edges, else 0).
   */
  denseUpTo?: number;
  /**
   * Crop models with an objectness probe (manifest `objectness`): windows whose probe score is under
   * this count as scenery and give no likeness evidence (0: every window counts). Unset: the model's
   * own floor (`objectness.floor`).
   */
  objectnessFloor?: number;
}

export const DEFAULT_SCAN_OPTIONS: ScanOptions = {
  sampling: { fps: 2, sceneThreshold: 0.3, maxFrames: 1200, maxDurationSec: 3600, maxWidth: 960, maxHeight: 960 },
  aggregate: DEFAULT_AGGREGATE,
  embeddingCalibration: { floor: 0.9, ceil: 1.0 },
  maxKeypoints: 4000,
  // 4: a batch is processed while the next is decoded, and the decoder waits once the next is full,
  // so smaller batches keep ffmpeg busier. The perf bench's frame pipeline (frozen frame model),
  // 15 runs each, interleaved: 8 → 4 → 2 frames a batch, ~0.76 → ~0.67 → ~0.62 s p50 (floor 0.51 s);
  // the default crop model's clip scan (12 and 8 runs each): 1.71 / 1.71 / 1.78 s on the bench clip,
  // 1.72 / 1.63 / 1.62 s on its clip without a registered character; again, the machine slower (12
  // each): 2.23 / 2.23 / 2.32 s and 1.67 / 1.61 / 1.54 s; the same reports.
  batchSize: 4,
  embeddingTopK: 64,
  // 0.9: characters over ~55 % of the frame height fit no 0.6 window (the accuracy bench's proposal
  // recall: a usable window for 20-28 % of such frames with [0.35, 0.6], 94-100 % with 0.9 added).
  // 0.25: characters under ~30 % of the frame height fill under half of a 0.35 window, less than the
  // descriptor was trained on. 200-clip accuracy bench, seed 1: µAP 0.766 without, 0.788 with 0.25
  // windows on every other frame (as the others), 0.785 on one frame in four (half the cost: 98
  // windows a frame, the 71 of the other sizes); seed 2: 0.771 → 0.787 (every other frame).
  windows: [
    { size: 0.25, frameStep: 4 },
    { size: 0.35, frameStep: 2 },
    { size: 0.6, frameStep: 2 },
    { size: 0.9, frameStep: 2 },
  ],
  scanThreads: availableParallelism(),
  // 2: re-scored from recorded 200-clip accuracy-bench scans (150 characters), against every frame:
  // µAP 0.806 → 0.805 (seed 1), 0.853 → 0.853 (seed 2), 0.786 → 0.780 (seed 3), the keypoint tier on
  // 61-63 % of the frames (the bench's clips show a character for under half their length); odd
  // frames alone, with no neighbours, cost temporal IoU 0.70-0.75 → 0.61-0.68. Seeds 1 and 3
  // scanned again with it read the re-scored figures exactly.
  keypointFrameStep: 2,
  // edges: re-scored from recorded 200-clip accuracy-bench scans (150 characters) against hits: µAP
  // 0.856 / 0.879 unchanged (seeds 1 / 2), temporal IoU 0.727 → 0.732 / 0.749 unchanged, the keypoint
  // tier on 58 / 57 % of the frames instead of 63 %; the perf bench's clip (copies on screen for
  // 9 of its 10 s) ORB on 15 of 20 frames instead of all, 2.24 → 1.96 s p50 (interleaved runs),
  // the same report.
  keypointBetween: 'edges',
  // 200-clip accuracy bench with 150 characters registered (as the held-out one): µAP 0.667 → 0.681
  // (seed 1) and 0.676 → 0.689 (seed 2); with the plans' 22 characters 0.787 either way (seed 1),
  // 0.794 → 0.780 (seed 2). Real libraries are larger than 22 characters.
  windowWinnerOnly: true,
  // `npm run bench -- --only search`: on v2-int8's vectors (6,000 synthetic characters' references,
  // 600 window crops) the nearest reference equals exact search's for 96.5 % of windows at beam 16,
  // 99.5 % at 32, 100 % at 64 and 128; a frame's 169 windows at 100 k references: 32 ms at 32,
  // 117 ms at 128.
  windowBeam: 64,
  // denseUpTo unset: the model's own (manifest dense.upTo). 200-clip accuracy bench, 150 characters,
  // µAP (seed 1 / seed 2): kagami-descriptor-v6-int8 (trained on crops alone) all as crops 0.803 /
  // 0.823, the 0.25 windows dense 0.802 / 0.817, all dense 0.785 / 0.807; kagami-descriptor-v8-int8
  // (v6 fine-tuned with its windows' surroundings in view; dense.upTo 1) all dense 0.816 / 0.826;
  // kagami-descriptor-v9-int8 (v8 fine-tuned again on fresh views) 0.805 / 0.853 (v8 0.811 / 0.825
  // in the same session, both with the decoder skipping non-reference frames);
  // kagami-descriptor-v10-int8 (v9 fine-tuned with Crossfire's monsters added) 0.811 / 0.857 / 0.795
  // (seed 3 too; v9 0.806 / 0.850 / 0.783 in the same session); kagami-descriptor-v11-int8 (v10
  // fine-tuned with Unknown Horizons' and Bos Wars' units added) 0.852 / 0.872 / 0.815 against
  // v10's 0.838 / 0.869 / 0.818, both with 8-bit weights and fifteen reference views.
};

export interface ReportMatch {
  characterId: string;
  name: string;
  owner: string;
  verdict: Verdict;
  score: number;
  kind: 'copy' | 'likeness';
  segments: Array<{ startSec: number; endSec: number }>;
  evidence: {
    timeSec: number;
    referenceImage: string;
    referenceId: string;
    similarity: number;
    inliers?: number;
    mirrored?: boolean;
    box?: { x: number; y: number; width: number; height: number };
  };
  framesMatched: number;
  reason: string;
}

export interface ScanReport {
  video: string;
  durationSec: number;
  framesSampled: number;
  verdict: Verdict;
  matches: ReportMatch[];
  model: string;
  /**
   * sha256 of the model file the likeness tier ran: which weights produced the scores (an int8
   * model runs its 7-bit or 8-bit weights by the CPU: signals/embedding/int8-weights.ts).
   */
  modelSha256?: string;
  elapsedSec: number;
}

export interface ScanProgress {
  framesDone: number;
  /** Expected number of sampled frames (an estimate: scene changes add some). */
  framesExpected: number;
}

export interface ScanRequest {
  file: string;
  /** Characters listed: those scoring at least this … */
  minScore: number;
  /** … at most this many, best first. */
  top: number;
  onProgress?: (p: ScanProgress) => void;
  /** Keeps the frame image of each character's evidence (for reviewers). */
  onEvidenceFrame?: (characterId: string, frame: Frame) => void;
  /** Filled with where the scan's time went (ms), for the bench. */
  stages?: ScanStages;
  /** Every frame observation of the clip, before aggregation (the accuracy bench records them to re-score offline). */
  onObservations?: (r: { observations: ReadonlyMap<string, FrameObservation[]>; frameTimes: number[]; durationSec: number }) => void;
}

/**
 * Milliseconds of a scan by stage, on the main thread (they add up to its wall time, `other` being
 * the rest); `orbWorkers` is the ORB time spent in pool threads and `inferenceThread` the windows'
 * inference in its thread, both overlapped with the rest.
 */
export interface ScanStages {
  decodeWait: number;
  crops: number;
  inference: number;
  windowSearch: number;
  /** In-thread: ORB itself; with the pool: waiting for a frame's ORB result. */
  orb: number;
  /** Luma and hand-off of frames to the pool. */
  orbSubmit: number;
  keypointQuery: number;
  aggregate: number;
  other: number;
  total: number;
  orbWorkers: number;
  /** The likeness windows' inference in its own thread, from hand-off to result (`inference` is the part this thread waited for). */
  inferenceThread: number;
  /** Frames whose keypoints were extracted and matched (keypointFrameStep). */
  orbFrames: number;
  /** Likeness windows embedded, and those of them the objectness probe read as scenery (not searched). */
  windows: number;
  sceneryWindows: number;
}

export const newScanStages = (): ScanStages => ({
  decodeWait: 0,
  crops: 0,
  inference: 0,
  windowSearch: 0,
  orb: 0,
  orbSubmit: 0,
  keypointQuery: 0,
  aggregate: 0,
  other: 0,
  total: 0,
  orbWorkers: 0,
  inferenceThread: 0,
  orbFrames: 0,
  windows: 0,
  sceneryWindows: 0,
});

/** A sampled frame and, with the pool, its keypoints under way. */
interface Pending {
  frame: Frame;
  keypoints?: Promise<PooledKeypointSet>;
}

/** A reference found by the likeness tier, with its calibrated score. */
interface LikenessHit extends SearchHit {
  score: number;
  /** The window it was found in (crop models). */
  box?: Box;
}

export class Scanner {
  private pool: ExtractPool | undefined;

  constructor(
    private readonly embedder: Embedder,
    /** What is matched against; the caller keeps it current (ReferenceSet.refresh). */
    readonly refs: ReferenceSet,
    private readonly opts: ScanOptions = DEFAULT_SCAN_OPTIONS,
    private readonly bins: FfmpegBinaries = resolveBinaries(),
    /** The keypoint pool (default: one of opts.scanThreads threads when that is above 1); closed by dispose(). */
    pool?: ExtractPool,
  ) {
    this.pool = pool ?? (opts.scanThreads > 1 ? new ExtractPool(opts.scanThreads) : undefined);
  }

  /**
   * Runs every part of a scan once on a small synthetic frame, so that the first clip does not pay
   * for starting them: the keypoint pool's threads and their OpenCV, the model's first inferences
   * (crops and, when used, the dense form) and the first keypoint query. Results are discarded.
   */
  async warmUp(): Promise<void> {
    const frame = warmUpFrame(this.embedder.inputWidth * 2, this.embedder.inputHeight * 2);
    const kpOpts = { maxKeypoints: this.opts.maxKeypoints };
    const keypoints = this.pool ? this.pool.warmUp(frameLuma(frame), kpOpts) : extractFrameFeatures(frame, kpOpts);
    if (this.embedder.usage === 'crop') {
      const windows = [{ x: 0, y: 0, size: frame.height }];
      await this.embedder.embed(cropWindows(frame, windows, this.embedder.inputWidth, this.embedder.inputHeight));
      if (this.embedder.embedRegions && this.denseUpTo() > 0) await this.embedder.embedRegions(frame, windows);
    } else await this.embedder.embed([await this.embedder.prepare(frame)]);
    this.refs.keypoints.query(await keypoints);
  }

  /** Ends the keypoint pool's threads (the embedder is the caller's). */
  async dispose(): Promise<void> {
    const p = this.pool;
    this.pool = undefined;
    await p?.close();
  }

  get characterCount(): number {
    return this.refs.characters.size;
  }

  /** The objectness score under which a window counts as scenery: the scan's option, else the model's own; 0 when the model has no probe. */
  objectnessFloor(): number {
    return this.embedder.objectness ? (this.opts.objectnessFloor ?? this.embedder.objectness.floor) : 0;
  }

  /** The share of the windows that go through the dense form: the scan's option, else the model's own. */
  denseUpTo(): number {
    return this.opts.denseUpTo ?? this.embedder.denseUpTo ?? 0;
  }

  /**
   * The calibrated likeness (in [0,1]) from which the likeness tier alone reaches review: the model's
   * `calibration.review` on the scale it is measured against (the background margin's, or the
   * cosine's); undefined when the model names none.
   */
  likenessReviewFrom(): number | undefined {
    const c = this.embedder.calibration;
    if (c?.review === undefined) return undefined;
    const scale = c.background ?? c;
    return scale.ceil > scale.floor ? calibrateCosine(c.review, scale.floor, scale.ceil) : undefined;
  }

  /** How frame observations become results: the scan's aggregation, with the model's likeness review point (withLikenessReview). */
  aggregateParams(): AggregateParams {
    return withLikenessReview(this.opts.aggregate, this.likenessReviewFrom());
  }

  /** The calibration of the likeness tier's cosine: the model's own when its manifest has one. */
  private embeddingCalibration(): { floor: number; ceil: number } {
    return this.embedder.calibration ?? this.opts.embeddingCalibration;
  }

  /**
   * The nearest references of each frame by the likeness tier, each with its score in [0,1]: one
   * embedding of the whole frame, or, for a model that describes one character per crop, the union
   * of the nearest references of sliding windows (each character keeps its best window). A crop
   * model calibrated against a background bank scores the margin of the cosine over both sides'
   * similarity to background (background-bank.ts) instead of the raw cosine.
   */
  private async likeness(batch: Frame[], st: ScanStages): Promise<LikenessHit[][]> {
    if (!this.refs.vectors.size) return [];
    const k = Math.min(this.refs.vectors.size, this.opts.embeddingTopK);
    const { floor, ceil } = this.embeddingCalibration();
    const plain = (h: SearchHit): LikenessHit => ({ ...h, score: calibrateCosine(h.similarity, floor, ceil) });
    if (this.embedder.usage !== 'crop') {
      const inputs = await timed(st, 'crops', () => Promise.all(batch.map((f) => this.embedder.prepare(f))));
      const vectors = await timed(st, 'inference', () => this.embedder.embed(inputs));
      return timedSync(st, 'windowSearch', () => this.refs.vectors.search(vectors, k)).map((hits) => unlessNegated(hits, (h) => h.key, (h) => h.similarity).map(plain));
    }
    const bank = this.refs.background;
    const margin = this.embedder.calibration?.background;
    // A window that counts for its nearest reference's character only needs that reference (the
    // character's other references among the nearest score no higher), unless a background margin
    // may rank them otherwise: one hit a window to build and filter instead of 64 (with HNSW the
    // search beam, not k, sets the cost of the search itself). A library with negative examples asks
    // for a few, so that a negative as similar as the reference it mirrors is seen beside it.
    const kw = this.opts.windowWinnerOnly && !(bank && margin) ? (this.refs.hasNegatives ? Math.min(k, 4) : 1) : k;
    const out: LikenessHit[][] = [];
    const embedRegions = this.embedder.embedRegions?.bind(this.embedder);
    for (const frame of batch) {
      const framed = frameWindows(frame.width, frame.height, this.opts.windows, frame.index);
      if (!framed.length) {
        out.push([]);
        continue;
      }
      // Windows up to denseUpTo of the frame height through the dense form (when the model has one), first; the rest as crops.
      const limit = embedRegions ? this.denseUpTo() * frame.height + 0.5 : 0;
      const viaDense = framed.filter((w) => w.size <= limit);
      const viaCrops = framed.filter((w) => w.size > limit);
      const windows = [...viaDense, ...viaCrops];
      const all = viaDense.length ? await timed(st, 'inference', () => embedRegions!(frame, viaDense)) : [];
      const crops = viaCrops.length ? timedSync(st, 'crops', () => cropWindows(frame, viaCrops, this.embedder.inputWidth, this.embedder.inputHeight)) : [];
      for (let i = 0; i < crops.length; i += 64) all.push(...(await timed(st, 'inference', () => this.embedder.embed(crops.slice(i, i + 64)))));
      // Windows the objectness probe reads as scenery are not searched: no character's evidence.
      const probe = this.embedder.objectness;
      const objFloor = this.objectnessFloor();
      const kept = probe && objFloor > 0 ? windows.map((_, i) => i).filter((i) => objectnessOf(probe, all[i]) >= objFloor) : windows.map((_, i) => i);
      st.windows += windows.length;
      st.sceneryWindows += windows.length - kept.length;
      const hits: LikenessHit[] = [];
      for (let i = 0; i < kept.length; i += 64) {
        const vectors = kept.slice(i, i + 64).map((k) => all[k]);
        const found = timedSync(st, 'windowSearch', () => this.refs.vectors.search(vectors, kw, this.opts.windowBeam));
        for (let j = 0; j < vectors.length; j++) {
          const w = windows[kept[i + j]];
          const box = { x: w.x, y: w.y, width: w.size, height: w.size };
          const near = this.opts.windowWinnerOnly ? windowWinner(found[j]) : found[j];
          if (!bank || !margin) {
            for (const h of near) hits.push({ ...plain(h), box });
            continue;
          }
          const windowBg = bank.maxSimilarity(vectors[j]);
          for (const h of near) {
            const m = h.similarity - Math.max(windowBg, this.refs.referenceBackground(h.id) ?? -1);
            hits.push({ ...h, score: calibrateCosine(m, margin.floor, margin.ceil), box });
          }
        }
      }
      // Negatives act over the whole frame, as in the keypoint tier: a look-alike matched somewhere in
      // the frame also explains the character's weaker hits on windows that cut it in part.
      out.push(unlessNegated(hits, (h) => h.key, (h) => h.similarity));
    }
    return out;
  }

  async scan(req: ScanRequest): Promise<ScanReport> {
    const t0 = performance.now();
    const s = this.opts.sampling;
    // No ffprobe on the way: ffmpeg's own input header gives the duration, and the probe (a process
    // costing ~0.1 s) runs only when sampling fails, to say precisely what is wrong with the file.
    checkMediaFile(req.file);
    let durationSec: number | undefined;
    let framesExpected = 1;
    const frames = sampleFrames(req.file, s, this.bins, {
      onDuration: (d) => {
        durationSec = d;
        framesExpected = Math.max(1, Math.min(s.maxFrames, Math.ceil(Math.min(d || s.maxDurationSec, s.maxDurationSec) * s.fps)));
      },
    });

    const st = req.stages ?? newScanStages();
    const observations = new Map<string, FrameObservation[]>();
    const frameTimes: number[] = [];
    const bestFrame = new Map<string, { score: number; frame: Frame }>();
    const observe = (o: FrameObservation) => {
      const list = observations.get(o.characterId) ?? [];
      list.push(o);
      observations.set(o.characterId, list);
    };
    const pool = this.pool;
    const kpOpts = { maxKeypoints: this.opts.maxKeypoints };

    /** Whether a frame's ORB starts as it is decoded (else only where its neighbours' verified hits call for it; keypointFrameStep, keypointBetween). */
    const keypointsAtDecode = (index: number) => this.opts.keypointFrameStep === 1 || index % 2 === 1;
    /** The last frame of the previous batch and the characters verified there (sorted ids joined). */
    let lastBefore: { index: number; verified: string } | undefined;

    const flush = async (batch: Pending[]) => {
      if (!batch.length) return;
      // The likeness windows' inference runs in its own thread: their frames are handed to it first,
      // and the keypoint tier's matching runs in this thread meanwhile (likeness() continues between
      // the keypoint awaits). Its stages are kept apart and added after, the inference as the time
      // this thread still had to wait for it once the keypoints were done.
      const ls = newScanStages();
      const likenessRun = this.likeness(batch.map((p) => p.frame), ls);
      likenessRun.catch(() => undefined); // reported where awaited
      const kpHits: Array<Array<{ characterId: string; kp: NonNullable<FrameObservation['keypoints']> }>> = batch.map(() => []);
      /** Matches frame i's keypoints; the characters verified there (sorted ids joined by newlines, '' for none). */
      const keypointsOf = async (i: number, pooled: Promise<PooledKeypointSet> | undefined): Promise<string> => {
        const frame = batch[i].frame;
        const kpFrame: KeypointSet = await timed(st, 'orb', () => pooled ?? extractFrameFeatures(frame, kpOpts));
        if (pooled) st.orbWorkers += (kpFrame as PooledKeypointSet).workerMs;
        st.orbFrames++;
        const hits = timedSync(st, 'keypointQuery', () => this.refs.keypoints.query(kpFrame));
        const verified: string[] = [];
        for (const h of unlessNegated(hits, (x) => x.characterId, (x) => x.score)) {
          if (h.verified) verified.push(h.characterId);
          kpHits[i].push({
            characterId: h.characterId,
            kp: { score: h.score, inliers: h.inliers, referenceId: h.referenceId, mirrored: h.mirrored, box: h.box, ...(h.verified ? {} : { verified: false }) },
          });
        }
        return [...new Set(verified)].sort().join('\n');
      };
      /** Frame index -> the characters verified there, for the frames the keypoint tier has looked at. */
      const verifiedAt = new Map<number, string>();
      try {
        if (lastBefore) verifiedAt.set(lastBefore.index, lastBefore.verified);
        for (let i = 0; i < batch.length; i++) {
          if (keypointsAtDecode(batch[i].frame.index)) verifiedAt.set(batch[i].frame.index, await keypointsOf(i, batch[i].keypoints));
        }
        // The frames between (keypointBetween), all of them handed to the pool at once.
        const edges = this.opts.keypointBetween === 'edges';
        const lookBetween = (index: number) => {
          const before = verifiedAt.get(index - 1);
          const after = verifiedAt.get(index + 1);
          if (edges && before !== undefined && after !== undefined) return before !== after;
          return !!before || !!after;
        };
        const around = batch.map((p, i) => ({ i, index: p.frame.index })).filter(({ index }) => !keypointsAtDecode(index) && lookBetween(index));
        const late = around.map(({ i }) => (pool ? timedSync(st, 'orbSubmit', () => pool.extract(batch[i].frame, kpOpts)) : undefined));
        for (const p of late) p?.catch(() => undefined); // reported where awaited
        for (let j = 0; j < around.length; j++) verifiedAt.set(around[j].index, await keypointsOf(around[j].i, late[j]));
        const last = batch[batch.length - 1].frame.index;
        const lastVerified = verifiedAt.get(last);
        lastBefore = lastVerified === undefined ? undefined : { index: last, verified: lastVerified };
      } catch (e) {
        // The windows' inference may still be running: let it end before the error reaches the
        // caller, who may close the model next (a session released mid-run aborts the process).
        await likenessRun.catch(() => undefined);
        throw e;
      }

      const tWait = performance.now();
      const nearest = await likenessRun;
      st.inference += performance.now() - tWait;
      st.crops += ls.crops;
      st.windowSearch += ls.windowSearch;
      st.windows += ls.windows;
      st.sceneryWindows += ls.sceneryWindows;
      st.inferenceThread += ls.inference;
      const perFrame = batch.map(({ frame }, i) => {
        const perChar = new Map<string, FrameObservation>();
        for (const n of nearest[i] ?? []) {
          const o = observation(perChar, frame, n.key);
          if (!o.embedding || n.score > o.embedding.score || (n.score === o.embedding.score && n.similarity > o.embedding.cosine)) {
            o.embedding = { score: n.score, cosine: n.similarity, referenceId: n.id, ...(n.box ? { box: n.box } : {}) };
          }
        }
        for (const { characterId, kp } of kpHits[i]) {
          const o = observation(perChar, frame, characterId);
          if (!o.keypoints || kp.score > o.keypoints.score) o.keypoints = kp;
        }
        return perChar;
      });

      for (let i = 0; i < batch.length; i++) {
        for (const o of perFrame[i].values()) {
          observe(o);
          if (req.onEvidenceFrame && negativeOf(o.characterId) === undefined) {
            const sc = Math.max(o.keypoints?.score ?? 0, o.embedding?.score ?? 0);
            const prev = bestFrame.get(o.characterId);
            if (!prev || sc > prev.score) bestFrame.set(o.characterId, { score: sc, frame: batch[i].frame });
          }
        }
      }
    };

    // Without the pool: decode a batch, then process it. With it: each frame's ORB starts as it is
    // decoded (those keypointsAtDecode; the others' when their batch finds a verified hit next to
    // them), and one batch is processed while the next is decoded (at most two batches in memory;
    // the decoder's pipe pauses meanwhile). Decode wait = waiting for a frame while no batch is processed.
    let pending: Pending[] = [];
    let running: Promise<void> | undefined;
    let flushing = false;
    let flushEnd = 0;
    const flushTracked = async (batch: Pending[]) => {
      flushing = true;
      try {
        await flush(batch);
      } finally {
        flushing = false;
        flushEnd = performance.now();
      }
    };
    let waitFrom = performance.now();
    try {
      for await (const frame of frames) {
        if (!flushing) st.decodeWait += performance.now() - Math.max(waitFrom, flushEnd);
        frameTimes.push(frame.timeSec);
        const item: Pending = { frame };
        if (pool && keypointsAtDecode(frame.index)) {
          item.keypoints = timedSync(st, 'orbSubmit', () => pool.extract(frame, kpOpts));
          item.keypoints.catch(() => undefined); // reported where it is awaited
        }
        pending.push(item);
        if (pending.length >= this.opts.batchSize) {
          const batch = pending;
          pending = [];
          if (pool) {
            await running;
            running = flushTracked(batch);
            running.catch(() => undefined);
          } else await flush(batch);
        }
        req.onProgress?.({ framesDone: frameTimes.length, framesExpected: Math.max(framesExpected, frameTimes.length) });
        waitFrom = performance.now();
      }
    } catch (e) {
      // The probe's reasons (no video stream, unknown codec, not a container) are clearer than ffmpeg's.
      if (e instanceof InvalidMediaError) await probeVideo(req.file, this.bins);
      throw e;
    }
    const clipSec = durationSec || (frameTimes.length ? frameTimes[frameTimes.length - 1] : 0);
    await running;
    await flush(pending);

    req.onObservations?.({ observations, frameTimes, durationSec: clipSec });
    const tAgg = performance.now();
    const results = aggregateClip(this.refs.characters.keys(), observations, frameTimes, clipSec, this.aggregateParams());
    results.sort((a, b) => b.score - a.score || a.characterId.localeCompare(b.characterId));
    if (req.onEvidenceFrame) {
      for (const r of results) {
        const bf = bestFrame.get(r.characterId);
        if (bf && r.score >= req.minScore) req.onEvidenceFrame(r.characterId, bf.frame);
      }
    }
    const listed = results.filter((r) => r.score >= req.minScore).slice(0, req.top);
    const matches: ReportMatch[] = listed.map((r) => {
      const c = this.refs.characters.get(r.characterId)!;
      const ref = this.refs.references.get(r.evidence.referenceId);
      return {
        characterId: r.characterId,
        name: c.name,
        owner: c.owner,
        verdict: r.verdict,
        score: round4(r.score),
        kind: r.kind,
        segments: r.segments,
        evidence: {
          timeSec: r.evidence.timeSec,
          referenceImage: ref?.fileName ?? '',
          referenceId: r.evidence.referenceId,
          similarity: round4(r.evidence.similarity),
          ...(r.evidence.inliers !== undefined ? { inliers: r.evidence.inliers, mirrored: r.evidence.mirrored } : {}),
          ...(r.evidence.box ? { box: roundBox(r.evidence.box) } : {}),
        },
        framesMatched: r.framesMatched,
        reason: r.reason,
      };
    });
    st.aggregate += performance.now() - tAgg;
    st.total += performance.now() - t0; // stages add up over the scans given the same object
    st.other = st.total - (st.decodeWait + st.crops + st.inference + st.windowSearch + st.orb + st.orbSubmit + st.keypointQuery + st.aggregate);
    return {
      video: req.file,
      durationSec: round4(clipSec),
      framesSampled: frameTimes.length,
      verdict: clipVerdict(results),
      matches,
      model: this.embedder.modelId,
      ...(this.embedder.sha256 ? { modelSha256: this.embedder.sha256 } : {}),
      elapsedSec: round4((performance.now() - t0) / 1000),
    };
  }
}

/** The frame's observation of a character in `perChar`, created empty on first use. */
function observation(perChar: Map<string, FrameObservation>, frame: Frame, characterId: string): FrameObservation {
  let o = perChar.get(characterId);
  if (!o) perChar.set(characterId, (o = { frameIndex: frame.index, timeSec: frame.timeSec, characterId }));
  return o;
}

/** A deterministic RGB frame with corners and edges everywhere (blocks of pseudo-random grey levels), for warm-ups. */
function warmUpFrame(width: number, height: number): Frame {
  const data = Buffer.alloc(width * height * 3);
  const r = mulberry32(12345);
  for (let by = 0; by < height; by += 8) {
    for (let bx = 0; bx < width; bx += 8) {
      const v = Math.floor(r() * 256);
      for (let y = by; y < Math.min(height, by + 8); y++) data.fill(v, (y * width + bx) * 3, (y * width + Math.min(width, bx + 8)) * 3);
    }
  }
  return { data, width, height, channels: 3, index: 0, timeSec: 0 };
}

/**
 * Of one window's nearest references (in any order), those under the key of the most similar one;
 * a character's negative example as similar as its best reference wins the window (the owner said
 * that drawing is not the character).
 */
export function windowWinner(hits: SearchHit[]): SearchHit[] {
  let top: SearchHit | undefined;
  for (const h of hits) if (!top || h.similarity > top.similarity || (h.similarity === top.similarity && negativeOf(h.key) === top.key)) top = h;
  return top ? hits.filter((h) => h.key === top!.key) : hits;
}

/**
 * The hits of one frame without those of a character that are no stronger than the best hit of its
 * negative examples in the same frame. The negatives' own hits stay, under their own keys: they are
 * observed like a character's, never reported, and act as rivals in the clip's aggregation (a
 * look-alike the owner marked as not theirs, seen strongly nearby, lowers the character's likeness
 * as another registered character would).
 */
function unlessNegated<T>(hits: T[], key: (h: T) => string, value: (h: T) => number): T[] {
  let negated: Map<string, number> | undefined;
  for (const h of hits) {
    const of = negativeOf(key(h));
    if (of !== undefined) (negated ??= new Map()).set(of, Math.max(negated.get(of) ?? -Infinity, value(h)));
  }
  if (!negated) return hits;
  return hits.filter((h) => {
    const n = negated!.get(key(h));
    return n === undefined || value(h) > n;
  });
}

type TimedStage = Exclude<keyof ScanStages, 'total' | 'other' | 'orbWorkers' | 'inferenceThread' | 'orbFrames'>;

async function timed<T>(st: ScanStages, stage: TimedStage, fn: () => Promise<T>): Promise<T> {
  const t = performance.now();
  try {
    return await fn();
  } finally {
    st[stage] += performance.now() - t;
  }
}

function timedSync<T>(st: ScanStages, stage: TimedStage, fn: () => T): T {
  const t = performance.now();
  try {
    return fn();
  } finally {
    st[stage] += performance.now() - t;
  }
}

const round4 = (v: number) => Math.round(v * 10000) / 10000;
const roundBox = (b?: { x: number; y: number; width: number; height: number }) =>
  b && { x: Math.round(b.x), y: Math.round(b.y), width: Math.round(b.width), height: Math.round(b.height) };
