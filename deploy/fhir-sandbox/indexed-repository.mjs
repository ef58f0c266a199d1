// Medplum's MemoryRepository with searches that cost what one patient's data costs, not what the
// whole store costs, and each value of a resource computed once, not once per page.
//
// The engine's own search (MemoryRepository.searchSync) runs, for every page: every resource of
// the type through every filter (a FHIRPath evaluation each, and for a token filter of 97
// `system|code` values, up to 97 string splits per coding), deep-copies every match, sorts the
// copies with a comparator that parses its FHIRPath expression on each comparison, and only then
// cuts out the page. On a 20-year chart (12,000 Observations) that is 1-2 s per page on an idle
// machine, every page again.
//
// Here the same search gives the same Bundle (same matches, same order, same total):
// - what a search parameter finds in a resource (its references, tokens or dates: the engine's
//   own FHIRPath expression and conversion functions) is computed once per resource version and
//   kept beside it (a write stores a new object, so nothing outlives the version it came from),
//   on write for the parameters searches have used, else on the first search;
// - reference, token and date filters are decided on those values by the engine's rules for them
//   (match.ts of @medplum/core 5.2.13: `matchesReferenceFilter`, `matchesTokenFilter`,
//   `matchesDateFilter`, written out below); every other filter, and those with `:missing` or an
//   empty reference, goes to the engine's `matchesSearchRequest`;
// - reference and token filters (`patient=`, `code=`) take their candidates from indexes kept up
//   to date on every write, keyed by the id part of each reference and by each token's code and
//   system;
// - a token filter looks up its values by the resource's codes instead of trying each of them;
// - sort keys are computed once per resource, with the engine's expression and comparison;
// - the ordered matches of a search are kept until the next write of that type, so the next page
//   of the same search is a slice; only the page is deep-copied.
// Chained and `_has` searches go to the engine unchanged. `plain: true` turns all of this off
// (the server's --plain-search flag): tests/integration/test_sandbox_search_index.py compares both.
import {
  convertToSearchableDates,
  convertToSearchableReferences,
  convertToSearchableTokens,
  deepClone,
  evalFhirPath,
  evalFhirPathTyped,
  getSearchParameters,
  matchesSearchRequest,
  Operator,
  parseFhirPath,
  splitSearchOnComma,
  toPeriod,
  toTypedValue,
} from '@medplum/core';
import { getExtraEntries, MemoryRepository } from '@medplum/fhir-router';

const EMPTY = [];
const CACHED_SEARCHES = 64;
const collator = new Intl.Collator(); // what String.prototype.localeCompare uses without arguments

// Parsed FHIRPath expressions, by source text (each search parameter's is parsed once).
const atoms = new Map();
function atom(expression) {
  let parsed = atoms.get(expression);
  if (!parsed) {
    parsed = parseFhirPath(expression);
    atoms.set(expression, parsed);
  }
  return parsed;
}

// What an expression finds in a stored resource, converted as the engine's matcher converts it
// (`kind`: references, tokens, dates or sort), computed once per resource version.
const CONVERT = {
  references: (resource, expression) =>
    convertToSearchableReferences(evalFhirPathTyped(atom(expression), [toTypedValue(resource)])),
  tokens: (resource, expression) =>
    convertToSearchableTokens(evalFhirPathTyped(atom(expression), [toTypedValue(resource)])).map((token) => ({
      system: token.system,
      value: token.value,
      lowerValue: token.value?.toLowerCase(),
      lowerSystem: token.system?.toLowerCase(),
    })),
  dates: (resource, expression) =>
    convertToSearchableDates(evalFhirPathTyped(atom(expression), [toTypedValue(resource)])),
  sort: (resource, expression) => JSON.stringify(evalFhirPath(atom(expression), resource)),
};
const derivedValues = new Map(); // kind + expression -> WeakMap(resource -> value)
// Per resource type, the (kind, expression) pairs searches have used: computed again as soon as a
// resource of that type is written, as a database updates its indexes on write, so that the first
// search after loading a large chart does not compute them all at once.
const searchedValues = new Map(); // resource type -> Map(kind + expression -> [kind, expression])
function derived(kind, expression, resource) {
  const key = `${kind} ${expression}`;
  let byResource = derivedValues.get(key);
  if (!byResource) {
    byResource = new WeakMap();
    derivedValues.set(key, byResource);
  }
  let value = byResource.get(resource);
  if (value === undefined) {
    value = CONVERT[kind](resource, expression);
    byResource.set(resource, value);
  }
  return value;
}
function searched(resourceType, kind, expression) {
  let pairs = searchedValues.get(resourceType);
  if (!pairs) {
    pairs = new Map();
    searchedValues.set(resourceType, pairs);
  }
  const key = `${kind} ${expression}`;
  if (!pairs.has(key)) pairs.set(key, [kind, expression]);
}

