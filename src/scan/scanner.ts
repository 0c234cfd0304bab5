/**
 * The scan use case: the only place that knows the order of the steps.
 * video → sampled frames → (keypoints → verified hits) + (embedding → nearest references)
 *       → per-frame, per-character observations → per-character results → report.
 * The CLI and the workers both call this; indexes are built once per Scanner and reused across clips.
 */
import { probeVideo, sampleFrames, type FfmpegBinaries, type SampleOptions, resolveBinaries } from '../media/ffmpeg';
import type { Frame } from '../media/types';
import { aggregateCharacter, clipVerdict, DEFAULT_AGGREGATE, type AggregateParams } from '../matching/aggregate';
import { calibrateCosine } from '../matching/fuse';
import type { Box, FrameObservation, Verdict } from '../matching/types';
import type { Embedder } from '../signals/embedder';
import { extractFrameFeatures } from '../signals/keypoints';
import type { SearchHit } from '../signals/embedding/exact-index';
import { cropResize, slidingWindows } from './windows';
import type { ReferenceSet } from './reference-set';

export interface ScanOptions {
  sampling: SampleOptions;
  aggregate: AggregateParams;
  /** Cosine of the embedding model between unrelated images (→ 0) and identical ones (→ 1). */
  embeddingCalibration: { floor: number; ceil: number };
  maxKeypoints: number;
  /** Frames embedded per inference call. */
  batchSize: number;
  /** References retrieved per frame (or per window) by the embedding index. */
  embeddingTopK: number;
  /** Window sides, as fractions of the frame height, for models that describe crops. */
  windowSizes: number[];
  /** Slide windows over every n-th sampled frame only (crop models cost ~40 inferences a frame). */
  windowFrameStep: number;
}

export const DEFAULT_SCAN_OPTIONS: ScanOptions = {
  sampling: { fps: 2, sceneThreshold: 0.3, maxFrames: 1200, maxDurationSec: 3600, maxWidth: 960, maxHeight: 960 },
  aggregate: DEFAULT_AGGREGATE,
  embeddingCalibration: { floor: 0.9, ceil: 1.0 },
  maxKeypoints: 4000,
  batchSize: 8,
  embeddingTopK: 64,
  windowSizes: [0.35, 0.6],
  windowFrameStep: 2,
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
}

/** A reference found by the likeness tier, with its calibrated score. */
interface LikenessHit extends SearchHit {
  score: number;
  /** The window it was found in (crop models). */
  box?: Box;
}

export class Scanner {
  constructor(
    private readonly embedder: Embedder,
    /** What is matched against; the caller keeps it current (ReferenceSet.refresh). */
    readonly refs: ReferenceSet,
    private readonly opts: ScanOptions = DEFAULT_SCAN_OPTIONS,
    private readonly bins: FfmpegBinaries = resolveBinaries(),
  ) {}

