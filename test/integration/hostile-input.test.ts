import { randomBytes, randomUUID } from "node:crypto";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { describe, expect, it } from "vitest";
import { api, getStack, mintToken, waitForStatus } from "./setup/stack.ts";

/**
 * Roles and hostile input against the real stack (DynamoDB Local, MinIO): a reader never writes nor holds
 * quota, and every input that DynamoDB would refuse (keys over 2 KB, items over 400 KB, odd map keys) or that
 * would make the process hold a huge body is a 4xx naming the limit, never a 500.
 */

const PATCH_TYPE = "application/openstack-images-v2.1-json-patch";
const MAX_BODY_BYTES = 512 * 1024;

type GlanceError = { code: number; title: string; message: string; reason: string };
async function glanceError(res: Response, status: number): Promise<GlanceError> {
  const text = await res.text();
  expect(res.status, text.slice(0, 300)).toBe(status);
  const body = JSON.parse(text) as { error: GlanceError };
  expect(body.error.code).toBe(status);
  expect(body.error.message.length).toBeGreaterThan(5);
  return body.error;
}

async function project(roles: string[]) {
  const name = `edge-${randomUUID().slice(0, 8)}`;
  const token = (r: string[]) =>
    mintToken({ sub: `${name}-${r.join("-") || "none"}`, project_id: name, roles: r });
  return { name, member: await token(["member"]), other: await token(roles) };
}
const create = (token: string, body: unknown) =>
  api("/v2/images", { method: "POST", body: typeof body === "string" ? body : JSON.stringify(body) }, token);
const patch = (token: string, id: string, ops: unknown) =>
  api(
    `/v2/images/${id}`,
    { method: "PATCH", body: JSON.stringify(ops), headers: { "content-type": PATCH_TYPE } },
    token,
  );
async function newImage(token: string, body: Record<string, unknown> = { name: "x" }): Promise<string> {
  const res = await create(token, body);
  expect(res.status, await res.clone().text()).toBe(201);
  return ((await res.json()) as { id: string }).id;
}
const props = (n: number, value: (i: number) => string) =>
  Object.fromEntries(Array.from({ length: n }, (_, i) => [`p${i}`, value(i)]));

describe("roles on the real stack", () => {
  for (const roles of [["reader"], []]) {
    it(`a token with roles ${JSON.stringify(roles)} creates nothing and holds no quota; members still fit`, async () => {
      const p = await project(roles);
      const admin = getStack().tokens.admin;
      const limit = await api(
        `/v2/quotas/${p.name}`,
        { method: "PUT", body: JSON.stringify({ image_stage_total: 1000 }) },
        admin,
      );
      expect(limit.status).toBe(200);
      const refused = await glanceError(await create(p.other, { name: "r", upload_size: 1000 }), 403);
      expect(refused.message).toMatch(/not authorized/);
      // A large declared upload would start a storage multipart upload: refused before that too.
      await glanceError(await create(p.other, { name: "r", upload_size: 128 * 1024 * 1024 }), 403);
      const usage = (await (await api("/v2/info/usage", {}, p.other)).json()) as {
        usage: Record<string, { usage: number }>;
      };
      expect(usage.usage.image_count_total?.usage).toBe(0);
      expect(usage.usage.image_stage_total?.usage).toBe(0);
      const id = await newImage(p.member, { name: "m", upload_size: 1000 });

      // The reader sees the member's image, without its upload link, and changes nothing.
      const shown = (await (await api(`/v2/images/${id}`, {}, p.other)).json()) as { upload: unknown };
      expect(shown.upload).toBeNull();
      const writes: [string, string, unknown?, string?][] = [
        ["PATCH", `/v2/images/${id}`, [{ op: "replace", path: "/name", value: "r" }], PATCH_TYPE],
        ["PUT", `/v2/images/${id}/tags/t`],
        [
          "POST",
          `/v2/images/${id}/import`,
          { method: { name: "web-download", uri: "https://example.com/x" } },
        ],
        ["POST", `/v2/images/${id}/actions/deactivate`],
        ["DELETE", `/v2/images/${id}`],
        ["PUT", `/v2/quotas/${p.name}`, { image_stage_total: 5 }],
      ];
      for (const [method, path, body, type] of writes) {
        const res = await api(
          path,
          {
            method,
            ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
            ...(type ? { headers: { "content-type": type } } : {}),
          },
          p.other,
        );
        await glanceError(res, 403);
      }
      expect((await api(`/v2/images/${id}`, {}, p.member)).status).toBe(200);
    });
  }

  it("a reader may not touch a multipart upload of its project's image", async () => {
    const p = await project(["reader"]);
    const id = await newImage(p.member, { name: "big", upload_size: 128 * 1024 * 1024 });
    const plan = (
      (await (await api(`/v2/images/${id}`, {}, p.member)).json()) as { upload: { method: string } }
    ).upload;
    expect(plan.method).toBe("multipart");
    for (const [method, path, body] of [
      ["GET", `/v2/images/${id}/upload/parts`],
      ["POST", `/v2/images/${id}/upload/parts`, { parts: [1] }],
      ["POST", `/v2/images/${id}/upload/complete`, {}],
      ["POST", `/v2/images/${id}/upload/cancel`],
    ] as const) {
      await glanceError(
        await api(path, { method, ...(body ? { body: JSON.stringify(body) } : {}) }, p.other),
        403,
      );
    }
    expect((await api(`/v2/images/${id}`, { method: "DELETE" }, p.member)).status).toBe(204);
  });
});

