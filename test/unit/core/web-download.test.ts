import { randomUUID } from "node:crypto";
import { describe, expect, it } from "vitest";
import { UriNotAllowedError } from "../../../functions/core/errors.ts";
import { stagingKey } from "../../../functions/core/image/image.ts";
import { HANDED_OVER } from "../../../functions/core/image/transitions.ts";
import { createImageService } from "../../../functions/core/images.ts";
import {
  addressRefusal,
  checkTarget,
  type FetchedResponse,
  type PinnedFetch,
  runWebDownload,
} from "../../../functions/core/web-download.ts";
import { fixedClock, MemoryImages, MemoryObjects, silentLog } from "../fakes.ts";

describe("addressRefusal", () => {
  it("accepts only public unicast addresses", () => {
    for (const ok of ["8.8.8.8", "93.184.216.34", "2606:4700::6810:85e5", "::ffff:8.8.8.8"]) {
      expect(addressRefusal(ok), ok).toBeUndefined();
    }
  });
  it("refuses loopback, private, link-local, metadata, CGNAT, multicast, unspecified, reserved and tunnelled forms", () => {
    const refused = [
      "127.0.0.1",
      "127.1.2.3",
      "10.0.0.1",
      "172.16.5.4",
      "192.168.1.1",
      "169.254.169.254",
      "100.64.0.1",
      "0.0.0.0",
      "224.0.0.1",
      "255.255.255.255",
      "192.0.2.1",
      "198.18.0.1",
      "240.0.0.1",
      "::1",
      "::",
      "fe80::1",
      "fd00:ec2::254",
      "fc00::1",
      "ff02::1",
      "::ffff:127.0.0.1",
      "::ffff:169.254.169.254",
      "64:ff9b::a9fe:a9fe",
      "2002:7f00:1::1",
      "2001::1",
      "2001:db8::1",
      "not-an-ip",
    ];
    for (const a of refused) expect(addressRefusal(a), a).toBeTypeOf("string");
  });
  it("judges every IPv6 form that embeds IPv4 by the embedded address", () => {
    const refused: [string, RegExp][] = [
      // IPv4-compatible (::a.b.c.d), as the URL parser writes http://[::169.254.169.254]/.
      ["::a9fe:a9fe", /169\.254\.169\.254.*linkLocal/],
      ["::169.254.169.254", /169\.254\.169\.254/],
      ["::127.0.0.1", /127\.0\.0\.1.*loopback/],
      ["::10.0.0.1", /10\.0\.0\.1.*private/],
      ["::0.0.0.2", /0\.0\.0\.2/],
      // IPv4-mapped and IPv4-translated (RFC 6145).
      ["::ffff:10.0.0.1", /10\.0\.0\.1/],
      ["::ffff:0:10.0.0.1", /10\.0\.0\.1.*private/],
      ["::ffff:0:a9fe:a9fe", /169\.254\.169\.254/],
      // NAT64, well-known prefix (RFC 6052) and local-use prefix (RFC 8215).
      ["64:ff9b::10.0.0.1", /10\.0\.0\.1/],
      ["64:ff9b::7f00:1", /127\.0\.0\.1/],
      ["64:ff9b:1::808:808", /local-use NAT64/],
      ["64:ff9b:1:ffff::a9fe:a9fe", /local-use NAT64/],
      // 6to4 (RFC 3056): the IPv4 address follows 2002:.
      ["2002:a9fe:a9fe::1", /169\.254\.169\.254/],
      ["2002:0a00:0001:1::5", /10\.0\.0\.1/],
      // Teredo (RFC 4380): server in bits 32-63, client in the last 32 bits inverted.
      ["2001:0:4136:e378:8000:63bf:f5ff:fffe", /10\.0\.0\.1/], // client 10.0.0.1
      ["2001:0:4136:e378:8000:63bf:80ff:fffe", /127\.0\.0\.1/], // client 127.0.0.1
      ["2001:0:a00:1:8000:63bf:f7f7:f7f7", /10\.0\.0\.1/], // server 10.0.0.1
    ];
    for (const [a, why] of refused) expect(addressRefusal(a), a).toMatch(why);
    // Public IPv6, and the same forms embedding public IPv4 addresses, stay allowed.
    for (const ok of [
      "2606:4700::6810:85e5",
      "2a00:1450:4001:82b::200e",
      "2001:4860:4860::8888",
      "::ffff:8.8.8.8",
      "::8.8.8.8",
      "::ffff:0:8.8.8.8",
      "64:ff9b::8.8.8.8",
      "2002:808:808::1",
      "2001:0:4136:e378:8000:63bf:f7f7:f7f7",
    ]) {
      expect(addressRefusal(ok), ok).toBeUndefined();
    }
  });

  it("allows loopback only with the test flag, and nothing else with it", () => {
    expect(addressRefusal("127.0.0.1", true)).toBeUndefined();
    expect(addressRefusal("::1", true)).toBeUndefined();
    expect(addressRefusal("10.0.0.1", true)).toBeTypeOf("string");
    expect(addressRefusal("169.254.169.254", true)).toBeTypeOf("string");
  });
});

