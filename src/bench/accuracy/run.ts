#!/usr/bin/env node
/**
 * `npm run bench:accuracy`: Kagami's accuracy on generated clips, beside a pHash peer.
 *
 * 1. loads the art sources (sources.ts) and makes the seeded plan (generate.ts);
 * 2. builds a fresh reference library with the product's own code (openLibrary + addReferences);
 * 3. renders the clips (cached by content hash in .cache/bench/clips/);
 * 4. scans every clip with the product's Scanner (minScore 0, so every character gets a score) and
 *    with the pHash peer on the same sampled frames;
 * 5. prints µAP, recall at precision 0.9/0.95 (overall and per kind), temporal IoU and false alarms,
 *    and writes everything to .cache/bench/accuracy-result.json.
 */
import { appendFileSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Command, InvalidArgumentError } from 'commander';
import sharp from 'sharp';
import { modelFor, modelManifestPath, readEnv } from '../../config';
import { addReferences, openLibrary } from '../../library/library';
import { sampleFrames } from '../../media/ffmpeg';
import { ReferenceSet } from '../../scan/reference-set';
import { scanOptionsFromEnv } from '../../scan/options';
import { DEFAULT_SCAN_OPTIONS, newScanStages, Scanner, type ScanStages } from '../../scan/scanner';
import { slidingWindows } from '../../scan/windows';
import type { Embedder } from '../../signals/embedder';
import { objectnessOf } from '../../signals/embedding/objectness';
import { OnnxEmbedder } from '../../signals/embedding/onnx-embedder';
import { CAUSES, describeDiagnosis, diagnose, type Diagnosis } from './diagnose';
import { artLookup, artPlacement, type ArtPlacement, CLIP_KINDS, DEFAULT_MIX, describeTransforms, makePlan, renderClip, type ClipKind, type Plan, type PlannedClip } from './generate';
import { clipBox, hitsToIntervals, mean, rateAtOrAbove, summarise, temporalIoU, windowCoverage, type Interval, type ScoredPair, type Summary } from './metrics';
import { frameHashes, phashScore, referenceHashes } from './phash';
import { intersectionArea, type Box } from '../../synthetic/art';
import { loadSources, MissingArtError, SOURCE_IDS, SOURCE_INFO, syntheticDistractors, type SourceId } from './sources';

interface Options {
  quick?: boolean;
  clips?: number;
  seed: number;
  sources: SourceId[];
  cache: string;
  library?: number;
  record?: string;
}

/** One clip's outcome for both methods: per registered character, score and predicted segments. */
export interface ClipResult {
  clip: PlannedClip;
  file: string;
  durationSec: number;
  kagami: Record<string, { score: number; segments: Interval[]; verdict: string; kind: string }>;
  phash: { frameTimes: number[]; perChar: Record<string, number[]> };
  scanSec: number;
  phashSec: number;
  /** Positives: which tier saw the true character (diagnose.ts). */
  diagnosis?: Diagnosis;
}

const int = (v: string) => {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError('a positive integer');
  return n;
};

function parseSources(v: string): SourceId[] {
  const ids = v.split(',').map((s) => s.trim()).filter(Boolean);
  for (const id of ids) if (!SOURCE_IDS.includes(id as SourceId)) throw new InvalidArgumentError(`unknown source '${id}' (known: ${SOURCE_IDS.join(', ')})`);
  return ids as SourceId[];
}

const f3 = (v: number) => (Number.isFinite(v) ? v.toFixed(3) : '  -  ');
const pct = (v: number) => (Number.isFinite(v) ? `${(v * 100).toFixed(1)}%` : '-');

