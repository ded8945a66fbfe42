import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { api, getStack, mintToken, waitForStatus } from "./setup/stack.ts";

/**
 * The real python-glanceclient 4.1 and openstackclient 6.0 against the local stack, unchanged: endpoint and
 * token from the environment, a fresh HOME per file (so the schema cache starts empty), stdin closed.
 */

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

let home: string;
const projectOf = (token: string) =>
  (JSON.parse(Buffer.from(token.split(".")[1] ?? "", "base64url").toString()) as { project_id: string })
    .project_id;

/**
 * `closed`: stdin closed (`<&-`), as the README tells scripts to run the clients: glanceclient and
 * openstackclient upload any non-tty stdin as image data. `empty`: stdin is /dev/null, as in a script or
 * a CI job that does not close it.
 */
function run(
  cmd: string,
  args: string[],
  env: Record<string, string>,
  stdin: "closed" | "empty" = "closed",
): Promise<Run> {
  return new Promise((resolve, reject) => {
    const redirect = stdin === "closed" ? "<&-" : "</dev/null";
    const child = spawn("sh", ["-c", `exec "$@" ${redirect}`, "sh", cmd, ...args], {
      stdio: ["ignore", "pipe", "pipe"],
      env: { PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: home, LANG: "C.UTF-8", ...env },
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d) => (stdout += d));
    child.stderr.on("data", (d) => (stderr += d));
    child.on("error", reject);
    child.on("close", (code) => {
      // Whatever happens, a user never sees a Python traceback.
      expect(stderr + stdout).not.toMatch(/Traceback/);
      resolve({ code, stdout, stderr });
    });
  });
}

const glance = (args: string[], token = getStack().tokens.alice) =>
  run("glance", args, { OS_IMAGE_URL: getStack().apiUrl, OS_AUTH_TOKEN: token });

const openstack = (args: string[], token = getStack().tokens.alice, stdin: "closed" | "empty" = "closed") =>
  run(
    "openstack",
    [
      "--os-auth-type",
      "admin_token",
      "--os-endpoint",
      `${getStack().apiUrl.replace(/\/$/, "")}/v2`,
      "--os-token",
      token,
      "--os-image-api-version",
      "2",
      ...args,
    ],
    {},
    stdin,
  );

async function ok(p: Promise<Run>): Promise<string> {
  const r = await p;
  expect(r.code, `${r.stderr}\n${r.stdout}`).toBe(0);
  return r.stdout;
}

async function fails(p: Promise<Run>, message: string | RegExp): Promise<Run> {
  const r = await p;
  expect(r.code, r.stdout).not.toBe(0);
  expect(r.stderr).toMatch(message);
  return r;
}

/** A glanceclient `Property | Value` table as a map. */
function table(out: string): Record<string, string> {
  const rows: Record<string, string> = {};
  let last = "";
  for (const line of out.split("\n")) {
    const m = /^\|\s(.*?)\s*\|\s(.*?)\s*\|$/.exec(line);
    if (!m || m[1] === "Property") continue;
    if (m[1] === "" && last) rows[last] += m[2] ?? "";
    else {
      last = m[1] ?? "";
      rows[last] = m[2] ?? "";
    }
  }
  return rows;
}

async function createWithCli(name: string, extra: string[] = []): Promise<string> {
  const t = table(
    await ok(
      glance([
        "image-create",
        "--name",
        name,
        "--disk-format",
        "raw",
        "--container-format",
        "bare",
        ...extra,
      ]),
    ),
  );
  expect(t.status).toBe("queued");
  return t.id ?? "";
}

/** Uploads through the image's link, as any Hangar client does, and waits for the import. */
async function uploadAndWait(id: string, bytes: Uint8Array): Promise<void> {
  const image = (await (await api(`/v2/images/${id}`, {}, getStack().tokens.alice)).json()) as {
    upload: { method: string; url: string; headers: Record<string, string> };
  };
  const put = await fetch(image.upload.url, {
    method: image.upload.method,
    headers: image.upload.headers,
    body: bytes,
  });
  expect(put.status).toBe(200);
  await waitForStatus(id, "active", getStack().tokens.alice, 60_000);
}

let source: Server;
let sourceUrl: string;
const served = randomBytes(256 * 1024);

beforeAll(async () => {
  home = await mkdtemp(join(tmpdir(), "hangar-glance-"));
  // The web-download source: a loopback server (the stack allows loopback only in tests).
  source = createServer((req, res) => {
    if (req.url === "/redirect") {
      res.writeHead(302, { location: "/image.raw" }).end();
      return;
    }
    res
      .writeHead(200, { "content-type": "application/octet-stream", "content-length": served.length })
      .end(served);
  });
  await new Promise<void>((r) => source.listen(0, "127.0.0.1", r));
  sourceUrl = `http://127.0.0.1:${(source.address() as AddressInfo).port}`;
});

afterAll(async () => {
  await new Promise((r) => source.close(r));
  await rm(home, { recursive: true, force: true });
});