describe("inputs DynamoDB would refuse are 4xx naming the limit", () => {
  const long = "a".repeat(3000);

  it("ids over DynamoDB's key size in every image path are 404; markers 400; member ids 404", async () => {
    const { member } = await project(["member"]);
    const routes: [string, string, unknown?][] = [
      ["GET", `/v2/images/${long}`],
      ["DELETE", `/v2/images/${long}`],
      ["GET", `/v2/images/${long}/file`],
      ["PUT", `/v2/images/${long}/tags/t`],
      ["GET", `/v2/images/${long}/members`],
      ["POST", `/v2/images/${long}/actions/deactivate`],
      [
        "POST",
        `/v2/images/${long}/import`,
        { method: { name: "web-download", uri: "https://example.com/" } },
      ],
      ["GET", `/v2/images/${long}/upload/parts`],
    ];
    for (const [method, path, body] of routes) {
      await glanceError(
        await api(path, { method, ...(body ? { body: JSON.stringify(body) } : {}) }, member),
        404,
      );
    }
    await glanceError(await patch(member, long, [{ op: "replace", path: "/name", value: "x" }]), 404);
    const e = await glanceError(await api(`/v2/images?marker=${long}`, {}, member), 400);
    expect(e.reason).toBe("BAD_MARKER");
    const shared = await newImage(member, { name: "s", visibility: "shared" });
    await glanceError(await api(`/v2/images/${shared}/members/${long}`, {}, member), 404);
    await glanceError(await api(`/v2/images/${shared}/members/${long}`, { method: "DELETE" }, member), 404);
  });

  it("project names over 255 characters are 400 on the quota and usage routes", async () => {
    const admin = getStack().tokens.admin;
    for (const [method, path, body] of [
      ["GET", `/v2/quotas/${long}`],
      ["PUT", `/v2/quotas/${long}`, { image_count_total: 1 }],
      ["GET", `/v2/info/usage?project_id=${long}`],
    ] as const) {
      const e = await glanceError(
        await api(path, { method, ...(body ? { body: JSON.stringify(body) } : {}) }, admin),
        400,
      );
      expect(e.message).toMatch(/255/);
    }
  });

  it("records over the item size are 413 on create and PATCH; what fits is stored and read back whole", async () => {
    const { member } = await project(["member"]);
    const big = await glanceError(
      await create(member, { name: "big", ...props(7, () => "v".repeat(65_535)) }),
      413,
    );
    expect(big.message).toMatch(/400 KB/);
    await glanceError(
      await create(
        member,
        props(3, () => "€".repeat(65_535)),
      ),
      413,
    );
    const fits = props(5, (i) => String(i).repeat(65_535));
    const id = await newImage(member, { name: "fits", ...fits });
    const shown = (await (await api(`/v2/images/${id}`, {}, member)).json()) as Record<string, unknown>;
    for (const [k, v] of Object.entries(fits)) expect(shown[k], k).toBe(v);
    const over = await glanceError(
      await patch(member, id, [{ op: "add", path: "/p5", value: "w".repeat(65_535) }]),
      413,
    );
    expect(over.message).toMatch(/400 KB/);
    expect((await patch(member, id, [{ op: "add", path: "/small", value: "s" }])).status).toBe(200);
  });

  it("100,000 empty extra properties, and property names '', constructor and __proto__, are refused", async () => {
    const { member } = await project(["member"]);
    const many = await glanceError(
      await create(
        member,
        props(20_000, () => ""),
      ),
      413,
    );
    expect(many.message).toMatch(/128 extra properties/);
    // 100,000 of them are a body over the body limit, refused before they are parsed.
    expect(
      (
        await glanceError(
          await create(
            member,
            props(100_000, () => ""),
          ),
          413,
        )
      ).reason,
    ).toBe("BODY_TOO_LARGE");
    for (const raw of ['{"": "x"}', '{"constructor": "x"}', '{"__proto__": "x"}']) {
      await glanceError(await create(member, raw), 400);
    }
    const id = await newImage(member);
    await glanceError(await patch(member, id, [{ op: "add", path: "/constructor", value: "x" }]), 400);
  });
});

