/**
 * OmegaConf-style `${…}` interpolation for experiment YAMLs, limited to the forms the reference configs use:
 * absolute references (`${dataset.kwargs.context_length}`) and relative ones (`${.num_steps}`: a key of the
 * mapping that holds the interpolating key; each further dot goes one level up).
 *
 * @module
 */

const INTERPOLATION = /\$\{([^}]*)\}/g;
// a reference: optional leading dots, then dot-separated keys (list indices are plain digits)
const REFERENCE = /^(\.*)([A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*)$/;

/**
 * Returns a copy of `doc` with every interpolation resolved. A string that is exactly one `${ref}` takes the
 * referenced value with its type (so `${dataset.kwargs.vocab_size}` becomes the number 3); `${ref}` inside a
 * longer string is replaced by the referenced scalar's text. References may point at values that interpolate
 * themselves.
 *
 * @param doc a parsed YAML document (plain objects, arrays, scalars).
 * @returns the resolved copy; `doc` is not modified.
 * @throws {Error} naming the key path for a missing target, a reference cycle, an unsupported form (resolvers
 * such as `${oc.env:X}`, escapes `\${`, nested `${${…}}`), or a mapping/list embedded in a longer string.
 * @example
 * ```ts
 * import { resolveInterpolations } from "./interpolate.ts";
 * const doc = resolveInterpolations({
 *   training: { num_steps: 20000, lr_decay_until_steps: "${.num_steps}" },
 *   dataset: { kwargs: { vocab_size: 3 } },
 *   model: { vocab_size: "${dataset.kwargs.vocab_size}" },
 * });
 * console.log(doc.training.lr_decay_until_steps, doc.model.vocab_size); // 20000 3
 * ```
 */
// deno-lint-ignore no-explicit-any
export function resolveInterpolations<T = any>(doc: T): T {
  const done = new Map<string, unknown>();
  const active = new Set<string>();

  const raw = (path: readonly string[], from: string): unknown => {
    let node: unknown = doc;
    for (const key of path) {
      if (typeof node !== "object" || node === null || !Object.hasOwn(node, key)) {
        throw new Error(`${from}: interpolation target ${path.join(".")} does not exist`);
      }
      node = (node as Record<string, unknown>)[key];
    }
    return node;
  };

  const resolve = (path: readonly string[], from: string): unknown => {
    const id = JSON.stringify(path);
    if (done.has(id)) return done.get(id);
    if (active.has(id)) throw new Error(`${from}: interpolation cycle through ${path.join(".")}`);
    active.add(id);
    const value = raw(path, from);
    let out: unknown;
    if (typeof value === "string") out = interpolate(value, path);
    else if (Array.isArray(value)) out = value.map((_, i) => resolve([...path, String(i)], from));
    else if (typeof value === "object" && value !== null) {
      out = Object.fromEntries(Object.keys(value).map((k) => [k, resolve([...path, k], from)]));
    } else out = value;
    active.delete(id);
    done.set(id, out);
    return out;
  };

  const interpolate = (text: string, path: readonly string[]): unknown => {
    const at = path.join(".") || "<root>";
    if (text.includes("\\${")) throw new Error(`${at}: escaped interpolations are not supported`);
    const target = (ref: string): unknown => {
      const m = REFERENCE.exec(ref.trim());
      if (!m) throw new Error(`${at}: unsupported interpolation \${${ref}}`);
      const [, dots, keys] = m;
      // `.x` looks in the mapping holding this key (path minus its last key); each extra dot climbs one more
      if (dots.length > path.length) throw new Error(`${at}: \${${ref}} climbs above the document root`);
      const base = dots.length === 0 ? [] : path.slice(0, path.length - dots.length);
      return resolve([...base, ...keys.split(".")], at);
    };
    const whole = /^\$\{([^}]*)\}$/.exec(text);
    if (whole && !whole[1].includes("${")) return target(whole[1]);
    return text.replace(INTERPOLATION, (_, ref: string) => {
      const v = target(ref);
      if (typeof v === "object" && v !== null) throw new Error(`${at}: cannot embed a mapping or list in a string`);
      return String(v);
    });
  };

  return resolve([], "<root>") as T;
}
