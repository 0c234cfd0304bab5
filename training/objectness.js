#!/usr/bin/env node
/**
 * A class-agnostic objectness probe for a descriptor's sliding windows: a logistic regression on
 * the window's embedding that says whether the window holds a character (any character) or only
 * scenery. Trained on composites whose boxes are known, from art the accuracy benchmark does not
 * use: Tux Paint stamps (animals, people) and Kagami's synthetic characters (styleSeed 60000+,
 * seeds 600000+) over Dink Smallwood's landscape tiles and synthetic scenes (seeds 60000+).
 *
 * Windows are embedded as the scanner embeds them (the model's dense form, every window size of
 * DEFAULT_SCAN_OPTIONS), so the probe reads the vectors the scan has anyway: one dot product a
 * window. Labels: a character window holds ≥ 60 % of a character's box and the character's longer
 * side is ≥ 40 % of the window's side; a scenery window touches no character; the rest is left out.
 * A quarter of the backgrounds and of the characters are held out for the validation figures.
 *
 *   npm run build && node training/objectness.js [--model ID] [--frames 480] [--write]
 *
 * --write puts the probe into models/<ID>.json (`objectness`); without it, figures only. --check
 * scores the manifest's own probe on fresh frames instead (e.g. under KAGAMI_INT8_WEIGHTS=7).
 */
const fs = require('fs');
const path = require('path');
const { execFileSync } = require('child_process');
const { Command } = require('commander');
const sharp = require('sharp');
const { composite, intersectionArea, renderBackground, renderCharacter, mulberry32 } = require('../dist/synthetic/art.js');
const { OnnxEmbedder } = require('../dist/signals/embedding/onnx-embedder.js');
const { modelManifestPath, DEFAULT_MODEL } = require('../dist/config.js');
const { slidingWindows } = require('../dist/scan/windows.js');
const { DEFAULT_SCAN_OPTIONS } = require('../dist/scan/scanner.js');
const { resolveBinaries } = require('../dist/media/ffmpeg.js');
const { objectnessOf } = require('../dist/signals/embedding/objectness.js');

const W = 960;
const H = 540;
/** The share of held-out character windows the floor keeps. */
const KEEP = 0.975;
const STAMPS = '/usr/share/tuxpaint/stamps';
const DINK_TILES = '/usr/share/games/dink/dink/Tiles';

function listPngs(dir) {
  const out = [];
  const walk = (d) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.name.endsWith('.png') && !e.name.includes('_back') && !e.name.includes('_mirror')) out.push(p);
    }
  };
  if (fs.existsSync(dir)) walk(dir);
  return out.sort();
}

/** Dink's tile sheets (BMP, which sharp does not read) as PNG via ffmpeg. */
function dinkTiles() {
  if (!fs.existsSync(DINK_TILES)) return [];
  const ffmpeg = resolveBinaries().ffmpeg;
  return fs
    .readdirSync(DINK_TILES)
    .filter((f) => /^S\d+\.bmp$/i.test(f))
    .sort()
    .map((f) => execFileSync(ffmpeg, ['-v', 'error', '-i', path.join(DINK_TILES, f), '-f', 'image2pipe', '-vcodec', 'png', 'pipe:1'], { maxBuffer: 1 << 26 }));
}

async function sources() {
  const stamps = [...listPngs(path.join(STAMPS, 'animals')), ...listPngs(path.join(STAMPS, 'people'))].map((f) => ({ label: path.relative(STAMPS, f), png: () => fs.promises.readFile(f) }));
  const synthetic = [];
  for (let f = 0; f < 40; f++) for (let m = 0; m < 3; m++) synthetic.push({ label: `synthetic s${60000 + f} c${600000 + 10 * f + m}`, png: () => renderCharacter(600000 + 10 * f + m, 256, { styleSeed: 60000 + f }) });
  const characters = [...stamps, ...synthetic];
  const backgrounds = dinkTiles().map((png, i) => ({ label: `dink tile ${i}`, png: async () => png }));
  const styles = ['busy', 'busy', 'gradient', 'busy'];
  for (let i = 0; i < 48; i++) backgrounds.push({ label: `synthetic scene ${60000 + i}`, png: () => renderBackground(60000 + i, W, H, { style: styles[i % 4], shapes: 40 + (i % 5) * 15, noise: i % 3 === 0 ? 6 : 0 }) });
  if (stamps.length < 50) throw new Error(`objectness: Tux Paint stamps not found under ${STAMPS} (apt-get install tuxpaint-stamps-default)`);
  return { characters, backgrounds };
}

