// Runs the Motoko compiler from the `motoko` npm package on this folder's sources.
//   node moc.js wasm src/Anchor.mo OUT.wasm OUT.did   compile for the IC, write wasm + candid
//   node moc.js run test/AnchorState.test.mo          run a file in moc's interpreter
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

const [command, main, ...outputs] = process.argv.slice(2);
if (command === 'wasm') {
  let out;
  try {
    out = mo.wasm(main, 'ic');
  } catch (err) {
    console.error(String(err.message || err));
    process.exit(1);
  }
  fs.writeFileSync(outputs[0], Buffer.from(out.wasm));
  fs.writeFileSync(outputs[1], out.candid);
} else if (command === 'run') {
  const out = mo.run(main);
  process.stdout.write(out.stdout);
  process.stderr.write(out.stderr);
  process.exit(out.result && out.result.error === null ? 0 : 1);
} else {
  console.error('usage: node moc.js wasm MAIN OUT.wasm OUT.did | node moc.js run FILE');
  process.exit(2);
}
