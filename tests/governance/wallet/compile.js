#!/usr/bin/env node
// Compiles OwnerWallet.sol with the solc-js of contracts/ into OwnerWallet.json (ABI and
// creation code), the form the tests deploy: node tests/governance/wallet/compile.js
"use strict";
const fs = require("fs");
const path = require("path");
const solc = require(path.resolve(__dirname, "../../../contracts/node_modules/solc"));

const source = fs.readFileSync(path.join(__dirname, "OwnerWallet.sol"), "utf8");
const input = {
  language: "Solidity",
  sources: { "OwnerWallet.sol": { content: source } },
  settings: {
    optimizer: { enabled: true, runs: 200 },
    evmVersion: "cancun",
    outputSelection: { "*": { "*": ["abi", "evm.bytecode.object"] } },
  },
};
const output = JSON.parse(solc.compile(JSON.stringify(input)));
for (const e of output.errors || []) process.stderr.write(e.formattedMessage + "\n");
if ((output.errors || []).some((e) => e.severity === "error")) process.exit(1);
const c = output.contracts["OwnerWallet.sol"].OwnerWallet;
const artifact = { contractName: "OwnerWallet", compiler: `solc-js ${solc.version()}`, abi: c.abi, bytecode: "0x" + c.evm.bytecode.object };
fs.writeFileSync(path.join(__dirname, "OwnerWallet.json"), JSON.stringify(artifact, null, 2) + "\n");
