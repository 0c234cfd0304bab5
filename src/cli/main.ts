#!/usr/bin/env node
/**
 * `kagami`: the command line. Exit codes follow clamscan: 0 = clear, 1 = at least one `match`,
 * 2 = error (message on stderr; stack trace only with --verbose).
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import cliProgress from 'cli-progress';
import { DEFAULT_MODEL, MODELS_DIR, modelFilesDir, modelFor, modelManifestPath, readEnv, type Env } from '../config';
import { isKagamiError, KagamiError, NotFoundError, ValidationError } from '../errors';
import { addReferences, openLibrary, reembedLibrary, type Library } from '../library/library';
import { Scanner, type ScanReport } from '../scan/scanner';
import { scanOptionsFromEnv } from '../scan/options';
import { ReferenceSet } from '../scan/reference-set';
import { weightsForLibrary } from '../signals/embedding/int8-weights';
import { OnnxEmbedder } from '../signals/embedding/onnx-embedder';
import { resolveBinaries } from '../media/ffmpeg';
import { collectVideos } from '../media/videos';

export const EXIT = { clear: 0, match: 1, error: 2 } as const;

function probability(v: string): number {
  const n = Number(v);
  if (!Number.isFinite(n) || n < 0 || n > 1) throw new InvalidArgumentError('expected a number between 0 and 1');
  return n;
}
function positiveInt(v: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError('expected a whole number of at least 1');
  return n;
}
function positive(v: string): number {
  const n = Number(v);
  if (!Number.isFinite(n) || n <= 0) throw new InvalidArgumentError('expected a positive number');
  return n;
}

/**
 * The embedder for `lib`: KAGAMI_MODEL, else the model the library holds, else the default
 * (modelFor); an int8 model runs with the weights the library's references were embedded with
 * where this CPU allows (weightsForLibrary).
 */
async function loadEmbedder(env: Env, lib?: Library): Promise<OnnxEmbedder> {
  const stored = lib ? await lib.store.getModel() : undefined;
  const id = modelFor(env, stored?.modelId);
  const w = weightsForLibrary(stored?.modelId === id ? stored.weightBits : undefined, env.KAGAMI_INT8_WEIGHTS);
  if (w.note) process.stderr.write(`kagami: ${w.note}\n`);
  return OnnxEmbedder.create(modelManifestPath(id), { threads: env.KAGAMI_THREADS, modelsDir: env.KAGAMI_MODELS_DIR, int8Weights: w.bits });
}

/** `models pull` argument: a model id (models/<id>.json) or the path of a manifest file. */
function resolveManifestArg(arg: string): string {
  const isId = /^[a-z0-9][a-z0-9._-]*$/.test(arg) && !arg.endsWith('.json');
  const file = isId ? modelManifestPath(arg) : path.resolve(arg);
  if (!existsSync(file)) {
    if (isId) throw new NotFoundError('model', `${arg} (no ${file}; \`kagami models list\` shows the known ones)`);
    throw new KagamiError('file_not_found', `${arg}: no such manifest file`);
  }
  return file;
}

const mib = (n: number) => (n / 1024 / 1024).toFixed(1);

function formatReport(r: ScanReport): string {
  const lines = [`${r.video}: ${r.verdict.toUpperCase()} (${r.durationSec.toFixed(1)} s, ${r.framesSampled} frames, ${r.elapsedSec.toFixed(2)} s)`];
  for (const m of r.matches) {
    const segs = m.segments.map((s) => `${s.startSec.toFixed(1)}–${s.endSec.toFixed(1)} s`).join(', ') || '—';
    let line = `  ${m.verdict.padEnd(6)} ${m.score.toFixed(3)}  ${m.characterId} (${m.name}, ${m.owner})`;
    if (m.score > 0) {
      line +=
        ` ${m.kind}\n         at ${segs}; best frame ${m.evidence.timeSec.toFixed(2)} s ~ ${m.evidence.referenceImage}` +
        (m.evidence.inliers !== undefined ? ` (${m.evidence.inliers} matching keypoints${m.evidence.mirrored ? ', mirrored' : ''})` : '');
    }
    lines.push(line);
  }
  if (!r.matches.length) lines.push('  no registered character found');
  return lines.join('\n');
}