describe("checkTarget", () => {
  const dns = (table: Record<string, string[]>) => async (host: string) => {
    const a = table[host];
    if (!a) throw new Error("ENOTFOUND");
    return a;
  };
  const policy = { allowLoopback: false };

  it("refuses other schemes, unresolvable hosts and hosts with any non-public address", async () => {
    const resolve = dns({ mixed: ["8.8.8.8", "10.0.0.1"], good: ["8.8.4.4"], meta: ["169.254.169.254"] });
    for (const u of ["ftp://good/x", "file:///etc/passwd", "gopher://good/"]) {
      await expect(checkTarget(new URL(u), resolve, policy), u).rejects.toThrow(/http and https/);
    }
    await expect(checkTarget(new URL("http://mixed/x"), resolve, policy)).rejects.toThrow(/10\.0\.0\.1/);
    await expect(checkTarget(new URL("http://meta/latest"), resolve, policy)).rejects.toThrow(
      UriNotAllowedError,
    );
    await expect(checkTarget(new URL("http://nowhere/"), resolve, policy)).rejects.toThrow(
      /could not be resolved/,
    );
    await expect(checkTarget(new URL("http://[::1]:8080/"), resolve, policy)).rejects.toThrow(/loopback/);
    // WHATWG URL parsing turns decimal and hex hosts into dotted quads before the check.
    await expect(checkTarget(new URL("http://2130706433/"), resolve, policy)).rejects.toThrow(/loopback/);
    await expect(checkTarget(new URL("http://0x7f.1/"), resolve, policy)).rejects.toThrow(/loopback/);
    // The parser writes [::169.254.169.254] as [::a9fe:a9fe]; the embedded address decides.
    for (const u of ["http://[::169.254.169.254]/", "http://[::127.0.0.1]/", "http://[::10.0.0.1]/"]) {
      await expect(checkTarget(new URL(u), resolve, policy), u).rejects.toThrow(UriNotAllowedError);
    }
    const mapped = dns({ sneaky: ["::ffff:0:a9fe:a9fe"], nat64: ["64:ff9b::a9fe:a9fe"] });
    await expect(checkTarget(new URL("http://sneaky/"), mapped, policy)).rejects.toThrow(/169\.254/);
    await expect(checkTarget(new URL("http://nat64/"), mapped, policy)).rejects.toThrow(/169\.254/);
    expect((await checkTarget(new URL("https://good/img"), resolve, policy)).address).toBe("8.8.4.4");
  });
});

