"""A Kubernetes API server test double for namespaced custom objects, over HTTP on 127.0.0.1.

No API server can run on a test machine, so this double serves the REST calls the official
`kubernetes` client makes for custom objects, with the semantics of the real server (checked
against the Kubernetes API concepts, https://kubernetes.io/docs/reference/using-api/api-concepts/,
and the client's own generated documentation of `fieldValidation`):

- `GET|PUT|PATCH /apis/{group}/{version}/namespaces/{ns}/{plural}/{name}`,
  `GET|POST /apis/{group}/{version}/namespaces/{ns}/{plural}` (list, create).
- resourceVersion: one counter for the whole store (like etcd's revision); every write gives
  the written object the next value. A PUT without `metadata.resourceVersion` is 422 Invalid
  ("must be specified for an update": custom resources allow no unconditional update); a PUT,
  or a PATCH that carries one, whose resourceVersion is not the stored one is 409 Conflict;
  both checks come before validation, in the order of the apiserver's generic registry
  (k8s.io/apiserver/pkg/registry/generic/registry/store.go, Update).
  `metadata.generation` grows when anything but metadata and status changes; a PUT to the
  main resource keeps the stored `status` (status is a subresource).
- PATCH takes `application/merge-patch+json` (RFC 7386, what the client sends for a dict).
- Field validation (`?fieldValidation=`): Strict answers 400 BadRequest `strict decoding error:
  unknown field "spec..."`; Warn (the server's default since 1.23) and Ignore drop unknown
  fields, Warn with a `Warning: 299` header per field.
- The objects written are checked against the CRD schemas of VirtualService and
  DestinationRule (networking.istio.io/v1, from istio/api kubernetes/customresourcedefinitions.gen.yaml)
  and HTTPRoute (gateway.networking.k8s.io/v1, standard channel, from kubernetes-sigs/gateway-api
  config/crd/standard): types, enums, patterns, bounds, list sizes, required fields, the
  CRDs' defaults (applied on write, so they read back) and their CEL rules for the parts
  llm-release writes, re-expressed as Python predicates. Violations answer 422 Invalid with
  one cause per field. Sub-objects llm-release never writes (retries, timeouts, CORS, traffic
  policies...) are accepted without a look inside. Istio's validating webhook (istiod) is not
  modelled: a real cluster would run it too.
- Errors are `Status` objects (kind Status, status Failure, reason, message, code, details);
  a request without the bearer token is 401 Unauthorized.

For tests: `edit_between_get_and_put()` makes another client write an object right after our
next GET of it (so our PUT is stale), `forbid()` denies a verb (RBAC, 403), `count()` counts
requests, `stored()` reads an object as the store holds it, `violations()` lists what the
schemas would refuse in an object.
"""

from __future__ import annotations

import copy
import json
import re
import threading
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from urllib.parse import parse_qs, urlsplit

from tests.doubles._http import DoubleHandler, ThreadedDouble

_ABSENT = object()


# -- a small structural schema ------------------------------------------------------------------
@dataclass(frozen=True)
class Schema:
    """One node of an OpenAPI v3 structural schema, as a CRD declares it. `type` None accepts
    any value unchecked; `rules` stand for the CRD's x-kubernetes-validations (CEL)."""

    type: str | None = None
    properties: dict = field(default_factory=dict)
    required: tuple = ()
    additional: Schema | None = None  # schema of the values of a map (additionalProperties)
    items: Schema | None = None
    min_items: int | None = None
    max_items: int | None = None
    map_key: str | None = None  # x-kubernetes-list-type: map, keyed by this field
    enum: tuple | None = None
    pattern: str | None = None
    min_length: int | None = None
    max_length: int | None = None
    minimum: int | float | None = None
    maximum: int | float | None = None
    default: object = _ABSENT
    rules: tuple = ()  # (predicate(value) -> bool, message)


def _obj(properties=None, required=(), *, additional=None, default=_ABSENT, rules=()) -> Schema:
    return Schema("object", properties or {}, tuple(required), additional, default=default, rules=tuple(rules))


def _arr(items, *, min_items=None, max_items=None, map_key=None, default=_ABSENT, rules=()) -> Schema:
    return Schema("array", items=items, min_items=min_items, max_items=max_items, map_key=map_key,
                  default=default, rules=tuple(rules))


def _str(*, enum=None, pattern=None, min_length=None, max_length=None, default=_ABSENT) -> Schema:
    return Schema("string", enum=tuple(enum) if enum else None, pattern=pattern, min_length=min_length,
                  max_length=max_length, default=default)


