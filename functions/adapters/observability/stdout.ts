/**
 * Runs `fn`, which writes lines to stdout (log and EMF lines), so that they reach the pipe in one write:
 * a write to a pipe is a system call that wakes its reader (CloudWatch's agent in Lambda, the stack's
 * log locally), and on a small request it cost about as much CPU as building the line. Nothing is held
 * past `fn`: the lines are written before this returns, so a function frozen or ended right after loses
 * none.
 */
export function writeTogether<T>(fn: () => T): T {
  const out = process.stdout;
  out.cork();
  try {
    return fn();
  } finally {
    out.uncork();
  }
}