async function main(argv: string[]): Promise<void> {
  const program = new Command('bench:accuracy')
    .description("Kagami's accuracy on generated clips of openly licensed characters, beside a pHash peer")
    .option('--quick', 'a small plan (about 2-3 minutes)')
    .option('--clips <n>', 'number of clips', int)
    .option('--seed <s>', 'plan seed', int, 1)
    .option('--sources <list>', `art sources, comma-separated (${SOURCE_IDS.join(',')})`, parseSources, [...SOURCE_IDS])
    .option('--cache <dir>', 'where clips, the library and the result go', '.cache/bench')
    .option('--record <file>', 'also write every clip\'s frame observations there, one JSON line per clip (for src/bench/accuracy/rescore.ts)')
    .option('--library <n>', 'registered characters in all: the plan\'s, then characters never shown (unshown look-alike candidates, then synthetic ones) up to n', int)
    .parse(argv);
  const o = program.opts<Options>();
  const t0 = performance.now();
  const env = readEnv();
  const quick = !!o.quick;
  const cache = path.resolve(o.cache);
  mkdirSync(cache, { recursive: true });
  if (o.record) rmSync(o.record, { force: true });

  let sources;
  try {
    sources = await loadSources(o.sources);
  } catch (e) {
    if (e instanceof MissingArtError) {
      process.stderr.write(`bench:accuracy: ${e.message}\n`);
      process.exitCode = 2;
      return;
    }
    throw e;
  }
  const strictPlan = makePlan(sources, {
    seed: o.seed,
    clips: o.clips ?? (quick ? 16 : 60),
    maxRegisteredPerSource: quick ? 4 : 10,
    width: quick ? 640 : 960,
    height: quick ? 360 : 540,
    durationSec: 6,
    mix: DEFAULT_MIX,
  });
  const art = artLookup(sources);
  const recolours = await recolourLookalikes(strictPlan, art);
  const plan = countRecoloursAsCharacter(strictPlan, recolours);
  const counts = Object.fromEntries(CLIP_KINDS.map((k) => [k, plan.clips.filter((c) => c.kind === k).length]));
  log(`plan: seed ${plan.seed}, ${plan.width}x${plan.height}, ${plan.clips.length} clips ${JSON.stringify(counts)}, ` +
    `${plan.registered.length} registered characters, ${plan.unregistered.length} unregistered (look-alikes / others); sources ${o.sources.join(', ')}` +
    (recolours.length ? `; ${recolours.length} look-alikes drawn as a recolour of a registered character count as that character` : ''));

  // --- library, with the product's code
  const embedder = await OnnxEmbedder.create(modelManifestPath(modelFor(env)), { threads: env.KAGAMI_THREADS });
  const libDir = path.join(cache, `library-seed${plan.seed}-${quick ? 'quick' : 'full'}`);
  rmSync(libDir, { recursive: true, force: true });
  const lib = await openLibrary(libDir, { create: true });
  // The pHash peer's references: every registered image's hashes, by character.
  const refHashes = new Map<string, bigint[]>();
  const hashReference = async (key: string, name: string, png: Buffer) =>
    refHashes.set(key, [...(refHashes.get(key) ?? []), ...(await referenceHashes(name, png))]);
  const skipped: string[] = [];
  const tLib = performance.now();
  for (const reg of plan.registered) {
    const c = art.character(reg.key);
    const files = [];
    for (const [i, ref] of c.references.entries()) {
      const name = `${reg.key}-ref${i}.png`;
      try {
        // Each file alone first: a file with too little detail is reported and left out.
        await addReferences(lib, embedder, { id: reg.key, name: reg.name, owner: reg.source }, [{ name, bytes: ref.png }]);
        files.push(ref);
        await hashReference(reg.key, name, ref.png);
      } catch (e) {
        skipped.push(`${reg.key} ${ref.label}: ${(e as Error).message}`);
      }
    }
    if (!files.length) skipped.push(`${reg.key}: no usable reference, not registered`);
  }
  // Characters registered but never shown: a library nearer the size of a real one (the held-out
  // benchmark registers 150), so every clip is scored against more characters that are not there.
  const shown = new Set(plan.clips.map((c) => c.characterKey).filter((k): k is string => !!k));
  const extra = Math.max(0, (o.library ?? 0) - plan.registered.length);
  const unshown = plan.unregistered.filter((k) => !shown.has(k)).map((k) => art.character(k));
  const distractors = [...unshown, ...(await syntheticDistractors(Math.max(0, extra - unshown.length)))].slice(0, extra);
  for (const c of distractors) {
    try {
      const files = c.references.map((ref, i) => ({ name: `${c.key}-ref${i}.png`, bytes: ref.png }));
      await addReferences(lib, embedder, { id: c.key, name: c.name, owner: c.source }, files);
      for (const f of files) await hashReference(c.key, f.name, f.bytes);
    } catch (e) {
      skipped.push(`${c.key} (never shown): ${(e as Error).message}`);
    }
  }
  const refs = await ReferenceSet.load(lib.store, embedder);
  const registered = [...refs.characters.keys()].sort();
  log(`library: ${registered.length} characters (${distractors.length} never shown), ${refs.references.size} references in ${sec(tLib)}${skipped.length ? `; skipped:\n  ${skipped.join('\n  ')}` : ''}`);
  const scanner = new Scanner(embedder, refs, scanOptionsFromEnv(env));

  // --- clips: render two ahead of the scanner (ffmpeg runs beside the scan)
  const tGen = performance.now();
  let generated = 0;
  const rendered = plan.clips.map(() => undefined as undefined | Promise<{ file: string; cached: boolean }>);
  const ensure = (i: number) => {
    if (i < plan.clips.length && !rendered[i]) rendered[i] = renderClip(plan, plan.clips[i], art, cache);
  };
  const results: ClipResult[] = [];
  const stages = newScanStages();
  const tScan = performance.now();
  for (let i = 0; i < plan.clips.length; i++) {
    ensure(i);
    ensure(i + 1);
    const clip = plan.clips[i];
    const r = await rendered[i]!;
    if (!r.cached) generated++;
    const s0 = performance.now();
    let diagnosis: Diagnosis | undefined;
    const report = await scanner.scan({
      file: r.file,
      minScore: 0,
      top: 1000,
      stages,
      onObservations: (x) => {
        if (clip.truthCharacter) diagnosis = diagnose(x.observations, clip.truthCharacter);
        if (o.record) appendFileSync(o.record, JSON.stringify({ clip: clip.id, durationSec: x.durationSec, frameTimes: x.frameTimes, observations: Object.fromEntries(x.observations) }) + '\n');
      },
    });
    const scanSec = (performance.now() - s0) / 1000;
    const kagami: ClipResult['kagami'] = {};
    for (const m of report.matches) kagami[m.characterId] = { score: m.score, segments: m.segments, verdict: m.verdict, kind: m.kind };
    // The peer, on the same sampled frames.
    const p0 = performance.now();
    const frameTimes: number[] = [];
    const perChar: Record<string, number[]> = Object.fromEntries(registered.map((k) => [k, []]));
    for await (const frame of sampleFrames(r.file, DEFAULT_SCAN_OPTIONS.sampling)) {
      frameTimes.push(frame.timeSec);
      const fh = await frameHashes(frame);
      for (const k of registered) perChar[k].push(phashScore(fh, refHashes.get(k) ?? []));
    }
    const phashSec = (performance.now() - p0) / 1000;
    results.push({ clip, file: r.file, durationSec: report.durationSec, kagami, phash: { frameTimes, perChar }, scanSec, phashSec, ...(diagnosis ? { diagnosis } : {}) });
    const truth = clip.truthCharacter ? kagami[clip.truthCharacter]?.score ?? 0 : undefined;
    const topOther = Math.max(0, ...Object.entries(kagami).filter(([k]) => k !== clip.truthCharacter).map(([, v]) => v.score));
    log(`[${i + 1}/${plan.clips.length}] ${clip.id} ${clip.kind.padEnd(13)} ${(clip.characterKey ?? '-').padEnd(28)} ` +
      `${truth !== undefined ? `truth ${truth.toFixed(3)} ` : ''}best-other ${topOther.toFixed(3)}  (${describeTransforms(clip.transforms)}) ${scanSec.toFixed(1)}s`);
  }
  const loopSec = (performance.now() - tScan) / 1000;
  await scanner.dispose();
  const objectness = await objectnessRecall(plan, results, art, embedder, scanner.objectnessFloor());

  // --- evaluation
  const evalOut = evaluate(plan, results, registered);
  const proposals = await proposalRecall(plan, results, art);
  // The figures above count a recolour of a registered character as that character; also reported
  // with them as look-alikes (negatives), as the plan draws them.
  const strictClips = new Map(strictPlan.clips.map((c) => [c.id, c]));
  const strict = recolours.length ? evaluate(strictPlan, results.map((r) => ({ ...r, clip: strictClips.get(r.clip.id)! })), registered).kagami : undefined;
  const totalSec = (performance.now() - t0) / 1000;
  printTable(evalOut);
  printProposals(proposals);
  printObjectness(objectness, stages);
  if (strict) {
    const k = strict;
    console.log(
      `
look-alike clips that are a registered character recoloured (same silhouette), counted as that character above: ${recolours.map((x) => `${x.clip} ${x.lookalike} ~ ${x.of}`).join(', ')}; ` +
        `counted as look-alikes instead, Kagami's µAP ${f3(k.overall.ap)}, R@P.95 ${f3(k.overall.recallAtP95)} (near copies ${f3(k.byKind['near-copy'].recallAtP95)}, new renditions ${f3(k.byKind['new-rendition'].recallAtP95)}), ` +
        `look-alikes alarmed at P≥0.90 ${pct(k.falseAlarms.lookalikeAtP90)}`,
    );
  }
  const result = {
    when: new Date().toISOString(),
    host: { cpus: os.cpus().length, node: process.version },
    options: {
      quick,
      seed: plan.seed,
      clips: plan.clips.length,
      sources: o.sources,
      library: registered.length,
      neverShown: distractors.map((c) => c.key),
      // The model's likeness review point as the scan used it (rescore.ts aggregates the same way).
      likenessReviewFrom: scanner.likenessReviewFrom() ?? null,
      objectnessFloor: scanner.objectnessFloor(),
    },
    licences: Object.fromEntries(o.sources.map((s) => [s, SOURCE_INFO[s]])),
    model: embedder.modelId,
    runtime: { totalSec, scanLoopSec: loopSec, clipsGenerated: generated, meanScanSec: mean(results.map((r) => r.scanSec)), meanPhashSec: mean(results.map((r) => r.phashSec)), renderSec: (performance.now() - tGen) / 1000 },
    plan,
    skippedReferences: skipped,
    metrics: { ...evalOut, proposals, objectness: objectness ? { ...objectness, scannedSceneryShare: stages.sceneryWindows / Math.max(1, stages.windows) } : null, recolourLookalikes: recolours, recoloursAsLookalikes: strict },
    clips: results.map((r) => ({
      id: r.clip.id,
      kind: r.clip.kind,
      character: r.clip.characterKey,
      truth: r.clip.truthCharacter,
      image: r.clip.image?.label,
      interval: r.clip.interval,
      transforms: describeTransforms(r.clip.transforms),
      file: r.file,
      kagami: Object.fromEntries(Object.entries(r.kagami).filter(([, v]) => v.score > 0)),
      ...(r.diagnosis ? { diagnosis: r.diagnosis } : {}),
      phashMax: Object.fromEntries(Object.entries(r.phash.perChar).map(([k, v]) => [k, Math.max(0, ...v)])),
    })),
  };
  const out = path.join(cache, 'accuracy-result.json');
  writeFileSync(out, JSON.stringify(result, (_k, v) => (v === Infinity ? null : v), 2));
  const k = evalOut.kagami;
  const p = evalOut.phash;
  console.log(
    `\nSUMMARY kagami µAP ${f3(k.overall.ap)} R@P.95 ${f3(k.overall.recallAtP95)} (near-copy ${f3(k.byKind['near-copy'].recallAtP95)}, new-rendition ${f3(k.byKind['new-rendition'].recallAtP95)}) ` +
      `tIoU ${f3(k.temporalIoU)} lookalike-FA@0.6 ${pct(k.falseAlarms.lookalikeAtMatch)} | phash µAP ${f3(p.overall.ap)} R@P.95 ${f3(p.overall.recallAtP95)} ` +
      `(near-copy ${f3(p.byKind['near-copy'].recallAtP95)}, new-rendition ${f3(p.byKind['new-rendition'].recallAtP95)}) tIoU ${f3(p.temporalIoU)} | ` +
      `${plan.clips.length} clips in ${totalSec.toFixed(0)} s → ${out}`,
  );
}