def _int(minimum=None, maximum=None, *, default=_ABSENT) -> Schema:
    return Schema("integer", minimum=minimum, maximum=maximum, default=default)


ANY = Schema()
NUMBER = Schema("number")
BOOLEAN = Schema("boolean")
INT32 = _int(-2**31, 2**31 - 1)
UINT32 = _int(0, 4294967295)

_TYPES = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
}


def _json_type(value) -> str:
    for name in ("boolean", "integer", "number", "string", "array", "object"):
        if _TYPES[name](value):
            return name
    return "null"


class _Checker:
    """Prunes unknown fields (recording them), applies defaults, and collects violations, in the
    order the API server does: decoding first, then defaulting, then validation."""

    def __init__(self):
        self.unknown: list[str] = []
        self.errors: list[tuple[str, str]] = []  # (field path, message)

    def check(self, schema: Schema, value, path: str):
        if schema.type is None:
            return value
        if not _TYPES[schema.type](value):
            self.errors.append((path, f"Invalid value: {json.dumps(value)}: {path} in body must be of type "
                                      f"{schema.type}: \"{_json_type(value)}\""))
            return value
        if schema.type == "object":
            value = self._object(schema, value, path)
        elif schema.type == "array":
            value = self._array(schema, value, path)
        else:
            self._scalar(schema, value, path)
        for predicate, message in schema.rules:
            if not self._holds(predicate, value):
                self.errors.append((path, f"Invalid value: \"{schema.type}\": {message}"))
        return value

    @staticmethod
    def _holds(predicate, value) -> bool:
        """A rule over a value whose own fields are broken is not judged: the schema errors
        already name what is missing or mistyped."""
        try:
            return predicate(value)
        except (KeyError, TypeError, AttributeError):
            return True

    def _object(self, schema: Schema, value: dict, path: str) -> dict:
        out = {}
        for key, item in value.items():
            child = f"{path}.{key}" if path else key
            sub = schema.properties.get(key, schema.additional)
            if sub is None:
                self.unknown.append(child)
            elif item is not None:  # a null is dropped, as if absent (structural schemas)
                out[key] = self.check(sub, item, child)
        for key, sub in schema.properties.items():
            if key not in out and sub.default is not _ABSENT:
                out[key] = self.check(sub, copy.deepcopy(sub.default), f"{path}.{key}" if path else key)
        for key in schema.required:
            if key not in out:
                self.errors.append((f"{path}.{key}" if path else key, "Required value"))
        return out

    def _array(self, schema: Schema, value: list, path: str) -> list:
        out = [self.check(schema.items, item, f"{path}[{i}]") for i, item in enumerate(value)]
        if schema.max_items is not None and len(out) > schema.max_items:
            self.errors.append((path, f"Too many: {len(out)}: must have at most {schema.max_items} items"))
        if schema.min_items is not None and len(out) < schema.min_items:
            self.errors.append((path, f"Invalid value: {len(out)}: {path} in body should have at least "
                                      f"{schema.min_items} items"))
        if schema.map_key:
            seen = set()
            for i, item in enumerate(out):
                key = item.get(schema.map_key) if isinstance(item, dict) else None
                if key in seen:
                    self.errors.append((f"{path}[{i}]", f"Duplicate value: {json.dumps({schema.map_key: key})}"))
                seen.add(key)
        return out

    def _scalar(self, schema: Schema, value, path: str) -> None:
        shown = json.dumps(value)
        if schema.enum is not None and value not in schema.enum:
            supported = ", ".join(json.dumps(e) for e in schema.enum)
            self.errors.append((path, f"Unsupported value: {shown}: supported values: {supported}"))
        if schema.max_length is not None and len(value) > schema.max_length:
            self.errors.append((path, f"Too long: may not be more than {schema.max_length} bytes"))
        if schema.min_length is not None and len(value) < schema.min_length:
            self.errors.append((path, f"Invalid value: {shown}: {path} in body should be at least "
                                      f"{schema.min_length} chars long"))
        if schema.pattern is not None and not re.search(schema.pattern, value):
            self.errors.append((path, f"Invalid value: {shown}: {path} in body should match '{schema.pattern}'"))
        if schema.minimum is not None and value < schema.minimum:
            self.errors.append((path, f"Invalid value: {shown}: {path} in body should be greater than or equal "
                                      f"to {schema.minimum}"))
        if schema.maximum is not None and value > schema.maximum:
            self.errors.append((path, f"Invalid value: {shown}: {path} in body should be less than or equal "
                                      f"to {schema.maximum}"))


