import { InvalidRequestError } from "./errors.ts";
import type { MemberStatus } from "./image/access.ts";
import { IMAGE_STATUSES, type ImageRecord, isImageId, VISIBILITIES, type Visibility } from "./image/image.ts";
import { MEMBER_STATUSES } from "./image/members.ts";

/** Glance's `limit_param_default` and `api_limit_max`. glanceclient asks for 200 per page. */
export const DEFAULT_PAGE_SIZE = 25;
export const MAX_PAGE_SIZE = 1000;

export const SORT_KEYS = [
  "name",
  "status",
  "container_format",
  "disk_format",
  "size",
  "virtual_size",
  "id",
  "created_at",
  "updated_at",
  "min_disk",
  "min_ram",
  "owner",
  "visibility",
  "protected",
  "os_hidden",
] as const;
export type SortKey = (typeof SORT_KEYS)[number];
export type SortDir = "asc" | "desc";
export interface SortSpec {
  key: SortKey;
  dir: SortDir;
}

/** A parsed `GET /v2/images` query: which images, in which order, which page. */
export interface ListQuery {
  limit: number;
  marker: string | undefined;
  sort: SortSpec[];
  /** `undefined`: Glance's default list (own, public, accepted shares; no community). */
  visibility: Visibility | "all" | undefined;
  memberStatus: MemberStatus | "all";
  /** Every predicate must hold (Glance ANDs its filters). */
  filters: ((image: ImageRecord) => boolean)[];
}

/** Query parameters that are not filters on image fields. */
const CONTROL = new Set(["limit", "marker", "sort", "sort_key", "sort_dir", "visibility", "member_status"]);

/** Record fields a filter may compare directly; any other name filters on an extra property. */
const RECORD_FIELDS = new Set([
  "id",
  "name",
  "status",
  "owner",
  "disk_format",
  "container_format",
  "checksum",
  "os_hash_algo",
  "os_hash_value",
  "size",
  "virtual_size",
  "min_disk",
  "min_ram",
  "source_format",
  "upload_size",
  "upload_sha256",
]);

const TIME_OPS = { gt: 1, gte: 1, lt: 1, lte: 1, eq: 1, neq: 1 } as const;
type TimeOp = keyof typeof TIME_OPS;

const bad = (message: string) => new InvalidRequestError(message);
/** At most 80 characters of a client's value, for a message that quotes it. */
const clip = (value: string): string => (value.length > 80 ? `${value.slice(0, 80)}…` : value);

function parseBoolean(name: string, value: string): boolean {
  const v = value.toLowerCase();
  if (["true", "1", "yes", "on"].includes(v)) return true;
  if (["false", "0", "no", "off"].includes(v)) return false;
  throw bad(`Invalid value for ${name}: '${clip(value)}'; it must be true or false.`);
}

function parseInteger(name: string, value: string): number {
  if (!/^\d+$/.test(value)) throw bad(`${name} param must be a non-negative integer, not '${clip(value)}'.`);
  return Number(value);
}

/** Splits Glance's `in:a,b,"c,d"` value list; double quotes protect commas. */
export function splitInList(list: string): string[] {
  const out: string[] = [];
  let cur = "";
  let quoted = false;
  for (let k = 0; k < list.length; k++) {
    const ch = list[k];
    if (ch === '"') quoted = !quoted;
    else if (ch === "\\" && quoted && k + 1 < list.length) cur += list[++k];
    else if (ch === "," && !quoted) {
      out.push(cur.trim());
      cur = "";
    } else cur += ch;
  }
  out.push(cur.trim());
  return out;
}

function fieldText(image: ImageRecord, field: string): string | undefined {
  const v = (image as unknown as Record<string, unknown>)[field];
  return v === null || v === undefined ? undefined : String(v);
}

/** `name=x` or `name=in:x,y` on a record field, or `k=v` on an extra property. */
function equalityFilter(field: string, value: string): (image: ImageRecord) => boolean {
  const read = RECORD_FIELDS.has(field)
    ? (i: ImageRecord) => fieldText(i, field)
    : (i: ImageRecord) => (Object.hasOwn(i.properties, field) ? i.properties[field] : undefined);
  if (value.startsWith("in:")) {
    const set = new Set(splitInList(value.slice(3)));
    return (i) => {
      const v = read(i);
      return v !== undefined && set.has(v);
    };
  }
  return (i) => read(i) === value;
}

