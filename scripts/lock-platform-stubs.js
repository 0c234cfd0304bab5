#!/usr/bin/env node
// Maintainer tool. Some registry mirrors carry only the Linux builds of packages' optional,
// platform-specific binaries (e.g. @unrs/resolver-binding-*, @msgpackr-extract/*). npm then
// writes a lockfile without the other platforms' entries and `npm ci` refuses it as out of sync.
// This adds those entries (name, version, os, cpu, optional), which npm skips on a platform they
// do not match, so `npm ci` works here and still resolves them normally elsewhere.
//   npm ci --dry-run 2>&1 | grep 'Missing:' | sed 's/npm error Missing: //; s/ from lock file//' > /tmp/missing
//   node scripts/lock-platform-stubs.js package-lock.json /tmp/missing && npm install --package-lock-only
'use strict';
const fs = require('fs');
const file = process.argv[2];
const missing = fs.readFileSync(process.argv[3], 'utf8').trim().split('\n').map((l) => l.replace(/@$/, ''));
const lock = JSON.parse(fs.readFileSync(file, 'utf8'));
const specOf = (name) => {
  for (const [k, v] of Object.entries(lock.packages)) {
    const spec = v.optionalDependencies?.[name];
    if (spec) return spec;
  }
  throw new Error('no parent for ' + name);
};
const platform = (name) => {
  const os = ['darwin', 'win32', 'linux', 'android', 'freebsd', 'openharmony'].find((o) => name.includes(o));
  const cpu = ['arm64', 'x64', 'ia32', 'loong64', 'ppc64', 'riscv64', 's390x', 'arm'].find((c) => new RegExp(`-${c}(-|$)`).test(name.replace(/.*\//, '')));
  if (!os || !cpu) throw new Error(`cannot tell the platform of ${name}`);
  return { os, cpu };
};
for (const name of missing) {
  const spec = specOf(name);
  const version = spec.replace(/^[\^~=]/, '');
  const { os, cpu } = platform(name);
  lock.packages[`node_modules/${name}`] = { version, cpu: [cpu], license: 'MIT', optional: true, os: [os] };
  console.log(name, version, os, cpu);
}
const sorted = Object.fromEntries(Object.entries(lock.packages).sort(([a], [b]) => (a === '' ? -1 : b === '' ? 1 : a.localeCompare(b))));
lock.packages = sorted;
fs.writeFileSync(file, JSON.stringify(lock, null, 2) + '\n');