export interface MethodEval {
  overall: Summary;
  byKind: Record<'near-copy' | 'new-rendition', Summary>;
  bySource: Record<string, Summary>;
  /** Mean temporal IoU of the truth character's segments over positive clips (missed → 0). */
  temporalIoU: number;
  /** The same over positives that were detected (score ≥ the detection threshold used). */
  temporalIoUDetected: number;
  segmentThreshold: number;
  falseAlarms: {
    /** Fraction of look-alike clips where some registered character scored ≥ threshold. */
    lookalikeAtMatch: number;
    lookalikeAtReview: number;
    lookalikeAtP90: number;
    emptyAtP90: number;
    /** Positive clips where another (wrong) registered character reached the threshold. */
    wrongCharacterAtP90: number;
    meanTopLookalikeScore: number;
  };
  /** What the product's own verdicts flag (review or match); absent for the pHash peer, which has none. */
  verdicts?: VerdictFigures;
  /** Recall (truth score ≥ the P0.9 threshold) by transform, over positive clips. */
  recallByFactor: Record<string, { n: number; recall: number }>;
  failures: Array<{ id: string; kind: ClipKind; character: string; image: string; score: number; rank: number; transforms: string; diagnosis?: Diagnosis }>;
}

/** The (clip, character) pairs the product's verdicts flag (`review` or `match`), against the truth. */
export interface VerdictFigures {
  flagged: number;
  correct: number;
  /** Positive clips whose character was flagged / positive clips, by kind. */
  found: Record<'near-copy' | 'new-rendition', { flagged: number; of: number }>;
  /** Look-alike and empty clips where some registered character was flagged / such clips. */
  lookalikeClips: { flagged: number; of: number };
  emptyClips: { flagged: number; of: number };
}

