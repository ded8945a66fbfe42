import ipaddr from "ipaddr.js";
import { HangarError, StaleStatusError, UriNotAllowedError } from "./errors.ts";
import { type ImageRecord, stagingKey } from "./image/image.ts";
import { HANDED_OVER } from "./image/transitions.ts";
import type { Clock, ImageRepository, Logger, ObjectStore, WebDownloadJob } from "./ports.ts";

/** Operator limits on server-side fetches. */
export interface WebDownloadPolicy {
  /** Largest body accepted, in bytes; a larger one kills the image. */
  maxBytes: number;
  /** Whole fetch, redirects included. */
  timeoutMs: number;
  /** Test-only: lets a loopback server be the source. Off in every deployment. */
  allowLoopback: boolean;
}

/** Redirects followed, each re-validated; Glance's web-download follows a handful too. */
export const MAX_REDIRECTS = 5;
const REDIRECTS = new Set([301, 302, 303, 307, 308]);

/** Resolves a host name to every address it has (A and AAAA). */
export type Resolver = (host: string) => Promise<string[]>;

export interface FetchedResponse {
  status: number;
  location: string | undefined;
  contentLength: number | undefined;
  body: AsyncIterable<Uint8Array>;
  /** Drops the connection without reading the body. */
  cancel(): void;
}

/**
 * One GET of `url`, connecting to `address` (already validated) rather than resolving the host again, so a
 * DNS answer that changes between check and connect (rebinding) cannot redirect the fetch. No redirects.
 */
export type PinnedFetch = (url: URL, address: string, signal: AbortSignal) => Promise<FetchedResponse>;

/** A fetch that failed for good; the image ends `killed` with `FETCH_FAILED` and this message. */
export class FetchFailedError extends HangarError {
  readonly reason = "FETCH_FAILED";
}

/** An IPv4 address from two 16-bit groups of an IPv6 address. */
const ipv4Of = (hi: number, lo: number): ipaddr.IPv4 =>
  new ipaddr.IPv4([hi >> 8, hi & 0xff, lo >> 8, lo & 0xff]);

/**
 * The IPv4 addresses an IPv6 address carries, with the form's name: IPv4-compatible `::a.b.c.d` and
 * IPv4-mapped `::ffff:a.b.c.d` (RFC 4291), IPv4-translated `::ffff:0:a.b.c.d` (RFC 6145), NAT64
 * `64:ff9b::/96` (RFC 6052), 6to4 `2002::/16` (RFC 3056), Teredo `2001::/32` (RFC 4380: the server in bits
 * 32-63, the client in the last 32 bits inverted). The local-use NAT64 prefix `64:ff9b:1::/48` (RFC 8215)
 * comes back with no address: where it embeds one is the local network's choice. Undefined for other IPv6.
 */
export function embeddedIPv4(address: ipaddr.IPv6): { form: string; addresses: ipaddr.IPv4[] } | undefined {
  const p = address.parts as [number, number, number, number, number, number, number, number];
  const zero = (from: number, to: number) => p.slice(from, to).every((x) => x === 0);
  const last32 = [ipv4Of(p[6], p[7])];
  if (zero(0, 5) && p[5] === 0xffff) return { form: "IPv4-mapped IPv6", addresses: last32 };
  if (zero(0, 4) && p[4] === 0xffff && p[5] === 0) return { form: "IPv4-translated IPv6", addresses: last32 };
  // `::` and `::1` are IPv6's own unspecified and loopback addresses, classed as such.
  if (zero(0, 6) && !(p[6] === 0 && p[7] <= 1)) return { form: "IPv4-compatible IPv6", addresses: last32 };
  if (p[0] === 0x64 && p[1] === 0xff9b) {
    if (zero(2, 6)) return { form: "NAT64", addresses: last32 };
    if (p[2] === 1) return { form: "local-use NAT64", addresses: [] };
  }
  if (p[0] === 0x2002) return { form: "6to4", addresses: [ipv4Of(p[1], p[2])] };
  if (p[0] === 0x2001 && p[1] === 0) {
    return { form: "Teredo", addresses: [ipv4Of(p[2], p[3]), ipv4Of(p[6] ^ 0xffff, p[7] ^ 0xffff)] };
  }
  return undefined;
}

