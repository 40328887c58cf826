#!/usr/bin/env node
// Compiles src/*.sol with solc-js (pinned in package.json) and writes one artifact per
// deployable contract (ABI, creation and runtime bytecode) to ../governance/artifacts,
// where the Python chain client loads them. With --check, compiles and compares instead,
// exiting 1 if the committed artifacts drifted from the sources.
"use strict";
const fs = require("fs");
const path = require("path");
const solc = require("solc");

const ROOT = path.resolve(__dirname, "..");
const OUT = path.resolve(ROOT, "..", "governance", "artifacts");
const CONTRACTS = ["GovToken", "DaoTimelock", "DaoGovernor", "CampaignController"];
const SETTINGS = {
  optimizer: { enabled: true, runs: 200 },
  evmVersion: "cancun",
  outputSelection: { "*": { "*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object", "evm.deployedBytecode.immutableReferences"] } },
};

function findImport(importPath) {
  for (const base of [ROOT, path.join(ROOT, "node_modules")]) {
    const candidate = path.join(base, importPath);
    if (fs.existsSync(candidate)) return { contents: fs.readFileSync(candidate, "utf8") };
  }
  return { error: `import not found: ${importPath}` };
}

function compile() {
  const sources = {};
  for (const name of CONTRACTS) {
    const key = `src/${name}.sol`;
    sources[key] = { content: fs.readFileSync(path.join(ROOT, key), "utf8") };
  }
  const input = { language: "Solidity", sources, settings: SETTINGS };
  const output = JSON.parse(solc.compile(JSON.stringify(input), { import: findImport }));
  const errors = (output.errors || []).filter((e) => e.severity === "error");
  for (const e of output.errors || []) process.stderr.write(e.formattedMessage + "\n");
  if (errors.length > 0) throw new Error(`${errors.length} compilation error(s)`);
  const artifacts = {};
  for (const name of CONTRACTS) {
    const c = output.contracts[`src/${name}.sol`][name];
    const artifact = {
      contractName: name,
      compiler: `solc-js ${solc.version()}`,
      settings: { optimizer: SETTINGS.optimizer, evmVersion: SETTINGS.evmVersion },
      abi: c.abi,
      bytecode: "0x" + c.evm.bytecode.object,
      deployedBytecode: "0x" + c.evm.deployedBytecode.object,
      // Byte ranges of the runtime code that the constructor fills in (immutables): a
      // deployed contract's code matches deployedBytecode everywhere else.
      immutableRanges: Object.values(c.evm.deployedBytecode.immutableReferences || {})
        .flat()
        .map((r) => [r.start, r.length])
        .sort((a, b) => a[0] - b[0]),
    };
    artifacts[`${name}.json`] = JSON.stringify(artifact, null, 2) + "\n";
  }
  return artifacts;
}

function main() {
  const check = process.argv.includes("--check");
  const artifacts = compile();
  if (check) {
    const drifted = Object.keys(artifacts).filter((file) => {
      const target = path.join(OUT, file);
      return !fs.existsSync(target) || fs.readFileSync(target, "utf8") !== artifacts[file];
    });
    if (drifted.length > 0) {
      process.stderr.write(`artifacts drifted from sources: ${drifted.join(", ")}; run npm run compile\n`);
      process.exit(1);
    }
    process.stdout.write(`artifacts match sources (${Object.keys(artifacts).length} contracts)\n`);
    return;
  }
  fs.mkdirSync(OUT, { recursive: true });
  for (const [file, text] of Object.entries(artifacts)) fs.writeFileSync(path.join(OUT, file), text);
  process.stdout.write(`wrote ${Object.keys(artifacts).length} artifacts to ${OUT}\n`);
}

main();