export function verdictFigures(results: ClipResult[], registered: string[]): VerdictFigures {
  const v: VerdictFigures = {
    flagged: 0,
    correct: 0,
    found: { 'near-copy': { flagged: 0, of: 0 }, 'new-rendition': { flagged: 0, of: 0 } },
    lookalikeClips: { flagged: 0, of: 0 },
    emptyClips: { flagged: 0, of: 0 },
  };
  const known = new Set(registered);
  for (const r of results) {
    const truth = r.clip.truthCharacter;
    let wrong = false;
    for (const [cid, c] of Object.entries(r.kagami)) {
      if (c.verdict === 'clear' || !known.has(cid)) continue;
      v.flagged++;
      if (cid === truth) v.correct++;
      else wrong = true;
    }
    const kind = r.clip.kind;
    if (truth && (kind === 'near-copy' || kind === 'new-rendition')) {
      v.found[kind].of++;
      if ((r.kagami[truth]?.verdict ?? 'clear') !== 'clear') v.found[kind].flagged++;
    }
    const clips = kind === 'lookalike' ? v.lookalikeClips : kind === 'empty' ? v.emptyClips : undefined;
    if (clips) (clips.of++, wrong && clips.flagged++);
  }
  return v;
}

/** The verdict figures in a few words: precision of what was flagged, positives found by kind, false clips. */
export function describeVerdicts(v: VerdictFigures | undefined): string {
  if (!v) return 'n/a';
  return `P ${verdictPrecision(v)}, near ${fraction(v.found['near-copy'])}, new ${fraction(v.found['new-rendition'])}, look-alike clips ${fraction(v.lookalikeClips)}, empty ${fraction(v.emptyClips)}`;
}

const fraction = (x: { flagged: number; of: number }) => `${x.flagged}/${x.of}`;
/** The share of flagged pairs that are right, and how many are not. */
const verdictPrecision = (v: VerdictFigures) => `${f3(v.flagged ? v.correct / v.flagged : NaN)} (${v.flagged - v.correct} wrong)`;