// The part of a reference string after its last '/': equal for a reference and any filter value
// the engine accepts for it (`Patient/1` equals `Patient/1`; `1` matches whatever ends in `/1`).
const idPart = (reference) => reference.slice(reference.lastIndexOf('/') + 1);
const isNegated = (operator) => operator === Operator.NOT_EQUALS || operator === Operator.NOT;

export class IndexedMemoryRepository extends MemoryRepository {
  constructor({ plain = false } = {}) {
    super();
    this.plain = plain;
    this.generations = new Map(); // resource type -> write counter
    this.indexes = new Map(); // resource type -> Map(param code -> KeyIndex)
    this.searches = new Map(); // cache key -> { generation, matches }, least recently used first
  }

  // -- writes: every path the engine writes through (create, update, patch, conditional create,
  // transaction entries) ends in createResourceSync; deletes and expunges below.
  createResourceSync(resource, options, update) {
    const created = super.createResourceSync(resource, options, update);
    this.touched(created.resourceType, [created.id]);
    return created;
  }

  async deleteResource(resourceType, id, options) {
    await super.deleteResource(resourceType, id, options);
    this.touched(resourceType, [id]);
  }

  async expungeResources(resourceType, ids) {
    await super.expungeResources(resourceType, ids);
    this.touched(resourceType, ids);
  }

  clear() {
    super.clear();
    this.generations.clear();
    this.indexes.clear();
    this.searches.clear();
  }

  touched(resourceType, ids) {
    this.generations.set(resourceType, (this.generations.get(resourceType) ?? 0) + 1);
    const stored = this.resources.get(resourceType);
    for (const [kind, expression] of searchedValues.get(resourceType)?.values() ?? EMPTY) {
      for (const id of ids) {
        const resource = stored?.get(id);
        try {
          if (resource) derived(kind, expression, resource);
        } catch {
          // Content the expression cannot read: the write stands; a search will meet the error.
        }
      }
    }
    for (const index of this.indexes.get(resourceType)?.values() ?? EMPTY) {
      for (const id of ids) {
        index.remove(id);
        const resource = stored?.get(id);
        if (resource) index.add(resource);
      }
    }
  }

  // -- search
  async search(searchRequest) {
    const filters = searchRequest.filters ?? EMPTY;
    if (this.plain || filters.some((f) => f.code.includes('.') || f.code.includes(':'))) {
      return super.search(searchRequest); // chained and _has filters: the engine's own path
    }
    const matches = this.matches(searchRequest);
    let page = matches;
    if (searchRequest.offset !== undefined) page = page.slice(searchRequest.offset);
    if (searchRequest.count !== undefined) page = page.slice(0, searchRequest.count);
    const entry = page.map((resource) => ({ search: { mode: 'match' }, resource: deepClone(resource) }));
    const bundle = {
      resourceType: 'Bundle',
      type: 'searchset',
      entry: entry.length ? entry : undefined,
      total: matches.length,
    };
    if ((searchRequest.include || searchRequest.revInclude) && bundle.entry?.length) {
      // As the engine does it: `total` counts the matches only.
      await getExtraEntries(this, searchRequest, bundle.entry.map((e) => e.resource), bundle.entry);
    }
    return bundle;
  }

  // The matching stored resources in the engine's order (insertion order, then each sort rule in
  // turn, stably), from the cache while no resource of the type was written since.
  matches(searchRequest) {
    const { resourceType } = searchRequest;
    const generation = this.generations.get(resourceType) ?? 0;
    const key = JSON.stringify([resourceType, searchRequest.filters ?? EMPTY, searchRequest.sortRules ?? EMPTY]);
    const cached = this.searches.get(key);
    if (cached) {
      this.searches.delete(key); // re-inserted below: most recently used last
      if (cached.generation === generation) {
        this.searches.set(key, cached);
        return cached.matches;
      }
    }
    const matches = this.match(searchRequest);
    this.searches.set(key, { generation, matches });
    if (this.searches.size > CACHED_SEARCHES) this.searches.delete(this.searches.keys().next().value);
    return matches;
  }

