/**
 * The bench's reference image for the client's end to end (bench/client-e2e.ts), built once in
 * bench/.work/ as bench/run.ts builds it: a qcow2 of 1 GiB virtual size holding 512 MiB of random data
 * in 64 stretches of 8 MiB, one every 16 MiB; its raw (`qemu-img convert -O raw`) and that raw's md5.
 */
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";

const WORK = join(import.meta.dirname, ".work");

export function sh(cmd: string, args: string[]): string {
  return execFileSync(cmd, args, { encoding: "utf8", maxBuffer: 64 << 20 });
}

export function ensureReferenceImage(): { qcow2: string; raw: string; rawMd5: string } {
  mkdirSync(WORK, { recursive: true });
  const qcow2 = join(WORK, "ref-1g.qcow2");
  if (!existsSync(qcow2)) {
    const tmp = join(WORK, "ref.raw");
    sh("truncate", ["-s", "1G", tmp]);
    for (let i = 0; i < 64; i++) {
      sh("dd", [
        "if=/dev/urandom",
        `of=${tmp}`,
        "bs=8M",
        "count=1",
        `seek=${2 * i}`,
        "conv=notrunc",
        "status=none",
      ]);
    }
    sh("qemu-img", ["convert", "-f", "raw", "-O", "qcow2", tmp, `${qcow2}.tmp`]);
    sh("mv", [`${qcow2}.tmp`, qcow2]);
    rmSync(tmp);
  }
  const raw = join(WORK, "ref-1g.raw");
  if (!existsSync(raw)) {
    sh("qemu-img", ["convert", "-f", "qcow2", "-O", "raw", qcow2, `${raw}.tmp`]);
    sh("mv", [`${raw}.tmp`, raw]);
  }
  const saved = `${qcow2}.raw-md5`;
  if (!existsSync(saved)) writeFileSync(saved, `${sh("md5sum", [raw]).split(/\s+/)[0] ?? ""}\n`);
  return { qcow2, raw, rawMd5: readFileSync(saved, "utf8").trim() };
}

/** CPU seconds (user + system, all threads) a process has used so far, from /proc; undefined when gone. */
export function procCpuSeconds(pid: number | undefined, statFile = `/proc/${pid}/stat`): number | undefined {
  if (pid === undefined) return undefined;
  try {
    const stat = readFileSync(statFile, "utf8");
    // After the parenthesised command name (which may hold spaces): utime and stime are the 12th and 13th.
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return (Number(fields[11]) + Number(fields[12])) / 100;
  } catch {
    return undefined;
  }
}

/** CPU seconds per thread of a process so far (by thread id), from /proc/<pid>/task. */
export function threadCpuSeconds(pid: number | undefined): Map<string, number> {
  const out = new Map<string, number>();
  if (pid === undefined) return out;
  let tids: string[];
  try {
    tids = readdirSync(`/proc/${pid}/task`);
  } catch {
    return out;
  }
  for (const tid of tids) {
    const seconds = procCpuSeconds(Number(tid), `/proc/${pid}/task/${tid}/stat`);
    if (seconds !== undefined) out.set(tid, seconds);
  }
  return out;
}

/** The most CPU any one thread used between two `threadCpuSeconds` readings. */
export function busiestThread(before: Map<string, number>, after: Map<string, number>): number {
  let most = 0;
  for (const [tid, seconds] of after) most = Math.max(most, seconds - (before.get(tid) ?? 0));
  return most;
}
