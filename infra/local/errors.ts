/** A local-stack failure whose message is meant to be shown to the developer as one line. */
export class LocalStackError extends Error {
  override name = "LocalStackError";
}

/** A downloaded package or binary does not match its pinned digest; it is never run or unpacked. */
export class BinaryVerificationError extends LocalStackError {
  override name = "BinaryVerificationError";
}

/** A port the stack needs is taken by another process. */
export class PortInUseError extends LocalStackError {
  override name = "PortInUseError";
}

/** A child service (MinIO, DynamoDB Local) exited while the stack was meant to be running. */
export class ServiceExitedError extends LocalStackError {
  override name = "ServiceExitedError";
}
