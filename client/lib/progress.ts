import cliProgress from "cli-progress";
import type { UploadEvents } from "./upload.ts";

const UNITS = ["B", "KiB", "MiB", "GiB", "TiB"];

/** 1536 → "1.5 KiB". */
export function humanBytes(n: number): string {
  let v = n;
  let u = 0;
  while (Math.abs(v) >= 1024 && u < UNITS.length - 1) {
    v /= 1024;
    u++;
  }
  return `${u === 0 ? v : v.toFixed(1)} ${UNITS[u]}`;
}

function humanSeconds(s: number): string {
  if (!Number.isFinite(s)) return "?";
  const t = Math.round(s);
  const h = Math.floor(t / 3600);
  const m = Math.floor((t % 3600) / 60);
  const sec = t % 60;
  return h > 0
    ? `${h}h${String(m).padStart(2, "0")}m`
    : m > 0
      ? `${m}m${String(sec).padStart(2, "0")}s`
      : `${sec}s`;
}

/**
 * Upload progress on stderr: a bar with rate and ETA on a terminal (cli-progress), plain lines otherwise
 * (one per part, or every 10 % of a single PUT), so logs and scripts read it too.
 */
export function progressReporter(stream: NodeJS.WriteStream, quiet = false): UploadEvents & { stop(): void } {
  const tty = Boolean(stream.isTTY) && !quiet;
  let total = 0;
  let done = 0;
  let started = Date.now();
  let lastDecile = 0;
  let single = false;
  let bar: cliProgress.SingleBar | undefined;
  const line = (text: string) => {
    if (quiet) return;
    if (bar) bar.stop();
    stream.write(`${text}\n`);
    // Once everything is sent the bar stays down: notes while waiting for the import need no bar.
    if (bar && done < total) bar.start(total, done, stats());
    else bar = undefined;
  };
  const stats = () => {
    const seconds = (Date.now() - started) / 1000;
    const rate = seconds > 0 ? done / seconds : 0;
    return {
      rate: `${humanBytes(rate)}/s`,
      eta: rate > 0 ? humanSeconds((total - done) / rate) : "?",
      sent: humanBytes(done),
      size: humanBytes(total),
    };
  };
  return {
    begin(info) {
      total = info.bytes;
      single = info.method !== "multipart";
      done = 0;
      started = Date.now();
      const what = info.method === "multipart" ? `${info.partCount} parts` : "one PUT";
      line(
        `${info.resumed ? "resuming" : "uploading"} image ${info.imageId}: ${humanBytes(total)} to send in ${what}`,
      );
      if (tty && total > 0) {
        bar = new cliProgress.SingleBar(
          {
            stream,
            format: "{bar} {percentage}% | {sent} of {size} | {rate} | ETA {eta}",
            hideCursor: true,
            clearOnComplete: true,
            fps: 5,
          },
          cliProgress.Presets.shades_classic,
        );
        bar.start(total, 0, stats());
      }
    },
    bytes(n) {
      done += n;
      if (bar) bar.update(done, stats());
      else if (!quiet && single && total > 0) {
        const decile = Math.floor((done / total) * 10);
        if (decile > lastDecile && decile < 10) {
          lastDecile = decile;
          const s = stats();
          stream.write(`${decile * 10}% ${s.sent} of ${s.size}, ${s.rate}, ETA ${s.eta}\n`);
        }
      }
    },
    part(info) {
      if (tty) return;
      const s = stats();
      line(
        info.uploaded
          ? `part ${info.partNumber}/${info.partCount} uploaded (${s.sent} of ${s.size}, ${s.rate})`
          : `part ${info.partNumber}/${info.partCount} already in storage`,
      );
    },
    note(text) {
      line(text);
    },
    stop() {
      bar?.stop();
      bar = undefined;
    },
  };
}
