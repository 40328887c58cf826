#!/usr/bin/env node
// A `solc` executable for forge, backed by solc-js: forge cannot download native
// compilers here, and solc-js is the compiler we pin. It answers `--version` in the
// native format forge parses and compiles `--standard-json` input read from stdin;
// other flags forge passes (--allow-paths, --base-path, --include-path) only widen the
// directories imports are read from.
"use strict";
const fs = require("fs");
const path = require("path");
const solc = require("solc");

const args = process.argv.slice(2);
if (args.includes("--version")) {
  process.stdout.write(`solc, the solidity compiler commandline interface\nVersion: ${solc.version()}\n`);
  process.exit(0);
}
if (!args.includes("--standard-json")) {
  process.stderr.write("solc-forge.js only supports --version and --standard-json\n");
  process.exit(2);
}

const roots = [process.cwd()];
for (let i = 0; i < args.length; i++) {
  if (["--base-path", "--include-path", "--allow-paths"].includes(args[i]) && args[i + 1]) {
    for (const p of args[i + 1].split(",")) roots.push(path.resolve(p));
  }
}

function findImport(importPath) {
  for (const base of roots) {
    const candidate = path.resolve(base, importPath);
    if (fs.existsSync(candidate)) return { contents: fs.readFileSync(candidate, "utf8") };
  }
  return { error: `import not found: ${importPath}` };
}

const input = fs.readFileSync(0, "utf8");
process.stdout.write(solc.compile(input, { import: findImport }));