def _custom_resource(spec: Schema, *, spec_required: bool = False) -> Schema:
    return _obj({"apiVersion": _str(), "kind": _str(), "metadata": ANY, "spec": spec, "status": ANY},
                required=("spec",) if spec_required else ())


# -- Istio networking.istio.io/v1 -----------------------------------------------------------------
def _at_most_one(*keys):
    return lambda value: sum(k in value for k in keys) <= 1


_STRING_MATCH = _obj({"exact": _str(), "prefix": _str(), "regex": _str()},
                     rules=[(_at_most_one("exact", "prefix", "regex"), "must validate one and only one schema (oneOf)")])
_PERCENT = _obj({"value": NUMBER})
_DESTINATION = _obj({"host": _str(), "subset": _str(), "port": _obj({"number": UINT32})}, required=["host"])
_HTTP_MATCH = _obj({
    "name": _str(), "uri": _STRING_MATCH, "scheme": _STRING_MATCH, "method": _STRING_MATCH,
    "authority": _STRING_MATCH, "headers": _obj(additional=_STRING_MATCH), "port": UINT32,
    "sourceLabels": _obj(additional=_str()), "gateways": _arr(_str()), "queryParams": _obj(additional=_STRING_MATCH),
    "ignoreUriCase": BOOLEAN, "withoutHeaders": _obj(additional=_STRING_MATCH), "sourceNamespace": _str(),
    "statPrefix": _str(),
})
_HTTP_ROUTE = _obj({
    "name": _str(), "match": _arr(_HTTP_MATCH),
    "route": _arr(_obj({"destination": _DESTINATION, "weight": INT32, "headers": ANY}, required=["destination"])),
    "redirect": ANY, "directResponse": ANY, "delegate": ANY,
    "rewrite": _obj({"uri": _str(), "authority": _str(), "uriRegexRewrite": _obj({"match": _str(), "rewrite": _str()})}),
    "timeout": _str(), "retries": ANY, "fault": ANY,
    "mirror": _DESTINATION,
    "mirrors": _arr(_obj({"destination": _DESTINATION, "percentage": _PERCENT}, required=["destination"])),
    "mirrorPercentage": _PERCENT, "mirrorPercent": UINT32, "mirror_percent": UINT32,
    "corsPolicy": ANY, "headers": ANY,
})
VIRTUAL_SERVICE = _custom_resource(_obj({
    "hosts": _arr(_str()), "gateways": _arr(_str()), "exportTo": _arr(_str()), "http": _arr(_HTTP_ROUTE),
    "tcp": ANY, "tls": ANY,
}))
DESTINATION_RULE = _custom_resource(_obj({
    "host": _str(), "trafficPolicy": ANY, "exportTo": _arr(_str()), "workloadSelector": ANY,
    "subsets": _arr(_obj({"name": _str(), "labels": _obj(additional=_str()), "trafficPolicy": ANY}, required=["name"])),
}, required=["host"]))


# -- Gateway API gateway.networking.k8s.io/v1 (standard channel) -------------------------------------
_DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
_GROUP = r"^$|^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
_KIND = r"^[a-zA-Z]([-a-zA-Z0-9]*[a-zA-Z0-9])?$"
_NAMESPACE = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
_HEADER_NAME = r"^[A-Za-z0-9!#$%&'*+\-.^_`|~]+$"
_PATH_CHARS = re.compile(r"^(?:[-A-Za-z0-9/._~!$&'()*+,;=:@]|[%][0-9a-fA-F]{2})+$")
_PORT = _int(1, 65535)


def _backend_object_ref(*, with_weight: bool) -> Schema:
    """BackendObjectReference (mirror target) and, with a weight, HTTPBackendRef."""
    properties = {"group": _str(pattern=_GROUP, max_length=253, default=""),
                  "kind": _str(pattern=_KIND, min_length=1, max_length=63, default="Service"),
                  "name": _str(min_length=1, max_length=253),
                  "namespace": _str(pattern=_NAMESPACE, min_length=1, max_length=63), "port": _PORT}
    if with_weight:
        properties |= {"weight": _int(0, 1000000, default=1), "filters": ANY}
    service_needs_port = (lambda ref: ref.get("group") != "" or ref.get("kind") != "Service" or "port" in ref,
                          "Must have port for Service reference")
    return _obj(properties, required=["name"], rules=[service_needs_port])


