import { lookup } from "node:dns/promises";
import http from "node:http";
import https from "node:https";
import type { LookupFunction } from "node:net";
import type { Logger, WebDownloadDispatcher, WebDownloadJob } from "../../core/ports.ts";
import type { FetchedResponse, PinnedFetch, Resolver } from "../../core/web-download.ts";
import { LambdaAsyncInvoker } from "../aws/lambda-invoke.ts";
import { currentContext } from "../observability/context.ts";

/** Every address of a host (A and AAAA), as the system resolver gives them. */
export const systemResolver: Resolver = async (host) =>
  (await lookup(host, { all: true, verbatim: true })).map((a) => a.address);

/**
 * A GET that connects to the validated `address` whatever DNS says now (the `lookup` hook answers with it),
 * while the URL's host still goes into `Host` and TLS SNI/certificate checks. No redirects, no decompression.
 */
export const pinnedFetch: PinnedFetch = (url, address, signal) =>
  new Promise<FetchedResponse>((resolve, reject) => {
    const family = address.includes(":") ? 6 : 4;
    const pinned: LookupFunction = (_host, options, callback) => {
      // Node asks for all addresses when it races IPv4 and IPv6 (autoSelectFamily); give it only ours.
      if (options.all)
        (callback as (e: null, a: { address: string; family: number }[]) => void)(null, [
          { address, family },
        ]);
      else callback(null, address, family);
    };
    const request = (url.protocol === "https:" ? https : http).request(
      url,
      {
        method: "GET",
        signal,
        lookup: pinned,
        agent: false,
        headers: { "user-agent": "Hangar web-download", accept: "*/*", "accept-encoding": "identity" },
      },
      (res) => {
        const length = Number(res.headers["content-length"]);
        resolve({
          status: res.statusCode ?? 0,
          location: res.headers.location,
          contentLength:
            Number.isFinite(length) && res.headers["content-length"] !== undefined ? length : undefined,
          body: res,
          cancel: () => res.destroy(),
        });
      },
    );
    request.on("error", reject);
    request.end();
  });

/**
 * Local stack and tests: runs each job in this process, in the background. `idle()` waits for running jobs
 * (tests, shutdown). Not for Lambda, which freezes once the response is sent.
 */
export class InProcessWebDownloads implements WebDownloadDispatcher {
  private readonly running = new Set<Promise<unknown>>();
  constructor(
    private readonly run: (job: WebDownloadJob) => Promise<unknown>,
    private readonly log: Logger,
  ) {}

  async dispatch(job: WebDownloadJob): Promise<void> {
    const p = this.run(job)
      .catch((err: unknown) =>
        this.log.error("web-download crashed", {
          imageId: job.imageId,
          error: err instanceof Error ? (err.stack ?? err.message) : String(err),
        }),
      )
      .finally(() => this.running.delete(p));
    this.running.add(p);
  }

  async idle(): Promise<void> {
    while (this.running.size > 0) await Promise.allSettled([...this.running]);
  }
}

/**
 * Invokes the web-download function asynchronously (InvocationType Event) through the Lambda API (AWS's,
 * or the local stack's), so the fetch outlives the API request and gets its own timeout and retries.
 */
export class LambdaWebDownloads implements WebDownloadDispatcher {
  private readonly invoker: LambdaAsyncInvoker;

  constructor(functionName: string, region: string, endpoint?: string) {
    this.invoker = new LambdaAsyncInvoker(functionName, region, endpoint);
  }

  async dispatch(job: WebDownloadJob): Promise<void> {
    // The request that started the job goes with it, so the fetch's log lines and events carry it.
    await this.invoker.invoke({ ...job, requestId: currentContext().request_id });
  }
}
