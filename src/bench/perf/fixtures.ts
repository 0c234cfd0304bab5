/**
 * Bench inputs, generated deterministically and cached under .cache/bench/: a 10 s 720p clip
 * with characters on screen, the art of those characters, and a loaded embedder.
 */
import { existsSync, renameSync } from 'node:fs';
import path from 'node:path';
import { modelFor, modelManifestPath, readEnv } from '../../config';
import { OnnxEmbedder } from '../../signals/embedding/onnx-embedder';
import { renderBackground, renderCharacter } from '../../synthetic/art';
import { makeClip, type ClipSpec } from '../../synthetic/video';
import { cacheDir } from './util';

export const MODEL_ID = 'mobilenetv2-block10-gem3x3';

/** Characters that appear in the bench clips (seeds of renderCharacter). */
export const CLIP_CHARACTERS = [101, 102, 103];

export async function characterArt(seed: number): Promise<Buffer> {
  return renderCharacter(seed, 400, { styleSeed: seed % 7 });
}

/**
 * A 10 s 1280x720 25 fps H.264 clip: a panning background, three characters entering and
 * leaving (one mirrored), so sampling sees scene content change. Variant `v` changes the
 * background and positions (several distinct clips for the concurrency runs).
 */
export async function benchClip(v = 0, durationSec = 10): Promise<string> {
  return cachedClip(`clip720-${durationSec}s-v${v}.mp4`, durationSec, 500 + v, async () => {
    const [a, b, c] = await Promise.all(CLIP_CHARACTERS.map((s) => characterArt(s)));
    return [
      { png: a, startSec: 0.5, endSec: 4.5, heightFrac: 0.55, x: 0.1 + 0.05 * v, y: 0.2, drift: 40 },
      { png: b, startSec: 3, endSec: 8, heightFrac: 0.4, x: 0.55, y: 0.3, mirror: true, drift: -30 },
      { png: c, startSec: 6.5, endSec: 9.5, heightFrac: 0.7, x: 0.3, y: 0.15 },
    ];
  });
}

/**
 * The screening case: benchClip's 720p background with one character the bench library does not
 * hold (no registered drawing is copied), for the cost of a clip that finds nothing.
 */
export async function benchCleanClip(durationSec = 10): Promise<string> {
  return cachedClip(`clip720-${durationSec}s-clean.mp4`, durationSec, 500, async () => [
    { png: await characterArt(900), startSec: 1, endSec: 9, heightFrac: 0.5, x: 0.2, y: 0.2, drift: 40 },
  ]);
}

/** A 1280x720 clip over background `backgroundSeed`, rendered once into the bench cache as `name`. */
async function cachedClip(name: string, durationSec: number, backgroundSeed: number, appearances: () => Promise<ClipSpec['appearances']>): Promise<string> {
  const file = path.join(cacheDir('clips'), name);
  if (existsSync(file)) return file;
  const W = 1280;
  const H = 720;
  const tmp = file + '.tmp.mp4';
  await makeClip({ out: tmp, width: W, height: H, durationSec, background: await renderBackground(backgroundSeed, W + 400, H), appearances: await appearances() });
  renameSync(tmp, file);
  return file;
}

/** The converted frame model, for the pipeline and embedding sections. */
export async function loadEmbedder(threads = 1): Promise<OnnxEmbedder> {
  return OnnxEmbedder.create(modelManifestPath(MODEL_ID), { threads });
}

/** The model the product scans a new library with (KAGAMI_MODEL, else DEFAULT_MODEL), for end to end. */
export const PRODUCT_MODEL_ID = modelFor(readEnv());
export async function loadProductEmbedder(threads = 1): Promise<OnnxEmbedder> {
  return OnnxEmbedder.create(modelManifestPath(PRODUCT_MODEL_ID), { threads });
}