/** One composite frame and its windows' labels (1 character, 0 scenery, -1 left out). */
async function frameSample(r, src, heldOut) {
  const pick = (list) => {
    const pool = list.filter((_, i) => (i % 4 === 0) === heldOut);
    return pool[Math.floor(r() * pool.length)];
  };
  const bg = await sharp(await pick(src.backgrounds).png()).resize(W, H, { fit: 'cover' }).removeAlpha().png().toBuffer();
  const n = r() < 0.2 ? 0 : 1 + Math.floor(r() * 2.4);
  const placements = [];
  for (let i = 0; i < n; i++) {
    const png = await pick(src.characters).png();
    const m = await sharp(png).metadata();
    const hFrac = 0.15 + r() * 0.55;
    const scale = (hFrac * H) / Math.max(m.height, m.width * 0.8);
    placements.push({ image: png, cx: W * (0.1 + 0.8 * r()), cy: H * (0.15 + 0.7 * r()), scale, mirror: r() < 0.5 });
  }
  const opts = { noise: r() < 0.3 ? 6 + r() * 10 : 0, noiseSeed: Math.floor(r() * 1e6), blurSigma: r() < 0.3 ? 0.6 + r() * 1.2 : 0, jpegQuality: r() < 0.4 ? 30 + Math.floor(r() * 50) : undefined };
  const { raw, boxes } = await composite(bg, placements, opts);
  const chars = boxes.filter(Boolean);
  const windows = slidingWindows(W, H, DEFAULT_SCAN_OPTIONS.windows.map((w) => w.size));
  const labels = windows.map((w) => {
    const box = { x: w.x, y: w.y, width: w.size, height: w.size };
    let touch = false;
    for (const c of chars) {
      const i = intersectionArea(box, c);
      if (i > 0) touch = true;
      if (i >= 0.6 * c.width * c.height && Math.max(c.width, c.height) >= 0.4 * w.size) return 1;
    }
    return touch ? -1 : 0;
  });
  return { raw, windows, labels };
}

/** Logistic regression, class-balanced, L2, full-batch Adam; returns weights and bias. */
function fitLogistic(X, y, dim, { steps = 600, lr = 0.05, l2 = 1e-3 } = {}) {
  const w = new Float64Array(dim);
  let b = 0;
  const pos = y.filter((v) => v === 1).length;
  const wPos = y.length / (2 * pos);
  const wNeg = y.length / (2 * (y.length - pos));
  const m = new Float64Array(dim + 1);
  const v = new Float64Array(dim + 1);
  const g = new Float64Array(dim + 1);
  for (let t = 1; t <= steps; t++) {
    g.fill(0);
    for (let i = 0; i < X.length; i++) {
      const x = X[i];
      let z = b;
      for (let k = 0; k < dim; k++) z += w[k] * x[k];
      const p = 1 / (1 + Math.exp(-z));
      const e = (p - y[i]) * (y[i] === 1 ? wPos : wNeg);
      for (let k = 0; k < dim; k++) g[k] += e * x[k];
      g[dim] += e;
    }
    for (let k = 0; k <= dim; k++) {
      const gk = g[k] / X.length + (k < dim ? l2 * w[k] : 0);
      m[k] = 0.9 * m[k] + 0.1 * gk;
      v[k] = 0.999 * v[k] + 0.001 * gk * gk;
      const step = (lr * (m[k] / (1 - 0.9 ** t))) / (Math.sqrt(v[k] / (1 - 0.999 ** t)) + 1e-8);
      if (k < dim) w[k] -= step;
      else b -= step;
    }
  }
  return { weights: Array.from(w), bias: b };
}

function auc(scores, y) {
  const idx = scores.map((s, i) => i).sort((a, b) => scores[a] - scores[b]);
  let rank = 0;
  let sumPos = 0;
  let nPos = 0;
  for (const i of idx) {
    rank++;
    if (y[i] === 1) (sumPos += rank), nPos++;
  }
  const nNeg = y.length - nPos;
  return (sumPos - (nPos * (nPos + 1)) / 2) / (nPos * nNeg);
}