export function evaluate(plan: Plan, results: ClipResult[], registered: string[]): { kagami: MethodEval; phash: MethodEval; thresholds: { match: number; review: number } } {
  const th = DEFAULT_SCAN_OPTIONS.aggregate.thresholds;
  const gap = DEFAULT_SCAN_OPTIONS.aggregate.mergeGapSec;
  const usable = results.filter((r) => !r.clip.truthCharacter || registered.includes(r.clip.truthCharacter));
  const kagamiScore = (r: ClipResult, k: string) => r.kagami[k]?.score ?? 0;
  const phashScoreOf = (r: ClipResult, k: string) => Math.max(0, ...(r.phash.perChar[k] ?? []));
  const build = (
    score: (r: ClipResult, k: string) => number,
    segments: (r: ClipResult, k: string, threshold: number) => Interval[],
    productThresholds?: { match: number; review: number },
  ): MethodEval => {
    const pairs: Array<ScoredPair & { r: ClipResult; k: string }> = [];
    for (const r of usable) for (const k of registered) pairs.push({ score: score(r, k), positive: r.clip.truthCharacter === k, r, k });
    const negatives = pairs.filter((p) => !p.positive);
    const overall = summarise(pairs);
    const kindSummary = (kind: ClipKind) => summarise([...pairs.filter((p) => p.positive && p.r.clip.kind === kind), ...negatives]);
    const sources = [...new Set(usable.map((r) => r.clip.source))];
    const bySource = Object.fromEntries(sources.map((s) => [s, summarise(pairs.filter((p) => p.r.clip.source === s))]));
    const tP90 = Number.isFinite(overall.thresholdAtP90) ? overall.thresholdAtP90 : Infinity;
    const segTh = productThresholds ? productThresholds.review : tP90;
    const positives = usable.filter((r) => r.clip.truthCharacter);
    const ious = positives.map((r) => ({ detected: score(r, r.clip.truthCharacter!) >= segTh, iou: temporalIoU(segments(r, r.clip.truthCharacter!, segTh), [r.clip.interval!]) }));
    const top = (r: ClipResult, exclude?: string) => Math.max(0, ...registered.filter((k) => k !== exclude).map((k) => score(r, k)));
    const looks = usable.filter((r) => r.clip.kind === 'lookalike').map((r) => top(r));
    const empties = usable.filter((r) => r.clip.kind === 'empty').map((r) => top(r));
    const factors: Record<string, (r: PlannedClip) => boolean> = {
      'kind=near-copy': (c) => c.kind === 'near-copy',
      'kind=new-rendition': (c) => c.kind === 'new-rendition',
      'height<30%': (c) => c.transforms.heightFrac < 0.3,
      'height 30-50%': (c) => c.transforms.heightFrac >= 0.3 && c.transforms.heightFrac < 0.5,
      'height>=50%': (c) => c.transforms.heightFrac >= 0.5,
      mirror: (c) => c.transforms.mirror,
      hue: (c) => c.transforms.hue !== 0,
      'recolour of the character': (c) => !!c.recolourOf,
      tilt: (c) => c.transforms.tilt !== 0,
      blur: (c) => c.transforms.blur > 0,
      noise: (c) => c.transforms.noise > 0,
      occlusion: (c) => !!c.transforms.occlusion,
      caption: (c) => !!c.transforms.caption,
      reencode: (c) => c.transforms.reencode,
      'no photometric/occlusion/reencode': (c) => !c.transforms.hue && !c.transforms.blur && !c.transforms.noise && !c.transforms.occlusion && !c.transforms.reencode,
      ...Object.fromEntries(sources.map((s) => [`source=${s}`, (c: PlannedClip) => c.source === s])),
    };
    const recallByFactor = Object.fromEntries(
      Object.entries(factors).map(([name, f]) => {
        const sel = positives.filter((r) => f(r.clip));
        return [name, { n: sel.length, recall: sel.length ? sel.filter((r) => score(r, r.clip.truthCharacter!) >= tP90).length / sel.length : NaN }];
      }),
    );
    const failures = positives
      .map((r) => {
        const s = score(r, r.clip.truthCharacter!);
        const rank = 1 + registered.filter((k) => k !== r.clip.truthCharacter && score(r, k) >= s).length;
        return {
          id: r.clip.id,
          kind: r.clip.kind,
          character: r.clip.truthCharacter!,
          image: r.clip.image?.label ?? '',
          score: s,
          rank,
          transforms: describeTransforms(r.clip.transforms),
          ...(r.diagnosis ? { diagnosis: r.diagnosis } : {}),
        };
      })
      .filter((f) => f.score < tP90 || f.rank > 1)
      .sort((a, b) => a.score - b.score);
    return {
      overall,
      byKind: { 'near-copy': kindSummary('near-copy'), 'new-rendition': kindSummary('new-rendition') },
      bySource,
      temporalIoU: mean(ious.map((x) => x.iou)),
      temporalIoUDetected: mean(ious.filter((x) => x.detected).map((x) => x.iou)),
      segmentThreshold: segTh,
      falseAlarms: {
        lookalikeAtMatch: productThresholds ? rateAtOrAbove(looks, productThresholds.match) : NaN,
        lookalikeAtReview: productThresholds ? rateAtOrAbove(looks, productThresholds.review) : NaN,
        lookalikeAtP90: rateAtOrAbove(looks, tP90),
        emptyAtP90: rateAtOrAbove(empties, tP90),
        wrongCharacterAtP90: rateAtOrAbove(positives.map((r) => top(r, r.clip.truthCharacter)), tP90),
        meanTopLookalikeScore: mean(looks),
      },
      ...(productThresholds ? { verdicts: verdictFigures(usable, registered) } : {}),
      recallByFactor,
      failures,
    };
  };
  const kagami = build(kagamiScore, (r, k) => r.kagami[k]?.segments ?? [], th);
  const phash = build(phashScoreOf, (r, k, t) => hitsToIntervals(r.phash.frameTimes, (r.phash.perChar[k] ?? []).map((s) => s >= t), r.durationSec, gap));
  return { kagami, phash, thresholds: th };
}

