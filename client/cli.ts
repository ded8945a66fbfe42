import { readFileSync } from "node:fs";
import { stat } from "node:fs/promises";
import { basename } from "node:path";
import { Command, CommanderError, InvalidArgumentError, Option } from "commander";
import { HangarApiError, HangarClient, type Image } from "./lib/api.ts";
import { ClientConfigError, hangarHome, IDENTITIES, resolveConfig } from "./lib/config.ts";
import { DOWNLOAD_FORMATS, type DownloadResult, downloadImage } from "./lib/download.ts";
import { eventsPath, showEvents } from "./lib/events.ts";
import { ImageRefusedError } from "./lib/inspect.ts";
import { progressReporter } from "./lib/progress.ts";
import { forgetImage } from "./lib/state.ts";
import { humanBytes } from "./lib/units.ts";
import { UploadInterruptedError, type UploadResult, uploadFile } from "./lib/upload.ts";
import { waitForImage } from "./lib/wait.ts";

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

/**
 * Lines to a stream that the reader may close (`hangar list | head -3`): once it is gone (EPIPE), output
 * is dropped and the command ends normally, as `ls | head` does, instead of dying on an unhandled error.
 */
function lineWriter(stream: NodeJS.WriteStream): { write(text: string): void; line(text: string): void } {
  let closed = false;
  stream.on("error", () => {
    // EPIPE, or any other failure to write: nobody can read what follows.
    closed = true;
  });
  const write = (text: string) => {
    if (!closed && !stream.destroyed) stream.write(text);
  };
  return { write, line: (text) => write(`${text}\n`) };
}

const summaryLine = (i: Image) =>
  [i.id, i.status.padEnd(11), (i.size == null ? "-" : humanBytes(i.size)).padStart(10), i.name ?? ""].join(
    "  ",
  );

/** What a command needs: output, the resolved client, the global flags, and where to put its exit code. */
interface Ctx {
  io: CliIo;
  out: (text: string) => void;
  err: (text: string) => void;
  json: () => boolean;
  api: () => { client: HangarClient; stateDir: string };
  fail: () => void;
}

const emitJson = (ctx: Ctx, value: unknown) => ctx.out(JSON.stringify(value, null, 2));

/** The lines `upload` prints: what became of the image, then which checksum is of what. */
export function uploadSummary(r: UploadResult): string[] {
  if (r.status === "killed") return [];
  const settled = r.status === "active";
  const pending = r.status === "queued" || r.status === "importing";
  const state = settled
    ? storedAs(r)
    : pending
      ? `: its bytes are in storage, the import has not finished (hangar wait ${r.image_id})`
      : "";
  const lines = [`image ${r.image_id} ${r.status}${state}`];
  if (r.sha256) {
    const note = !r.sha256_declared
      ? "not declared, so not checked by Hangar"
      : settled
        ? "verified by Hangar on import"
        : "declared; Hangar verifies it on import";
    lines.push(`file sha256   ${r.sha256}  (of the file sent; ${note})`);
  }
  if (r.checksum) {
    const of = r.converted ? "of the stored image, not of the file" : "of the stored image: the file as sent";
    lines.push(`image md5     ${r.checksum}  (${of}; hangar download checks it)`);
  }
  if (r.os_hash_value) lines.push(`image ${(r.os_hash_algo ?? "").padEnd(8)}${r.os_hash_value}`);
  return lines;
}

function storedAs(r: UploadResult): string {
  if (!r.disk_format) return "";
  const size = r.size == null ? "" : `, ${humanBytes(r.size)}`;
  const from =
    r.converted && r.file_format
      ? `converted from ${r.file_format} and `
      : r.converted
        ? "converted and "
        : "";
  return `: ${from}stored as ${r.disk_format}${size}`;
}

