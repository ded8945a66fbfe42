import { readdirSync, readFileSync } from "node:fs";
import { join, relative } from "node:path";
import { describe, expect, it } from "vitest";

const root = join(import.meta.dirname, "../../..");
const core = join(root, "functions/core");

function sources(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((d) =>
    d.isDirectory() ? sources(join(dir, d.name)) : d.name.endsWith(".ts") ? [join(dir, d.name)] : [],
  );
}

/** The module specifiers a source imports or re-exports. */
const specifiers = (text: string) =>
  [...text.matchAll(/(?:import|export)\s[^;]*?from\s+"([^"]+)"|import\(\s*"([^"]+)"\s*\)/g)].map(
    (m) => m[1] ?? m[2] ?? "",
  );

describe("the core stays pure", () => {
  const files = sources(core);

  it("finds the core's sources", () => {
    expect(files.length).toBeGreaterThan(20);
  });

  it("imports no configuration module (config reads the core, never the other way), no AWS SDK, no process.env", () => {
    const offenders: string[] = [];
    for (const file of files) {
      const text = readFileSync(file, "utf8");
      const name = relative(root, file);
      for (const spec of specifiers(text)) {
        if (spec.startsWith("@aws-sdk/") || spec === "aws-lambda" || /(^|\/)config\.ts$/.test(spec)) {
          offenders.push(`${name} imports ${spec}`);
        }
      }
      if (/\bprocess\.env\b/.test(text)) offenders.push(`${name} reads process.env`);
    }
    expect(offenders).toEqual([]);
  });
});