def _exact_or_prefix(check):
    return lambda path: path.get("type") not in ("Exact", "PathPrefix") or check(path.get("value", ""))


_ABS = "when type one of ['Exact', 'PathPrefix']"
_PATH_MATCH = _obj({
    "type": _str(enum=("Exact", "PathPrefix", "RegularExpression"), default="PathPrefix"),
    "value": _str(max_length=1024, default="/"),
}, default={"type": "PathPrefix", "value": "/"}, rules=[
    (_exact_or_prefix(lambda v: v.startswith("/")), f"value must be an absolute path and start with '/' {_ABS}"),
    *[(_exact_or_prefix(lambda v, bad=bad: bad not in v), f"must not contain '{bad}' {_ABS}")
      for bad in ("//", "/./", "/../", "%2f", "%2F", "#")],
    *[(_exact_or_prefix(lambda v, end=end: not v.endswith(end)), f"must not end with '{end}' {_ABS}")
      for end in ("/..", "/.")],
    (_exact_or_prefix(lambda v: bool(_PATH_CHARS.match(v))),
     f"must only contain valid characters (matching {_PATH_CHARS.pattern}) for types ['Exact', 'PathPrefix']"),
])
_HEADER_MATCH = _obj({"type": _str(enum=("Exact", "RegularExpression"), default="Exact"),
                      "name": _str(pattern=_HEADER_NAME, min_length=1, max_length=256),
                      "value": _str(min_length=1, max_length=4096)}, required=["name", "value"])
_HTTP_ROUTE_MATCH = _obj({
    "path": _PATH_MATCH, "headers": _arr(_HEADER_MATCH, max_items=16, map_key="name"), "queryParams": ANY,
    "method": _str(enum=("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH")),
})
_FRACTION = _obj({"numerator": _int(0, 2**31 - 1), "denominator": _int(1, 2**31 - 1, default=100)},
                 required=["numerator"],
                 rules=[(lambda f: f["numerator"] <= f["denominator"],
                         "numerator must be less than or equal to denominator")])
_REQUEST_MIRROR = _obj({"backendRef": _backend_object_ref(with_weight=False), "percent": _int(0, 100),
                        "fraction": _FRACTION}, required=["backendRef"],
                       rules=[(lambda m: not ("percent" in m and "fraction" in m),
                               "Only one of percent or fraction may be specified in HTTPRequestMirrorFilter")])
_REWRITE_TYPES = ("ReplaceFullPath", "ReplacePrefixMatch")
_URL_REWRITE = _obj({"hostname": _str(pattern=_DNS_SUBDOMAIN, min_length=1, max_length=253), "path": _obj({
    "type": _str(enum=_REWRITE_TYPES), "replaceFullPath": _str(max_length=1024),
    "replacePrefixMatch": _str(max_length=1024),
}, required=["type"], rules=[
    rule for kind, key in zip(_REWRITE_TYPES, ("replaceFullPath", "replacePrefixMatch")) for rule in (
        (lambda p, kind=kind, key=key: p["type"] != kind or key in p,
         f"{key} must be specified when type is set to '{kind}'"),
        (lambda p, kind=kind, key=key: key not in p or p["type"] == kind, f"type must be '{kind}' when {key} is set"),
    )])})
_FILTER_MEMBERS = {"cors": "CORS", "requestHeaderModifier": "RequestHeaderModifier",
                   "responseHeaderModifier": "ResponseHeaderModifier", "requestMirror": "RequestMirror",
                   "requestRedirect": "RequestRedirect", "urlRewrite": "URLRewrite", "extensionRef": "ExtensionRef"}
_FILTER = _obj({"type": _str(enum=tuple(_FILTER_MEMBERS.values())), "requestMirror": _REQUEST_MIRROR,
                "urlRewrite": _URL_REWRITE, "cors": ANY, "requestHeaderModifier": ANY, "responseHeaderModifier": ANY,
                "requestRedirect": ANY, "extensionRef": ANY}, required=["type"], rules=[
    rule for member, kind in _FILTER_MEMBERS.items() for rule in (
        (lambda f, m=member, k=kind: not (m in f and f["type"] != k),
         f"filter.{member} must be nil if the filter.type is not {kind}"),
        (lambda f, m=member, k=kind: not (m not in f and f["type"] == k),
         f"filter.{member} must be specified for {kind} filter.type"),
    )])
