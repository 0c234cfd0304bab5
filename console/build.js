#!/usr/bin/env node
// Builds the web console into dist/console/: src/main.ts bundled and minified by esbuild, plus the
// static index.html and styles.css. The API serves dist/console at / when it exists.
'use strict';
const { copyFileSync, mkdirSync, rmSync } = require('node:fs');
const path = require('node:path');

const here = __dirname;
const out = path.join(here, '..', 'dist', 'console');
const esbuild = require('esbuild');

rmSync(out, { recursive: true, force: true });
mkdirSync(out, { recursive: true });
esbuild.buildSync({
  entryPoints: [path.join(here, 'src', 'main.ts')],
  bundle: true,
  minify: true,
  sourcemap: true,
  target: ['es2020', 'chrome100', 'firefox100', 'safari15'],
  format: 'iife',
  outfile: path.join(out, 'app.js'),
  logLevel: 'warning',
});
for (const f of ['index.html', 'styles.css']) copyFileSync(path.join(here, f), path.join(out, f));
console.log(`console built into ${path.relative(process.cwd(), out) || out}`);
