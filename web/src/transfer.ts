/**
 * Presigned requests from the browser. XMLHttpRequest rather than fetch: fetch reports no upload
 * progress. Headers the browser sets itself (Content-Length, Host) are left to it; the body's length is
 * exactly the signed one.
 */
const FORBIDDEN = new Set(["content-length", "host", "connection", "expect"]);

/** A storage answer other than 2xx (status 0: the request never got an answer). */
export class StorageError extends Error {
  override name = "StorageError";
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
  /** Worth another try, with a freshly signed link. */
  get retryable(): boolean {
    return this.status === 0 || this.status >= 500 || this.status === 403 || this.status === 408;
  }
}

export interface Link {
  method: string;
  url: string;
  headers: Record<string, string>;
}

/** Sends `body` to a presigned link; `onProgress` gets the bytes of this body sent so far. */
export function sendToLink(
  link: Link,
  body: Blob | ArrayBuffer,
  signal: AbortSignal,
  onProgress: (sent: number) => void,
): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) {
      reject(signal.reason);
      return;
    }
    const xhr = new XMLHttpRequest();
    xhr.open(link.method, link.url);
    for (const [name, value] of Object.entries(link.headers)) {
      if (!FORBIDDEN.has(name.toLowerCase())) xhr.setRequestHeader(name, value);
    }
    const onAbort = () => xhr.abort();
    signal.addEventListener("abort", onAbort, { once: true });
    xhr.upload.onprogress = (e) => onProgress(e.loaded);
    xhr.onload = () => {
      signal.removeEventListener("abort", onAbort);
      if (xhr.status >= 200 && xhr.status < 300) resolve();
      else reject(new StorageError(xhr.status, storageMessage(xhr)));
    };
    xhr.onerror = () => {
      signal.removeEventListener("abort", onAbort);
      reject(new StorageError(0, "storage could not be reached (network error or CORS refusal)"));
    };
    xhr.onabort = () => {
      signal.removeEventListener("abort", onAbort);
      reject(signal.reason ?? new DOMException("aborted", "AbortError"));
    };
    xhr.send(body);
  });
}

/** S3's XML error says what went wrong (`<Code>`, `<Message>`). */
function storageMessage(xhr: XMLHttpRequest): string {
  const text = xhr.responseText ?? "";
  const code = /<Code>([^<]*)<\/Code>/.exec(text)?.[1];
  const message = /<Message>([^<]*)<\/Message>/.exec(text)?.[1];
  return `storage answered ${xhr.status}${code ? ` ${code}` : ""}${message ? `: ${message}` : ""}`;
}
