/**
 * DynamoDB expressions built from data, not strings: a condition is a tree of named fragments, an update
 * a map of fields to set or remove. Placeholders (`#n0`, `:v0`) are allocated while building, so no
 * fragment needs to know which names another one uses.
 */

/** Collects the attribute names and values one request's expressions use. */
export class Placeholders {
  readonly names: Record<string, string> = {};
  readonly values: Record<string, unknown> = {};
  private readonly byName = new Map<string, string>();
  private count = 0;

  /** `#nK` standing for attribute `field` (one placeholder per name, however often it is used). */
  name(field: string): string {
    let n = this.byName.get(field);
    if (n === undefined) {
      n = `#n${this.byName.size}`;
      this.byName.set(field, n);
      this.names[n] = field;
    }
    return n;
  }

  /** `:vK` standing for `value`. */
  value(value: unknown): string {
    const v = `:v${this.count++}`;
    this.values[v] = value;
    return v;
  }
}

/**
 * One named condition, both as DynamoDB evaluates it (`render`) and as a predicate on an item already
 * read (`holds`), so a write that would certainly fail is refused without being sent, and a refusal can
 * say which fragment failed.
 */
export interface Condition<T> {
  readonly label: string;
  /** Joins parts with AND or OR at its top level, so it needs parentheses inside another condition. */
  readonly compound: boolean;
  render(p: Placeholders): string;
  holds(item: T): boolean;
}

/** A part rendered inside a compound condition: parenthesised only when it is compound itself. */
const nested = <T>(c: Condition<T>, p: Placeholders) => (c.compound ? `(${c.render(p)})` : c.render(p));

/** DynamoDB refuses redundant parentheses, so a single part stands alone. */
function joined<T>(parts: Condition<T>[], op: "AND" | "OR", holds: Condition<T>["holds"]): Condition<T> {
  const [only] = parts;
  if (parts.length === 1 && only) return only;
  return {
    label: parts.map((c) => c.label).join(` ${op.toLowerCase()} `),
    compound: true,
    render: (p) => parts.map((c) => nested(c, p)).join(` ${op} `),
    holds,
  };
}

export function allOf<T>(...parts: Condition<T>[]): Condition<T> {
  return joined(parts, "AND", (item) => parts.every((c) => c.holds(item)));
}

export function anyOf<T>(...parts: Condition<T>[]): Condition<T> {
  return joined(parts, "OR", (item) => parts.some((c) => c.holds(item)));
}

/** The item exists (keyed by `pk`). */
export function exists<T>(): Condition<T> {
  return {
    label: "exists",
    compound: false,
    render: (p) => `attribute_exists(${p.name("pk")})`,
    holds: () => true,
  };
}

/** `field` is one of `values`. */
export function isIn<T>(field: keyof T & string, values: readonly unknown[]): Condition<T> {
  return {
    label: `${field} in [${values.join(", ")}]`,
    compound: false,
    render: (p) => `${p.name(field)} IN (${values.map((v) => p.value(v)).join(", ")})`,
    holds: (item) => values.includes(item[field]),
  };
}

/**
 * `field` equals `value`, compared by value (DynamoDB compares lists in order and maps by key). A
 * `missingAs` value stands for an absent attribute: the condition also holds when it is absent and
 * `value` equals `missingAs`.
 */
export function equals<T>(field: keyof T & string, value: unknown, missing?: { as: unknown }): Condition<T> {
  const absentOk = missing !== undefined && canonical(value) === canonical(missing.as);
  return {
    label: `${field} unchanged`,
    compound: absentOk,
    render: (p) => {
      const eq = `${p.name(field)} = ${p.value(value)}`;
      return absentOk ? `attribute_not_exists(${p.name(field)}) OR ${eq}` : eq;
    },
    holds: (item) => canonical(item[field] ?? missing?.as) === canonical(value),
  };
}

/** `field` is set and below `value` (ISO times compare as strings). */
export function lessThan<T>(field: keyof T & string, value: string): Condition<T> {
  return {
    label: `${field} < ${value}`,
    compound: false,
    render: (p) => `${p.name(field)} < ${p.value(value)}`,
    holds: (item) => {
      const v = item[field];
      return typeof v === "string" && v < value;
    },
  };
}

/** JSON with map keys sorted: equal for values DynamoDB compares as equal (lists in order, maps by key). */
export function canonical(value: unknown): string {
  return JSON.stringify(value ?? null, (_, v) =>
    v && typeof v === "object" && !Array.isArray(v)
      ? Object.fromEntries(Object.entries(v).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)))
      : v,
  );
}

/** `SET` for every defined field, `REMOVE` for those listed; undefined fields are left alone. */
export function updateExpression(
  p: Placeholders,
  set: Record<string, unknown>,
  remove: readonly string[] = [],
): string {
  const assignments = Object.entries(set)
    .filter(([, v]) => v !== undefined)
    .map(([field, value]) => `${p.name(field)} = ${p.value(value)}`);
  const clauses: string[] = [];
  if (assignments.length) clauses.push(`SET ${assignments.join(", ")}`);
  if (remove.length) clauses.push(`REMOVE ${remove.map((f) => p.name(f)).join(", ")}`);
  return clauses.join(" ");
}