/** `created_at=gte:2024-01-01T00:00:00Z`; a value without an operator means `eq`. */
function timeFilter(field: "created_at" | "updated_at", value: string): (image: ImageRecord) => boolean {
  const m = /^([a-z]+):(.*)$/.exec(value);
  // Own keys only: `constructor:` or `__proto__:` are no operators (`in` would find them on the prototype).
  const known = m?.[1] !== undefined && Object.hasOwn(TIME_OPS, m[1]);
  const op = (m && known ? m[1] : "eq") as TimeOp;
  if (m && !known && !/^\d/.test(value)) {
    throw bad(`Unable to filter ${field} on the unknown operator '${clip(m[1] ?? "")}'.`);
  }
  const text = m && op === m[1] ? (m[2] ?? "") : value;
  const at = Date.parse(text);
  if (!/^\d{4}-\d{2}-\d{2}/.test(text) || Number.isNaN(at)) {
    throw bad(
      `Invalid ${field} filter '${clip(value)}': expected an ISO 8601 time, e.g. gte:2024-01-31T00:00:00Z.`,
    );
  }
  const cmp: Record<TimeOp, (a: number) => boolean> = {
    gt: (a) => a > at,
    gte: (a) => a >= at,
    lt: (a) => a < at,
    lte: (a) => a <= at,
    eq: (a) => a === at,
    neq: (a) => a !== at,
  };
  // Stored times have milliseconds, Glance shows whole seconds: compare at the precision clients see.
  return (i) => cmp[op](Math.floor(Date.parse(i[field]) / 1000) * 1000);
}

function parseSort(params: [string, string][]): SortSpec[] {
  const keys = params.filter(([k]) => k === "sort_key").map(([, v]) => v);
  const dirs = params.filter(([k]) => k === "sort_dir").map(([, v]) => v);
  const combined = params.filter(([k]) => k === "sort").map(([, v]) => v);
  const checkKey = (k: string): SortKey => {
    if (!(SORT_KEYS as readonly string[]).includes(k)) {
      throw bad(`Invalid sort key: '${clip(k)}'. It must be one of: ${SORT_KEYS.join(", ")}.`);
    }
    return k as SortKey;
  };
  const checkDir = (d: string): SortDir => {
    if (d !== "asc" && d !== "desc")
      throw bad(`Invalid sort direction: '${clip(d)}'. It must be asc or desc.`);
    return d;
  };
  let sort: SortSpec[];
  if (combined.length > 0) {
    if (keys.length > 0 || dirs.length > 0) {
      throw bad("Old and new sorting syntax cannot be combined: use sort, or sort_key and sort_dir.");
    }
    sort = combined
      .flatMap((s) => s.split(","))
      .filter((s) => s.trim() !== "")
      .map((s) => {
        const [k = "", d = "desc"] = s.trim().split(":");
        return { key: checkKey(k), dir: checkDir(d) };
      });
  } else {
    if (dirs.length > 1 && dirs.length !== keys.length) {
      throw bad("The number of sort_dir values must be one or match the number of sort_key values.");
    }
    const dirOf = (i: number) => checkDir(dirs[dirs.length === 1 ? 0 : i] ?? "desc");
    sort = keys.map((k, i) => ({ key: checkKey(k), dir: dirOf(i) }));
    if (keys.length === 0 && dirs.length === 1) sort = [{ key: "created_at", dir: dirOf(0) }];
  }
  if (sort.length === 0) sort = [{ key: "created_at", dir: "desc" }];
  // Glance breaks ties with created_at then id, so every order is total and markers are unambiguous.
  const lastDir = sort.at(-1)?.dir ?? "desc";
  if (!sort.some((s) => s.key === "created_at")) sort.push({ key: "created_at", dir: lastDir });
  if (!sort.some((s) => s.key === "id")) sort.push({ key: "id", dir: lastDir });
  return sort;
}

/**
 * Parses `GET /v2/images` query parameters the way Glance does (filters, `in:` lists, time operators,
 * both sort syntaxes, limit and marker); throws `InvalidRequestError` with Glance-like messages.
 */
