#!/usr/bin/env node
/**
 * Writes the manifest of the trained descriptor next to its ONNX file, with the file's sha256, and
 * checks it against Kagami's manifest schema.
 *
 *   node training/write-manifest.js [models/kagami-descriptor-v2.onnx] [training/out/results.json]
 *
 * The id is the file name; `calibration` comes from the model's cosines in results.json.
 */
const crypto = require('crypto');
const fs = require('fs');
const path = require('path');
const { parseManifest } = require('./.build/signals/embedding/manifest.js');

const onnx = path.resolve(process.argv[2] || path.join(__dirname, '..', 'models', 'kagami-descriptor-v2.onnx'));
const results = JSON.parse(fs.readFileSync(process.argv[3] || path.join(__dirname, 'out', 'results.json'), 'utf8'));
const id = path.basename(onnx, '.onnx');
const size = results.args.size;
const real = results.args.sources.split(',').filter(Boolean);
const bytes = fs.readFileSync(onnx);
// Each real art source: what the manifest says about it (licences: training/README.md).
const ART = {
  freedink: { name: 'freedink-data', licence: 'zlib-style licence', what: 'sprites and tiles' },
  widelands: { name: 'widelands-data', licence: 'GPL-2+', what: 'worker, animal and ship animations' },
  tuxpaint: { name: 'tuxpaint-stamps-default', licence: 'GPL-2', what: 'animal, people and cartoon stamps' },
  freeciv: { name: 'freeciv-data', licence: 'GPL-2+', what: 'unit sprites of three tilesets' },
  crossfire: { name: 'crossfire-client-images', licence: 'GPL', what: 'monster animation frames' },
  unknownhorizons: { name: 'unknown-horizons', licence: 'CC-BY-SA-3.0', what: 'unit renders from 8 angles' },
  boswars: { name: 'boswars-data', licence: 'GPL-2+', what: 'unit renders from 5 facings' },
  naev: { name: 'naev-data', licence: 'GPL-3+', what: 'ship renders from 8 headings and three-quarter views' },
};
// Calibration: v1's floor 0.5 / ceil 0.95 were set by hand when it became the default. A later model
// gets the cosines at the same places of its own held-out distributions (train.py `cosines`, stored
// at percentiles PCTS): the floor at the percentile where v1's cosine to an unrelated character's
// reference (all pairs) is 0.5, the ceil where v1's near-copy cosine is 0.95 (beyond the last stored
// percentile: shifted by the difference there); rounded to 0.05 (the unrounded values are logged).
const PCTS = [1, 5, 10, 25, 50, 75, 90, 95, 99];
const V1 = { id: 'kagami-descriptor-v1', floor: 0.5, ceil: 0.95 };
function quantileMap(x, from, to) {
  if (x <= from[0]) return to[0] + (x - from[0]);
  const n = from.length - 1;
  if (x >= from[n]) return to[n] + (x - from[n]);
  let i = 0;
  while (from[i + 1] < x) i++;
  const q = PCTS[i] + ((PCTS[i + 1] - PCTS[i]) * (x - from[i])) / (from[i + 1] - from[i]);
  const j = PCTS.findIndex((p, k) => q <= PCTS[k + 1]);
  return to[j] + ((to[j + 1] - to[j]) * (q - PCTS[j])) / (PCTS[j + 1] - PCTS[j]);
}
const own = results.cosines && results.cosines[id];
const v1 = results.cosines && results.cosines[V1.id];
// v1 scores margins over the background bank (src/signals/embedding/background-bank.ts; chosen on the
// accuracy bench, where it helped v1 and not v2).
let calibration = { floor: V1.floor, ceil: V1.ceil, background: { floor: -0.1, ceil: 0.4 } };
if (id !== V1.id) {
  if (!own || !v1) throw new Error(`results have no held-out cosines of ${id} and ${V1.id} (train.py --compare models/${V1.id}.json)`);
  const raw = { floor: quantileMap(V1.floor, v1['unrelated-all'], own['unrelated-all']), ceil: quantileMap(V1.ceil, v1.near, own.near) };
  console.log(`write-manifest: calibration measured floor ${raw.floor.toFixed(3)}, ceil ${raw.ceil.toFixed(3)}`);
  const r05 = (v) => Math.round(v * 20) / 20;
  calibration = { floor: r05(raw.floor), ceil: r05(raw.ceil) };
}
// A model fine-tuned from a committed one (train.py --init) says so, and what its views added.
const init = results.args.init ? path.basename(results.args.init, '.onnx') : '';
const tuned = init
  ? ` Fine-tuned from ${init} (its ONNX, BatchNorms folded and frozen)` +
    (results.args.context_frac ? ` with ${Math.round(100 * results.args.context_frac)} % of the views a ${size} px box of a larger scene, pooled over the box as the dense form pools a window, so a window's vector holds with its surroundings in view.` : '.')
  : '';
