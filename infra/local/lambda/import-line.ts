const GiB = 1024 ** 3;
const MiB = 1024 ** 2;
const size = (bytes: number) =>
  bytes >= GiB ? `${(bytes / GiB).toFixed(2)} GiB` : `${(bytes / MiB).toFixed(1)} MiB`;

/**
 * The sentence `npm start` prints for the importer's `import result` log line: image, format → stored
 * format, size, time, outcome. Any other line: undefined.
 */
export function describeFinishedImport(line: string): string | undefined {
  const json = line.slice(line.indexOf("{"));
  if (!json.startsWith("{") || !json.includes('"import result"')) return undefined;
  let e: Record<string, unknown>;
  try {
    e = JSON.parse(json) as Record<string, unknown>;
  } catch {
    return undefined;
  }
  if (e.message !== "import result") return undefined;
  const num = (v: unknown) => (typeof v === "number" ? v : 0);
  const formats = `${e.sourceFormat ?? "?"} → ${e.diskFormat ?? "?"}${e.converted ? " (converted)" : ""}`;
  if (e.outcome === "fanned-out") {
    return `import ${e.imageId}: ${e.sourceFormat ?? "?"} handed to the fan-out state machine (${(num(e.ms) / 1000).toFixed(1)} s)`;
  }
  const outcome = e.outcome === "active" ? "active" : `${e.outcome} (${e.reason ?? "no reason"})`;
  return (
    `import ${e.imageId}: ${formats}, ${size(num(e.bytesRead))} read, ` +
    `${size(num(e.bytesWritten))} stored, ${(num(e.ms) / 1000).toFixed(1)} s, ${outcome}`
  );
}
