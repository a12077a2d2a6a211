// The TypeScript declarations (flashwire.d.ts) type-check an app's use of every public name
// (test/usage.ts), and refuse the misuses marked @ts-expect-error there: `tsc --noEmit`.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";

const ROOT = dirname(dirname(fileURLToPath(import.meta.url)));
const TSC = join(ROOT, "node_modules", "typescript", "bin", "tsc");

test("flashwire.d.ts type-checks test/usage.ts with tsc --noEmit", { skip: !existsSync(TSC) && "typescript not installed (npm ci in web/client)" }, () => {
  const result = spawnSync(process.execPath, [TSC, "--noEmit", "-p", join(ROOT, "tsconfig.json")], { encoding: "utf8" });
  assert.equal(result.status, 0, result.stdout + result.stderr);
});