function addUpload(program: Command, ctx: Ctx): void {
  program
    .command("upload")
    .description("inspect FILE, upload it as a new image (or resume the same upload), wait for its import")
    .argument("<file>", "image file")
    .option("--name <name>", "image name (default: the file name)")
    .addOption(
      new Option("--disk-format <format>", "disk format (default: the one inspection finds)").choices(
        DISK_FORMATS,
      ),
    )
    .addOption(new Option("--container-format <format>", "container format").choices(CONTAINER_FORMATS))
    .addOption(new Option("--visibility <visibility>", "visibility").choices(VISIBILITIES))
    .option("--property <key=value>", "extra image property (repeatable)", collectProperty, {})
    .option("--parallel <n>", "parts uploaded at once", positiveInt, 4)
    .option("--no-inspect", "skip inspecting the file first (Hangar still inspects it on import)")
    .option("--no-wait", "return once the bytes are in storage, before the import")
    .option("--timeout <seconds>", "give up waiting for the import after this long", positiveInt)
    .action(async (file: string, o) => {
      const { client, stateDir } = ctx.api();
      const progress = progressReporter(ctx.io.stderr);
      let result: UploadResult;
      try {
        result = await uploadFile(client, {
          path: file,
          name: o.name ?? basename(file),
          diskFormat: o.diskFormat,
          containerFormat: o.containerFormat,
          visibility: o.visibility,
          properties: o.property,
          parallel: o.parallel,
          stateDir,
          inspect: o.inspect,
          wait: o.wait,
          waitTimeoutMs: o.timeout ? o.timeout * 1000 : undefined,
          signal: ctx.io.signal,
          events: progress,
        });
      } finally {
        progress.stop();
      }
      if (result.status === "killed") {
        ctx.fail();
        ctx.err(`image ${result.image_id} was killed: ${result.failure?.reason}: ${result.failure?.message}`);
      }
      if (ctx.json()) emitJson(ctx, result);
      else for (const line of uploadSummary(result)) ctx.out(line);
    });
}

function addShowAndList(program: Command, ctx: Ctx): void {
  program
    .command("show")
    .description("show an image")
    .argument("<id>")
    .action(async (id: string) => {
      const image = await ctx.api().client.getImage(id);
      if (ctx.json()) return emitJson(ctx, image);
      for (const [k, v] of Object.entries(image)) {
        ctx.out(`${k.padEnd(18)} ${v !== null && typeof v === "object" ? JSON.stringify(v) : (v ?? "")}`);
      }
    });

  program
    .command("list")
    .description("list the images you can see")
    .action(async () => {
      const images = await ctx.api().client.listImages();
      if (ctx.json()) return emitJson(ctx, images);
      for (const i of images) ctx.out(summaryLine(i));
    });
}

async function downloadLine(r: DownloadResult): Promise<string> {
  const onDisk = (await stat(r.path)).blocks * 512;
  const sparse = onDisk < r.file_size ? ` (${humanBytes(onDisk)} on disk)` : "";
  const from = r.converted ? `, converted from the stored ${r.stored_format}` : "";
  const check = r.verified ? "verified" : "not published, not checked";
  return `${r.path}: ${r.format}, ${humanBytes(r.file_size)}${sparse}${from}; md5 of the stored image ${r.checksum} ${check}`;
}

function addDownload(program: Command, ctx: Ctx): void {
  program
    .command("download")
    .description("download an active image, verifying its checksums; raw files are written sparse")
    .argument("<id>")
    .option("-o, --output <file>", "where to write (default: <id>.<format>)")
    .addOption(
      new Option(
        "--format <format>",
        "convert to this format while downloading (default: as stored)",
      ).choices(DOWNLOAD_FORMATS),
    )
    .action(async (id: string, o: { output?: string; format?: (typeof DOWNLOAD_FORMATS)[number] }) => {
      const api = ctx.api().client;
      const image = await api.getImage(id);
      const path = o.output ?? `${id}.${o.format ?? image.disk_format ?? "img"}`;
      const result = await downloadImage(api, id, path, {
        signal: ctx.io.signal,
        ...(o.format ? { format: o.format } : {}),
      });
      if (ctx.json()) return emitJson(ctx, result);
      ctx.out(await downloadLine(result));
    });
}

function addEvents(program: Command, ctx: Ctx): void {
  program
    .command("events")
    .description("show the local stack's lifecycle events (HANGAR_HOME/events.jsonl), oldest first")
    .option("--image <id>", "only this image's events")
    .option("-f, --follow", "keep printing new events until Ctrl-C")
    .action(async (o: { image?: string; follow?: boolean }) => {
      const home = hangarHome(ctx.io.env, ctx.io.cwd);
      const shown = await showEvents({
        home,
        imageId: o.image,
        follow: o.follow === true,
        signal: ctx.io.signal,
        out: ctx.out,
        json: ctx.json(),
      });
      if (shown === 0 && !o.follow)
        ctx.err(`no events in ${eventsPath(home)}${o.image ? ` for ${o.image}` : ""}`);
    });
}

