import cliProgress from "cli-progress";
import { count, humanBytes, humanSeconds } from "./units.ts";
import type { UploadEvents } from "./upload.ts";

export { humanBytes } from "./units.ts";

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
      const what =
        info.method !== "multipart"
          ? "one PUT"
          : info.partsToSend === info.partCount
            ? count(info.partCount ?? 0, "part")
            : `${count(info.partsToSend ?? 0, "part")} (of ${info.partCount})`;
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
