#!/usr/bin/env node
/**
 * Writes the manifest of the trained descriptor next to its ONNX file, with the file's sha256, and
 * checks it against Kagami's manifest schema.
 *
 *   node training/write-manifest.js [models/kagami-descriptor-v1.onnx] [training/out/results.json]
 */
const crypto = require('crypto');
const fs = require('fs');
const path = require('path');
const { parseManifest } = require('./.build/signals/embedding/manifest.js');

const onnx = path.resolve(process.argv[2] || path.join(__dirname, '..', 'models', 'kagami-descriptor-v1.onnx'));
const results = JSON.parse(fs.readFileSync(process.argv[3] || path.join(__dirname, 'out', 'results.json'), 'utf8'));
const size = results.args.size;
const bytes = fs.readFileSync(onnx);
const manifest = {
  id: 'kagami-descriptor-v1',
  description:
    `Kagami's trained likeness descriptor for character crops: MobileNetV2 trunk (ImageNet weights from nsfwjs, cut after block_10_project_BN; blocks 7-10 fine-tuned) ` +
    `-> 1x1 conv 96->512 + BN + ReLU6 -> global GeM (p=3) -> linear 512->256 -> L2. Trained with an SSCD-style contrastive loss (InfoNCE + KoLeo) on augmented ` +
    `composites and pose pairs of open game art (freedink-data) and Kagami's synthetic characters (training/README.md). Input: a ${size}x${size} crop around ONE character ` +
    `(a box from keypoint verification or a region proposal), not a whole frame.`,
  source: {
    package: 'kagami (own training: training/run.sh)',
    version: '1',
    files: ['training/run.sh', 'training/train.py', 'training/mnv2.py'],
    licence: 'Apache-2.0 (Kagami); initial weights: nsfwjs@4.3.0 (MIT), ImageNet MobileNetV2 from Keras applications (Apache-2.0)',
  },
  trunk: { architecture: 'MobileNetV2 (alpha 1.0, Keras applications), blocks 7-10 fine-tuned', cutAfter: 'block_10_project_BN' },
  // The schema knows only 'gem-grid': grid 1 is a global GeM; the conv + projection after the trunk
  // are described here and in the ONNX graph (the embedder only needs input/output).
  head: { type: 'gem-grid', grid: 1, p: 3, conv1x1: 512, projection: 256 },
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
