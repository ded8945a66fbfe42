import { describe, expect, it } from "vitest";
import { testApp } from "./harness.ts";

// No gateway authorizer stands in front of the API function (docs/decisions/0001-authorizer.md): the
// app's own check is the only one, so every route it serves, apart from the version and API
// documents, must refuse a request without a valid token before doing anything else.

const OPEN = new Set(["GET /", "GET /versions", "GET /openapi.json"]);
const REFUSED = "The request you have made requires authentication";
const unauthorized = (message: string, reason: string) => ({
  error: { code: 401, title: "Unauthorized", message, reason },
});
const MISSING = unauthorized(`${REFUSED}.`, "UNAUTHENTICATED");
const INVALID = unauthorized(`${REFUSED}: the token is not valid.`, "TOKEN_INVALID");

describe("every route but the documents", () => {
  it("answers Glance's 401 to a request with no token or an invalid one, and the documents need none", async () => {
    const { app, images } = await testApp();
    const routes = [
      ...new Set(app.routes.filter((r) => r.method !== "ALL").map((r) => `${r.method} ${r.path}`)),
    ];
    const guarded = routes.filter((r) => !OPEN.has(r));
    // Enough routes that a regression in the listing itself would show.
    expect(guarded.length).toBeGreaterThan(20);
    for (const route of guarded) {
      const [method = "", pattern = ""] = route.split(" ");
      const path = pattern.replace(/:[A-Za-z_]+(\{[^}]*\})?/g, "00000000-0000-4000-8000-000000000000");
      const attempts: Record<string, string>[] = [
        {},
        { "X-Auth-Token": "not-a-token" },
        { Authorization: "Bearer x.y.z" },
      ];
      for (const headers of attempts) {
        const res = await app.request(path, {
          method,
          headers: { ...headers, "Content-Type": "application/json" },
          ...(method === "GET" || method === "HEAD" ? {} : { body: "{}" }),
        });
        expect(res.status, `${route} ${JSON.stringify(headers)}`).toBe(401);
        if (method !== "HEAD") {
          expect(await res.json(), route).toEqual(Object.keys(headers).length === 0 ? MISSING : INVALID);
        }
      }
    }
    expect(images.items.size).toBe(0);
    for (const route of OPEN) {
      const [method = "", path = ""] = route.split(" ");
      expect((await app.request(path, { method })).status, route).toBeLessThan(400);
    }
  });
});
