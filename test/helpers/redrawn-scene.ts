/**
 * A library of four look-alike synthetic characters and a real ffmpeg clip in which one of them
 * appears redrawn (a heavier outline: nothing its keypoints verify), 1–4 s into a 5 s 720p clip
 * over a busy scene: what the likeness tier alone has to find.
 */
import path from 'node:path';
import { addReferences, openLibrary, type Library } from '../../src/library/library';
import type { Embedder } from '../../src/signals/embedder';
import { renderBackground, renderCharacter } from '../../src/synthetic/art';
import { makeClip } from '../../src/synthetic/video';

const STYLE = 5;
const SEEDS = [31, 32, 33, 34];
/** The character the clip shows (`c31`). */
export const REDRAWN_SHOWN = `c${SEEDS[0]}`;

export async function redrawnScene(dir: string, embedder: Embedder): Promise<{ lib: Library; clip: string }> {
  const lib = await openLibrary(path.join(dir, 'lib'), { create: true });
  for (const seed of SEEDS) {
    const png = await renderCharacter(seed, 400, { styleSeed: STYLE, outline: 0.8 });
    await addReferences(lib, embedder, { id: `c${seed}`, name: `C${seed}`, owner: 'studio' }, [{ name: `c${seed}.png`, bytes: png }]);
  }
  const clip = path.join(dir, 'redrawn.mp4');
  const redrawn = await renderCharacter(SEEDS[0], 400, { styleSeed: STYLE, outline: 3.4 });
  await makeClip({ out: clip, width: 1280, height: 720, durationSec: 5, background: await renderBackground(SEEDS[0], 1680, 720), appearances: [{ png: redrawn, startSec: 1, endSec: 4, heightFrac: 0.55, x: 0.3, y: 0.2, drift: 30 }] });
  return { lib, clip };
}
