// Parse AsyncAPI documents with the official parser and its Avro and Protobuf schema parsers,
// and print for each file one JSON line: {"file", "parsed", "errors": [...], "warnings": [...]}.
// The parser (3.x) only converts the multi-format schemas of an AsyncAPI 3 document; so that
// an invalid Avro schema is an error too, each one is also given to its schema parser's own
// validate(), as the parser does for AsyncAPI 2 documents.
// Exit status: 0 when no document has an error, 1 otherwise, 2 for a usage error.
import { readFile } from 'node:fs/promises';
import { Parser } from '@asyncapi/parser';
import { AvroSchemaParser } from '@asyncapi/avro-schema-parser';
import { ProtoBuffSchemaParser } from '@asyncapi/protobuf-schema-parser';

const SEVERITY = ['error', 'warning', 'info', 'hint'];
const PLUGINS = [AvroSchemaParser(), ProtoBuffSchemaParser()];

// Each multi-format schema once, with the schema as written (the parser keeps the original
// beside the converted one).
function* multiFormatSchemas(node, path = [], seen = new Set()) {
  if (node === null || typeof node !== 'object' || seen.has(node)) return;
  seen.add(node);
  if (typeof node.schemaFormat === 'string' && 'schema' in node) {
    yield { schema: node['x-parser-original-payload'] ?? node.schema, format: node.schemaFormat, path };
  }
  for (const [key, value] of Object.entries(node)) {
    yield* multiFormatSchemas(value, [...path, key], seen);
  }
}

async function pluginErrors(raw) {
  const errors = [];
  for (const { schema, format, path } of multiFormatSchemas(raw)) {
    const plugin = PLUGINS.find((p) => p.getMimeTypes().includes(format));
    if (plugin === undefined) continue;
    const found = await plugin.validate({
      asyncapi: { semver: { version: raw.asyncapi } },
      data: schema,
      meta: {},
      path: [...path, 'schema'],
      schemaFormat: format,
      defaultSchemaFormat: format,
    });
    for (const d of found ?? []) {
      errors.push({ severity: 'error', code: 'schema-format', message: d.message, path: (d.path ?? path).join('/') });
    }
  }
  return errors;
}

const files = process.argv.slice(2);
if (files.length === 0) {
  console.error('usage: node validate.mjs DOCUMENT...');
  process.exit(2);
}
const parser = new Parser();
for (const plugin of PLUGINS) parser.registerSchemaParser(plugin);

let failed = false;
for (const file of files) {
  const text = await readFile(file, 'utf8');
  const { document, diagnostics } = await parser.parse(text, { source: file });
  const shown = diagnostics.map((d) => ({
    severity: SEVERITY[d.severity] ?? String(d.severity),
    code: d.code,
    message: d.message,
    path: d.path.join('/'),
  }));
  const errors = shown.filter((d) => d.severity === 'error');
  if (document !== undefined) errors.push(...(await pluginErrors(document.json())));
  if (errors.length > 0 || document === undefined) failed = true;
  console.log(JSON.stringify({
    file,
    parsed: document !== undefined,
    errors,
    warnings: shown.filter((d) => d.severity !== 'error'),
  }));
}
process.exit(failed ? 1 : 0);