function printTable(e: ReturnType<typeof evaluate>): void {
  const rows: Array<[string, (m: MethodEval) => string]> = [
    ['µAP (all pairs)', (m) => f3(m.overall.ap)],
    ['recall @ P≥0.90', (m) => `${f3(m.overall.recallAtP90)} (t=${f3(m.overall.thresholdAtP90)})`],
    ['recall @ P≥0.95', (m) => `${f3(m.overall.recallAtP95)} (t=${f3(m.overall.thresholdAtP95)})`],
    ['near copies: AP', (m) => f3(m.byKind['near-copy'].ap)],
    ['near copies: R@P.90 / R@P.95', (m) => `${f3(m.byKind['near-copy'].recallAtP90)} / ${f3(m.byKind['near-copy'].recallAtP95)}`],
    ['new renditions: AP', (m) => f3(m.byKind['new-rendition'].ap)],
    ['new renditions: R@P.90 / R@P.95', (m) => `${f3(m.byKind['new-rendition'].recallAtP90)} / ${f3(m.byKind['new-rendition'].recallAtP95)}`],
    ['temporal IoU (all positives)', (m) => f3(m.temporalIoU)],
    ['temporal IoU (detected)', (m) => `${f3(m.temporalIoUDetected)} (t=${f3(m.segmentThreshold)})`],
    ['look-alike clips alarmed @0.6/@0.35', (m) => (Number.isFinite(m.falseAlarms.lookalikeAtMatch) ? `${pct(m.falseAlarms.lookalikeAtMatch)} / ${pct(m.falseAlarms.lookalikeAtReview)}` : 'n/a')],
    ['verdicts review/match: precision', (m) => (m.verdicts ? verdictPrecision(m.verdicts) : 'n/a')],
    ['verdicts: near / new found', (m) => (m.verdicts ? `${fraction(m.verdicts.found['near-copy'])} / ${fraction(m.verdicts.found['new-rendition'])}` : 'n/a')],
    ['verdicts: look-alike / empty flagged', (m) => (m.verdicts ? `${fraction(m.verdicts.lookalikeClips)} / ${fraction(m.verdicts.emptyClips)}` : 'n/a')],
    ['look-alike clips alarmed @P.90 t', (m) => pct(m.falseAlarms.lookalikeAtP90)],
    ['empty clips alarmed @P.90 t', (m) => pct(m.falseAlarms.emptyAtP90)],
    ['positives w/ wrong char @P.90 t', (m) => pct(m.falseAlarms.wrongCharacterAtP90)],
    ['mean top score on look-alikes', (m) => f3(m.falseAlarms.meanTopLookalikeScore)],
  ];
  for (const s of Object.keys(e.kagami.bySource)) rows.push([`source ${s}: AP / R@P.90`, (m) => `${f3(m.bySource[s].ap)} / ${f3(m.bySource[s].recallAtP90)}`]);
  const w0 = Math.max(...rows.map((r) => r[0].length)) + 2;
  console.log(`\n${''.padEnd(w0)}${'Kagami'.padEnd(24)}pHash peer`);
  for (const [name, f] of rows) console.log(`${name.padEnd(w0)}${f(e.kagami).padEnd(24)}${f(e.phash)}`);
  console.log(`\nrecall at each method's P≥0.90 threshold, by factor (positives):`);
  for (const [name, v] of Object.entries(e.kagami.recallByFactor)) {
    console.log(`  ${name.padEnd(w0 - 2)}n=${String(v.n).padEnd(4)} kagami ${pct(v.recall).padEnd(8)} phash ${pct(e.phash.recallByFactor[name]?.recall ?? NaN)}`);
  }
  console.log(`\nKagami's misses (truth below its P≥0.90 threshold ${f3(e.kagami.overall.thresholdAtP90)}, or outranked), lowest first:`);
  for (const f of e.kagami.failures.slice(0, 25)) {
    console.log(`  ${f.id} ${f.kind.padEnd(13)} ${f.score.toFixed(3)} rank ${String(f.rank).padEnd(3)} ${f.character.padEnd(28)} ${f.transforms}  [${f.image}]`);
    if (f.diagnosis) console.log(`        ${describeDiagnosis(f.diagnosis)}`);
  }
  printMissCauses(e.kagami.failures);
}

/** How many of the misses each tier saw, by clip kind (diagnose.ts). */
export function printMissCauses(failures: MethodEval['failures']): void {
  if (!failures.some((f) => f.diagnosis)) return;
  const kinds = [...new Set(failures.map((f) => f.kind))];
  console.log(`\nKagami's misses by what saw the true character (${CAUSES.join(' / ')}):`);
  for (const kind of kinds) {
    const of = failures.filter((f) => f.kind === kind && f.diagnosis);
    console.log(`  ${kind.padEnd(15)} ${CAUSES.map((c) => of.filter((f) => f.diagnosis!.cause === c).length).join(' / ')}  (of ${of.length})`);
  }
}

