import { type ChildProcess, execFile, spawn } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { mkdtemp, open, readdir, readFile, rm, stat, utimes, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { freePort } from "../../infra/local/services.ts";
import { startTestApi, TEST_PART_SIZE, type TestApi, testApi } from "./multipart-server.ts";
import { getStack, mintToken } from "./setup/stack.ts";

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

const execFileP = promisify(execFile);
const qemuImg = (...args: string[]) => execFileP("qemu-img", args);

/**
 * Runs `hangar` as a process, as a user would: no TTY, endpoint and token from the environment, and
 * none of the variables npm scripts set (so an SDK warning would show).
 */
function hangar(
  args: string[],
  onStderr?: (text: string, child: ChildProcess) => void,
  env: Record<string, string> = {},
): Promise<Run> {
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
        ...env,
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

/** A 32 MiB disk holding 1.5 MiB of data, as qcow2 (made by qemu-img from a sparse raw). */
async function sparseQcow2(name: string): Promise<{ raw: string; qcow2: string }> {
  const raw = join(work, `${name}.src.raw`);
  const fh = await open(raw, "w");
  await fh.write(randomBytes(1024 * 1024), 0, 1024 * 1024, 4 * 1024 * 1024);
  await fh.write(randomBytes(512 * 1024), 0, 512 * 1024, 20 * 1024 * 1024);
  await fh.truncate(32 * 1024 * 1024);
  await fh.close();
  const qcow2 = join(work, `${name}.qcow2`);
  await qemuImg("convert", "-f", "raw", "-O", "qcow2", raw, qcow2);
  return { raw, qcow2 };
}

/** Resume files the CLI keeps under HANGAR_HOME. */
const resumeFiles = () => readdir(join(work, "home", "uploads")).catch(() => [] as string[]);

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

    // What happened to it, from the stack's lifecycle events.
    const stackHome = { HANGAR_HOME: inject("hangarStack").home };
    const written = join(stackHome.HANGAR_HOME, "events.jsonl");
    for (let i = 0; i < 100; i++) {
      const text = await readFile(written, "utf8").catch(() => "");
      if (text.split("\n").some((l) => l.includes(id) && l.includes("image.deleted"))) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    const events = await hangar(["events", "--image", id], undefined, stackHome);
    expect(events.code, events.stderr).toBe(0);
    expect(
      events.stdout
        .split("\n")
        .filter(Boolean)
        .map((l) => l.split(/\s+/)[1]),
      events.stdout,
    ).toEqual([
      "image.created",
      "image.upload.completed",
      "image.import.started",
      "image.activated",
      "image.deleted",
    ]);
    const json = await hangar(["--json", "events", "--image", id], undefined, stackHome);
    const first = JSON.parse(json.stdout.split("\n")[0] ?? "") as Record<string, unknown>;
    expect(first).toMatchObject({
      source: "hangar",
      "detail-type": "image.created",
      detail: { image_id: id },
    });
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
    // The count is of the parts this run sends, out of the plan's.
    const missing = 6 - before.length;
    expect(again.stderr).toContain(`to send in ${missing} part${missing === 1 ? "" : "s"} (of 6)`);
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

  it("inspects before sending: fills the disk format, says what the policy does, refuses a wrong one and an unsafe image", async () => {
    const { raw, qcow2 } = await sparseQcow2("policy");
    const wrong = await hangar(["upload", qcow2, "--name", "wrong-format", "--disk-format", "vmdk"]);
    expect(wrong.code, wrong.stderr).toBe(1);
    expect(wrong.stderr).toContain(
      "refused before sending anything: --disk-format vmdk does not match the file, which is qcow2",
    );
    expect(wrong.stderr).toContain("FORMAT_MISMATCH");

    const base = join(work, "base.qcow2");
    const child = join(work, "child.qcow2");
    await qemuImg("create", "-f", "qcow2", base, "16M");
    await qemuImg("create", "-f", "qcow2", "-b", base, "-F", "qcow2", child);
    const unsafe = await hangar(["upload", child, "--name", "backed"]);
    expect(unsafe.code, unsafe.stderr).toBe(1);
    expect(unsafe.stderr).toMatch(/refused before sending anything: qcow2 backing file: .*UNSAFE_IMAGE/);
    const names = (JSON.parse((await hangar(["--json", "list"])).stdout) as { name: string }[]).map(
      (i) => i.name,
    );
    expect(names).not.toContain("wrong-format");
    expect(names).not.toContain("backed");

    const up = await hangar(["upload", qcow2, "--name", "policy"]);
    expect(up.code, up.stderr).toBe(0);
    expect(up.stderr).toContain("qcow2 (32.0 MiB virtual) → converted and stored as raw, 32.0 MiB");
    expect(up.stdout).toMatch(
      /^image [0-9a-f-]{36} active: converted from qcow2 and stored as raw, 32\.0 MiB$/m,
    );
    expect(up.stdout).toMatch(
      /^file sha256 +[0-9a-f]{64} +\(of the file sent; verified by Hangar on import\)$/m,
    );
    expect(up.stdout).toMatch(/^image md5 +[0-9a-f]{32} +\(of the stored image, not of the file; /m);
    const id = /^image ([0-9a-f-]{36})/.exec(up.stdout)?.[1] ?? "";

    // Raw, sparse: the holes of the 32 MiB disk take no space, and the disk reads back as the original.
    const out = join(work, "policy.out.raw");
    const down = await hangar(["--json", "download", id, "-o", out]);
    expect(down.code, down.stderr).toBe(0);
    expect(JSON.parse(down.stdout)).toMatchObject({ verified: true, format: "raw", converted: false });
    const written = await stat(out);
    expect(written.size).toBe(32 * 1024 * 1024);
    expect(written.blocks * 512).toBeLessThan(4 * 1024 * 1024);
    await qemuImg("compare", "-f", "raw", "-F", "raw", raw, out);

    // qcow2, converted while downloading: compact again, same disk.
    const compact = join(work, "policy.out.qcow2");
    const conv = await hangar(["download", id, "--format", "qcow2", "-o", compact]);
    expect(conv.code, conv.stderr).toBe(0);
    expect(conv.stdout).toContain("converted from the stored raw");
    expect((await stat(compact)).size).toBeLessThan(4 * 1024 * 1024);
    const info = JSON.parse((await qemuImg("info", "--output=json", compact)).stdout) as { format: string };
    expect(info.format).toBe("qcow2");
    await qemuImg("compare", "-f", "qcow2", "-F", "qcow2", qcow2, compact);
    expect((await hangar(["delete", id])).code).toBe(0);
  });

  it("--no-wait says the sha256 is still to be verified, and leaves no resume file behind", async () => {
    const before = await resumeFiles();
    const file = join(work, "nowait.raw");
    await writeFile(file, randomBytes(300 * 1024));
    const up = await hangar(["upload", file, "--name", "nowait", "--no-wait"]);
    expect(up.code, up.stderr).toBe(0);
    expect(up.stdout).toMatch(
      /^image [0-9a-f-]{36} (queued|importing): its bytes are in storage, the import has not finished/m,
    );
    expect(up.stdout).toContain("(of the file sent; declared; Hangar verifies it on import)");
    expect(up.stdout).not.toContain("verified by Hangar");
    expect(await resumeFiles()).toEqual(before);
    const id = /^image ([0-9a-f-]{36})/.exec(up.stdout)?.[1] ?? "";
    expect((await hangar(["wait", id, "--timeout", "60"])).code).toBe(0);
    expect((await hangar(["delete", id])).code).toBe(0);
  });

  it("delete forgets the resume file of an interrupted upload", async () => {
    const file = join(work, "forget.raw");
    await writeFile(file, randomBytes(3 * TEST_PART_SIZE + 10));
    const before = await resumeFiles();
    const id = await crashAfterFirstPart(file);
    expect((await resumeFiles()).length).toBe(before.length + 1);
    expect((await hangar(["delete", id])).code).toBe(0);
    expect(await resumeFiles()).toEqual(before);
  });

  it("ends quietly with status 0 when its reader goes away (hangar list | head)", async () => {
    const child = spawn(process.execPath, [BIN, "list"], {
      stdio: ["ignore", "pipe", "pipe"],
      cwd: work,
      env: {
        PATH: process.env.PATH ?? "",
        HOME: work,
        HANGAR_URL: server.url,
        HANGAR_TOKEN: getStack().tokens.alice,
      },
    });
    // The reading end is closed before the CLI writes a line, as `head` does once it has enough.
    child.stdout.destroy();
    let stderr = "";
    child.stderr.on("data", (d) => (stderr += d));
    const code = await new Promise((r) => child.on("close", r));
    expect(stderr).toBe("");
    expect(code).toBe(0);
  });

  it("names the problem: wrong port, timeout in seconds, a bad and an expired token; no SDK warning", async () => {
    const port = await freePort();
    const wrongPort = await hangar(["list"], undefined, { HANGAR_URL: `http://127.0.0.1:${port}` });
    expect(wrongPort.code).toBe(1);
    expect(wrongPort.stderr).toBe(
      `hangar: cannot reach http://127.0.0.1:${port}/v2/images: connection refused: nothing listens there (is the stack running, on that port?) (ECONNREFUSED)\n`,
    );

    const res = await testApi(
      server.url,
      "/v2/images",
      { method: "POST", body: "{}" },
      getStack().tokens.alice,
    );
    const queued = ((await res.json()) as { id: string }).id;
    const timeout = await hangar(["wait", queued, "--timeout", "1"]);
    expect(timeout.code).toBe(1);
    expect(timeout.stderr).toBe(`hangar: image ${queued} is still queued after 1 s\n`);
    expect((await hangar(["delete", queued])).code).toBe(0);

    const bad = await hangar(["list"], undefined, { HANGAR_TOKEN: "not-a-token" });
    expect(bad.code).toBe(1);
    expect(bad.stderr).toContain("requires authentication: the token is not valid (the token is not a JWT");
    const expired = await mintToken(
      { sub: "alice", project_id: "project-alice", roles: ["member"] },
      { expiresIn: "-5m" },
    );
    const old = await hangar(["list"], undefined, { HANGAR_TOKEN: expired });
    expect(old.code).toBe(1);
    expect(old.stderr).toMatch(
      /requires authentication: the token has expired \(the token expired at \S+ \(5 min ago\)/,
    );
    expect(old.stderr).toContain("(HTTP 401, TOKEN_EXPIRED)");
    for (const run of [wrongPort, timeout, bad, old])
      expect(run.stderr).not.toMatch(/NodeVersionSupportWarning|at .*\.ts:\d+/);
  });
});