_UNREPEATABLE = ("CORS", "RequestHeaderModifier", "ResponseHeaderModifier", "RequestRedirect", "URLRewrite")


def _prefix_rewrite_has_one_prefix_match(rule: dict) -> bool:
    rewrites = [f for f in rule.get("filters", [])
                if f.get("urlRewrite", {}).get("path", {}).get("type") == "ReplacePrefixMatch"]
    matches = rule.get("matches", [])
    return not rewrites or (len(matches) == 1 and matches[0].get("path", {}).get("type") == "PathPrefix")


_HTTP_ROUTE_RULE = _obj({
    "name": _str(pattern=_DNS_SUBDOMAIN, min_length=1, max_length=253),
    "matches": _arr(_HTTP_ROUTE_MATCH, max_items=64, default=[{"path": {"type": "PathPrefix", "value": "/"}}]),
    "filters": _arr(_FILTER, max_items=16, rules=[
        *[(lambda fs, k=kind: sum(f["type"] == k for f in fs) <= 1, f"{kind} filter cannot be repeated")
          for kind in _UNREPEATABLE],
        (lambda fs: not ({"RequestRedirect", "URLRewrite"} <= {f["type"] for f in fs}),
         "May specify either httpRouteFilterRequestRedirect or httpRouteFilterRequestRewrite, but not both"),
    ]),
    "backendRefs": _arr(_backend_object_ref(with_weight=True), max_items=16),
    "timeouts": ANY,
}, rules=[
    (lambda r: not (r.get("backendRefs") and any(f["type"] == "RequestRedirect" for f in r.get("filters", []))),
     "RequestRedirect filter must not be used together with backendRefs"),
    (_prefix_rewrite_has_one_prefix_match,
     "When using URLRewrite filter with path.replacePrefixMatch, exactly one PathPrefix match must be specified"),
])
_PARENT_REF = _obj({
    "group": _str(pattern=_GROUP, max_length=253, default="gateway.networking.k8s.io"),
    "kind": _str(pattern=_KIND, min_length=1, max_length=63, default="Gateway"),
    "namespace": _str(pattern=_NAMESPACE, min_length=1, max_length=63), "name": _str(min_length=1, max_length=253),
    "sectionName": _str(pattern=_DNS_SUBDOMAIN, min_length=1, max_length=253), "port": _PORT,
}, required=["name"])
HTTP_ROUTE = _custom_resource(_obj({
    "parentRefs": _arr(_PARENT_REF, max_items=32),
    "hostnames": _arr(_str(pattern=r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$",
                           min_length=1, max_length=253), max_items=16),
    "rules": _arr(_HTTP_ROUTE_RULE, min_items=1, max_items=16,
                  default=[{"matches": [{"path": {"type": "PathPrefix", "value": "/"}}]}],
                  rules=[(lambda rules: sum(len(r.get("matches", [])) for r in rules) <= 128,
                          "While 16 rules and 64 matches per rule are allowed, the total number of matches "
                          "across all rules in a route must be less than 128")]),
}), spec_required=True)


@dataclass(frozen=True)
class Resource:
    group: str
    version: str
    plural: str
    kind: str
    schema: Schema

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}"

    @property
    def qualified(self) -> str:
        return f"{self.plural}.{self.group}"


RESOURCES = {(r.group, r.version, r.plural): r for r in (
    Resource("networking.istio.io", "v1", "virtualservices", "VirtualService", VIRTUAL_SERVICE),
    Resource("networking.istio.io", "v1", "destinationrules", "DestinationRule", DESTINATION_RULE),
    Resource("gateway.networking.k8s.io", "v1", "httproutes", "HTTPRoute", HTTP_ROUTE),
)}


# -- the server ------------------------------------------------------------------------------------------
class _StatusError(Exception):
    """An API error, answered as a Kubernetes Status object."""

    def __init__(self, code: int, reason: str, message: str, details: dict | None = None):
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details

    def status(self) -> dict:
        doc = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": self.message, "reason": self.reason, "code": self.code}
        if self.details:
            doc["details"] = self.details
        return doc


@dataclass
class _Edit:
    plural: str
    name: str
    change: object  # callable(obj) that mutates the stored object
    remaining: int


