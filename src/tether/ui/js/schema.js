// Checking a value against a JSON schema (the part of it that pydantic writes for tool arguments), so
// that edited arguments are refused in the page, with the reason, before they are sent. The server
// checks them again with the tool's own validator. No code is generated (the CSP forbids eval).

/**
 * What is wrong with `value` by `schema`: one "path: problem" string per problem ([]: nothing).
 *
 * @param {object} schema a JSON schema (`GET v1/agents` → tools[].parameters)
 * @param {any} value
 */
export function check(schema, value) {
  const problems = [];
  visit(schema, value, "", schema, problems);
  return problems;
}

function visit(schema, value, path, root, problems) {
  if (schema === true || schema === undefined) return;
  if (schema === false) return problems.push(`${where(path)}: is not allowed`);
  if (schema.$ref) return visit(resolve(root, schema.$ref), value, path, root, problems);
  const before = problems.length;
  if (schema.type !== undefined) {
    const types = Array.isArray(schema.type) ? schema.type : [schema.type];
    if (!types.some((type) => isType(value, type))) {
      return problems.push(`${where(path)}: must be ${types.map(article).join(" or ")}`);
    }
  }
  if (schema.const !== undefined && !same(value, schema.const)) {
    problems.push(`${where(path)}: must be ${JSON.stringify(schema.const)}`);
  }
  if (schema.enum && !schema.enum.some((option) => same(value, option))) {
    problems.push(`${where(path)}: must be one of ${schema.enum.map((o) => JSON.stringify(o)).join(", ")}`);
  }
  for (const sub of schema.allOf || []) visit(sub, value, path, root, problems);
  for (const [key, matches] of [["anyOf", (n) => n > 0], ["oneOf", (n) => n === 1]]) {
    if (!schema[key]) continue;
    const fitting = schema[key].filter((sub) => check({ ...sub, $defs: root.$defs }, value).length === 0).length;
    if (!matches(fitting)) problems.push(`${where(path)}: does not match the ${key === "anyOf" ? "allowed" : "one allowed"} shapes`);
  }
  if (problems.length > before) return;
  if (typeof value === "string") checkString(schema, value, path, problems);
  else if (typeof value === "number") checkNumber(schema, value, path, problems);
  else if (Array.isArray(value)) checkArray(schema, value, path, root, problems);
  else if (value !== null && typeof value === "object") checkObject(schema, value, path, root, problems);
}

function checkString(schema, value, path, problems) {
  const length = [...value].length;
  if (schema.minLength !== undefined && length < schema.minLength) problems.push(`${where(path)}: must have at least ${schema.minLength} characters`);
  if (schema.maxLength !== undefined && length > schema.maxLength) problems.push(`${where(path)}: must have at most ${schema.maxLength} characters`);
  if (schema.pattern !== undefined && !new RegExp(schema.pattern, "u").test(value)) problems.push(`${where(path)}: must match ${schema.pattern}`);
}

function checkNumber(schema, value, path, problems) {
  if (schema.minimum !== undefined && value < schema.minimum) problems.push(`${where(path)}: must be at least ${schema.minimum}`);
  if (schema.maximum !== undefined && value > schema.maximum) problems.push(`${where(path)}: must be at most ${schema.maximum}`);
  if (schema.exclusiveMinimum !== undefined && value <= schema.exclusiveMinimum) problems.push(`${where(path)}: must be more than ${schema.exclusiveMinimum}`);
  if (schema.exclusiveMaximum !== undefined && value >= schema.exclusiveMaximum) problems.push(`${where(path)}: must be less than ${schema.exclusiveMaximum}`);
  if (schema.multipleOf !== undefined && !Number.isInteger(value / schema.multipleOf)) problems.push(`${where(path)}: must be a multiple of ${schema.multipleOf}`);
}

function checkArray(schema, value, path, root, problems) {
  if (schema.minItems !== undefined && value.length < schema.minItems) problems.push(`${where(path)}: must have at least ${schema.minItems} items`);
  if (schema.maxItems !== undefined && value.length > schema.maxItems) problems.push(`${where(path)}: must have at most ${schema.maxItems} items`);
  const prefix = schema.prefixItems || [];
  value.forEach((item, index) => {
    const itemSchema = index < prefix.length ? prefix[index] : schema.items;
    visit(itemSchema, item, `${path}[${index}]`, root, problems);
  });
}

function checkObject(schema, value, path, root, problems) {
  const properties = schema.properties || {};
  for (const name of schema.required || []) {
    if (!(name in value)) problems.push(`${where(join(path, name))}: is required`);
  }
  for (const [name, item] of Object.entries(value)) {
    if (name in properties) visit(properties[name], item, join(path, name), root, problems);
    else if (schema.additionalProperties === false) problems.push(`${where(join(path, name))}: is not an argument of this tool`);
    else if (typeof schema.additionalProperties === "object") visit(schema.additionalProperties, item, join(path, name), root, problems);
  }
}

function isType(value, type) {
  switch (type) {
    case "string":
      return typeof value === "string";
    case "integer":
      return Number.isInteger(value);
    case "number":
      return typeof value === "number" && Number.isFinite(value);
    case "boolean":
      return typeof value === "boolean";
    case "null":
      return value === null;
    case "array":
      return Array.isArray(value);
    case "object":
      return value !== null && typeof value === "object" && !Array.isArray(value);
    default:
      return true; // a type this checker does not know: the server's validator decides
  }
}

function article(type) {
  return { integer: "an integer", array: "a list", object: "an object", null: "null" }[type] ?? `a ${type}`;
}

function resolve(root, ref) {
  if (!ref.startsWith("#/")) return true; // a reference to another document: left to the server
  return ref
    .slice(2)
    .split("/")
    .reduce((node, key) => node?.[key.replaceAll("~1", "/").replaceAll("~0", "~")], root);
}

function same(a, b) {
  return canonical(a) === canonical(b);
}

/** JSON with every object's keys in order: `{"b":1,"a":2}` and `{"a":2,"b":1}` are the same value. */
function canonical(value) {
  return JSON.stringify(value, (_, v) =>
    v && typeof v === "object" && !Array.isArray(v) ? Object.fromEntries(Object.entries(v).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) : v,
  );
}

function join(path, name) {
  return path ? `${path}.${name}` : name;
}

function where(path) {
  return path || "the arguments";
}

/**
 * What an edit changes, argument by argument: [{name, before, after}] (before/after undefined when
 * the argument is added/removed).
 */
export function changes(before, after) {
  const names = [...new Set([...Object.keys(before), ...Object.keys(after)])];
  return names
    .filter((name) => !same(before[name], after[name]))
    .map((name) => ({ name, before: before[name], after: after[name] }));
}