  match(searchRequest) {
    const { resourceType } = searchRequest;
    const params = getSearchParameters(resourceType) ?? {};
    const filters = searchRequest.filters ?? EMPTY;
    const candidates = this.candidates(resourceType, params, filters);
    // Filters decided here first (cheap once the values are computed), the engine's last.
    const tests = filters
      .map((filter, order) => ({ order, ...filterTest(resourceType, params, filter) }))
      .sort((a, b) => a.cost - b.cost || a.order - b.order)
      .map((t) => t.test);
    const matches = [];
    for (const resource of this.resources.get(resourceType)?.values() ?? EMPTY) {
      if (!candidates.every((ids) => ids.has(resource.id))) continue;
      if (resource.resourceType !== resourceType) continue;
      if (tests.every((test) => test(resource))) matches.push(resource);
    }
    return sortLikeTheEngine(matches, resourceType, params, searchRequest.sortRules ?? EMPTY);
  }

  // For each reference or token filter that has an index, the ids it can match (a superset: the
  // filter itself still decides); none means every resource of the type is looked at.
  candidates(resourceType, params, filters) {
    const sets = [];
    for (const filter of filters) {
      const param = params[filter.code];
      // Negated, `:missing`, or an empty reference (it matches resources without one): no index.
      if (filter.operator !== Operator.EQUALS || !filter.value || !param?.expression) continue;
      let keys;
      if (param.type === 'reference') {
        keys = splitSearchOnComma(filter.value).map(idPart);
      } else if (param.type === 'token') {
        keys = splitSearchOnComma(filter.value).map(tokenKey).filter((key) => key !== undefined);
      } else {
        continue;
      }
      const index = this.index(resourceType, param.type, filter.code, param.expression);
      const ids = new Set();
      for (const key of keys) {
        for (const id of index.idsByKey.get(key) ?? EMPTY) ids.add(id);
      }
      sets.push(ids);
    }
    return sets.sort((a, b) => a.size - b.size);
  }

  index(resourceType, type, code, expression) {
    let byCode = this.indexes.get(resourceType);
    if (!byCode) {
      byCode = new Map();
      this.indexes.set(resourceType, byCode);
    }
    let index = byCode.get(code);
    if (!index) {
      index = new KeyIndex(type === 'reference' ? referenceKeys(expression) : tokenKeys(expression));
      for (const resource of this.resources.get(resourceType)?.values() ?? EMPTY) index.add(resource);
      byCode.set(code, index);
    }
    return index;
  }
}

// Index keys: for a reference, its id part; for a token, its code (`v:`) and its system (`s:`),
// in lower case. A filter value is looked up by the one key every token it accepts has.
const referenceKeys = (expression) => (resource) => derived('references', expression, resource).map(idPart);
const tokenKeys = (expression) => (resource) =>
  derived('tokens', expression, resource).flatMap((token) => [`v:${token.lowerValue}`, `s:${token.lowerSystem}`]);
function tokenKey(value) {
  if (!value.includes('|')) return `v:${value.toLowerCase()}`;
  const [system, code] = value.split('|').map((s) => s.toLowerCase());
  if (code) return `v:${code}`; // `sys|code`, `|code`
  return system ? `s:${system}` : undefined; // `sys|`; `|` matches nothing
}

// Index keys of each resource of a type -> ids of those resources, kept up to date on writes.
class KeyIndex {
  constructor(keysOf) {
    this.keysOf = keysOf;
    this.idsByKey = new Map();
    this.keysById = new Map();
  }

  add(resource) {
    const keys = new Set(this.keysOf(resource));
    this.keysById.set(resource.id, keys);
    for (const key of keys) {
      let ids = this.idsByKey.get(key);
      if (!ids) {
        ids = new Set();
        this.idsByKey.set(key, ids);
      }
      ids.add(resource.id);
    }
  }

  remove(id) {
    for (const key of this.keysById.get(id) ?? EMPTY) this.idsByKey.get(key)?.delete(id);
    this.keysById.delete(id);
  }
}