def _merge_patch(target, patch):
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = _merge_patch(out.get(key), value)
    return out


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class KubernetesApiDouble(ThreadedDouble):
    """Serves the custom objects in RESOURCES at `url`; requests need `Bearer <token>`."""

    def __init__(self, *, token: str = "test-token", user: str = "system:serviceaccount:llm-release:router"):
        self.token = token
        self.user = user
        self.requests: list[tuple[str, str]] = []  # (method, path) in arrival order
        self._objects: dict[tuple[str, str, str, str], dict] = {}  # (group, plural, namespace, name)
        self._revision = 1000
        self._edits: list[_Edit] = []
        self._forbidden: set[tuple[str, str]] = set()  # (verb, plural)
        self._lock = threading.Lock()

    # -- lifecycle ----------------------------------------------------------------------------------------
    thread_name = "kubernetes-api-double"

    @property
    def handler(self):
        return _Handler

    # -- test controls --------------------------------------------------------------------------------------
    def edit_between_get_and_put(self, plural: str, name: str, change, times: int = 1) -> None:
        """Right after each of the next `times` GETs of the object, another client changes it
        (`change(obj)` mutates it) and the write bumps its resourceVersion, as a concurrent
        `kubectl edit` would: a PUT built from that GET is then stale."""
        with self._lock:
            self._edits.append(_Edit(plural, name, change, times))

    def forbid(self, verb: str, plural: str) -> None:
        """RBAC denies `verb` (get, list, create, update, patch) on `plural`: 403 Forbidden."""
        with self._lock:
            self._forbidden.add((verb, plural))

    def count(self, method: str | None = None, plural: str | None = None) -> int:
        with self._lock:
            return sum(1 for m, path in self.requests
                       if (method is None or m == method.upper()) and (plural is None or f"/{plural}" in path))

    def violations(self, plural: str, obj: dict) -> list[str]:
        """What the API server would refuse in `obj` under strict field validation (empty: none)."""
        resource = next(r for r in RESOURCES.values() if r.plural == plural)
        checker = _Checker()
        checker.check(resource.schema, obj, "")
        return [f"unknown field \"{f}\"" for f in checker.unknown] + [f"{p}: {m}" for p, m in checker.errors]

    def stored(self, plural: str, namespace: str, name: str) -> dict | None:
        """The object as the store holds it (a copy), or None."""
        with self._lock:
            for (group, p, ns, n), obj in self._objects.items():
                if (p, ns, n) == (plural, namespace, name):
                    return copy.deepcopy(obj)
        return None

    # -- the API ---------------------------------------------------------------------------------------------
    def get(self, resource: Resource, namespace: str, name: str) -> dict:
        with self._lock:
            obj = copy.deepcopy(self._existing(resource, namespace, name))
            for edit in self._edits:
                if edit.remaining and (edit.plural, edit.name) == (resource.plural, name):
                    edit.remaining -= 1
                    changed = copy.deepcopy(obj)
                    edit.change(changed)
                    self._store(resource, namespace, name, changed, previous=obj)
        return obj

    def list(self, resource: Resource, namespace: str) -> dict:
        with self._lock:
            items = [copy.deepcopy(o) for (g, p, ns, _), o in sorted(self._objects.items())
                     if (g, p, ns) == (resource.group, resource.plural, namespace)]
            return {"apiVersion": resource.api_version, "kind": f"{resource.kind}List",
                    "metadata": {"resourceVersion": str(self._revision)}, "items": items}

    def create(self, resource: Resource, namespace: str, body, validation: str) -> tuple[dict, list[str]]:
        name = (body.get("metadata") or {}).get("name") if isinstance(body, dict) else None
        if not name:
            raise self._invalid(resource, "", [("metadata.name", "Required value: name or generateName is required")])
        obj, warnings, errors = self._decoded(resource, namespace, name, body, validation)
        with self._lock:
            if self._key(resource, namespace, name) in self._objects:
                raise _StatusError(409, "AlreadyExists", f"{resource.qualified} \"{name}\" already exists",
                                   {"name": name, "group": resource.group, "kind": resource.plural})
            if errors:
                raise self._invalid(resource, name, errors)
            return self._store(resource, namespace, name, obj, previous=None), warnings

    def replace(self, resource: Resource, namespace: str, name: str, body, validation: str) -> tuple[dict, list[str]]:
        """In the API server's order: decoding, the resourceVersion precondition, then validation."""
        obj, warnings, errors = self._decoded(resource, namespace, name, body, validation)
        sent = obj.get("metadata", {}).get("resourceVersion")
        with self._lock:
            current = self._existing(resource, namespace, name)
            if not sent:
                raise self._invalid(resource, name, [("metadata.resourceVersion",
                                                      "Invalid value: 0x0: must be specified for an update")])
            if sent != current["metadata"]["resourceVersion"]:
                raise self._conflict(resource, name)
            if errors:
                raise self._invalid(resource, name, errors)
            return self._store(resource, namespace, name, obj, previous=current), warnings

    def patch(self, resource: Resource, namespace: str, name: str, patch, validation: str) -> tuple[dict, list[str]]:
        """A merge patch; a resourceVersion in it is a precondition, as in a PUT."""
        if not isinstance(patch, dict):
            raise _StatusError(400, "BadRequest", "a merge patch must be a JSON object")
        with self._lock:
            current = copy.deepcopy(self._existing(resource, namespace, name))
        sent = (patch.get("metadata") or {}).get("resourceVersion") or current["metadata"]["resourceVersion"]
        obj, warnings, errors = self._decoded(resource, namespace, name, _merge_patch(current, patch), validation)
        with self._lock:
            if sent != self._existing(resource, namespace, name)["metadata"]["resourceVersion"]:
                raise self._conflict(resource, name)
            if errors:
                raise self._invalid(resource, name, errors)
            return self._store(resource, namespace, name, obj, previous=current), warnings

    # -- internals (callers hold the lock where they touch the store) ----------------------------------------------
    @staticmethod
    def _key(resource: Resource, namespace: str, name: str) -> tuple[str, str, str, str]:
        return resource.group, resource.plural, namespace, name

    def _existing(self, resource: Resource, namespace: str, name: str) -> dict:
        obj = self._objects.get(self._key(resource, namespace, name))
        if obj is None:
            raise _StatusError(404, "NotFound", f"{resource.qualified} \"{name}\" not found",
                               {"name": name, "group": resource.group, "kind": resource.plural})
        return obj

    def _decoded(self, resource: Resource, namespace: str, name: str, body,
                 validation: str) -> tuple[dict, list[str], list[tuple[str, str]]]:
        """Decode (400 on a strict unknown field), prune and default a body; return it with its
        warnings and its validation errors (which the caller raises at the server's moment)."""
        if not isinstance(body, dict):
            raise _StatusError(400, "BadRequest", "the body of the request must be a JSON object")
        if body.get("apiVersion") != resource.api_version or body.get("kind") != resource.kind:
            raise _StatusError(400, "BadRequest", f"the API version and kind in the data "
                                                  f"({body.get('apiVersion')}, {body.get('kind')}) do not match the "
                                                  f"request ({resource.api_version}, {resource.kind})")
        metadata = body.get("metadata") or {}
        if metadata.get("name") != name:
            raise _StatusError(400, "BadRequest", f"the name of the object ({metadata.get('name')}) does not match "
                                                  f"the name on the URL ({name})")
        if metadata.get("namespace", namespace) != namespace:
            raise _StatusError(400, "BadRequest", "the namespace of the provided object does not match the "
                                                  "namespace sent on the request")
        checker = _Checker()
        obj = checker.check(resource.schema, body, "")
        if checker.unknown and validation == "Strict":
            fields = ", ".join(f"unknown field \"{f}\"" for f in checker.unknown)
            raise _StatusError(400, "BadRequest", f"strict decoding error: {fields}")
        warnings = [f"unknown field \"{f}\"" for f in checker.unknown] if validation == "Warn" else []
        return obj, warnings, checker.errors

    @staticmethod
    def _invalid(resource: Resource, name: str, errors: list[tuple[str, str]]) -> _StatusError:
        causes = [{"reason": "FieldValueInvalid", "message": message, "field": path} for path, message in errors]
        listed = [f"{path}: {message}" for path, message in errors]
        summary = listed[0] if len(listed) == 1 else f"[{', '.join(listed)}]"
        return _StatusError(422, "Invalid", f"{resource.kind}.{resource.group} \"{name}\" is invalid: {summary}",
                            {"name": name, "group": resource.group, "kind": resource.kind, "causes": causes})

    @staticmethod
    def _conflict(resource: Resource, name: str) -> _StatusError:
        return _StatusError(409, "Conflict", f"Operation cannot be fulfilled on {resource.qualified} \"{name}\": the "
                                             "object has been modified; please apply your changes to the latest "
                                             "version and try again",
                            {"name": name, "group": resource.group, "kind": resource.plural})

    def _store(self, resource: Resource, namespace: str, name: str, obj: dict, *, previous: dict | None) -> dict:
        """Write with the server-owned metadata: next resourceVersion, generation, uid, status kept."""
        self._revision += 1
        metadata = dict(obj.get("metadata") or {})
        old = (previous or {}).get("metadata", {})
        content = {k: v for k, v in obj.items() if k not in ("metadata", "status")}
        old_content = {k: v for k, v in (previous or {}).items() if k not in ("metadata", "status")}
        generation = old.get("generation", 0) + (1 if previous is None or content != old_content else 0)
        metadata.update({"name": name, "namespace": namespace, "resourceVersion": str(self._revision),
                         "generation": generation, "uid": old.get("uid") or str(uuid.uuid4()),
                         "creationTimestamp": old.get("creationTimestamp") or _now()})
        stored = {"apiVersion": obj["apiVersion"], "kind": obj["kind"], "metadata": metadata, **content}
        if previous is not None and "status" in previous:
            stored["status"] = previous["status"]
        self._objects[self._key(resource, namespace, name)] = stored
        return copy.deepcopy(stored)

    def _authorize(self, authorization: str, verb: str, resource: Resource, namespace: str, name: str) -> None:
        if authorization != f"Bearer {self.token}":
            raise _StatusError(401, "Unauthorized", "Unauthorized")
        with self._lock:
            denied = (verb, resource.plural) in self._forbidden
        if denied:
            target = f" \"{name}\"" if name else ""
            raise _StatusError(403, "Forbidden", f"{resource.qualified}{target} is forbidden: User \"{self.user}\" "
                                                 f"cannot {verb} resource \"{resource.plural}\" in API group "
                                                 f"\"{resource.group}\" in the namespace \"{namespace}\"",
                               {"name": name, "group": resource.group, "kind": resource.plural})