describe("glance CLI", () => {
  let id: string;

  it("creates an image, then a second command works with the schema cached", async () => {
    id = await createWithCli("cli-one", ["--property", "os_distro=debian", "--min-disk", "1"]);
    expect(existsSync(join(home, ".glanceclient"))).toBe(true);
    const shown = table(await ok(glance(["image-show", "--max-column-width", "400", id])));
    expect(shown).toMatchObject({
      name: "cli-one",
      os_distro: "debian",
      min_disk: "1",
      visibility: "shared",
    });
    expect(shown.upload).toContain('"method": "PUT"');
  });

  it("updates core and extra properties (replace, add, remove)", async () => {
    await ok(
      glance([
        "image-update",
        id,
        "--min-ram",
        "256",
        "--name",
        "cli-renamed",
        "--property",
        "hw_disk_bus=virtio",
        "--remove-property",
        "os_distro",
      ]),
    );
    const t = table(await ok(glance(["image-show", id])));
    expect(t).toMatchObject({ name: "cli-renamed", min_ram: "256", hw_disk_bus: "virtio" });
    expect(t.os_distro).toBeUndefined();
  });

  it("adds and removes tags; later updates send the trailing replace of /tags", async () => {
    expect(await ok(glance(["image-tag-update", id, "red"]))).toContain("red");
    await ok(glance(["image-update", id, "--property", "color=warm"]));
    expect(table(await ok(glance(["image-show", id]))).tags).toBe('["red"]');
    await ok(glance(["image-tag-delete", id, "red"]));
    expect(table(await ok(glance(["image-show", id]))).tags).toBe("[]");
  });

  it("lists with filters and pages through with --page-size 1", async () => {
    const tag = `page${Date.now()}`;
    const ids = [];
    for (const n of ["p-b", "p-a", "p-c"]) ids.push(await createWithCli(n, ["--tags", tag]));
    const out = await ok(glance(["image-list", "--tag", tag, "--page-size", "1"]));
    const names = [...out.matchAll(/\|\s[0-9a-f-]{36}\s\|\s(p-[abc])\s/g)].map((m) => m[1]);
    expect(names).toEqual(["p-a", "p-b", "p-c"]);
    const one = await ok(glance(["image-list", "--property-filter", "name=p-c", "--tag", tag]));
    expect(one).toContain(ids[2]);
    expect(one).not.toContain(ids[0]);
    expect(await ok(glance(["image-list", "--visibility", "private"]))).not.toContain(ids[0]);
  });

  it("shares with bob: bob sees it pending, accepts, lists it and his membership", async () => {
    const bob = getStack().tokens.bob;
    const bobProject = projectOf(bob);
    const shared = await createWithCli("cli-shared", ["--visibility", "shared"]);
    expect(await ok(glance(["member-create", shared, bobProject]))).toMatch(/pending/);
    expect(await ok(glance(["image-list"], bob))).not.toContain(shared);
    expect(await ok(glance(["member-update", shared, bobProject, "accepted"], bob))).toMatch(/accepted/);
    expect(await ok(glance(["image-list"], bob))).toContain(shared);
    const members = await ok(glance(["member-list", "--image-id", shared], bob));
    expect(members).toContain(bobProject);
    await fails(glance(["member-delete", shared, bobProject], bob), /not permitted/);
    await ok(glance(["member-delete", shared, bobProject]));
    await fails(glance(["image-show", shared], bob), /No image found with ID/);
  });

  it("visibility: public only for the admin; community shows for others only when asked", async () => {
    await fails(
      glance(["image-update", id, "--visibility", "public"]),
      /not authorized to complete publicize_image action/,
    );
    await ok(glance(["image-update", id, "--visibility", "community"]));
    const bob = getStack().tokens.bob;
    expect(table(await ok(glance(["image-show", id], bob))).visibility).toBe("community");
    expect(await ok(glance(["image-list"], bob))).not.toContain(id);
    expect(await ok(glance(["image-list", "--visibility", "community"], bob))).toContain(id);
    await ok(glance(["image-update", id, "--visibility", "public"], getStack().tokens.admin));
    expect(await ok(glance(["image-list"], bob))).toContain(id);
  });

  it("protect blocks delete with Glance's message; unprotected, delete works", async () => {
    const p = await createWithCli("cli-protected", ["--protected", "True"]);
    await fails(glance(["image-delete", p]), `You are not permitted to delete the image '${p}'.`);
    await ok(glance(["image-update", p, "--protected", "False"]));
    await ok(glance(["image-delete", p]));
    await fails(glance(["image-show", p]), /No image found with ID/);
  });

  it("downloads the stored bytes (verified by glanceclient against os_hash_value), deactivate blocks it", async () => {
    const d = await createWithCli("cli-download");
    const bytes = randomBytes(300 * 1024);
    await uploadAndWait(d, bytes);
    const file = join(home, "out.raw");
    await ok(glance(["image-download", "--file", file, d]));
    expect(Buffer.compare(await readFile(file), bytes)).toBe(0);
    await ok(glance(["image-deactivate", d]));
    expect(table(await ok(glance(["image-show", d]))).status).toBe("deactivated");
    await fails(glance(["image-download", "--file", file, d]), /deactivated/);
    await ok(glance(["image-reactivate", d]));
    await ok(glance(["image-download", "--file", file, d]));
  });

  it("imports by web-download from a URL (followed through a redirect) and the image becomes active", async () => {
    const out = await ok(
      glance([
        "image-create-via-import",
        "--name",
        "cli-web",
        "--disk-format",
        "raw",
        "--container-format",
        "bare",
        "--import-method",
        "web-download",
        "--uri",
        `${sourceUrl}/redirect`,
      ]),
    );
    const w = table(out).id ?? "";
    const image = await waitForStatus(w, "active", getStack().tokens.alice, 60_000);
    expect(image.size).toBe(served.length);
  });

  it("prints readable errors: not found, read-only property, bad disk format, bad token", async () => {
    await fails(
      glance(["image-show", "00000000-0000-4000-8000-000000000000"]),
      /No image found with ID 00000000/,
    );
    await fails(
      glance(["image-update", id, "--property", "checksum=abc"]),
      /Attribute 'checksum' is read-only/,
    );
    const bad = await glance(["image-create", "--name", "x", "--disk-format", "bogus"]);
    expect(bad.code).not.toBe(0);
    expect(bad.stderr).toMatch(/bogus/);
    await fails(glance(["image-list"], "not-a-token"), /Invalid OpenStack Identity credentials/);
  });

  it("glance and openstack print an expired token's 401 readably (Glance's body, not a gateway's)", async () => {
    const expired = await mintToken(
      { sub: "alice", project_id: "project-alice", roles: ["member"] },
      { expiresIn: "-1m" },
    );
    const r = await fails(glance(["image-list"], expired), /Invalid OpenStack Identity credentials/);
    // What glanceclient printed for API Gateway's flat 403 {"message": "Forbidden"}.
    expect(r.stderr).not.toMatch(/has no attribute|Forbidden/);
    // openstackclient prints the status and the body's message.
    await fails(
      openstack(["image", "list"], expired),
      /401.*The request you have made requires authentication/,
    );
  });
});