describe("fields a client never sets, on the real stack", () => {
  /** What a client may set (Glance's writable attributes and Hangar's two declared ones); `id` on create only. */
  const SETTABLE = [
    "name",
    "owner",
    "visibility",
    "protected",
    "os_hidden",
    "disk_format",
    "container_format",
    "min_disk",
    "min_ram",
    "tags",
    "upload_size",
    "upload_sha256",
  ];
  /** Kept on the record for Hangar's own use, never shown and never set. */
  const INTERNAL = ["multipart_upload_id", "multipart_started_at", "import_lease_until", "import_takeovers"];
  const readOnlyError = async (res: Response, name: string) =>
    expect(await glanceError(res, 403)).toMatchObject({
      reason: "READ_ONLY",
      message: `Attribute '${name}' is read-only.`,
    });

  it("every shown attribute that is not settable, and every internal one, is 403 on PATCH and on create; nothing is stored", async () => {
    const { member } = await project(["member"]);
    // A large declared upload: the record holds a storage multipart upload id, which is never shown.
    const id = await newImage(member, { name: "ro", upload_size: 100 * 1024 * 1024 });
    const before = (await (await api(`/v2/images/${id}`, {}, member)).json()) as Record<string, unknown>;
    for (const name of INTERNAL) expect(Object.keys(before), name).not.toContain(name);
    const refused = [
      ...Object.keys(before).filter((k) => !SETTABLE.includes(k)),
      ...INTERNAL,
      "locations",
      "direct_url",
    ];
    expect(refused).toEqual(expect.arrayContaining(["id", "status", "staged_size", "upload", "failure"]));
    for (const name of refused) {
      for (const op of ["add", "replace", "remove"] as const) {
        const ops = [{ op, path: `/${name}`, ...(op === "remove" ? {} : { value: "1" }) }];
        await readOnlyError(await patch(member, id, ops), name);
      }
      // Numbers as well as strings: a typed read-only field is refused whatever the value.
      await readOnlyError(await patch(member, id, [{ op: "add", path: `/${name}`, value: 1 }]), name);
      if (name !== "id") await readOnlyError(await create(member, { name: "c", [name]: "1" }), name);
    }
    const after = (await (await api(`/v2/images/${id}`, {}, member)).json()) as Record<string, unknown>;
    expect(after).toEqual({ ...before, upload: after.upload });
    expect((after.upload as { method: string }).method).toBe("multipart");
    for (const name of INTERNAL) expect(Object.keys(after), name).not.toContain(name);
  });
});

