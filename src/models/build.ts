/**
 * Builds the ONNX embedding models described by the manifests in models/*.json.
 *
 *   node dist/models/build.js [--force] [--update-sha]
 *
 * Without flags, builds each model whose .onnx file is missing. --force rebuilds all of them.
 * Every build is checked against the manifest's sha256; a mismatch is an error and leaves no file.
 * --update-sha (for maintainers, after changing the converter) writes the new sha256 into the
 * manifest instead of failing.
 */
import { createHash } from 'crypto';
import * as fs from 'fs';
import * as path from 'path';
import { listManifestFiles, LoadedManifest, loadManifest, ModelManifestSchema } from '../signals/embedding/manifest';
import { convertLayersModel, loadPackagedLayersModel } from '../signals/embedding/tfjs-to-onnx';

/** The repository's models/ folder, located relative to this (compiled) file: dist/models -> models. */
export const MODELS_DIR = path.resolve(__dirname, '../../models');

export interface BuildResult {
  id: string;
  path: string;
  sha256: string;
  bytes: number;
  ms: number;
}

export function sha256Of(data: Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}

/** Convert the manifest's source model; returns the ONNX bytes (nothing is written). */
export function convertManifestModel(manifest: LoadedManifest): Uint8Array {
  const { source, trunk, head, input, output } = manifest;
  if (!source || !trunk?.cutAfter || !head || head.type !== 'gem-grid') {
    throw new Error(`${manifest.id}: not a model built from an npm package (see its manifest: downloaded or trained)`);
  }
  if (input.layout !== 'NHWC' || input.channels !== 'RGB') throw new Error(`${manifest.id}: built models are NHWC RGB`);
  const { model, weightData, version } = loadPackagedLayersModel(source.package, source.files);
  if (version !== source.version) {
    // Not fatal by itself: the sha256 check decides whether the result is still the same model.
    process.emitWarning(`${manifest.id}: manifest names ${source.package}@${source.version}, installed is ${version}`);
  }
  const r = convertLayersModel(model, weightData, {
    cutAfter: trunk.cutAfter,
    head: { ...head, type: 'gem-grid' },
    inputName: input.name,
    outputName: output.name,
    docString: `${manifest.id}: ${manifest.description}`,
    metadata: {
      'kagami.model_id': manifest.id,
      'kagami.source': `${source.package}@${source.version} (${source.licence})`,
      'kagami.trunk': `${trunk.architecture} cut after ${trunk.cutAfter}`,
      'kagami.head': `gem-grid grid=${head.grid} p=${head.p}`,
    },
  });
  if (r.inputShape[0] !== input.height || r.inputShape[1] !== input.width || r.inputShape[2] !== 3) {
    throw new Error(`${manifest.id}: model input is ${r.inputShape.join('x')}, manifest says ${input.height}x${input.width}x3`);
  }
  if (r.dimension !== output.dimension) {
    throw new Error(`${manifest.id}: model output has ${r.dimension} dimensions, manifest says ${output.dimension}`);
  }
  return r.onnx;
}

/**
 * Build the model of one manifest into outDir (default: the manifest's folder), verify its sha256
 * and write it atomically. Throws on a sha256 mismatch unless `updateSha` is set, in which case the
 * manifest file is rewritten with the new hash.
 */
export async function buildModel(manifestPath: string, outDir?: string, opts: { updateSha?: boolean } = {}): Promise<BuildResult> {
  const t0 = performance.now();
  const manifest = loadManifest(manifestPath);
  const bytes = convertManifestModel(manifest);
  const source = manifest.source!; // convertManifestModel checked it
  const sha = sha256Of(bytes);
  if (sha !== manifest.sha256) {
    if (!opts.updateSha) {
      throw new Error(
        `${manifest.id}: built model has sha256 ${sha} but the manifest expects ${manifest.sha256} ` +
          `(different ${source.package} version or converter change; rebuild with --update-sha if intended)`,
      );
    }
    const json = JSON.parse(fs.readFileSync(manifestPath, 'utf8'));
    json.sha256 = sha;
    ModelManifestSchema.parse(json);
    fs.writeFileSync(manifestPath, JSON.stringify(json, null, 2) + '\n');
  }
  const dir = outDir ?? path.dirname(manifest.modelPath);
  fs.mkdirSync(dir, { recursive: true });
  const target = path.join(dir, manifest.file);
  const tmp = `${target}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, bytes);
  fs.renameSync(tmp, target);
  return { id: manifest.id, path: target, sha256: sha, bytes: bytes.length, ms: performance.now() - t0 };
}

export interface BuildAllOptions {
  /** Rebuild even when the .onnx file exists. */
  force?: boolean;
  /** Maintainers: write new hashes into the manifests instead of failing (implies a rebuild). */
  updateSha?: boolean;
  /** Folder of the manifests (default MODELS_DIR). */
  modelsDir?: string;
  /** Folder of the model files (default: the manifests' folder; the CLI passes KAGAMI_MODELS_DIR). */
  filesDir?: string;
  /** One line per model (default: console.log). */
  log?: (line: string) => void;
}

/**
 * Build every built-kind manifest's model in modelsDir whose .onnx file is missing (all with `force`).
 * Downloaded models are skipped (`kagami models pull ID`). Tries all of them, then throws one Error
 * naming the failures, if any.
 */
export async function buildAll(opts: BuildAllOptions = {}): Promise<BuildResult[]> {
  const dir = opts.modelsDir ?? MODELS_DIR;
  const log = opts.log ?? ((l: string) => console.log(l));
  const manifests = listManifestFiles(dir);
  if (manifests.length === 0) throw new Error(`no model manifests in ${dir}`);
  const results: BuildResult[] = [];
  const failures: string[] = [];
  for (const m of manifests) {
    try {
      const manifest = loadManifest(m, { modelsDir: opts.filesDir });
      if (manifest.download) {
        log(`${manifest.id}: downloaded, not built (kagami models pull ${manifest.id})`);
        continue;
      }
      if (manifest.training) {
        log(`${manifest.id}: trained and committed, not built (${manifest.training.recipe} reproduces it)`);
        continue;
      }
      if (!opts.force && !opts.updateSha && fs.existsSync(manifest.modelPath)) {
        log(`${manifest.id}: ${manifest.modelPath} exists (use --force to rebuild)`);
        continue;
      }
      const r = await buildModel(m, opts.filesDir, { updateSha: opts.updateSha });
      results.push(r);
      log(`${r.id}: built ${r.path} in ${r.ms.toFixed(0)} ms, ${(r.bytes / 1024 / 1024).toFixed(2)} MiB, sha256 ${r.sha256}`);
    } catch (e) {
      failures.push(`${path.basename(m)}: ${(e as Error).message}`);
    }
  }
  if (failures.length) throw new Error(`model build failed:\n  ${failures.join('\n  ')}`);
  return results;
}

export async function main(argv: string[]): Promise<number> {
  const flags = ['--force', '--update-sha'];
  const unknown = argv.filter((a) => !flags.includes(a));
  if (unknown.length) {
    console.error(`usage: node dist/models/build.js [--force] [--update-sha]   (unknown: ${unknown.join(' ')})`);
    return 2;
  }
  try {
    await buildAll({ force: argv.includes('--force'), updateSha: argv.includes('--update-sha') });
    return 0;
  } catch (e) {
    console.error((e as Error).message);
    return 1;
  }
}

if (require.main === module) {
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (e) => {
      console.error(e);
      process.exit(1);
    },
  );
}
