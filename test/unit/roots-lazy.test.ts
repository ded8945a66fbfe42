import { describe, expect, it } from "vitest";
import { lazily } from "../../functions/roots/lazy.ts";

interface Store {
  get(key: string): Promise<string>;
  list(prefix: string): AsyncIterable<string>;
}

class Real implements Store {
  constructor(private readonly prefix: string) {}
  async get(key: string): Promise<string> {
    if (key === "bad") throw new Error("no such key");
    return `${this.prefix}${key}`;
  }
  async *list(prefix: string): AsyncIterable<string> {
    yield `${prefix}1`;
    yield `${prefix}2`;
  }
}

describe("lazily", () => {
  it("loads the adapter on the first call, once, and answers as it does", async () => {
    let loads = 0;
    const store = lazily<Store>(async () => {
      loads++;
      return new Real("v:");
    });
    expect(loads).toBe(0);
    expect(await store.get("a")).toBe("v:a");
    expect(await Promise.all([store.get("b"), store.get("c")])).toEqual(["v:b", "v:c"]);
    const listed: string[] = [];
    for await (const key of store.list("k")) listed.push(key);
    expect(listed).toEqual(["k1", "k2"]);
    await expect(store.get("bad")).rejects.toThrow("no such key");
    expect(loads).toBe(1);
  });

  it("tries a failed load again on the next call", async () => {
    let loads = 0;
    const store = lazily<Store>(async () => {
      if (++loads === 1) throw new Error("import failed");
      return new Real("");
    });
    await expect(store.get("a")).rejects.toThrow("import failed");
    expect(await store.get("a")).toBe("a");
    expect(loads).toBe(2);
  });

  it("is not a thenable, and refuses what the adapter does not have", async () => {
    const store = lazily<Store>(async () => new Real(""));
    expect(await Promise.resolve(store)).toBe(store);
    await expect((store as unknown as { nothing(): Promise<void> }).nothing()).rejects.toThrow(TypeError);
  });
});