describe("web-download: one import per image", () => {
  it("of ten concurrent imports of one queued image, one is accepted and fetches once", async () => {
    const disk = randomBytes(64 * 1024);
    let fetches = 0;
    const server = createServer((_req, res) => {
      fetches++;
      res.writeHead(200, { "content-length": disk.length }).end(disk);
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
    try {
      const { member } = await project(["member"]);
      const id = await newImage(member, { name: "web10", disk_format: "raw", container_format: "bare" });
      const uri = `http://127.0.0.1:${(server.address() as AddressInfo).port}/disk.raw`;
      const answers = await Promise.all(
        Array.from({ length: 10 }, () =>
          api(
            `/v2/images/${id}/import`,
            { method: "POST", body: JSON.stringify({ method: { name: "web-download", uri } }) },
            member,
          ),
        ),
      );
      expect(answers.map((a) => a.status).sort()).toEqual([202, ...Array(9).fill(409)]);
      const image = await waitForStatus(id, "active", member);
      expect(image.size).toBe(disk.length);
      expect(fetches).toBe(1);
    } finally {
      server.close();
    }
  });
});

describe("web-download refuses IPv6 forms embedding private IPv4", () => {
  // (Loopback forms are left out: the test stack admits loopback sources for its own web-download tests.)
  it("http://[::169.254.169.254]/ and friends are 400 URI_NOT_ALLOWED", async () => {
    const { member } = await project(["member"]);
    const id = await newImage(member);
    for (const uri of [
      "http://[::169.254.169.254]/latest/meta-data/",
      "http://[::10.0.0.1]/",
      "http://[::ffff:0:a9fe:a9fe]/",
      "http://[64:ff9b::a9fe:a9fe]/",
      "http://[2002:a9fe:a9fe::]/",
    ]) {
      const e = await glanceError(
        await api(
          `/v2/images/${id}/import`,
          { method: "POST", body: JSON.stringify({ method: { name: "web-download", uri } }) },
          member,
        ),
        400,
      );
      expect(e.reason, uri).toBe("URI_NOT_ALLOWED");
    }
  });
});

describe("request bodies are limited to 512 KiB", () => {
  const padded = (total: number) => {
    const head = '{"name":"padded"}';
    return head + " ".repeat(total - head.length);
  };

  it("exactly the limit is read (201); one byte more is 413 with Glance's body", async () => {
    const { member } = await project(["member"]);
    expect((await create(member, padded(MAX_BODY_BYTES))).status).toBe(201);
    const e = await glanceError(await create(member, padded(MAX_BODY_BYTES + 1)), 413);
    expect(e.message).toMatch(/524288 bytes/);
  });

  // Last in the file: the server closes a connection whose body it stopped reading, and the client's pool
  // may try to reuse it once more.
  it("a chunked body without a length is cut off past the limit", async () => {
    const { member } = await project(["member"]);
    const chunk = new Uint8Array(1024 * 1024).fill(0x20);
    let sent = 0;
    const body = new ReadableStream<Uint8Array>({
      pull(controller) {
        // 2 MiB of whitespace after an opening brace, never closed (under the gateway's own 10 MB).
        if (sent === 0) controller.enqueue(new TextEncoder().encode("{"));
        if (sent >= 2) controller.close();
        else controller.enqueue(chunk);
        sent++;
      },
    });
    const res = await api(
      "/v2/images",
      {
        method: "POST",
        body,
        headers: { "content-type": "application/json" },
        duplex: "half",
      } as RequestInit,
      member,
    );
    await glanceError(res, 413);
  });
});
