// Runs the Motoko compiler from the `motoko` npm package on this folder's sources.
//   node moc.js wasm src/Anchor.mo OUT.wasm OUT.did   compile for the IC, write wasm + candid
//   node moc.js run test/AnchorState.test.mo          run a file in moc's interpreter
//   node moc.js both src/Anchor.mo OUT.wasm OUT.did test/AnchorState.test.mo
//                                                     both in one process (moc loads once)
// A type error or a trap prints moc's message and exits 1.
'use strict';
const fs = require('fs');
const path = require('path');
const mo = require('motoko');

mo.loadPackage(require('motoko/packages/latest/core.json'));
const here = __dirname;
for (const dir of ['src', 'test']) {
  const full = path.join(here, dir);
  if (!fs.existsSync(full)) continue;
  for (const file of fs.readdirSync(full)) {
    if (file.endsWith('.mo')) mo.write(`${dir}/${file}`, fs.readFileSync(path.join(full, file), 'utf8'));
  }
}

function compile(main, wasmPath, didPath) {
  let out;
  try {
    out = mo.wasm(main, 'ic');
  } catch (err) {
    console.error(String(err.message || err));
    process.exit(1);
  }
  fs.writeFileSync(wasmPath, Buffer.from(out.wasm));
  fs.writeFileSync(didPath, out.candid);
}

function run(file) {
  const out = mo.run(file);
  process.stdout.write(out.stdout);
  process.stderr.write(out.stderr);
  return out.result && out.result.error === null;
}

const [command, main, ...rest] = process.argv.slice(2);
if (command === 'wasm') {
  compile(main, rest[0], rest[1]);
} else if (command === 'run') {
  process.exit(run(main) ? 0 : 1);
} else if (command === 'both') {
  compile(main, rest[0], rest[1]);
  process.exit(run(rest[2]) ? 0 : 1);
} else {
  console.error('usage: node moc.js wasm MAIN OUT.wasm OUT.did | run FILE | both MAIN OUT.wasm OUT.did FILE');
  process.exit(2);
}