/** Why a parsed address is refused, by its ipaddr.js range; undefined for public unicast. */
function rangeRefusal(address: ipaddr.IPv4 | ipaddr.IPv6, allowLoopback: boolean): string | undefined {
  const range = address.range();
  if (range === "unicast") return undefined;
  if (range === "loopback" && allowLoopback) return undefined;
  return `is a ${range} address`;
}

/**
 * Why an address may not be fetched from, or undefined when it is a public unicast address. Everything
 * ipaddr.js does not class as `unicast` is refused: loopback, private, link-local (169.254.169.254, the
 * metadata service), unique-local (fd00:ec2::254), CGNAT, multicast, broadcast, unspecified, reserved and
 * documentation ranges. An IPv6 address that embeds IPv4 (compatible, mapped, translated, NAT64, 6to4,
 * Teredo) is judged by every IPv4 address it embeds, since that is where its packets end up:
 * `[::169.254.169.254]` reaches the metadata service on hosts that route it. The local-use NAT64 prefix is
 * refused whole: its translator belongs to a local network.
 */
export function addressRefusal(address: string, allowLoopback = false): string | undefined {
  if (!ipaddr.isValid(address)) return "is not an IP address";
  const parsed = ipaddr.parse(address);
  if (parsed.kind() === "ipv6") {
    const embedded = embeddedIPv4(parsed as ipaddr.IPv6);
    if (embedded) {
      if (embedded.addresses.length === 0) {
        return `is in the ${embedded.form} prefix 64:ff9b:1::/48, whose translator is on a local network`;
      }
      for (const v4 of embedded.addresses) {
        const why = rangeRefusal(v4, allowLoopback);
        if (why !== undefined) return `embeds ${v4} (${embedded.form}), which ${why}`;
      }
      return undefined;
    }
  }
  return rangeRefusal(parsed, allowLoopback);
}

/** The host part of a URL as DNS or an IP literal (`[::1]` → `::1`). */
function hostOf(url: URL): string {
  return url.hostname.startsWith("[") ? url.hostname.slice(1, -1) : url.hostname;
}

/**
 * Checks a URL before each request: http or https only, and every address its host resolves to public.
 * Returns the address to connect to. Throws `UriNotAllowedError` with a message fit for the client.
 */
export async function checkTarget(
  url: URL,
  resolve: Resolver,
  policy: Pick<WebDownloadPolicy, "allowLoopback">,
): Promise<{ url: URL; address: string }> {
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    throw new UriNotAllowedError(`web-download only fetches http and https URLs, not ${url.protocol}`);
  }
  const host = hostOf(url);
  let addresses: string[];
  if (ipaddr.isValid(host)) addresses = [host];
  else {
    try {
      addresses = await resolve(host);
    } catch (err) {
      throw new UriNotAllowedError(`The host ${host} of the web-download URL could not be resolved.`, {
        cause: err,
      });
    }
  }
  if (addresses.length === 0) {
    throw new UriNotAllowedError(`The host ${host} of the web-download URL has no address.`);
  }
  for (const address of addresses) {
    const why = addressRefusal(address, policy.allowLoopback);
    if (why !== undefined) {
      throw new UriNotAllowedError(
        `web-download refuses ${url.origin}: ${host === address ? "it" : `${host} resolves to ${address}, which`} ${why}; only public addresses are fetched.`,
      );
    }
  }
  return { url, address: addresses[0] as string };
}

/** Passes chunks through until more than `max` bytes arrived, then fails. Memory: one chunk. */
async function* bounded(body: AsyncIterable<Uint8Array>, max: number): AsyncIterable<Uint8Array> {
  let total = 0;
  for await (const chunk of body) {
    total += chunk.byteLength;
    if (total > max) throw new FetchFailedError(`The download is larger than the limit of ${max} bytes.`);
    yield chunk;
  }
  if (total === 0) throw new FetchFailedError("The URL returned no data.");
}

export interface WebDownloadDeps {
  images: ImageRepository;
  objects: ObjectStore;
  clock: Clock;
  log: Logger;
  resolve: Resolver;
  fetch: PinnedFetch;
  policy: WebDownloadPolicy;
}

/** Parses the job's URL; one that does not parse fails the fetch. */
function jobUrl(uri: string): URL {
  try {
    return new URL(uri);
  } catch (err) {
    throw new FetchFailedError("The web-download URL is not a valid URL.", { cause: err });
  }
}

