#!/usr/bin/env node
// Runs after `npm install` / `npm ci` in this repository: compiles the TypeScript (when the
// compiler is installed, i.e. not in a production-only install that ships dist/) and builds the
// embedding model from the weights in the nsfwjs package, so `kagami` works straight away.
// Both steps are also done on demand, so a failure here is reported but does not fail the install.
'use strict';
const { spawnSync } = require('node:child_process');
const { existsSync } = require('node:fs');
const path = require('node:path');

const root = path.resolve(__dirname, '..');
const run = (cmd, args) => spawnSync(cmd, args, { cwd: root, stdio: 'inherit' }).status === 0;

let tsc;
try {
  tsc = require.resolve('typescript/bin/tsc', { paths: [root] });
} catch {
  tsc = undefined;
}
if (tsc) {
  if (!run(process.execPath, [tsc, '-p', 'tsconfig.json'])) {
    console.error('kagami postinstall: TypeScript build failed');
    process.exit(1);
  }
}
// The web console (console/ → dist/console/), when esbuild is installed (a dev install).
let esbuild;
try {
  esbuild = require.resolve('esbuild', { paths: [root] });
} catch {
  esbuild = undefined;
}
if (esbuild && existsSync(path.join(root, 'console', 'build.js'))) {
  if (!run(process.execPath, [path.join(root, 'console', 'build.js')])) console.error('kagami postinstall: console build failed; run `npm run build:console`');
}
const build = path.join(root, 'dist', 'models', 'build.js');
if (existsSync(build)) {
  if (!run(process.execPath, [build])) console.error('kagami postinstall: model build failed; it will be retried on first use');
} else {
  console.error('kagami postinstall: dist/ missing and no TypeScript compiler; run `npm run build`');
}
