import { readFileSync, statSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { beforeEach, inject } from "vitest";

/** Lines of the stack's log shown with a failing test; the whole log stays in the file named. */
const TAIL_LINES = 60;

/**
 * The shared stack logs to a file, not to the test output (a passing run stays quiet). When a test
 * fails, this prints the file's path and what the stack logged while that test ran (its last lines).
 */
beforeEach(({ onTestFailed }) => {
  const { logFile } = inject("hangarStack");
  let from = 0;
  try {
    from = statSync(logFile).size;
  } catch {
    // Not written yet: the whole file is this test's.
  }
  onTestFailed(() => {
    // Tells the global teardown to keep the log (the marker's name is FAILED_MARKER of global-setup.ts).
    writeFileSync(join(dirname(logFile), "failed"), "");
    let lines: string[] = [];
    try {
      lines = readFileSync(logFile).subarray(from).toString("utf8").split("\n").filter(Boolean);
    } catch {
      // No log to show; the path still says where it would be.
    }
    const shown = lines.slice(-TAIL_LINES);
    const skipped = lines.length - shown.length;
    console.error(
      [
        `stack log: ${logFile} (kept after this run)`,
        `${lines.length} line(s) logged during this test${skipped ? `, the last ${shown.length}` : ""}:`,
        ...shown,
      ].join("\n"),
    );
  });
});
