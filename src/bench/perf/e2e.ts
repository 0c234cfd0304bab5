/**
 * End to end: a 10 s 720p clip screened the CLI way (Scanner.scan in process, model and library
 * loaded once) with the default keypoint threads and with 1 (in-thread, the baseline), where a
 * scan's time goes by stage, the same clip through API + BullMQ queue + worker (Redis from
 * REDIS_URL, SQLite library), and the best split of the machine's cores between worker processes,
 * concurrent scans, onnxruntime threads and keypoint threads.
 *
 * Library: 20 characters with one reference each (the three that appear in the clip and 17
 * look-alike / unrelated distractors), built once into .cache/bench/e2e-lib/.
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { readEnv } from '../../config';
import { addReferences, openLibrary } from '../../library/library';
import { SQLITE_FILE } from '../../library/open-store';
import { skipsNonReference } from '../../media/ffmpeg';
import { ReferenceSet } from '../../scan/reference-set';
import { DEFAULT_SCAN_OPTIONS, newScanStages, Scanner, type ScanOptions, type ScanReport, type ScanStages } from '../../scan/scanner';
import { createApiKey } from '../../service/keys';
import { createRuntime, startApi, startWorker } from '../../service/runtime';
import { benchClip, benchCleanClip, characterArt, CLIP_CHARACTERS, loadProductEmbedder as loadEmbedder, PRODUCT_MODEL_ID } from './fixtures';
import { cacheDir, now, out, p50, p95, section, table, type BenchContext } from './util';

const DISTRACTORS = Array.from({ length: 17 }, (_, i) => 200 + i);

async function ensureLibrary(): Promise<string> {
  const dir = cacheDir(`e2e-lib-v1-${PRODUCT_MODEL_ID}`);
  if (existsSync(path.join(dir, SQLITE_FILE))) return dir;
  const embedder = await loadEmbedder(1);
  const lib = await openLibrary(dir, { create: true });
  try {
    for (const seed of [...CLIP_CHARACTERS, ...DISTRACTORS]) {
      await addReferences(lib, embedder, { id: `char-${seed}`, name: `Character ${seed}`, owner: 'Bench Studio' }, [{ name: `char-${seed}.png`, bytes: await characterArt(seed) }]);
    }
  } finally {
    await lib.store.close();
    await embedder.dispose();
  }
  return dir;
}

export async function benchE2e(ctx: BenchContext): Promise<void> {
  section('end to end: 10 s 720p clip, 20-character library');
  const libDir = await ensureLibrary();
  const clip = await benchClip(0);
  const reps = ctx.quick ? 3 : 6;

  // --- direct (CLI) path
  const embedder = await loadEmbedder(1);
  const lib = await openLibrary(libDir, { create: false });
  const refs = await ReferenceSet.load(lib.store, embedder);
  await lib.store.close();
  const scanner = new Scanner(embedder, refs, DEFAULT_SCAN_OPTIONS);
  const inThread = new Scanner(embedder, refs, { ...DEFAULT_SCAN_OPTIONS, scanThreads: 1 });
  // The other ways to run the windows (manifest `dense`): all as crops (one inference each), the
  // smallest windows (a quarter of the frame height) or all through the dense form (one pass per
  // window size); those that are not the default.
  const passLabel = (upTo: number) =>
    upTo === 0 ? 'all windows as crops, one inference each' : upTo === 1 ? 'all windows dense, one pass per window size' : `windows up to ${upTo} of the height dense, the rest as crops`;
  const variant = (label: string, opts: Partial<ScanOptions>, upTo?: number) => ({
    upTo,
    label,
    scanner: new Scanner(embedder, refs, { ...DEFAULT_SCAN_OPTIONS, ...opts }),
    times: [] as number[],
    stages: newScanStages(),
  });
  const others = [
    ...(embedder.embedRegions ? [0, 0.25, 1] : [])
      .filter((upTo) => upTo !== scanner.denseUpTo())
      .map((upTo) => variant(`${passLabel(upTo)} (KAGAMI_DENSE_UP_TO=${upTo})`, { denseUpTo: upTo }, upTo)),
    // The decoder skipping non-reference frames (SampleOptions.skipNonReference) against decoding them all.
    ...(skipsNonReference(DEFAULT_SCAN_OPTIONS.sampling)
      ? [variant('every frame decoded (skipNonReference: false)', { sampling: { ...DEFAULT_SCAN_OPTIONS.sampling, skipNonReference: false } })]
      : []),
    // The keypoint tier on every sampled frame against every other one and the frames between that its verified hits call for.
    ...(DEFAULT_SCAN_OPTIONS.keypointFrameStep === 2 ? [variant('keypoints on every frame (KAGAMI_KEYPOINT_FRAME_STEP=1)', { keypointFrameStep: 1 })] : []),
    // The frames between: next to any verified hit against only where a verified copy starts or ends.
    ...(DEFAULT_SCAN_OPTIONS.keypointFrameStep === 2
      ? [
          DEFAULT_SCAN_OPTIONS.keypointBetween === 'hits'
            ? variant('keypoints between only where a copy starts or ends (KAGAMI_KEYPOINT_BETWEEN=edges)', { keypointBetween: 'edges' })
            : variant('keypoints between next to every verified hit (KAGAMI_KEYPOINT_BETWEEN=hits)', { keypointBetween: 'hits' }),
        ]
      : []),
  ];
  // The screening case: a clip that copies no registered character, default and keypoints on every frame.
  const clean = await benchCleanClip();
  const cleanRuns = [
    { label: 'clip with no registered character', scanner, times: [] as number[], stages: newScanStages(), frames: 0 },
    ...(DEFAULT_SCAN_OPTIONS.keypointFrameStep === 2
      ? [{ label: 'clip with no registered character, keypoints on every frame', scanner: new Scanner(embedder, refs, { ...DEFAULT_SCAN_OPTIONS, keypointFrameStep: 1 }), times: [] as number[], stages: newScanStages(), frames: 0 }]
      : []),
  ];
  let report: ScanReport = await scanner.scan({ file: clip, minScore: 0.35, top: 10 }); // warm-up (and the pool's threads)
  const report1 = await inThread.scan({ file: clip, minScore: 0.35, top: 10 });
  const same = JSON.stringify({ ...report, elapsedSec: 0 }) === JSON.stringify({ ...report1, elapsedSec: 0 });
  const direct: number[] = [];
  const direct1: number[] = [];
  const stages = newScanStages();
  const stages1 = newScanStages();

  // --- API + queue + worker path (same process, same machine)
  const mediaRoot = path.dirname(clip);
  const env = readEnv({
    KAGAMI_LIBRARY: libDir,
    KAGAMI_MEDIA_ROOT: mediaRoot,
    REDIS_URL: process.env.REDIS_URL ?? 'redis://127.0.0.1:6379',
    KAGAMI_LOG_LEVEL: 'warn',
    KAGAMI_REFRESH_MS: '1000',
    KAGAMI_MODEL: PRODUCT_MODEL_ID, // the model the library was built with
  } as NodeJS.ProcessEnv);
  const rt = await createRuntime(env, { queuePrefix: `bench-${process.pid}` });
  const api = await startApi(rt, 0);
  const worker = startWorker(rt);
  const tWarm = now();
  await worker.ready;
  const warmUpS = (now() - tWarm) / 1000;
  const { key } = await createApiKey(rt.store, `Bench ${process.pid}-${Date.now()}`, 'platform');
  const base = `http://127.0.0.1:${api.port}`;
  const viaQueue = async (): Promise<number> => {
    const t0 = now();
    const res = await fetch(`${base}/v1/scans?wait=300`, {
      method: 'POST',
      headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
      body: JSON.stringify({ path: path.basename(clip) }),
    });
    const body = (await res.json()) as { status: string; error?: unknown };
    if (body.status !== 'done') throw new Error(`queued scan ended ${res.status} ${JSON.stringify(body).slice(0, 300)}`);
    return (now() - t0) / 1000;
  };
  const queued: number[] = [];
  let firstJob = NaN;
  try {
    firstJob = await viaQueue(); // the worker's first job, after its warm-up (startWorker)
    for (let r = 0; r < reps; r++) {
      // interleave so both see the same load
      let t0 = now();
      report = await scanner.scan({ file: clip, minScore: 0.35, top: 10, stages });
      direct.push((now() - t0) / 1000);
      t0 = now();
      await inThread.scan({ file: clip, minScore: 0.35, top: 10, stages: stages1 });
      direct1.push((now() - t0) / 1000);
      for (const o of others) {
        t0 = now();
        await o.scanner.scan({ file: clip, minScore: 0.35, top: 10, stages: o.stages });
        o.times.push((now() - t0) / 1000);
      }
      for (const o of cleanRuns) {
        t0 = now();
        o.frames = (await o.scanner.scan({ file: clean, minScore: 0.35, top: 10, stages: o.stages })).framesSampled;
        o.times.push((now() - t0) / 1000);
      }
      queued.push(await viaQueue());
    }
  } finally {
    await worker.close();
    await api.close();
    await rt.queues.obliterate().catch(() => undefined);
    await rt.close();
  }
  await scanner.dispose();
  for (const o of others) await o.scanner.dispose();
  for (const o of cleanRuns.slice(1)) await o.scanner.dispose();
  await embedder.dispose();
  const found = report.matches.filter((m) => m.verdict !== 'clear').map((m) => m.characterId);
  table(
    ['path', 'p50_s', 'p95_s', 'x real time', 'vs direct'],
    [
      [`direct (Scanner.scan, as the CLI; ${DEFAULT_SCAN_OPTIONS.scanThreads} keypoint threads)`, p50(direct), p95(direct), 10 / p50(direct), 1],
      ['direct, keypoints in-thread (KAGAMI_SCAN_THREADS=1)', p50(direct1), p95(direct1), 10 / p50(direct1), p50(direct) / p50(direct1)],
      ...others.map((o) => [`direct, ${o.label}`, p50(o.times), p95(o.times), 10 / p50(o.times), p50(direct) / p50(o.times)]),
      ...cleanRuns.map((o) => [`direct, ${o.label}`, p50(o.times), p95(o.times), 10 / p50(o.times), p50(direct) / p50(o.times)]),
      ['API + BullMQ + worker (POST /v1/scans?wait)', p50(queued), p95(queued), 10 / p50(queued), p50(direct) / p50(queued)],
    ],
  );
  out(`  ${report.framesSampled} frames sampled; found ${found.join(', ') || 'nothing'} (expected ${CLIP_CHARACTERS.map((s) => `char-${s}`).join(', ')}); reports in-thread and pooled ${same ? 'identical' : 'DIFFER'}`);
  out(`  worker: model, references and warm-up ${warmUpS.toFixed(2)} s at start; its first job ${firstJob.toFixed(2)} s, later ones ${p50(queued).toFixed(2)} s p50`);
  const orbShare = (label: string, st: ScanStages, runs: number, frames: number) => `${label} ${((100 * st.orbFrames) / (runs * frames)).toFixed(0)} %`;
  out(`  keypoint tier on (share of sampled frames): ${[orbShare('this clip', stages, reps, report.framesSampled), ...others.filter((o) => o.label.includes('KEYPOINT_')).map((o) => orbShare(o.label.replace(/.*\((.*)\)$/, '$1'), o.stages, reps, report.framesSampled)), ...cleanRuns.map((o) => orbShare(o.label, o.stages, reps, o.frames))].join(', ')}`);
  if (stages.windows) {
    const scenery = (st: ScanStages) => `${((100 * st.sceneryWindows) / Math.max(1, st.windows)).toFixed(0)} %`;
    out(
      `  likeness windows read as scenery by the model's objectness probe (not searched): this clip ${scenery(stages)} of ${stages.windows / reps} a scan` +
        `${cleanRuns.map((o) => `, ${o.label} ${scenery(o.stages)}`).join('')}`,
    );
  }
  stageTable(stages1, stages, reps, DEFAULT_SCAN_OPTIONS.scanThreads);
  if (embedder.embedRegions) {
    const ms = (s: ScanStages) => ((s.crops + s.inferenceThread) / reps).toFixed(0);
    const all = [{ upTo: scanner.denseUpTo(), stages }, ...others.filter((o) => o.upTo !== undefined)].sort((a, b) => a.upTo! - b.upTo!);
    out(`  windows (crops + inference in its thread, ms a clip): ${all.map((o) => `KAGAMI_DENSE_UP_TO=${o.upTo} ${ms(o.stages)}`).join(', ')}`);
  }
  ctx.summary.clip10sP50 = p50(direct);
  ctx.summary.realtimeX = 10 / p50(direct);
  ctx.summary.queueOverDirect = p50(direct) / p50(queued);

  // --- split of the cores: processes x concurrent scans x onnxruntime threads
  const clips = ctx.quick ? 2 : 8;
  const files: string[] = [];
  for (let v = 0; v < clips; v++) files.push(await benchClip(v));
  // [processes, concurrent scans, onnxruntime threads, keypoint threads]; the first is the baseline
  const configs: Array<[number, number, number, number]> = ctx.quick
    ? [[1, 1, 1, 1], [1, 1, 1, 2], [2, 1, 1, 1]]
    : [[1, 1, 1, 1], [1, 1, 1, 2], [1, 1, 1, 3], [1, 1, 2, 2], [1, 1, 2, 1], [1, 2, 1, 2], [2, 1, 1, 1], [2, 1, 1, 2], [2, 1, 2, 1]];
  const rows: Array<Array<string | number>> = [];
  let base1 = NaN;
  for (const [procs, conc, threads, kpThreads] of configs) {
    const ms = await runChildren(libDir, procs, conc, threads, kpThreads, files);
    const cps = (clips / ms) * 1000;
    if (Number.isNaN(base1)) base1 = cps;
    rows.push([`${procs} proc x ${conc} scan x ${threads} ort x ${kpThreads} kp`, ms / 1000, cps, cps * 10, cps / base1]);
  }
  table(['split (ort = onnxruntime threads, kp = keypoint threads)', 'wall_s', 'clips/s', 'video s / s', 'vs first'], rows);
}

/** Where a scan's time goes: main-thread ms per clip by stage, in-thread keypoints vs the pool. */
function stageTable(one: ScanStages, pooled: ScanStages, reps: number, threads: number): void {
  const names: Array<[keyof ScanStages, string]> = [
    ['decodeWait', 'decode wait (ffmpeg)'],
    ['crops', 'window crops (JS)'],
    ['inference', 'window inference (waiting for it)'],
    ['windowSearch', 'window search (vector index)'],
    ['orbSubmit', 'luma + hand-off to the pool'],
    ['orb', 'ORB extraction (pool: wait for it)'],
    ['keypointQuery', 'keypoint query (match + verify)'],
    ['aggregate', 'aggregate + report'],
    ['other', 'other (batching, observations)'],
    ['total', 'total (scan wall time)'],
  ];
  const share = (s: ScanStages, k: keyof ScanStages) => `${((100 * s[k]) / s.total).toFixed(1)} %`;
  const rows = names.map(([k, label]) => [label, one[k] / reps, share(one, k), pooled[k] / reps, share(pooled, k)]);
  rows.push(['window inference in its thread (overlapped)', one.inferenceThread / reps, share(one, 'inferenceThread'), pooled.inferenceThread / reps, share(pooled, 'inferenceThread')]);
  rows.push(['ORB in pool threads (overlapped)', '-', '-', pooled.orbWorkers / reps, share(pooled, 'orbWorkers')]);
  out('  where a scan goes (main thread; ms per clip, share of the scan):');
  table(['stage', 'in-thread ms', 'share', `${threads} threads ms`, 'share'], rows);
}

