#!/usr/bin/env node
// Worker entry point for process managers and containers: the same as `kagami worker`.
'use strict';
const { main } = require('../dist/cli/main.js');

main(['worker', ...process.argv.slice(2)]).then((code) => {
  process.exitCode = code;
});