describe("runWebDownload", () => {
  const alice = { userId: "alice", projectId: "p-alice", roles: ["member"] };
  const bytes = (n: number) => new Uint8Array(n).fill(7);
  async function* chunks(...parts: Uint8Array[]) {
    for (const p of parts) yield p;
  }
  const response = (status: number, over: Partial<FetchedResponse> = {}): FetchedResponse => ({
    status,
    location: undefined,
    contentLength: undefined,
    body: chunks(),
    cancel() {},
    ...over,
  });

  async function setup(fetch: PinnedFetch, resolveTable: Record<string, string[]> = {}) {
    const images = new MemoryImages();
    const objects = new MemoryObjects();
    const service = createImageService({
      images,
      objects,
      clock: fixedClock(),
      log: silentLog,
      newId: randomUUID,
      uploadUrlTtlSeconds: 60,
      downloadUrlTtlSeconds: 60,
    });
    const { image } = await service.create({ name: "w" }, alice);
    // What the API does when it starts the fetch: the image leaves `queued` under the fetch's lease.
    const lease = "2026-01-01T00:15:00.000Z";
    await images.transition(image.id, "startImport", { import_lease_until: lease });
    const deps = {
      images,
      objects,
      clock: fixedClock(),
      log: silentLog,
      resolve: async (h: string) => resolveTable[h] ?? ["93.184.216.34"],
      fetch,
      policy: { maxBytes: 100, timeoutMs: 5000, allowLoopback: false },
    };
    return { images, objects, id: image.id, lease, deps };
  }

  it("follows redirects, connecting to the validated address each time, and stores the body in staging", async () => {
    const calls: [string, string][] = [];
    const fetch: PinnedFetch = async (url, address) => {
      calls.push([url.href, address]);
      if (url.pathname === "/a") return response(302, { location: "/b" });
      return response(200, { body: chunks(bytes(30), bytes(20)), contentLength: 50 });
    };
    const { images, objects, id, lease, deps } = await setup(fetch);
    expect(await runWebDownload(deps, { imageId: id, uri: "http://example.test/a", lease })).toBe("stored");
    // Handed to the importer: still `importing` (no second import can start), with a lease the importer's
    // storage event takes at once.
    expect(await images.get(id)).toMatchObject({ status: "importing", import_lease_until: HANDED_OVER });
    expect(calls).toEqual([
      ["http://example.test/a", "93.184.216.34"],
      ["http://example.test/b", "93.184.216.34"],
    ]);
    expect(objects.objects.get(stagingKey(id))?.byteLength).toBe(50);
    // The announced length sizes the multipart parts.
    expect(objects.writeOptions.get(stagingKey(id))?.sizeHint).toBe(50);
  });

  it("gives no size hint when the length is not announced (the store grows its parts)", async () => {
    const { objects, id, lease, deps } = await setup(async () => response(200, { body: chunks(bytes(30)) }));
    expect(await runWebDownload(deps, { imageId: id, uri: "http://example.test/", lease })).toBe("stored");
    expect(objects.writeOptions.get(stagingKey(id))).toEqual({});
  });

  async function expectKilled(
    fetch: PinnedFetch,
    uri: string,
    message: RegExp,
    table?: Record<string, string[]>,
  ) {
    const { images, objects, id, lease, deps } = await setup(fetch, table);
    expect(await runWebDownload(deps, { imageId: id, uri, lease })).toBe("failed");
    const image = await images.get(id);
    expect(image?.status).toBe("killed");
    expect(image?.failure?.reason).toBe("FETCH_FAILED");
    expect(image?.failure?.message).toMatch(message);
    expect(objects.objects.has(stagingKey(id))).toBe(false);
  }

  it("kills the image on a redirect to a private address (checked after each redirect)", async () => {
    const fetch: PinnedFetch = async (url) =>
      url.hostname === "evil.test"
        ? response(200, { body: chunks(bytes(1)) })
        : response(301, { location: "http://evil.test/" });
    await expectKilled(fetch, "http://example.test/", /evil\.test resolves to 10\.1\.1\.1/, {
      "evil.test": ["10.1.1.1"],
    });
  });

  it("kills the image after more than 5 redirects, on HTTP errors, oversize bodies and empty bodies", async () => {
    let n = 0;
    await expectKilled(
      async () => response(302, { location: `/r${n++}` }),
      "http://example.test/",
      /redirects/,
    );
    await expectKilled(async () => response(404), "http://example.test/", /HTTP 404/);
    await expectKilled(
      async () => response(200, { contentLength: 101 }),
      "http://example.test/",
      /101 bytes/,
    );
    await expectKilled(
      async () => response(200, { body: chunks(bytes(60), bytes(60)) }),
      "http://example.test/",
      /limit of 100/,
    );
    await expectKilled(async () => response(200), "http://example.test/", /no data/);
    await expectKilled(
      async () => {
        throw new Error("ECONNRESET");
      },
      "http://example.test/",
      /ECONNRESET/,
    );
  });

  it("leaves an image that moved on alone (the failure write is conditional)", async () => {
    const { images, id, lease, deps } = await setup(async () => response(500));
    await images.transition(id, "finishImport", {});
    expect(await runWebDownload(deps, { imageId: id, uri: "http://example.test/", lease })).toBe("failed");
    expect((await images.get(id))?.status).toBe("active");
  });

  it("gives nothing back under a lease that is not its own (the image was taken over)", async () => {
    const { images, id, deps } = await setup(async () => response(500));
    expect(await runWebDownload(deps, { imageId: id, uri: "http://example.test/", lease: "another" })).toBe(
      "failed",
    );
    expect((await images.get(id))?.status).toBe("importing");
  });
});