  get characterCount(): number {
    return this.refs.characters.size;
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
  private async likeness(batch: Frame[]): Promise<LikenessHit[][]> {
    if (!this.refs.vectors.size) return [];
    const k = Math.min(this.refs.vectors.size, this.opts.embeddingTopK);
    const { floor, ceil } = this.embeddingCalibration();
    const plain = (h: SearchHit): LikenessHit => ({ ...h, score: calibrateCosine(h.similarity, floor, ceil) });
    if (this.embedder.usage !== 'crop') {
      const vectors = await this.embedder.embed(await Promise.all(batch.map((f) => this.embedder.prepare(f))));
      return this.refs.vectors.search(vectors, k).map((hits) => hits.map(plain));
    }
    const bank = this.refs.background;
    const margin = this.embedder.calibration?.background;
    const out: LikenessHit[][] = [];
    for (const frame of batch) {
      if (frame.index % this.opts.windowFrameStep !== 0) {
        out.push([]);
        continue;
      }
      const windows = slidingWindows(frame.width, frame.height, this.opts.windowSizes);
      const crops = windows.map((w) => cropResize(frame, w, this.embedder.inputWidth, this.embedder.inputHeight));
      const hits: LikenessHit[] = [];
      for (let i = 0; i < crops.length; i += 64) {
        const vectors = await this.embedder.embed(crops.slice(i, i + 64));
        const found = this.refs.vectors.search(vectors, k);
        for (let j = 0; j < vectors.length; j++) {
          const w = windows[i + j];
          const box = { x: w.x, y: w.y, width: w.size, height: w.size };
          if (!bank || !margin) {
            for (const h of found[j]) hits.push({ ...plain(h), box });
            continue;
          }
          const windowBg = bank.maxSimilarity(vectors[j]);
          for (const h of found[j]) {
            const m = h.similarity - Math.max(windowBg, this.refs.referenceBackground(h.id) ?? -1);
            hits.push({ ...h, score: calibrateCosine(m, margin.floor, margin.ceil), box });
          }
        }
      }
      out.push(hits);
    }
    return out;
  }

  async scan(req: ScanRequest): Promise<ScanReport> {
    const t0 = performance.now();
    const info = await probeVideo(req.file, this.bins);
    const s = this.opts.sampling;
    const span = Math.min(info.durationSec || s.maxDurationSec, s.maxDurationSec);
    const framesExpected = Math.max(1, Math.min(s.maxFrames, Math.ceil(span * s.fps)));

    const observations = new Map<string, FrameObservation[]>();
    const frameTimes: number[] = [];
    const bestFrame = new Map<string, { score: number; frame: Frame }>();
    const pending: Frame[] = [];
    const observe = (o: FrameObservation) => {
      const list = observations.get(o.characterId) ?? [];
      list.push(o);
      observations.set(o.characterId, list);
    };

    const flush = async () => {
      if (!pending.length) return;
      const batch = pending.splice(0, pending.length);
      const nearest = await this.likeness(batch);
      for (let i = 0; i < batch.length; i++) {
        const frame = batch[i];
        const perChar = new Map<string, FrameObservation>();
        const get = (cid: string) => {
          let o = perChar.get(cid);
          if (!o) perChar.set(cid, (o = { frameIndex: frame.index, timeSec: frame.timeSec, characterId: cid }));
          return o;
        };
        for (const n of nearest[i] ?? []) {
          const o = get(n.key);
          if (!o.embedding || n.score > o.embedding.score || (n.score === o.embedding.score && n.similarity > o.embedding.cosine)) {
            o.embedding = { score: n.score, cosine: n.similarity, referenceId: n.id, ...(n.box ? { box: n.box } : {}) };
          }
        }
        const kpFrame = await extractFrameFeatures(frame, { maxKeypoints: this.opts.maxKeypoints });
        for (const h of this.refs.keypoints.query(kpFrame)) {
          const o = get(h.characterId);
          if (!o.keypoints || h.score > o.keypoints.score) {
            o.keypoints = { score: h.score, inliers: h.inliers, referenceId: h.referenceId, mirrored: h.mirrored, box: h.box };
          }
        }
        for (const o of perChar.values()) {
          observe(o);
          if (req.onEvidenceFrame) {
            const sc = Math.max(o.keypoints?.score ?? 0, o.embedding?.score ?? 0);
            const prev = bestFrame.get(o.characterId);
            if (!prev || sc > prev.score) bestFrame.set(o.characterId, { score: sc, frame });
          }
        }
      }
    };

    for await (const frame of sampleFrames(req.file, info, s, this.bins)) {
      frameTimes.push(frame.timeSec);
      pending.push(frame);
      if (pending.length >= this.opts.batchSize) await flush();
      req.onProgress?.({ framesDone: frameTimes.length, framesExpected: Math.max(framesExpected, frameTimes.length) });
    }
    await flush();

    const results = [...this.refs.characters.keys()].map((cid) =>
      aggregateCharacter(cid, observations.get(cid) ?? [], frameTimes, info.durationSec, this.opts.aggregate),
    );
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
    return {
      video: req.file,
      durationSec: round4(info.durationSec),
      framesSampled: frameTimes.length,
      verdict: clipVerdict(results),
      matches,
      model: this.embedder.modelId,
      elapsedSec: round4((performance.now() - t0) / 1000),
    };
  }
}

const round4 = (v: number) => Math.round(v * 10000) / 10000;
const roundBox = (b?: { x: number; y: number; width: number; height: number }) =>
  b && { x: Math.round(b.x), y: Math.round(b.y), width: Math.round(b.width), height: Math.round(b.height) };
