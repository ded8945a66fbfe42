/**
 * Largest request body read (512 KiB), enforced by the app itself, so that a client cannot make the process
 * hold more per request and a refusal is Glance's 413 in AWS and locally alike. In AWS a body reaches the
 * function inside the event JSON, where API Gateway's 10 MB and Lambda's 6 MB invocation limits refuse it
 * with their own flat bodies; 512 KiB stays under both even when JSON escapes every byte of it (`\u00XX`,
 * six bytes each). No valid request is near it: a whole image record is at most 384 KiB.
 */
export const MAX_BODY_BYTES = 512 * 1024;

/** At most `n` characters of a client's value, for a message that quotes it. */
export const clip = (value: string, n = 80): string => (value.length > n ? `${value.slice(0, n)}…` : value);