/** Refuses a final answer that is no success, or one announcing more than the limit. */
function checkAnswer(res: FetchedResponse, url: URL, maxBytes: number): void {
  if (res.status < 200 || res.status > 299) {
    res.cancel();
    throw new FetchFailedError(`The server answered HTTP ${res.status} for ${url.origin}${url.pathname}.`);
  }
  if (res.contentLength !== undefined && res.contentLength > maxBytes) {
    res.cancel();
    throw new FetchFailedError(
      `The download announces ${res.contentLength} bytes, more than the limit of ${maxBytes}.`,
    );
  }
}

/**
 * Follows redirects by hand (at most `MAX_REDIRECTS`), checking every target before connecting, and
 * returns the final answer with the URL it came from.
 */
async function fetchFollowing(
  deps: WebDownloadDeps,
  start: URL,
  signal: AbortSignal,
): Promise<{ res: FetchedResponse; url: URL }> {
  let url = start;
  for (let hop = 0; ; hop++) {
    const target = await checkTarget(url, deps.resolve, deps.policy);
    const res = await deps.fetch(target.url, target.address, signal);
    if (!REDIRECTS.has(res.status)) return { res, url };
    res.cancel();
    if (hop >= MAX_REDIRECTS) throw new FetchFailedError(`More than ${MAX_REDIRECTS} redirects.`);
    if (!res.location) throw new FetchFailedError(`HTTP ${res.status} without a Location header.`);
    url = new URL(res.location, url);
  }
}

/** What the image's failure says about an error of the fetch. */
function failureMessage(err: unknown, signal: AbortSignal, timeoutMs: number): string {
  if (err instanceof FetchFailedError || err instanceof UriNotAllowedError) return err.message;
  if (signal.aborted) return `The download did not finish within ${Math.round(timeoutMs / 1000)} seconds.`;
  return `The download failed: ${err instanceof Error ? err.message : String(err)}`;
}

/** Runs a transition of the job's image under its lease; a lost condition means the image moved on. */
async function underLease(
  deps: WebDownloadDeps,
  job: WebDownloadJob,
  name: "handOverImport" | "failImport",
  changes: Partial<ImageRecord>,
): Promise<boolean> {
  try {
    await deps.images.transition(
      job.imageId,
      name,
      { import_lease_until: null, ...changes, updated_at: deps.clock.now().toISOString() },
      { leaseIs: job.lease },
    );
    return true;
  } catch (e) {
    if (!(e instanceof StaleStatusError)) throw e;
    return false;
  }
}

/**
 * Fetches a web-download job's URL into the image's staging key, where the usual importer takes over on the
 * storage event. Redirects are followed by hand (at most 5), each target checked again. Any failure ends the
 * image `killed` with `FETCH_FAILED` by a conditional write (so a concurrent upload or delete wins).
 */
export async function runWebDownload(
  deps: WebDownloadDeps,
  job: WebDownloadJob,
): Promise<"stored" | "failed"> {
  const { policy } = deps;
  const signal = AbortSignal.timeout(policy.timeoutMs);
  try {
    const { res, url } = await fetchFollowing(deps, jobUrl(job.uri), signal);
    checkAnswer(res, url, policy.maxBytes);
    const { size } = await deps.objects.write(
      stagingKey(job.imageId),
      bounded(res.body, policy.maxBytes),
      signal,
      // The announced length sizes the parts; without one the store grows them as the body does.
      res.contentLength !== undefined ? { sizeHint: res.contentLength } : {},
    );
    deps.log.info("web-download stored", { imageId: job.imageId, size });
    // The bytes are staged: hand the image to the importer, whose storage event waits for this. It stays
    // `importing`, so a second web-download or import call is refused rather than fetching again. Deleted
    // or killed meanwhile: the importer finds it so and discards the staged bytes.
    await underLease(deps, job, "handOverImport", { import_lease_until: HANDED_OVER });
    return "stored";
  } catch (err) {
    const message = failureMessage(err, signal, policy.timeoutMs);
    deps.log.warn("web-download failed", { imageId: job.imageId, message });
    const failure = { reason: "FETCH_FAILED", message };
    if (!(await underLease(deps, job, "failImport", { failure }))) {
      deps.log.info("web-download failure not recorded: the image moved on", { imageId: job.imageId });
    }
    return "failed";
  }
}