_PATH = re.compile(r"^/apis/(?P<group>[^/]+)/(?P<version>[^/]+)/namespaces/(?P<namespace>[^/]+)/(?P<plural>[^/]+)"
                   r"(?:/(?P<name>[^/]+))?$")
_VERBS = {("GET", True): "get", ("GET", False): "list", ("POST", False): "create", ("PUT", True): "update",
          ("PATCH", True): "patch"}


class _Handler(DoubleHandler):
    server_version = "kube-apiserver (test double)"
    wbufsize = -1  # headers and body leave in one write (flushed per request): no delayed-ACK stall

    def _handle(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        url = urlsplit(self.path)
        with self.double._lock:
            self.double.requests.append((self.command, url.path))
        try:
            status, doc, warnings = self._serve(url, body)
        except _StatusError as exc:
            status, doc, warnings = exc.code, exc.status(), []
        self._json(status, doc, warnings)

    def _serve(self, url, body: bytes) -> tuple[int, dict, list[str]]:
        found = _PATH.match(url.path)
        resource = found and RESOURCES.get((found["group"], found["version"], found["plural"]))
        if not resource:
            raise _StatusError(404, "NotFound", "the server could not find the requested resource")
        name, namespace = found["name"], found["namespace"]
        verb = _VERBS.get((self.command, name is not None))
        if verb is None:
            raise _StatusError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")
        self.double._authorize(self.headers.get("Authorization", ""), verb, resource, namespace, name)
        validation = parse_qs(url.query).get("fieldValidation", ["Warn"])[0]
        if validation not in ("Strict", "Warn", "Ignore"):
            raise _StatusError(400, "BadRequest",
                               f"fieldValidation must be one of Ignore, Warn, Strict, got {validation!r}")
        if verb == "get":
            return 200, self.double.get(resource, namespace, name), []
        if verb == "list":
            return 200, self.double.list(resource, namespace), []
        if verb == "patch" and self.headers.get("Content-Type", "").split(";")[0] != "application/merge-patch+json":
            raise _StatusError(415, "UnsupportedMediaType", "the body of the request was in an unknown format - "
                                                            "accepted media types include: application/merge-patch+json")
        try:
            doc = json.loads(body or b"null")
        except ValueError as exc:
            raise _StatusError(400, "BadRequest", f"the body of the request could not be decoded: {exc}") from exc
        if verb == "create":
            return (201, *self.double.create(resource, namespace, doc, validation))
        if verb == "update":
            return (200, *self.double.replace(resource, namespace, name, doc, validation))
        return (200, *self.double.patch(resource, namespace, name, doc, validation))

    def _json(self, status: int, doc: dict, warnings: list[str]) -> None:
        payload = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for warning in warnings:
            self.send_header("Warning", f"299 - {json.dumps(warning)}")
        self.end_headers()
        self.wfile.write(payload)