/** Window coverage of the positives' characters over the frames sampled while they are on screen. */
interface ProposalRecall {
  frames: number;
  /** Fraction of those frames where some window has IoU ≥ 0.5 with the character's box. */
  iou50: number;
  /** Fraction where some window is usable by the crop descriptor (windowCoverage). */
  usable: number;
  medianBestIoU: number;
  byHeight: Record<string, { frames: number; usable: number }>;
}

/** The overlaid character's box at `t` (as renderClip draws it, cut to the frame); undefined outside its interval. */
function characterBoxAt(plan: Plan, c: PlannedClip, placed: ArtPlacement, t: number): Box | undefined {
  if (!c.interval || t < c.interval.startSec || t > c.interval.endSec) return undefined;
  return clipBox({ x: placed.x0 + (t - c.interval.startSec) * placed.drift, y: placed.y0, width: placed.width, height: placed.height }, plan.width, plan.height);
}

interface ObjectnessRecall {
  floor: number;
  /** Positive clips looked at (every OBJECTNESS_SAMPLE-th) and their sampled frames inside the character's interval. */
  clips: number;
  frames: number;
  /** Of the frames with a usable window (windowCoverage), those where the probe keeps at least one. */
  framesKept: number;
  /** Of the usable windows, those kept; of the windows touching no character, those read as scenery. */
  usableKept: number;
  sceneryDropped: number;
}

/** Every how many positive clips the objectness probe's recall is measured (each frame costs a dense pass). */
const OBJECTNESS_SAMPLE = 3;

/**
 * The objectness probe as a proposal step: on the plan's own frames (every OBJECTNESS_SAMPLE-th
 * positive clip, decoded again as the scan samples it), whether the windows the descriptor can use
 * for the character survive the probe's floor, and how many scenery windows do not.
 */
async function objectnessRecall(plan: Plan, results: ClipResult[], art: ReturnType<typeof artLookup>, embedder: Embedder, floor: number): Promise<ObjectnessRecall | undefined> {
  const probe = embedder.objectness;
  if (!probe || floor <= 0 || !embedder.embedRegions) return undefined;
  const sizes = DEFAULT_SCAN_OPTIONS.windows.map((w) => w.size);
  const positives = results.filter((r) => r.clip.truthCharacter && r.clip.interval).filter((_, i) => i % OBJECTNESS_SAMPLE === 0);
  const n = { frames: 0, usableFrames: 0, framesKept: 0, usable: 0, usableKept: 0, scenery: 0, sceneryDropped: 0 };
  for (const r of positives) {
    const placed = await artPlacement(plan, r.clip, art);
    if (!placed) continue;
    for await (const frame of sampleFrames(r.file, DEFAULT_SCAN_OPTIONS.sampling)) {
      const box = characterBoxAt(plan, r.clip, placed, frame.timeSec);
      if (!box || frame.width !== plan.width || frame.height !== plan.height) continue;
      n.frames++;
      const windows = slidingWindows(frame.width, frame.height, sizes);
      const vectors = await embedder.embedRegions(frame, windows);
      let usable = 0;
      let kept = 0;
      windows.forEach((w, i) => {
        const keep = objectnessOf(probe, vectors[i]) >= floor;
        const sq = { x: w.x, y: w.y, width: w.size, height: w.size };
        if (windowCoverage(box, [w]).usable) (usable++, keep && kept++);
        else if (intersectionArea(box, sq) === 0) (n.scenery++, keep || n.sceneryDropped++);
      });
      n.usable += usable;
      n.usableKept += kept;
      if (usable) (n.usableFrames++, kept && n.framesKept++);
    }
  }
  const frac = (a: number, b: number) => (b ? a / b : NaN);
  return { floor, clips: positives.length, frames: n.frames, framesKept: frac(n.framesKept, n.usableFrames), usableKept: frac(n.usableKept, n.usable), sceneryDropped: frac(n.sceneryDropped, n.scenery) };
}

/**
 * Proposal recall of the likeness tier's localisation (the scanner's sliding windows, at the
 * default window sizes): for every positive clip and every sampled frame inside its interval, the
 * overlaid character's box (as renderClip places it, cut to the frame) against the windows.
 */
async function proposalRecall(plan: Plan, results: ClipResult[], art: ReturnType<typeof artLookup>): Promise<ProposalRecall> {
  const windows = slidingWindows(plan.width, plan.height, DEFAULT_SCAN_OPTIONS.windows.map((w) => w.size));
  const rows: Array<{ iou: number; usable: boolean; band: string }> = [];
  for (const r of results) {
    const c = r.clip;
    if (!c.truthCharacter || !c.interval) continue;
    const placed = await artPlacement(plan, c, art);
    if (!placed) continue;
    const band = c.transforms.heightFrac < 0.3 ? 'height<30%' : c.transforms.heightFrac < 0.5 ? 'height 30-50%' : 'height>=50%';
    for (const t of r.phash.frameTimes) {
      const box = characterBoxAt(plan, c, placed, t);
      if (!box) continue;
      const cov = windowCoverage(box, windows);
      rows.push({ iou: cov.bestIoU, usable: cov.usable, band });
    }
  }
  const frac = (xs: boolean[]) => (xs.length ? xs.filter(Boolean).length / xs.length : NaN);
  const ious = rows.map((x) => x.iou).sort((a, b) => a - b);
  const byHeight: ProposalRecall['byHeight'] = {};
  for (const band of ['height<30%', 'height 30-50%', 'height>=50%']) {
    const b = rows.filter((x) => x.band === band);
    byHeight[band] = { frames: b.length, usable: frac(b.map((x) => x.usable)) };
  }
  return {
    frames: rows.length,
    iou50: frac(rows.map((x) => x.iou >= 0.5)),
    usable: frac(rows.map((x) => x.usable)),
    medianBestIoU: ious.length ? ious[ious.length >> 1] : NaN,
    byHeight,
  };
}