export function parseListQuery(params: [string, string][]): ListQuery {
  const one = (name: string): string | undefined => params.find(([k]) => k === name)?.[1];
  const filters: ((image: ImageRecord) => boolean)[] = [];

  const limitText = one("limit");
  let limit = DEFAULT_PAGE_SIZE;
  if (limitText !== undefined) {
    if (!/^-?\d+$/.test(limitText)) throw bad("limit param must be an integer.");
    limit = Number(limitText);
    if (limit < 0) throw bad("limit param must be positive.");
    limit = Math.min(limit, MAX_PAGE_SIZE);
  }

  const visibilityText = one("visibility");
  if (visibilityText !== undefined && !["all", ...VISIBILITIES].includes(visibilityText)) {
    throw bad(`Invalid visibility value: ${clip(visibilityText)}`);
  }
  const visibility = visibilityText as Visibility | "all" | undefined;
  if (visibility !== undefined && visibility !== "all") filters.push((i) => i.visibility === visibility);

  const memberStatusText = one("member_status") ?? "accepted";
  if (!["all", ...MEMBER_STATUSES].includes(memberStatusText)) {
    throw bad(`Invalid status value: ${clip(memberStatusText)}`);
  }

  // Hidden images leave the default list; `os_hidden=true` lists only them (Glance's filter is equality).
  const hiddenText = one("os_hidden");
  const hidden = hiddenText === undefined ? false : parseBoolean("os_hidden", hiddenText);
  filters.push((i) => i.os_hidden === hidden);

  for (const [key, value] of params) {
    if (CONTROL.has(key) || key === "os_hidden") continue;
    switch (key) {
      case "tag":
        filters.push((i) => i.tags.includes(value));
        break;
      case "size_min": {
        const n = parseInteger(key, value);
        filters.push((i) => i.size !== null && i.size >= n);
        break;
      }
      case "size_max": {
        const n = parseInteger(key, value);
        filters.push((i) => i.size !== null && i.size <= n);
        break;
      }
      case "protected": {
        const b = parseBoolean(key, value);
        filters.push((i) => i.protected === b);
        break;
      }
      case "status":
        if (!value.startsWith("in:") && !(IMAGE_STATUSES as readonly string[]).includes(value)) {
          throw bad(`Invalid status value: ${clip(value)}`);
        }
        filters.push(equalityFilter(key, value));
        break;
      case "created_at":
      case "updated_at":
        filters.push(timeFilter(key, value));
        break;
      default:
        // Repeating any other filter ANDs it, as Glance does for properties.
        filters.push(equalityFilter(key, value));
    }
  }

  // Markers are image ids; anything else names no image (and is never sent to storage as a key).
  const marker = one("marker");
  if (marker !== undefined && !isImageId(marker)) {
    throw new InvalidRequestError(`The marker ${clip(marker)} could not be found.`, "BAD_MARKER");
  }

  return {
    limit,
    marker,
    sort: parseSort(params),
    visibility,
    memberStatus: memberStatusText as MemberStatus | "all",
    filters,
  };
}

function sortValue(image: ImageRecord, key: SortKey): string | number | boolean | null {
  const v = (image as unknown as Record<string, unknown>)[key];
  return v === undefined ? null : (v as string | number | boolean | null);
}

/** A total order over images for a sort spec; nulls come first in ascending order, like Glance's MySQL. */
export function compareImages(sort: readonly SortSpec[]) {
  return (a: ImageRecord, b: ImageRecord): number => {
    for (const { key, dir } of sort) {
      const av = sortValue(a, key);
      const bv = sortValue(b, key);
      let c = 0;
      if (av === bv) c = 0;
      else if (av === null) c = -1;
      else if (bv === null) c = 1;
      else c = av < bv ? -1 : 1;
      if (c !== 0) return dir === "asc" ? c : -c;
    }
    return 0;
  };
}

/**
 * One page of already-filtered images: sorted, after `marker` (an image the caller may see, found in or out
 * of the filtered set), at most `limit`. `more` says whether a next page exists.
 */
export function paginate(
  images: ImageRecord[],
  query: Pick<ListQuery, "sort" | "limit">,
  marker: ImageRecord | undefined,
): { page: ImageRecord[]; more: boolean } {
  const cmp = compareImages(query.sort);
  const sorted = [...images].sort(cmp);
  const rest = marker ? sorted.filter((i) => cmp(i, marker) > 0) : sorted;
  return { page: rest.slice(0, query.limit), more: rest.length > query.limit };
}
