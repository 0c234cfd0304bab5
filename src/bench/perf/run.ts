/**
 * `npm run bench [-- --quick] [-- --only <section>]`: Kagami's performance against its floors,
 * each figure printed beside the baseline it is measured against, in the same run.
 * The LAST line printed is a fixed-format summary read by an external check.
 */
import { Command } from 'commander';
import { benchE2e } from './e2e';
import { benchKeypoints } from './keypoints';
import { benchEmbedding, benchPipeline } from './pipeline';
import { benchSearch } from './search';
import { fmt, out, type BenchContext, type Summary } from './util';

const SECTIONS: Record<string, (ctx: BenchContext) => Promise<void>> = {
  pipeline: benchPipeline,
  embedding: benchEmbedding,
  search: benchSearch,
  keypoints: benchKeypoints,
  e2e: benchE2e,
};

export function summaryLine(s: Summary): string {
  const f = (v: number | undefined, digits: number) => (v === undefined || !Number.isFinite(v) ? 'na' : v.toFixed(digits));
  return [
    `pipeline/floor=${f(s.pipelineOverFloor, 2)}`,
    `clip10s_p50_s=${f(s.clip10sP50, 2)}`,
    `realtime_x=${f(s.realtimeX, 1)}`,
    `search1M_p50_ms=${f(s.search1MP50Ms, 1)}`,
    `recall10=${f(s.recall10, 2)}`,
    `kp_frame_ms=${f(s.kpFrameMs, 0)}`,
    `kp_keep=${f(s.kpKeep, 2)}`,
    `queue/direct=${f(s.queueOverDirect, 2)}`,
  ].join(' ');
}

async function main(): Promise<void> {
  const program = new Command('bench')
    .description('Kagami performance bench')
    .option('--quick', 'fewer repetitions and configurations (a run of about 2 minutes on a warm cache)')
    .option('--only <sections>', `comma-separated subset of: ${Object.keys(SECTIONS).join(', ')}`)
    .parse(process.argv);
  const o = program.opts<{ quick?: boolean; only?: string }>();
  const chosen = o.only ? o.only.split(',').map((s) => s.trim()) : Object.keys(SECTIONS);
  for (const s of chosen) if (!SECTIONS[s]) throw new Error(`unknown section '${s}' (sections: ${Object.keys(SECTIONS).join(', ')})`);
  const ctx: BenchContext = { quick: !!o.quick, summary: {} };
  const t0 = performance.now();
  out(`kagami perf bench (${ctx.quick ? 'quick' : 'full'}), node ${process.version}, ${require('node:os').cpus().length} cpus`);
  for (const s of chosen) {
    const ts = performance.now();
    try {
      await SECTIONS[s](ctx);
    } catch (e) {
      out(`  section ${s} FAILED: ${(e as Error).stack ?? e}`);
    }
    out(`  (${s}: ${fmt((performance.now() - ts) / 1000)} s)`);
  }
  out(`total ${fmt((performance.now() - t0) / 1000)} s`);
  out(summaryLine(ctx.summary));
}

main().then(
  () => process.exit(0),
  (e) => {
    process.stderr.write(`${(e as Error).stack ?? e}\n`);
    process.exit(2);
  },
);
