import { readFileSync } from "node:fs";
import { basename } from "node:path";
import { Command, CommanderError, InvalidArgumentError, Option } from "commander";
import { HangarApiError, HangarClient, type Image } from "./lib/api.ts";
import { ClientConfigError, IDENTITIES, resolveConfig } from "./lib/config.ts";
import { downloadImage } from "./lib/download.ts";
import { humanBytes, progressReporter } from "./lib/progress.ts";
import { UploadInterruptedError, uploadFile } from "./lib/upload.ts";
import { WaitTimeoutError, waitForImage } from "./lib/wait.ts";

const CLI_VERSION = (
  JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8")) as { version: string }
).version;

/** Exit codes scripts can rely on. */
export const EXIT = { ok: 0, failed: 1, usage: 2, interrupted: 130 } as const;

export interface CliIo {
  stdout: NodeJS.WriteStream;
  stderr: NodeJS.WriteStream;
  env: NodeJS.ProcessEnv;
  cwd: string;
  /** Aborted on Ctrl-C: transfers stop, resume state stays. */
  signal?: AbortSignal;
}

const DISK_FORMATS = ["raw", "qcow2", "vmdk", "vhd", "vhdx", "vdi", "iso", "ami", "ari", "aki"];
const CONTAINER_FORMATS = ["bare", "ovf", "ova", "ami", "ari", "aki", "docker", "compressed"];
const VISIBILITIES = ["public", "community", "shared", "private"];
/** Names the create body gives a meaning of their own; a --property may not override them. */
const RESERVED = new Set([
  "id",
  "name",
  "status",
  "visibility",
  "owner",
  "disk_format",
  "container_format",
  "upload_size",
  "upload_sha256",
  "tags",
  "protected",
  "os_hidden",
  "min_disk",
  "min_ram",
]);

/** `--property k=v`, repeatable; values stay strings (Glance's extra properties are strings). */
export function collectProperty(value: string, previous: Record<string, string>): Record<string, string> {
  const eq = value.indexOf("=");
  if (eq <= 0) throw new InvalidArgumentError(`'${value}' is not key=value`);
  const key = value.slice(0, eq);
  if (RESERVED.has(key)) throw new InvalidArgumentError(`'${key}' has an option of its own, not a property`);
  return { ...previous, [key]: value.slice(eq + 1) };
}

function positiveInt(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError(`'${value}' is not a positive integer`);
  return n;
}

class Failed extends Error {
  constructor(
    message: string,
    readonly code: number = EXIT.failed,
  ) {
    super(message);
  }
}

const summaryLine = (i: Image) =>
  [i.id, i.status.padEnd(11), (i.size == null ? "-" : humanBytes(i.size)).padStart(10), i.name ?? ""].join(
    "  ",
  );

/**
 * The `hangar` command line. Returns the exit code instead of exiting, so tests can run it in-process too.
 * Output for people on stdout, progress and errors on stderr; with `--json`, stdout holds one JSON document.
 */
