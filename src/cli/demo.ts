/**
 * `kagami demo`: the main job on sample data, for a first look after `npm install`. Draws two
 * registered characters and an unregistered look-alike, renders a clip in which one registered
 * character appears (mirrored) for a known interval, registers the references, and scans the
 * clip with the same code path as `kagami scan`.
 */
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { renderBackground, renderCharacter } from '../synthetic/art';
import { makeClip } from '../synthetic/video';

export interface DemoFiles {
  library: string;
  clip: string;
  references: Array<{ id: string; name: string; owner: string; file: string }>;
}

/** Writes the sample references and clip under `dir` (once; reused when present). */
export async function prepareDemo(dir: string, modelId: string): Promise<DemoFiles> {
  mkdirSync(dir, { recursive: true });
  const style = 3;
  const cast = [
    { seed: 101, id: 'sample-kitsune', name: 'Sample Kitsune', owner: 'Sample Studio' },
    { seed: 102, id: 'sample-tanuki', name: 'Sample Tanuki', owner: 'Other Studio' },
  ];
  const references = [];
  for (const c of cast) {
    const file = path.join(dir, `${c.id}.png`);
    if (!existsSync(file)) writeFileSync(file, await renderCharacter(c.seed, 480, { styleSeed: style }));
    references.push({ id: c.id, name: c.name, owner: c.owner, file });
  }
  const clip = path.join(dir, 'sample-clip.mp4');
  if (!existsSync(clip)) {
    const W = 1280;
    const H = 720;
    await makeClip({
      out: clip,
      width: W,
      height: H,
      durationSec: 10,
      background: await renderBackground(7, W + 480, H),
      appearances: [
        // The registered kitsune, mirrored and slightly tilted, from 2.5 s to 7 s.
        { png: await renderCharacter(101, 480, { styleSeed: style }), startSec: 2.5, endSec: 7, heightFrac: 0.45, x: 0.15, y: 0.3, mirror: true, tilt: 8, drift: 35 },
        // An unregistered look-alike in the same style for the whole clip: must not be reported.
        { png: await renderCharacter(103, 480, { styleSeed: style }), startSec: 0, endSec: 10, heightFrac: 0.35, x: 0.68, y: 0.45 },
      ],
    });
  }
  // One library per model: a library never mixes embeddings of two models.
  return { library: path.join(dir, `library-${modelId}`), clip, references };
}