const manifest = {
  id,
  description:
    `Kagami's trained likeness descriptor for character crops: MobileNetV2 trunk (ImageNet weights from nsfwjs, cut after block_10_project_BN; blocks 7-10 fine-tuned) ` +
    `-> 1x1 conv 96->512 + BN + ReLU6 -> global GeM (p=3) -> linear 512->256 -> L2. Trained with an SSCD-style contrastive loss (InfoNCE + KoLeo) on augmented ` +
    `composites and pose pairs of open game art (${real.map((s) => ART[s].name).join(', ')}) and Kagami's synthetic characters (training/README.md). Input: a ${size}x${size} crop around ONE character ` +
    `(a box from keypoint verification or a region proposal), not a whole frame.${tuned}`,
  training: {
    recipe: id === 'kagami-descriptor-v2' ? 'training/run.sh' : `ID=${id} training/run.sh`,
    files: [...(init ? [`models/${init}.onnx`] : []), 'training/run.sh', 'training/train.py', 'training/mnv2.py', 'training/export-weights.js', 'training/render-synthetic.js', ...real.map((s) => `training/${s}.py`), ...(real.length ? ['training/art_index.py'] : [])],
    data:
      real.map((s) => `${ART[s].name} (Debian; ${ART[s].licence}) ${ART[s].what}`).join(', ') +
      ", and Kagami's synthetic characters (seeds disjoint from tests and benchmarks); see training/README.md",
    licence: 'Apache-2.0 (Kagami); initial weights: nsfwjs@4.3.0 (MIT), ImageNet MobileNetV2 from Keras applications (Apache-2.0)',
  },
  trunk: { architecture: 'MobileNetV2 (alpha 1.0, Keras applications), blocks 7-10 fine-tuned', cutAfter: 'block_10_project_BN' },
  head: { type: 'gem-projection', grid: 1, p: 3, conv1x1: 512, projection: 256 },
  usage: 'crop',
  calibration,
  file: path.basename(onnx),
  sha256: crypto.createHash('sha256').update(bytes).digest('hex'),
  input: { name: 'input', width: size, height: size, layout: 'NHWC', channels: 'RGB', mean: [127.5, 127.5, 127.5], std: [127.5, 127.5, 127.5] },
  output: { name: 'embedding', dimension: 256, normalized: true },
  licence: 'Apache-2.0 (Kagami training, training/); derived from nsfwjs MobileNetV2 weights (MIT), ImageNet-pretrained Keras applications MobileNetV2 (Apache-2.0)',
};
const file = onnx.replace(/\.onnx$/, '.json');
parseManifest(manifest, file); // throws if the schema rejects it
fs.writeFileSync(file, JSON.stringify(manifest, null, 2) + '\n');
console.log(`write-manifest: ${file} (sha256 ${manifest.sha256}, ${(bytes.length / 1e6).toFixed(2)} MB)`);
