/**
 * A recorded accuracy-bench run (run.ts --record) read back, for the tools that score it again
 * offline (rescore.ts, hubness.ts): its plan and registered characters, each clip's frame
 * observations, a clip's result from (changed) observations, and the figures in one line.
 */
import { readFileSync } from 'node:fs';
import { aggregateClip, DEFAULT_AGGREGATE, withLikenessReview, type AggregateParams } from '../../matching/aggregate';
import type { FrameObservation } from '../../matching/types';
import type { Plan, PlannedClip } from './generate';
import type { ClipResult, MethodEval } from './run';

/** One clip's line of a --record file. */
export interface Recorded {
  clip: string;
  durationSec: number;
  frameTimes: number[];
  observations: Record<string, FrameObservation[]>;
}

export interface RecordedRun {
  plan: Plan;
  /** Every character the run's library held (the plan's and those never shown), sorted. */
  registered: string[];
  byClip: Map<string, Recorded>;
  /** The plan's clips that were recorded, in plan order. */
  clips: PlannedClip[];
  /** The aggregation the run's scans used (the product's, with the model's likeness review point). */
  aggregate: AggregateParams;
}

/** Reads a run's accuracy-result.json and its --record file; throws with a message for the user. */
export function readRecordedRun(resultFile: string, recordFile: string): RecordedRun {
  let result: { plan?: Plan; options?: { neverShown?: string[]; likenessReviewFrom?: number | null } };
  let records: Recorded[];
  try {
    result = JSON.parse(readFileSync(resultFile, 'utf8'));
    records = readFileSync(recordFile, 'utf8')
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as Recorded);
  } catch (e) {
    throw new Error(`cannot read the run: ${(e as Error).message}`);
  }
  const plan = result.plan;
  if (!plan?.clips || !plan.registered) throw new Error(`${resultFile} is not an accuracy-result.json (no plan)`);
  const registered = [...new Set([...plan.registered.map((r) => r.key), ...(result.options?.neverShown ?? [])])].sort();
  const byClip = new Map(records.map((r) => [r.clip, r]));
  const clips = plan.clips.filter((c) => byClip.has(c.id));
  if (!clips.length) throw new Error(`${recordFile} holds none of the run's clips (recorded by another run?)`);
  return { plan, registered, byClip, clips, aggregate: withLikenessReview(DEFAULT_AGGREGATE, result.options?.likenessReviewFrom ?? undefined) };
}

/** A clip's result as the bench scores it, from its observations aggregated with `params`. */
export function clipResultOf(
  clip: PlannedClip,
  rec: Recorded,
  observations: ReadonlyMap<string, FrameObservation[]>,
  registered: string[],
  params: AggregateParams,
): ClipResult {
  const kagami: ClipResult['kagami'] = {};
  for (const c of aggregateClip(registered, observations, rec.frameTimes, rec.durationSec, params)) kagami[c.characterId] = { score: c.score, segments: c.segments, verdict: c.verdict, kind: c.kind };
  return { clip, file: '', durationSec: rec.durationSec, kagami, phash: { frameTimes: [], perChar: {} }, scanSec: 0, phashSec: 0 };
}

/** The figures of one way of scoring, in one line after its name. */
export function figuresLine(name: string, k: MethodEval, width: number): string {
  const f = (x: number) => x.toFixed(3);
  return (
    `${name.padEnd(width)} µAP ${f(k.overall.ap)} near ${f(k.byKind['near-copy'].ap)} new ${f(k.byKind['new-rendition'].ap)} ` +
    `R@P.95 ${f(k.overall.recallAtP95)} (near ${f(k.byKind['near-copy'].recallAtP95)}, new ${f(k.byKind['new-rendition'].recallAtP95)}) tIoU ${f(k.temporalIoU)}`
  );
}