/** Runs `procs` scan-child processes splitting `files`; resolves with the wall time of the scans (ms). */
async function runChildren(libDir: string, procs: number, conc: number, threads: number, kpThreads: number, files: string[]): Promise<number> {
  const script = path.join(__dirname, 'scan-child.js');
  const parts = Array.from({ length: procs }, (_, p) => files.filter((_, i) => i % procs === p));
  const children = parts.map((clips) => spawn(process.execPath, [script, libDir, String(threads), String(conc), String(kpThreads), ...clips], { stdio: ['pipe', 'pipe', 'inherit'] }));
  const lines = children.map((c) => {
    let buf = '';
    const waiters: Array<(l: string) => void> = [];
    const got: string[] = [];
    c.stdout.on('data', (d: Buffer) => {
      buf += d.toString();
      let i;
      while ((i = buf.indexOf('\n')) >= 0) {
        const l = buf.slice(0, i);
        buf = buf.slice(i + 1);
        const w = waiters.shift();
        if (w) w(l);
        else got.push(l);
      }
    });
    return () => new Promise<string>((r) => (got.length ? r(got.shift()!) : waiters.push(r)));
  });
  await Promise.all(lines.map((next) => next())); // all 'ready'
  const t0 = now();
  for (const c of children) c.stdin.write('go\n');
  await Promise.all(lines.map((next) => next()));
  const ms = now() - t0;
  await Promise.all(children.map((c) => new Promise((r) => (c.exitCode !== null ? r(null) : c.on('exit', r)))));
  return ms;
}