/**
 * Look-alike clips whose character is a pure recolour of a registered one: their first references
 * have the same size and the same silhouette (alpha masks with IoU ≥ 0.95), e.g. SuperTux's Gold
 * Bomb and Mr. Bomb. Found from the art, not listed by hand.
 */
async function recolourLookalikes(plan: Plan, art: ReturnType<typeof artLookup>): Promise<Array<{ clip: string; lookalike: string; of: string }>> {
  // Each character's first-reference silhouette, decoded once (a registered one is compared with every look-alike of its family).
  const masks = new Map<string, Promise<{ w: number; h: number; m: Uint8Array }>>();
  const mask = (key: string) => {
    let p = masks.get(key);
    if (!p) {
      p = sharp(art.character(key).references[0].png)
        .ensureAlpha()
        .raw()
        .toBuffer({ resolveWithObject: true })
        .then(({ data, info }) => {
          const m = new Uint8Array(info.width * info.height);
          for (let i = 0; i < m.length; i++) m[i] = data[i * 4 + 3] >= 128 ? 1 : 0;
          return { w: info.width, h: info.height, m };
        });
      masks.set(key, p);
    }
    return p;
  };
  const out: Array<{ clip: string; lookalike: string; of: string }> = [];
  for (const c of plan.clips) {
    if (c.kind !== 'lookalike' || !c.characterKey) continue;
    const look = art.character(c.characterKey);
    const a = await mask(c.characterKey);
    for (const reg of plan.registered) {
      if (reg.family !== look.family) continue;
      const b = await mask(reg.key);
      if (a.w !== b.w || a.h !== b.h) continue;
      let inter = 0;
      let union = 0;
      for (let i = 0; i < a.m.length; i++) {
        inter += a.m[i] & b.m[i];
        union += a.m[i] | b.m[i];
      }
      if (union && inter / union >= 0.95) {
        out.push({ clip: c.id, lookalike: c.characterKey, of: reg.key });
        break;
      }
    }
  }
  return out;
}

/**
 * The plan with each pure-recolour look-alike clip counted as the character it recolours: a near
 * copy when it shows one of the recolour's references, a new rendition when another frame. The
 * issue lists recolouring and team colours among the invariances a match must have, so the same
 * body in other colours is that character, not a look-alike.
 */
function countRecoloursAsCharacter(plan: Plan, recolours: Array<{ clip: string; of: string }>): Plan {
  const of = new Map(recolours.map((x) => [x.clip, x.of]));
  return {
    ...plan,
    clips: plan.clips.map((c) => {
      const reg = of.get(c.id);
      if (!reg) return c;
      return { ...c, kind: c.image?.set === 'renditions' ? 'new-rendition' : 'near-copy', truthCharacter: reg, recolourOf: reg };
    }),
  };
}

function printProposals(p: ProposalRecall): void {
  console.log(
    `
proposal recall of the likeness windows (sizes ${DEFAULT_SCAN_OPTIONS.windows.map((w) => w.size).join(', ')} of the frame height, on every frame), ${p.frames} positive frames: ` +
      `usable window ${pct(p.usable)}, IoU≥0.5 ${pct(p.iou50)}, median best IoU ${f3(p.medianBestIoU)}`,
  );
  console.log(`  usable by character height: ${Object.entries(p.byHeight).map(([k, v]) => `${k} ${pct(v.usable)} (n=${v.frames})`).join(', ')}`);
}

function printObjectness(o: ObjectnessRecall | undefined, stages: ScanStages): void {
  if (!o) {
    console.log('objectness probe: off (every window searched)');
    return;
  }
  console.log(
    `objectness probe (floor ${o.floor}): the scans read ${pct(stages.sceneryWindows / Math.max(1, stages.windows))} of ${stages.windows} windows as scenery (not searched); ` +
      `on ${o.frames} frames of ${o.clips} positive clips it keeps a usable window in ${pct(o.framesKept)} of the frames that have one, ` +
      `${pct(o.usableKept)} of the usable windows, and drops ${pct(o.sceneryDropped)} of the windows touching no character`,
  );
}

function log(s: string): void {
  process.stderr.write(`${s}\n`);
}

const sec = (t: number) => `${((performance.now() - t) / 1000).toFixed(1)} s`;

if (require.main === module) {
  main(process.argv).catch((e) => {
    process.stderr.write(`bench:accuracy failed: ${(e as Error).stack ?? e}\n`);
    process.exitCode = 1;
  });
}