export function buildProgram(env: () => Env, setExit: (code: number) => void): Command {
  const program = new Command('kagami')
    .description('Screen video clips for registered characters.')
    .option('--verbose', 'print stack traces with errors')
    .showHelpAfterError('(run with --help for usage)')
    .exitOverride();
  const libraryOption = () => new Option('--library <dir>', 'reference library directory (default: $KAGAMI_LIBRARY or ./reference-library)');

  const library = program.command('library').description('manage the reference library');

  library
    .command('add')
    .description('register a character (created if new) with one or more reference images')
    .addOption(libraryOption())
    .requiredOption('--character <id>', 'character id (letters, digits, . _ : -)')
    .option('--name <name>', 'display name (required for a new character)')
    .option('--owner <owner>', 'rightsholder (required for a new character)')
    .option('--franchise <franchise>', 'franchise or work')
    .option('--negative', 'the images are negative examples: look-alikes this character is not (where one matches as well, the character is not reported)')
    .argument('<images...>', 'reference images (PNG, JPEG, WebP, …)')
    .action(async (images: string[], o: { library?: string; character: string; name?: string; owner?: string; franchise?: string; negative?: boolean }) => {
      const e = env();
      const files = images.map((f) => {
        try {
          if (!statSync(f).isFile()) throw new Error();
          return { name: f, bytes: readFileSync(f) };
        } catch {
          throw new KagamiError('file_not_found', `${f}: no such file`);
        }
      });
      const lib = await openLibrary(o.library ?? e.KAGAMI_LIBRARY, { create: true, databaseUrl: e.DATABASE_URL, dataDir: e.KAGAMI_DATA_DIR });
      try {
        const embedder = await loadEmbedder(e, lib);
        const r = await addReferences(
          lib,
          embedder,
          { id: o.character, name: o.name, owner: o.owner, franchise: o.franchise },
          files,
          { maxPixels: e.KAGAMI_MAX_IMAGE_PIXELS, minSide: 16 },
          { negative: o.negative },
        );
        const what = o.negative ? 'negative example(s)' : 'reference(s)';
        process.stdout.write(`${r.character.id} (${r.character.name}, ${r.character.owner}): ${r.added} ${what} added, ${r.references.length - r.added} already present\n`);
      } finally {
        await lib.store.close();
      }
    });

  library
    .command('list')
    .description('list registered characters and their references')
    .addOption(libraryOption())
    .option('--json', 'print JSON')
    .action(async (o: { library?: string; json?: boolean }) => {
      const e = env();
      const lib = await openLibrary(o.library ?? e.KAGAMI_LIBRARY, { create: false, databaseUrl: e.DATABASE_URL, dataDir: e.KAGAMI_DATA_DIR });
      try {
        const chars = await lib.store.listCharacters();
        const refs = await lib.store.listReferences();
        const model = await lib.store.getModel();
        const rows = chars.map((c) => ({ ...c, references: refs.filter((r) => r.characterId === c.id) }));
        if (o.json) {
          const weights = model?.weightBits ? { weightBits: model.weightBits } : {};
          process.stdout.write(JSON.stringify({ model: model?.modelId ?? null, ...weights, defaultModel: DEFAULT_MODEL, characters: rows }, null, 2) + '\n');
        } else {
          for (const c of rows) {
            const neg = c.references.filter((r) => r.negative).length;
            process.stdout.write(`${c.id}\t${c.name}\t${c.owner}\t${c.references.length - neg} reference(s)${neg ? `, ${neg} negative example(s)` : ''}\n`);
          }
          if (!rows.length) process.stdout.write('(no characters)\n');
          // A library keeps the model it was built with across upgrades (config.ts modelFor); say
          // when a newer default exists, since only `reembed` moves it there.
          if (model) {
            const newer = model.modelId !== DEFAULT_MODEL ? ` (new libraries get ${DEFAULT_MODEL}; \`kagami library reembed\` moves this one to it)` : '';
            const weights = model.weightBits ? ` (${model.weightBits}-bit int8 weights)` : '';
            process.stdout.write(`model: ${model.modelId}${weights}${newer}\n`);
          }
        }
      } finally {
        await lib.store.close();
      }
    });

  library
    .command('remove')
    .description('remove a character and its references')
    .addOption(libraryOption())
    .argument('<id>', 'character id')
    .action(async (id: string, o: { library?: string }) => {
      const e = env();
      const lib = await openLibrary(o.library ?? e.KAGAMI_LIBRARY, { create: false, databaseUrl: e.DATABASE_URL, dataDir: e.KAGAMI_DATA_DIR });
      try {
        if (!(await lib.store.deleteCharacter(id))) throw new NotFoundError('character', id);
        process.stdout.write(`${id} removed\n`);
      } finally {
        await lib.store.close();
      }
    });

  library
    .command('reembed')
    .description(
      `move the library to another embedding model (--model, else KAGAMI_MODEL, else ${DEFAULT_MODEL}): embeds every reference's stored file again, extracts its keypoints again and switches the library's model in one transaction. ` +
        'With the library\'s own model it computes the references\' features again (e.g. to pick up new reference views or appearance templates). ' +
        'Running workers with KAGAMI_MODEL unset follow the library at their next refresh; ones pinned to another model stop with model_mismatch.',
    )
    .addOption(libraryOption())
    .option('--model <id>', `target model id (default: KAGAMI_MODEL, else ${DEFAULT_MODEL})`)
    .action(async (o: { library?: string; model?: string }) => {
      const e = env();
      const target = o.model ?? modelFor(e);
      if (!existsSync(modelManifestPath(target))) throw new NotFoundError('model', `${target} (\`kagami models list\` shows the known ones)`);
      const lib = await openLibrary(o.library ?? e.KAGAMI_LIBRARY, { create: false, databaseUrl: e.DATABASE_URL, dataDir: e.KAGAMI_DATA_DIR });
      const bar = process.stderr.isTTY
        ? new cliProgress.SingleBar({ format: '{bar} {percentage}% | {value}/{total} references', stream: process.stderr, hideCursor: true }, cliProgress.Presets.shades_classic)
        : undefined;
      let embedder: OnnxEmbedder | undefined;
      try {
        embedder = await loadEmbedder({ ...e, KAGAMI_MODEL: target });
        const r = await reembedLibrary(lib, embedder, {
          limits: { maxPixels: e.KAGAMI_MAX_IMAGE_PIXELS, minSide: 16 },
          onProgress: (done, total) => (done === 0 ? bar?.start(total, 0) : bar?.update(done)),
        });
        bar?.stop();
        const what = r.from === r.to ? `library kept on ${r.to}` : `library moved from ${r.from ?? '(no model yet)'} to ${r.to}`;
        process.stdout.write(`${what}: ${r.references} reference(s) embedded and their keypoints extracted again\n`);
      } finally {
        bar?.stop();
        await lib.store.close();
        await embedder?.dispose();
      }
    });

  program
    .command('scan')
    .description('scan videos, or every video under a directory, for registered characters')
    .addOption(libraryOption())
    .option('--json', 'print one JSON report (one video)')
    .option('--jsonl', 'print one JSON report per line')
    .option('--min-score <x>', 'list characters scoring at least this (default: the review threshold)', probability)
    .option('--top <k>', 'list at most this many characters per video', positiveInt, 10)
    .option('--fps <n>', 'frames sampled per second', positive)
    .argument('<videos...>', 'video files or directories')
    .action(async (inputs: string[], o: { library?: string; json?: boolean; jsonl?: boolean; minScore?: number; top: number; fps?: number }) => {
      const e = env();
      if (o.json && o.jsonl) throw new ValidationError('--json and --jsonl exclude each other');
      const videos = collectVideos(inputs);
      if (!videos.length) throw new KagamiError('no_videos', `no video files found in ${inputs.join(', ')}`);
      if (o.json && videos.length > 1) throw new ValidationError(`--json prints one report but ${videos.length} videos were given: use --jsonl`);
      const lib = await openLibrary(o.library ?? e.KAGAMI_LIBRARY, { create: false, databaseUrl: e.DATABASE_URL, dataDir: e.KAGAMI_DATA_DIR });
      const opts = scanOptionsFromEnv(e, o.fps);
      let scanner: Scanner;
      try {
        resolveBinaries({ ffmpeg: e.KAGAMI_FFMPEG, ffprobe: e.KAGAMI_FFPROBE });
        const embedder = await loadEmbedder(e, lib);
        scanner = new Scanner(embedder, await ReferenceSet.load(lib.store, embedder), opts);
      } finally {
        await lib.store.close();
      }
      const minScore = o.minScore ?? opts.aggregate.thresholds.review;
      const bar = process.stderr.isTTY
        ? new cliProgress.SingleBar({ format: '{bar} {percentage}% | {value}/{total} frames | {file}', stream: process.stderr, hideCursor: true }, cliProgress.Presets.shades_classic)
        : undefined;
      let worst = 0;
      try {
        for (const video of videos) {
          try {
            bar?.start(1, 0, { file: path.basename(video) });
            const report = await scanner.scan({
              file: video,
              minScore,
              top: o.top,
              onProgress: (p) => {
                bar?.setTotal(p.framesExpected);
                bar?.update(p.framesDone);
              },
            });
            bar?.stop();
            if (o.json) process.stdout.write(JSON.stringify(report, null, 2) + '\n');
            else if (o.jsonl) process.stdout.write(JSON.stringify(report) + '\n');
            else process.stdout.write(formatReport(report) + '\n');
            if (report.verdict === 'match') worst = Math.max(worst, EXIT.match);
          } catch (err) {
            bar?.stop();
            if (!isKagamiError(err) || videos.length === 1) throw err;
            // In an archive scan one bad file must not stop the others: report it and go on.
            process.stderr.write(`kagami: ${err.message}\n`);
            if (o.jsonl) process.stdout.write(JSON.stringify({ video, error: { code: err.code, message: err.message } }) + '\n');
            worst = EXIT.error;
          }
        }
      } finally {
        await scanner.dispose();
      }
      setExit(worst);
    });

  program
    .command('api')
    .description('start the HTTP API (port from PORT; Redis from REDIS_URL; PostgreSQL from DATABASE_URL or SQLite in the library)')
    .addOption(libraryOption())
    .action(async (o: { library?: string }) => {
      const { createRuntime, startApi, closeOnSignals } = await import('../service/runtime');
      const e = o.library ? { ...env(), KAGAMI_LIBRARY: o.library } : env();
      const rt = await createRuntime(e);
      const api = await startApi(rt, e.PORT);
      await closeOnSignals(rt.log, api, rt);
    });

  program
    .command('worker')
    .description('start a worker: reference processing, scans, batches, webhooks')
    .addOption(libraryOption())
    .action(async (o: { library?: string }) => {
      const { createRuntime, startWorker, closeOnSignals } = await import('../service/runtime');
      const e = o.library ? { ...env(), KAGAMI_LIBRARY: o.library } : env();
      const rt = await createRuntime(e);
      const worker = startWorker(rt);
      await closeOnSignals(rt.log, worker, rt);
    });

  const keys = program.command('keys').description('API keys');
  keys
    .command('create')
    .description('create an API key for a tenant (created if new); prints the key alone, once')
    .addOption(libraryOption())
    .requiredOption('--owner <name>', 'tenant name (a rightsholder owns characters under this name)')
    .requiredOption('--role <role>', 'rightsholder, platform or admin')
    .action(async (o: { library?: string; owner: string; role: string }) => {
      const e = env();
      const { openStore } = await import('../library/open-store');
      const { createApiKey } = await import('../service/keys');
      const store = await openStore({ databaseUrl: e.DATABASE_URL, libraryDir: o.library ?? e.KAGAMI_LIBRARY, create: true });
      try {
        const { key } = await createApiKey(store, o.owner, o.role);
        process.stdout.write(key + '\n');
      } finally {
        await store.close();
      }
    });

  program
    .command('demo')
    .description('register sample characters and scan a sample clip (writes under --dir)')
    .option('--dir <dir>', 'where the sample art, clip and library go', '.cache/demo')
    .option('--json', 'print the JSON report')
    .action(async (o: { dir: string; json?: boolean }) => {
      const e = env();
      const { prepareDemo } = await import('./demo');
      process.stderr.write(`kagami demo: preparing sample art and a 10 s clip in ${o.dir} …\n`);
      const demo = await prepareDemo(o.dir, modelFor(e));
      const embedder = await loadEmbedder(e);
      const lib = await openLibrary(demo.library, { create: true });
      try {
        for (const r of demo.references) {
          await addReferences(lib, embedder, { id: r.id, name: r.name, owner: r.owner }, [{ name: r.file, bytes: readFileSync(r.file) }]);
        }
        const scanner = new Scanner(embedder, await ReferenceSet.load(lib.store, embedder), scanOptionsFromEnv(e));
        process.stderr.write(`kagami demo: registered ${demo.references.map((r) => r.id).join(', ')}; scanning ${demo.clip}\n`);
        process.stderr.write('  (the clip shows sample-kitsune mirrored from 2.5 s to 7 s, and an unregistered look-alike throughout)\n');
        const report = await scanner.scan({ file: demo.clip, minScore: 0, top: 10 }).finally(() => scanner.dispose());
        process.stdout.write((o.json ? JSON.stringify(report, null, 2) : formatReport(report)) + '\n');
        process.stderr.write(`kagami demo: the same scan from the command line:\n  npx kagami scan --library ${demo.library} ${demo.clip}\n`);
      } finally {
        await lib.store.close();
      }
    });

  const models = program.command('models').description('embedding models');
  models
    .command('build')
    .description('build the ONNX models described in models/*.json (done on first use otherwise)')
    .option('--force', 'rebuild even when present')
    .action(async (o: { force?: boolean }) => {
      const e = env();
      const { buildAll } = await import('../models/build');
      await buildAll({ force: !!o.force, filesDir: modelFilesDir(e), log: (l: string) => process.stdout.write(l + '\n') });
    });

  models
    .command('list')
    .description('list the models in models/*.json: kind, whether the file is present, dimension')
    .option('--json', 'print JSON')
    .action(async (o: { json?: boolean }) => {
      const e = env();
      const { listModels } = await import('../models/pull');
      const rows = listModels(MODELS_DIR, modelFilesDir(e));
      if (o.json) {
        process.stdout.write(JSON.stringify(rows, null, 2) + '\n');
        return;
      }
      const pins = { built: 'sha256 (built)', sha256: 'sha256', lock: 'pinned on first pull', unpinned: 'unpinned (trust on first pull)', 'invalid-lock': 'INVALID LOCK FILE' };
      const table = [['ID', 'KIND', 'PRESENT', 'DIM', 'HASH', 'LICENCE']];
      for (const r of rows) {
        if (r.error) table.push([r.id, 'invalid', '-', '-', '-', r.error]);
        else table.push([r.id, r.weightBits ? `${r.kind}, ${r.weightBits}-bit weights` : r.kind, r.present ? `yes (${mib(r.bytes ?? 0)} MiB)` : 'no', String(r.dimension), pins[r.pin], r.licence]);
      }
      const widths = table[0].map((_, i) => Math.max(...table.map((row) => (i < row.length - 1 ? row[i].length : 0))));
      for (const row of table) process.stdout.write(row.map((c, i) => (i < row.length - 1 ? c.padEnd(widths[i]) : c)).join('  ') + '\n');
      if (!rows.length) process.stdout.write('(no model manifests)\n');
    });

  models
    .command('pull')
    .description('download a model whose manifest has a `download` section (resumable, sha256-checked)')
    .argument('<id>', 'model id (models/<id>.json) or the path of a manifest file')
    .option('--url <url>', "download from this URL instead of the manifest's (a mirror); the sha256 check is the same")
    .option('--force', 'download again even when the file is present')
    .action(async (id: string, o: { url?: string; force?: boolean }) => {
      const e = env();
      const { pullModel } = await import('../models/pull');
      const manifestPath = resolveManifestArg(id);
      const bar = process.stderr.isTTY
        ? new cliProgress.SingleBar(
            { format: '{bar} {percentage}% | {done}/{size} MiB | {speed} MiB/s | ETA {eta_formatted}', stream: process.stderr, hideCursor: true },
            cliProgress.Presets.shades_classic,
          )
        : undefined;
      let started = false;
      const t0 = Date.now();
      const abort = new AbortController();
      const onSigint = () => abort.abort(new Error('interrupted (the partial file is kept: pull again to resume)'));
      process.once('SIGINT', onSigint);
      try {
        const r = await pullModel({
          manifestPath,
          modelsDir: modelFilesDir(e),
          url: o.url,
          force: !!o.force,
          signal: abort.signal,
          warn: (l) => {
            bar?.stop();
            process.stderr.write(l + '\n');
          },
          onProgress: (p) => {
            if (!started) {
              started = true;
              if (p.resumedFrom > 0) process.stderr.write(`kagami: resuming ${p.id} at ${mib(p.resumedFrom)} MiB\n`);
              else if (!bar) process.stderr.write(`kagami: downloading ${p.id}${p.total ? ` (${mib(p.total)} MiB)` : ''} …\n`);
              if (bar && p.total) bar.start(p.total, p.received, { done: mib(p.received), size: mib(p.total), speed: '0.0' });
            }
            const secs = Math.max(0.001, (Date.now() - t0) / 1000);
            bar?.update(p.received, { done: mib(p.received), speed: mib((p.received - p.resumedFrom) / secs) });
          },
        });
        bar?.stop();
        const how = r.status === 'present' ? 'already present, sha256 checked' : r.resumedFrom > 0 ? `downloaded (resumed at ${mib(r.resumedFrom)} MiB)` : 'downloaded';
        const pin = { manifest: 'matches the manifest', lock: 'matches the lock file', 'new-lock': 'pinned now (trust on first use)' }[r.pinnedBy];
        process.stdout.write(`${r.id}: ${how}: ${r.path} (${mib(r.bytes)} MiB, sha256 ${r.sha256}, ${pin})\n`);
      } finally {
        bar?.stop();
        process.removeListener('SIGINT', onSigint);
      }
    });

  return program;
}

export async function main(argv: string[]): Promise<number> {
  let code = 0;
  let env: Env | undefined;
  const program = buildProgram(() => (env ??= readEnv()), (c) => (code = c));
  const verbose = argv.includes('--verbose');
  try {
    await program.parseAsync(argv, { from: 'user' });
    return code;
  } catch (err) {
    if (err instanceof CommanderError) {
      // help and version end with code 0; usage mistakes are errors (2), never "match" (1).
      return err.exitCode === 0 ? 0 : EXIT.error;
    }
    if (isKagamiError(err)) process.stderr.write(`kagami: ${err.message}\n`);
    else process.stderr.write(`kagami: unexpected error: ${(err as Error)?.message ?? String(err)}\n`);
    if (verbose && err instanceof Error && err.stack) process.stderr.write(err.stack + '\n');
    return EXIT.error;
  }
}

if (require.main === module) {
  main(process.argv.slice(2)).then(
    (code) => {
      process.exitCode = code;
    },
    () => {
      process.exitCode = EXIT.error;
    },
  );
}