describe("openstack image (admin_token, /v2 endpoint)", () => {
  it("lists, shows, sets a property and deletes", async () => {
    const id = await createWithCli("osc-one");
    expect(await ok(openstack(["image", "list"]))).toContain(id);
    expect(await ok(openstack(["image", "show", id, "-f", "value", "-c", "name"]))).toBe("osc-one\n");
    await ok(openstack(["image", "set", "--property", "purpose=osc", id]));
    expect(await ok(openstack(["image", "show", id, "-f", "json"]))).toMatch(/"purpose": "osc"/);
    await ok(openstack(["image", "delete", id]));
    expect((await openstack(["image", "show", id])).code).not.toBe(0);
  });

  it("creates from a script whose stdin is empty: the image stays queued and its upload link works", async () => {
    // openstackclient sends the empty stdin to /file and deletes the image if that fails.
    const created = JSON.parse(
      await ok(
        openstack(
          [
            "image",
            "create",
            "--disk-format",
            "raw",
            "--container-format",
            "bare",
            "-f",
            "json",
            "osc-script",
          ],
          getStack().tokens.alice,
          "empty",
        ),
      ),
    ) as { id: string; status: string };
    expect(created.status).toBe("queued");
    await uploadAndWait(created.id, randomBytes(64 * 1024));
  });
});

describe("the API's answer to image data sent to /file", () => {
  const create = async () =>
    (
      (await (await api("/v2/images", { method: "POST", body: "{}" }, getStack().tokens.alice)).json()) as {
        id: string;
      }
    ).id;

  it("takes an empty body as nothing sent (204, still queued), refuses bytes with the link to use", async () => {
    const id = await create();
    const headers = { "content-type": "application/octet-stream" };
    const empty = await api(
      `/v2/images/${id}/file`,
      { method: "PUT", headers, body: "" },
      getStack().tokens.alice,
    );
    expect(empty.status).toBe(204);
    const bytes = await api(
      `/v2/images/${id}/file`,
      { method: "PUT", headers, body: "abc" },
      getStack().tokens.alice,
    );
    expect(bytes.status).toBe(405);
    expect(((await bytes.json()) as { error: { reason: string } }).error.reason).toBe("USE_UPLOAD_LINK");
    // Bob may not upload to alice's image: an empty body does not change that.
    const bob = await api(
      `/v2/images/${id}/file`,
      { method: "PUT", headers, body: "" },
      getStack().tokens.bob,
    );
    expect(bob.status).toBe(404);
    const image = (await (await api(`/v2/images/${id}`, {}, getStack().tokens.alice)).json()) as {
      status: string;
      upload: { url: string } | null;
    };
    expect(image.status).toBe("queued");
    expect(image.upload?.url).toBeTruthy();
  });
});
