import { mkdtempSync, writeFileSync } from "node:fs";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PassThrough } from "node:stream";
import { InvalidArgumentError } from "commander";
import { describe, expect, it } from "vitest";
import { collectProperty, EXIT, main } from "../../../client/cli.ts";
import { ClientConfigError, normalizeApiUrl, resolveConfig } from "../../../client/lib/config.ts";
import { loadState, saveState, stateFile } from "../../../client/lib/state.ts";

function capture() {
  const stream = new PassThrough() as unknown as NodeJS.WriteStream;
  let text = "";
  (stream as unknown as PassThrough).on("data", (d: Buffer) => (text += d.toString()));
  return { stream, text: () => text };
}

async function run(
  argv: string[],
  env: NodeJS.ProcessEnv = {},
  cwd = mkdtempSync(join(tmpdir(), "hangar-cli-")),
) {
  const out = capture();
  const err = capture();
  const code = await main(argv, { stdout: out.stream, stderr: err.stream, env, cwd });
  return { code, stdout: out.text(), stderr: err.text() };
}

function home(tokens: Record<string, string> = { admin: "t-admin", alice: "t-alice", bob: "t-bob" }) {
  const dir = mkdtempSync(join(tmpdir(), "hangar-home-"));
  writeFileSync(join(dir, "local.json"), JSON.stringify({ apiUrl: "http://127.0.0.1:9292", tokens }));
  return dir;
}

describe("hangar command line", () => {
  it("prints help and exits 0", async () => {
    const r = await run(["--help"]);
    expect(r.code).toBe(EXIT.ok);
    expect(r.stdout).toContain("upload [options] <file>");
  });

  it("exits 2 on usage errors: unknown command, missing file, bad choice, bad property, bad number", async () => {
    for (const argv of [
      ["frobnicate"],
      ["upload"],
      ["upload", "f.img", "--visibility", "everyone"],
      ["upload", "f.img", "--disk-format", "floppy"],
      ["upload", "f.img", "--property", "novalue"],
      ["upload", "f.img", "--parallel", "0"],
      ["--as", "mallory", "list"],
    ]) {
      const r = await run(argv);
      expect(r.code, argv.join(" ")).toBe(EXIT.usage);
      expect(r.stderr.length, argv.join(" ")).toBeGreaterThan(0);
    }
  });

  it("exits 2 with a clear message when there is no API to talk to", async () => {
    const r = await run(["list"], { HANGAR_HOME: "/nonexistent/hangar" });
    expect(r.code).toBe(EXIT.usage);
    expect(r.stderr).toContain("no API URL");
  });

  it("exits 1 naming the address when the API cannot be reached", async () => {
    const server = createServer();
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
    const port = (server.address() as AddressInfo).port;
    await new Promise((r) => server.close(r));
    const r = await run(["list"], { HANGAR_URL: `http://127.0.0.1:${port}`, HANGAR_TOKEN: "t" });
    expect(r.code).toBe(EXIT.failed);
    expect(r.stderr).toContain(`cannot reach http://127.0.0.1:${port}/v2/images`);
    expect(r.stderr).toContain("ECONNREFUSED");
    expect(r.stderr).toContain("connection refused: nothing listens there");
    expect(r.stderr).not.toContain("(0 UNREACHABLE)");
  });

  it("prints its version", async () => {
    const r = await run(["--version"]);
    expect(r.code).toBe(EXIT.ok);
    expect(r.stdout).toMatch(/^\d+\.\d+\.\d+/);
  });

  it("exits 1 when the upload file does not exist", async () => {
    const r = await run(["upload", "/nonexistent/file.img"], {
      HANGAR_URL: "http://127.0.0.1:1",
      HANGAR_TOKEN: "t",
    });
    expect(r.code).toBe(EXIT.failed);
    expect(r.stderr).toBe("hangar: cannot upload /nonexistent/file.img: no such file\n");
  });

  it("collects repeated --property key=value, keeping '=' in values, refusing core fields", () => {
    expect(collectProperty("os_distro=debian", collectProperty("a=b=c", {}))).toEqual({
      a: "b=c",
      os_distro: "debian",
    });
    expect(() => collectProperty("=x", {})).toThrow(InvalidArgumentError);
    expect(() => collectProperty("upload_size=1", {})).toThrow(InvalidArgumentError);
  });
});

describe("client configuration", () => {
  it("reads local.json from HANGAR_HOME, alice by default, --as picks another identity", () => {
    const h = home();
    expect(resolveConfig({}, { HANGAR_HOME: h }, "/")).toMatchObject({
      apiUrl: "http://127.0.0.1:9292",
      token: "t-alice",
      stateDir: join(h, "uploads"),
    });
    expect(resolveConfig({ as: "admin" }, { HANGAR_HOME: h }, "/").token).toBe("t-admin");
  });

  it("prefers flags, then HANGAR_*, then OS_*, then local.json; --as beats tokens from the environment", () => {
    const h = home();
    const env = { HANGAR_HOME: h, OS_IMAGE_URL: "http://os:9292/v2/", OS_AUTH_TOKEN: "t-os" };
    expect(resolveConfig({}, env, "/")).toMatchObject({ apiUrl: "http://os:9292", token: "t-os" });
    expect(resolveConfig({}, { ...env, HANGAR_URL: "http://h:1", HANGAR_TOKEN: "t-h" }, "/")).toMatchObject({
      apiUrl: "http://h:1",
      token: "t-h",
    });
    expect(resolveConfig({ url: "http://f:2", token: "t-f" }, env, "/")).toMatchObject({
      apiUrl: "http://f:2",
      token: "t-f",
    });
    expect(resolveConfig({ as: "bob" }, env, "/").token).toBe("t-bob");
  });

  it("names what is missing", () => {
    expect(() => resolveConfig({}, { HANGAR_URL: "http://x" }, "/nonexistent")).toThrow(ClientConfigError);
    expect(normalizeApiUrl("http://x:1/v2/")).toBe("http://x:1");
  });
});

describe("resume state", () => {
  const id = { path: "/data/a.img", size: 10, mtimeMs: 1000.5, name: "a", apiUrl: "http://x" };

  it("round-trips, and is not found for a changed file, name or API", async () => {
    const dir = mkdtempSync(join(tmpdir(), "hangar-state-"));
    await saveState(dir, id, "img-1");
    expect((await loadState(dir, id))?.imageId).toBe("img-1");
    for (const changed of [{ size: 11 }, { mtimeMs: 2000 }, { name: "b" }, { apiUrl: "http://y" }]) {
      expect(await loadState(dir, { ...id, ...changed })).toBeUndefined();
    }
    expect(stateFile(dir, id)).not.toBe(stateFile(dir, { ...id, name: "b" }));
  });
});