// One filter as a test of a stored resource, and its cost rank (lowest first).
function filterTest(resourceType, params, filter) {
  const param = params[filter.code];
  const { operator } = filter;
  const engine = () => {
    const request = { resourceType, filters: [filter] };
    return { cost: 2, test: (resource) => matchesSearchRequest(resource, request) };
  };
  if (!param?.expression || operator === Operator.MISSING || operator === Operator.PRESENT) return engine();
  const { expression } = param;
  const values = splitSearchOnComma(filter.value);
  const negated = isNegated(operator);
  if (['reference', 'token', 'date'].includes(param.type)) searched(resourceType, `${param.type}s`, expression);
  switch (param.type) {
    case 'reference': {
      if (filter.value === '') return engine(); // decided on the typed values, not the references
      // matchesReferenceFilter
      const anyTarget = param.target?.length === 1 || filter.code === '_compartment';
      const test = (resource) => {
        const references = derived('references', expression, resource);
        for (const value of values) {
          const match = value.includes('/')
            ? references.includes(value)
            : anyTarget && references.some((reference) => reference?.endsWith('/' + value));
          if (match) return !negated;
        }
        return negated;
      };
      return { cost: 0, test };
    }
    case 'token': {
      // matchesTokenFilter, with each filter value looked up by the code (or, for `sys|`, the
      // system) a token must have for matchesTokenValue to accept it, instead of trying all.
      const byCode = new Map();
      const bySystem = new Map();
      for (const value of values) {
        let system;
        let code;
        if (value.includes('|')) {
          [system, code] = value.split('|').map((s) => s.toLowerCase());
          if (!system && !code) continue; // matches nothing
        } else {
          code = value.toLowerCase();
        }
        const [map, key] = code ? [byCode, code] : [bySystem, system];
        if (!map.has(key)) map.set(key, []);
        map.get(key).push({ system, code });
      }
      const test = (resource) => {
        for (const token of derived('tokens', expression, resource)) {
          for (const { system, code } of byCode.get(token.lowerValue) ?? EMPTY) {
            // `code`, `|code`, `sys|code` (matchesTokenValue)
            if (system === undefined || (system ? token.lowerSystem === system : !token.system)) return !negated;
          }
          if (bySystem.has(token.lowerSystem)) return !negated; // `sys|`
        }
        return negated;
      };
      return { cost: 1, test };
    }
    case 'date': {
      // matchesDateFilter and matchesDateValue
      const periods = values.map((value) => toPeriod(value));
      const test = (resource) => {
        for (const resourceValue of derived('dates', expression, resource)) {
          if (!resourceValue) continue;
          for (const period of periods) {
            if (period && matchesDate(resourceValue, operator, period)) return !negated;
          }
        }
        return negated;
      };
      return { cost: 1, test };
    }
    default:
      return engine();
  }
}

function matchesDate(resourceValue, operator, filterPeriod) {
  const resourceStart = resourceValue.start ?? '0000';
  const resourceEnd = resourceValue.end ?? '9999';
  const filterStart = filterPeriod.start;
  const filterEnd = filterPeriod.end;
  switch (operator) {
    case Operator.APPROXIMATELY:
    case Operator.EQUALS:
    case Operator.NOT_EQUALS: // negation handled by the caller
      return resourceStart < filterEnd && resourceEnd > filterStart;
    case Operator.LESS_THAN:
      return resourceStart < filterStart;
    case Operator.GREATER_THAN:
      return resourceEnd > filterEnd;
    case Operator.LESS_THAN_OR_EQUALS:
      return resourceStart <= filterEnd;
    case Operator.GREATER_THAN_OR_EQUALS:
      return resourceEnd >= filterStart;
    case Operator.STARTS_AFTER:
      return resourceStart > filterEnd;
    case Operator.ENDS_BEFORE:
      return resourceEnd < filterStart;
    default:
      return false;
  }
}

// The engine sorts by each rule in turn (a stable sort each time), comparing
// JSON.stringify(evalFhirPath(expression, resource)) with localeCompare; here each key is
// computed once per resource version instead of twice per comparison.
function sortLikeTheEngine(resources, resourceType, params, sortRules) {
  let sorted = resources;
  for (const rule of sortRules) {
    const expression = params[rule.code]?.expression;
    if (!expression) continue; // the engine's comparator answers 0: order unchanged
    searched(resourceType, 'sort', expression);
    const direction = rule.descending ? -1 : 1;
    const keyed = sorted.map((resource) => ({ resource, key: derived('sort', expression, resource) }));
    keyed.sort((a, b) => collator.compare(a.key, b.key) * direction);
    sorted = keyed.map((k) => k.resource);
  }
  return sorted;
}