async function main() {
  const o = new Command('objectness')
    .option('--model <id>', 'descriptor model id', DEFAULT_MODEL)
    .option('--frames <n>', 'composite frames (a quarter for validation)', (v) => parseInt(v, 10), 480)
    .option('--seed <n>', 'random seed', (v) => parseInt(v, 10), 7)
    .option('--write', "write the probe into the model's manifest")
    .option('--check', "score the manifest's own probe at its floor instead of fitting one (e.g. with KAGAMI_INT8_WEIGHTS=7)")
    .parse(process.argv)
    .opts();
  const manifestFile = modelManifestPath(o.model);
  const embedder = await OnnxEmbedder.create(manifestFile, { threads: 2 });
  if (!embedder.embedRegions) throw new Error(`${o.model} has no dense form`);
  const src = await sources();
  console.log(`objectness: ${src.characters.length} characters, ${src.backgrounds.length} backgrounds, ${o.frames} frames, model ${o.model}`);
  const r = mulberry32(o.seed);
  const sets = { train: { X: [], y: [] }, val: { X: [], y: [] } };
  const t0 = Date.now();
  for (let f = 0; f < o.frames; f++) {
    const heldOut = f % 4 === 3;
    const { raw, windows, labels } = await frameSample(r, src, heldOut);
    const vectors = await embedder.embedRegions(raw, windows);
    const set = heldOut ? sets.val : sets.train;
    for (let i = 0; i < windows.length; i++) if (labels[i] >= 0) (set.X.push(Float64Array.from(vectors[i])), set.y.push(labels[i]));
    if ((f + 1) % 40 === 0) console.log(`  ${f + 1}/${o.frames} frames, ${((Date.now() - t0) / 1000).toFixed(0)} s`);
  }
  await embedder.dispose?.();
  const dim = sets.train.X[0].length;
  const count = (s) => `${s.y.filter((v) => v === 1).length} character / ${s.y.filter((v) => v === 0).length} scenery windows`;
  console.log(`train ${count(sets.train)}; validation ${count(sets.val)}`);
  if (o.check) {
    const committed = JSON.parse(fs.readFileSync(manifestFile, 'utf8')).objectness;
    if (!committed) throw new Error(`${o.model} has no probe to check`);
    const all = sets.val; // held-out art only
    const p = all.X.map((x) => objectnessOf(committed, x));
    const share = (label, keep) => p.filter((v, i) => all.y[i] === label && (v >= committed.floor) === keep).length / all.y.filter((v) => v === label).length;
    console.log(`the manifest's probe (floor ${committed.floor}${embedder.weightBits ? `, ${embedder.weightBits}-bit weights` : ''}): AUC ${auc(p, all.y).toFixed(3)}, keeps ${(100 * share(1, true)).toFixed(1)} % of the character windows, drops ${(100 * share(0, false)).toFixed(1)} % of the scenery`);
    return;
  }
  const probe = fitLogistic(sets.train.X, sets.train.y, dim);
  for (const [name, s] of Object.entries(sets)) {
    const p = s.X.map((x) => objectnessOf(probe, x));
    const at = (th) => {
      const keepPos = p.filter((v, i) => s.y[i] === 1 && v >= th).length / s.y.filter((v) => v === 1).length;
      const dropNeg = p.filter((v, i) => s.y[i] === 0 && v < th).length / s.y.filter((v) => v === 0).length;
      return `p≥${th}: keeps ${(100 * keepPos).toFixed(1)} % of character windows, drops ${(100 * dropNeg).toFixed(1)} % of scenery`;
    };
    console.log(`${name}: AUC ${auc(p, s.y).toFixed(3)}; ${[0.1, 0.2, 0.3, 0.5].map(at).join('; ')}`);
  }
  // The floor: the highest probe score that still keeps KEEP of the held-out character windows.
  const valPos = sets.val.X.filter((_, i) => sets.val.y[i] === 1).map((x) => objectnessOf(probe, x)).sort((a, b) => a - b);
  const floor = Number(valPos[Math.floor((1 - KEEP) * valPos.length)].toFixed(3));
  const valNeg = sets.val.X.filter((_, i) => sets.val.y[i] === 0).map((x) => objectnessOf(probe, x));
  console.log(`floor ${floor}: keeps ${(100 * KEEP).toFixed(1)} % of the held-out character windows, drops ${((100 * valNeg.filter((p) => p < floor).length) / valNeg.length).toFixed(1)} % of the held-out scenery`);
  if (o.write) {
    const m = JSON.parse(fs.readFileSync(manifestFile, 'utf8'));
    m.objectness = {
      weights: probe.weights.map((x) => Number(x.toFixed(5))),
      bias: Number(probe.bias.toFixed(5)),
      floor,
      trainedOn: `training/objectness.js --frames ${o.frames} --seed ${o.seed}: Tux Paint stamps and synthetic characters over Dink Smallwood tiles and synthetic scenes`,
    };
    // The 256 weights on one line, the rest of the manifest as it was laid out.
    const text = JSON.stringify(m, null, 2).replace(/"weights": \[[^\]]*\]/, `"weights": ${JSON.stringify(m.objectness.weights)}`);
    fs.writeFileSync(manifestFile, text + '\n');
    console.log(`wrote the probe into ${path.relative(process.cwd(), manifestFile)}`);
  }
}

main().catch((e) => {
  console.error(`objectness: ${e.message}`);
  process.exit(1);
});