export async function main(argv: readonly string[], io: CliIo): Promise<number> {
  const program = new Command("hangar");
  const out = (text: string) => io.stdout.write(`${text}\n`);
  const err = (text: string) => io.stderr.write(`${text}\n`);
  let code: number = EXIT.ok;

  program
    .description("Upload, inspect and download Hangar images (OpenStack Glance v2 API)")
    .version(CLI_VERSION)
    .option("--json", "print machine-readable JSON on stdout")
    .addOption(
      new Option("--as <identity>", "use a token of the local stack's local.json").choices(IDENTITIES),
    )
    .option("--url <url>", "API URL (else HANGAR_URL, OS_IMAGE_URL, local.json)")
    .option("--token <token>", "token (else HANGAR_TOKEN, OS_AUTH_TOKEN, local.json)")
    .showHelpAfterError()
    .exitOverride()
    .configureOutput({ writeOut: (s) => io.stdout.write(s), writeErr: (s) => io.stderr.write(s) });

  const globals = () => program.opts<{ json?: boolean; as?: string; url?: string; token?: string }>();
  const client = () => {
    const cfg = resolveConfig(globals(), io.env, io.cwd);
    return { client: new HangarClient(cfg.apiUrl, cfg.token), cfg };
  };
  const json = (value: unknown): void => {
    out(JSON.stringify(value, null, 2));
  };

  program
    .command("upload")
    .description("upload FILE as a new image (or resume the same upload), wait for its import")
    .argument("<file>", "image file")
    .option("--name <name>", "image name (default: the file name)")
    .addOption(new Option("--disk-format <format>", "disk format").choices(DISK_FORMATS))
    .addOption(new Option("--container-format <format>", "container format").choices(CONTAINER_FORMATS))
    .addOption(new Option("--visibility <visibility>", "visibility").choices(VISIBILITIES))
    .option("--property <key=value>", "extra image property (repeatable)", collectProperty, {})
    .option("--parallel <n>", "parts uploaded at once", positiveInt, 4)
    .option("--no-wait", "return once the bytes are in storage")
    .option("--timeout <seconds>", "give up waiting for the import after this long", positiveInt)
    .action(async (file: string, o) => {
      const { client: api, cfg } = client();
      const progress = progressReporter(io.stderr);
      try {
        const result = await uploadFile(api, {
          path: file,
          name: o.name ?? basename(file),
          diskFormat: o.diskFormat,
          containerFormat: o.containerFormat,
          visibility: o.visibility,
          properties: o.property,
          parallel: o.parallel,
          stateDir: cfg.stateDir,
          wait: o.wait,
          waitTimeoutMs: o.timeout ? o.timeout * 1000 : undefined,
          signal: io.signal,
          events: progress,
        });
        progress.stop();
        if (result.status === "killed") code = EXIT.failed;
        if (globals().json) return json(result);
        if (result.status === "killed") {
          err(`image ${result.image_id} was killed: ${result.failure?.reason}: ${result.failure?.message}`);
          return;
        }
        out(`image ${result.image_id} ${result.status}`);
        if (result.sha256)
          out(`sha256 ${result.sha256}${result.sha256_declared ? " (verified on import)" : ""}`);
        if (result.checksum) out(`md5    ${result.checksum}`);
        if (result.os_hash_value) out(`${result.os_hash_algo} ${result.os_hash_value}`);
      } finally {
        progress.stop();
      }
    });

  program
    .command("show")
    .description("show an image")
    .argument("<id>")
    .action(async (id: string) => {
      const image = await client().client.getImage(id);
      if (globals().json) return json(image);
      for (const [k, v] of Object.entries(image)) {
        if (v !== null && typeof v === "object") out(`${k.padEnd(18)} ${JSON.stringify(v)}`);
        else out(`${k.padEnd(18)} ${v ?? ""}`);
      }
    });

  program
    .command("list")
    .description("list the images you can see")
    .action(async () => {
      const images = await client().client.listImages();
      if (globals().json) return json(images);
      for (const i of images) out(summaryLine(i));
    });

  program
    .command("download")
    .description("download an active image, verifying its checksums")
    .argument("<id>")
    .option("-o, --output <file>", "where to write (default: <id>.<disk_format>)")
    .action(async (id: string, o: { output?: string }) => {
      const api = client().client;
      const image = await api.getImage(id);
      const path = o.output ?? `${id}.${image.disk_format ?? "img"}`;
      const result = await downloadImage(api, id, path, { signal: io.signal });
      if (globals().json) return json(result);
      out(
        `${path}: ${humanBytes(result.size)}, md5 ${result.checksum}${result.verified ? " (verified)" : ""}`,
      );
    });

  program
    .command("delete")
    .description("delete images")
    .argument("<ids...>")
    .action(async (ids: string[]) => {
      const api = client().client;
      const deleted: string[] = [];
      for (const id of ids) {
        await api.deleteImage(id);
        deleted.push(id);
        if (!globals().json) out(`deleted ${id}`);
      }
      if (globals().json) json({ deleted });
    });

  program
    .command("wait")
    .description("wait until an image is imported; exit 1 if it is killed")
    .argument("<id>")
    .option("--timeout <seconds>", "give up after this long", positiveInt)
    .action(async (id: string, o: { timeout?: number }) => {
      const image = await waitForImage(client().client, id, {
        timeoutMs: o.timeout ? o.timeout * 1000 : undefined,
        signal: io.signal,
      });
      if (image.status !== "active") code = EXIT.failed;
      if (globals().json) return json(image);
      if (image.status === "killed")
        err(`image ${id} was killed: ${image.failure?.reason}: ${image.failure?.message}`);
      else out(`image ${id} ${image.status}`);
    });

  try {
    await program.parseAsync(argv, { from: "user" });
    return code;
  } catch (e) {
    if (e instanceof CommanderError) {
      // Help and version end "successfully"; anything else commander refuses is a usage error.
      return e.exitCode === 0 ? EXIT.ok : EXIT.usage;
    }
    if (e instanceof UploadInterruptedError || io.signal?.aborted) {
      err(e instanceof UploadInterruptedError ? e.message : "interrupted");
      return EXIT.interrupted;
    }
    if (e instanceof ClientConfigError) {
      err(`hangar: ${e.message}`);
      return EXIT.usage;
    }
    const message =
      e instanceof HangarApiError
        ? `${e.message} (${e.status} ${e.reason})`
        : e instanceof WaitTimeoutError || e instanceof Failed || e instanceof Error
          ? e.message
          : String(e);
    if (globals().json) {
      io.stdout.write(
        `${JSON.stringify({ error: { message, reason: e instanceof HangarApiError ? e.reason : undefined } })}\n`,
      );
    }
    err(`hangar: ${message}`);
    return e instanceof Failed ? e.code : EXIT.failed;
  }
}