function addDeleteAndWait(program: Command, ctx: Ctx): void {
  program
    .command("delete")
    .description("delete images")
    .argument("<ids...>")
    .action(async (ids: string[]) => {
      const { client, stateDir } = ctx.api();
      const deleted: string[] = [];
      for (const id of ids) {
        await client.deleteImage(id);
        await forgetImage(stateDir, id);
        deleted.push(id);
        if (!ctx.json()) ctx.out(`deleted ${id}`);
      }
      if (ctx.json()) emitJson(ctx, { deleted });
    });

  program
    .command("wait")
    .description("wait until an image is imported; exit 1 if it is killed")
    .argument("<id>")
    .option("--timeout <seconds>", "give up after this long", positiveInt)
    .action(async (id: string, o: { timeout?: number }) => {
      const image = await waitForImage(ctx.api().client, id, {
        timeoutMs: o.timeout ? o.timeout * 1000 : undefined,
        signal: ctx.io.signal,
      });
      if (image.status !== "active") ctx.fail();
      if (ctx.json()) return emitJson(ctx, image);
      if (image.status === "killed")
        ctx.err(`image ${id} was killed: ${image.failure?.reason}: ${image.failure?.message}`);
      else ctx.out(`image ${id} ${image.status}`);
    });
}

/** The message and exit code for whatever ended a command. */
function explain(e: unknown, io: CliIo): { message: string; code: number; reason?: string | undefined } {
  if (e instanceof UploadInterruptedError || io.signal?.aborted) {
    return {
      message: e instanceof UploadInterruptedError ? e.message : "interrupted",
      code: EXIT.interrupted,
    };
  }
  if (e instanceof ClientConfigError) return { message: e.message, code: EXIT.usage };
  if (e instanceof ImageRefusedError) {
    return {
      message: `refused before sending anything: ${e.message} (the import would end killed with ${e.reason})`,
      code: EXIT.failed,
      reason: e.reason,
    };
  }
  if (e instanceof HangarApiError) {
    // Status 0: no answer at all; the message names the address and why.
    const suffix = e.status === 0 ? "" : ` (HTTP ${e.status}, ${e.reason})`;
    return { message: `${e.message}${suffix}`, code: EXIT.failed, reason: e.reason };
  }
  return { message: e instanceof Error ? e.message : String(e), code: EXIT.failed };
}

/**
 * The `hangar` command line. Returns the exit code instead of exiting, so tests can run it in-process too.
 * Output for people on stdout, progress and errors on stderr; with `--json`, stdout holds one JSON document.
 */
export async function main(argv: readonly string[], io: CliIo): Promise<number> {
  const stdout = lineWriter(io.stdout);
  const stderr = lineWriter(io.stderr);
  const program = new Command("hangar");
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
    .configureOutput({ writeOut: stdout.write, writeErr: stderr.write });

  const globals = () => program.opts<{ json?: boolean; as?: string; url?: string; token?: string }>();
  const ctx: Ctx = {
    io,
    out: stdout.line,
    err: stderr.line,
    json: () => globals().json === true,
    api: () => {
      const cfg = resolveConfig(globals(), io.env, io.cwd);
      return { client: new HangarClient(cfg.apiUrl, cfg.token), stateDir: cfg.stateDir };
    },
    fail: () => {
      code = EXIT.failed;
    },
  };
  addUpload(program, ctx);
  addShowAndList(program, ctx);
  addDownload(program, ctx);
  addDeleteAndWait(program, ctx);
  addEvents(program, ctx);

  try {
    await program.parseAsync(argv, { from: "user" });
    return code;
  } catch (e) {
    // Help and version end "successfully"; anything else commander refuses is a usage error.
    if (e instanceof CommanderError) return e.exitCode === 0 ? EXIT.ok : EXIT.usage;
    const { message, code: exit, reason } = explain(e, io);
    if (ctx.json() && exit !== EXIT.interrupted) ctx.out(JSON.stringify({ error: { message, reason } }));
    stderr.line(exit === EXIT.interrupted ? message : `hangar: ${message}`);
    return exit;
  }
}
