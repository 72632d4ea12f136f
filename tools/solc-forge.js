#!/usr/bin/env node
// A solc executable for forge, made from the solcjs build in node_modules/solc (0.8.28, the
// compiler Hardhat uses), so forge never downloads a compiler. forge runs
// `solc --version` (parses the "Version:" line) and `solc --standard-json [paths...]`
// with the standard JSON input on stdin. Imports that forge did not inline are read from
// disk relative to the working directory, --base-path and --include-path.
"use strict";
const fs = require("fs");
const path = require("path");
const solc = require("solc");

const argv = process.argv.slice(2);
if (argv.includes("--version")) {
  process.stdout.write(`solc, the solidity compiler commandline interface\nVersion: ${solc.version()}\n`);
  process.exit(0);
}
if (!argv.includes("--standard-json")) {
  process.stderr.write("solc-forge.js supports only --version and --standard-json\n");
  process.exit(2);
}
const roots = [process.cwd()];
argv.forEach((arg, i) => {
  if ((arg === "--base-path" || arg === "--include-path") && argv[i + 1]) roots.push(path.resolve(argv[i + 1]));
});
function findImports(importPath) {
  for (const root of roots) {
    const file = path.resolve(root, importPath);
    if (fs.existsSync(file)) return { contents: fs.readFileSync(file, "utf8") };
  }
  return { error: `File not found: ${importPath}` };
}
process.stdout.write(solc.compile(fs.readFileSync(0, "utf8"), { import: findImports }));
