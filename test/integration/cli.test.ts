import { type ChildProcess, spawn } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { mkdtemp, readFile, rm, stat, utimes, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startTestApi, TEST_PART_SIZE, type TestApi, testApi } from "./multipart-server.ts";
import { getStack } from "./setup/stack.ts";

const BIN = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..", "client", "bin", "hangar.mjs");

let server: TestApi;
let work: string;

beforeAll(async () => {
  server = await startTestApi();
  work = await mkdtemp(join(tmpdir(), "hangar-cli-it-"));
});
afterAll(async () => {
  await server?.close();
  if (work) await rm(work, { recursive: true, force: true });
});

interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Runs `hangar` as a process, as a user would: no TTY, endpoint and token from the environment. */
function hangar(args: string[], onStderr?: (text: string, child: ChildProcess) => void): Promise<Run> {
  return new Promise((done, reject) => {
    const child = spawn(process.execPath, [BIN, ...args], {
      stdio: ["ignore", "pipe", "pipe"],
      cwd: work,
      env: {
        PATH: process.env.PATH ?? "/usr/bin:/bin",
        HOME: work,
        HANGAR_HOME: join(work, "home"),
        HANGAR_URL: server.url,
        HANGAR_TOKEN: getStack().tokens.alice,
      },
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d) => (stdout += d));
    child.stderr.on("data", (d) => {
      stderr += d;
      onStderr?.(stderr, child);
    });
    child.on("error", reject);
    child.on("close", (code, signal) => done({ code, signal, stdout, stderr }));
  });
}

const sha256 = (b: Buffer) => createHash("sha256").update(b).digest("hex");

async function storedParts(id: string): Promise<number[]> {
  const res = await testApi(server.url, `/v2/images/${id}/upload/parts`, {}, getStack().tokens.alice);
  expect(res.status).toBe(200);
  return ((await res.json()) as { parts: { part_number: number }[] }).parts.map((p) => p.part_number);
}

/** Starts an upload of `file` with one part at a time and kills it (SIGKILL, like a crash) after its first part. */
async function crashAfterFirstPart(file: string): Promise<string> {
  const run = await hangar(["upload", file, "--name", "crash", "--parallel", "1"], (text, child) => {
    if (/part \d+\/\d+ uploaded/.test(text)) child.kill("SIGKILL");
  });
  expect(run.signal).toBe("SIGKILL");
  const id = /uploading image ([0-9a-f-]{36})/.exec(run.stderr)?.[1];
  expect(id, run.stderr).toBeDefined();
  return id as string;
}

describe("hangar CLI against the local stack", () => {
  it("uploads a small file with one PUT, shows, lists, downloads (verified) and deletes it", async () => {
    const data = randomBytes(512 * 1024);
    const file = join(work, "small.raw");
    await writeFile(file, data);

    const up = await hangar([
      "--json",
      "upload",
      file,
      "--name",
      "small",
      "--disk-format",
      "raw",
      "--property",
      "os_distro=debian",
    ]);
    expect(up.code, up.stderr).toBe(0);
    const result = JSON.parse(up.stdout) as Record<string, unknown>;
    expect(result).toMatchObject({
      status: "active",
      method: "PUT",
      sha256: sha256(data),
      sha256_declared: true,
      size: data.length,
      checksum: createHash("md5").update(data).digest("hex"),
    });
    const id = String(result.image_id);

    const show = await hangar(["--json", "show", id]);
    expect(show.code).toBe(0);
    expect(JSON.parse(show.stdout)).toMatchObject({ id, os_distro: "debian", upload_sha256: sha256(data) });

    const list = await hangar(["--json", "list"]);
    expect(list.code).toBe(0);
    expect((JSON.parse(list.stdout) as { id: string }[]).map((i) => i.id)).toContain(id);

    const target = join(work, "small.out");
    const down = await hangar(["--json", "download", id, "-o", target]);
    expect(down.code, down.stderr).toBe(0);
    expect(JSON.parse(down.stdout)).toMatchObject({ verified: true, size: data.length });
    expect(sha256(await readFile(target))).toBe(sha256(data));

    expect((await hangar(["delete", id])).code).toBe(0);
    const gone = await hangar(["--json", "show", id]);
    expect(gone.code).toBe(1);
    expect(JSON.parse(gone.stdout)).toMatchObject({ error: { reason: "NOT_FOUND" } });
  });

  it("resumes a crashed multipart upload with the same image, sending only the missing parts", async () => {
    const data = randomBytes(5 * TEST_PART_SIZE + 1000);
    const file = join(work, "resume.raw");
    await writeFile(file, data);
    const id = await crashAfterFirstPart(file);
    const before = await storedParts(id);
    expect(before.length).toBeGreaterThanOrEqual(1);
    expect(before.length).toBeLessThan(6);

    const again = await hangar(["--json", "upload", file, "--name", "crash", "--parallel", "1"]);
    expect(again.code, again.stderr).toBe(0);
    const result = JSON.parse(again.stdout) as Record<string, unknown>;
    expect(result).toMatchObject({
      image_id: id,
      resumed: true,
      status: "active",
      method: "multipart",
      part_count: 6,
      skipped_parts: before,
      uploaded_parts: [1, 2, 3, 4, 5, 6].filter((n) => !before.includes(n)),
      sha256: sha256(data),
      size: data.length,
      os_hash_value: createHash("sha512").update(data).digest("hex"),
    });
    expect(again.stderr).toContain(`resuming image ${id}`);
  });

  it("refuses to resume onto a file changed in place (same size and mtime), then starts afresh", async () => {
    const data = randomBytes(3 * TEST_PART_SIZE + 10);
    const file = join(work, "changed.raw");
    await writeFile(file, data);
    const { mtime } = await stat(file);
    const id = await crashAfterFirstPart(file);
    // Same size and time, other bytes: the resume state still matches; the declared sha256 does not.
    const other = randomBytes(data.length);
    await writeFile(file, other);
    await utimes(file, mtime, mtime);

    const again = await hangar(["--json", "upload", file, "--name", "crash"]);
    expect(again.code, `${again.stdout}\n${again.stderr}`).toBe(1);
    expect(again.stderr).toContain(`the file changed since image ${id} was created for it`);

    const fresh = await hangar(["--json", "upload", file, "--name", "crash"]);
    expect(fresh.code, fresh.stderr).toBe(0);
    const result = JSON.parse(fresh.stdout) as Record<string, unknown>;
    expect(result).toMatchObject({ resumed: false, status: "active", sha256: sha256(other) });
    expect(result.image_id).not.toBe(id);
  });

  it("wait exits 1 and prints the reason for a killed image", async () => {
    const res = await testApi(
      server.url,
      "/v2/images",
      {
        method: "POST",
        body: JSON.stringify({ name: "bad", upload_size: 4, upload_sha256: "0".repeat(64) }),
      },
      getStack().tokens.alice,
    );
    const image = (await res.json()) as {
      id: string;
      upload: { url: string; headers: Record<string, string> };
    };
    const put = await fetch(image.upload.url, { method: "PUT", headers: image.upload.headers, body: "abcd" });
    expect(put.status).toBe(200);
    const wait = await hangar(["wait", image.id, "--timeout", "60"]);
    expect(wait.code).toBe(1);
    expect(wait.stderr).toContain("DIGEST_MISMATCH");
    const json = await hangar(["--json", "wait", image.id]);
    expect(json.code).toBe(1);
    expect(JSON.parse(json.stdout)).toMatchObject({
      status: "killed",
      failure: { reason: "DIGEST_MISMATCH" },
    });
  });
});
