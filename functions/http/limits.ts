/**
 * Largest request body read: API Gateway's payload limit (10 MB), enforced by the app itself so that the
 * local stack answers as AWS does, and a client cannot make the process hold more than this per request.
 */
export const MAX_BODY_BYTES = 10 * 1024 * 1024;

/** At most `n` characters of a client's value, for a message that quotes it. */
export const clip = (value: string, n = 80): string => (value.length > n ? `${value.slice(0, n)}…` : value);
