#!/usr/bin/env python3
"""The message and API schemas in schemas/, checked with real validators.

    scripts/schemas.py check    every schema against the 2020-12 meta-schema, every $ref
                                resolved, the OpenAPI document with openapi-spec-validator,
                                the AsyncAPI document's structure, the served OpenAPI
                                bundle up to date, the README's and examples' documents
                                valid, and deliberately broken documents rejected
    scripts/schemas.py bundle   rewrite Sources/HTTPAPI/OpenAPIDocument.swift, the
                                self-contained OpenAPI document GET /openapi.json serves
    scripts/schemas.py serve    validate what the integration tests see: one JSON request
                                per line on stdin, one answer per line on stdout

A `serve` request is one of
    {"message": "status-event" | "dead-letter" | "vendor-event" | "trigger-request" | "trigger-request-headers" | "status-event-headers", "instance": …}
    {"http": {"method", "path", "status", "content_type", "headers": {…}}, "body": "…text…"}
    {"openapi": "…the body GET /openapi.json answered…"}
and its answer is {"errors": [...]}: empty when the instance is valid.

Runs with the project's virtualenv (.venv/bin/python), which scripts/schemas.sh prepares.
"""
import os
import sys

if __name__ == "__main__" and sys.argv[1:2] == ["serve"]:
    # Only the pipes (0, 1) and stderr: a descriptor inherited from the test process (the
    # socket by which Foundation's Process sees another child end) must not live as long
    # as this validator does.
    os.closerange(3, os.sysconf("SC_OPEN_MAX"))

import json
import re
from pathlib import Path

from jsonschema import Draft202012Validator
from referencing import Registry, Resource

ROOT = Path(__file__).resolve().parent.parent
SCHEMAS = ROOT / "schemas"
BASE = "https://coverbase.example/trigger-worker/schemas/"
SWIFT_BUNDLE = ROOT / "Sources" / "HTTPAPI" / "OpenAPIDocument.swift"
# What a `serve` request's "message" may name: a message schema, or a part of one.
MESSAGES = {
    "vendor-event": "vendor-event.schema.json",
    "trigger-request": "trigger-request.schema.json",
    "trigger-request-headers": "trigger-request.schema.json#/$defs/headers",
    "status-event": "status-event.schema.json",
    "status-event-headers": "status-event.schema.json#/$defs/headers",
    "dead-letter": "dead-letter.schema.json",
}
# The topics of contract §2 (their default names), each a channel of the AsyncAPI document.
TOPICS = {"vendor-events", "trigger-requests", "workflow-run-status", "trigger-worker-dlq"}


def load_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def schema_files():
    return sorted(SCHEMAS.glob("*.schema.json"))


def registry():
    resources = [(load_json(p)["$id"], Resource.from_contents(load_json(p))) for p in schema_files()]
    return Registry().with_resources(resources)


class Validator:
    """One schema, checked by two implementations of JSON Schema 2020-12. In `serve`,
    jsonschema-rs (Rust, a few microseconds a message: the integration tests check
    thousands) decides, and Python's jsonschema, the reference implementation, explains
    a rejection. In `check`, both decide: a document either one rejects is invalid, and
    each broken document must be rejected by both."""

    def __init__(self, schema, reg):
        import jsonschema_rs
        schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}
        documents = {load_json(p)["$id"]: load_json(p) for p in schema_files()}
        self.fast = jsonschema_rs.validator_for(schema, retriever=lambda uri: documents[uri])
        self.reference = Draft202012Validator(schema, registry=reg, format_checker=Draft202012Validator.FORMAT_CHECKER)

    def errors(self, instance, thorough=False):
        if self.fast.is_valid(instance) and not thorough:
            return []
        explained = [describe(e) for e in sorted(self.reference.iter_errors(instance), key=lambda e: list(map(str, e.absolute_path)))]
        return explained or [f"{'/'.join(map(str, e.instance_path)) or '(root)'}: {e.message[:400]}" for e in self.fast.iter_errors(instance)]

    def rejected_by_both(self, instance):
        return not self.fast.is_valid(instance) and bool(list(self.reference.iter_errors(instance)))


def validator(schema, reg):
    return Validator(schema, reg)


def describe(error):
    where = "/".join(str(p) for p in error.absolute_path) or "(root)"
    message = error.message if len(error.message) <= 400 else error.message[:400] + "…"
    # The deepest causes of a oneOf/anyOf say more than "is not valid under any of the given schemas".
    causes = sorted({f"{'/'.join(str(p) for p in c.absolute_path) or '(root)'}: {c.message[:200]}" for c in (error.context or [])})[:6]
    return f"{where}: {message}" + (f" [{'; '.join(causes)}]" if causes else "")


def errors_of(v, instance, thorough=False):
    return v.errors(instance, thorough)


# ------------------------------------------------------------------ references

def refs_in(node, path=()):
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield path, value
            else:
                yield from refs_in(value, path + (key,))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from refs_in(value, path + (i,))


def pointer(document, fragment):
    node = document
    for part in [p for p in fragment.lstrip("/").split("/") if p != ""]:
        part = part.replace("~1", "/").replace("~0", "~")
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node


def resolve(file_name, ref):
    """(file, fragment, target) of `ref` written in `file_name`; raises KeyError when it does not resolve."""
    target_file, _, fragment = ref.partition("#")
    target_file = target_file or file_name
    document = load_json(SCHEMAS / target_file)
    return target_file, fragment, pointer(document, fragment)


# ------------------------------------------------------------------ the served OpenAPI bundle

def bundle():
    """schemas/openapi.json with every schema it references copied into components.schemas."""
    doc = load_json(SCHEMAS / "openapi.json")
    names = {}        # (file, fragment) -> component name
    components = {}

    def component_for(file_name, fragment):
        key = (file_name, fragment)
        if key in names:
            return names[key]
        if fragment.startswith("/$defs/") and fragment.count("/") == 2:
            name = fragment.split("/")[2]
        elif fragment == "":
            name = "".join(part.capitalize() for part in file_name.replace(".schema.json", "").split("-"))
        else:
            raise SystemExit(f"bundle: cannot name {file_name}#{fragment}")
        if name in components or name in {v for v in names.values()}:
            raise SystemExit(f"bundle: two schemas would be components/schemas/{name}")
        names[key] = name
        _, _, target = resolve(file_name, "#" + fragment)
        copied = json.loads(json.dumps(target))
        if fragment == "":
            for drop in ("$schema", "$id", "$defs"):
                copied.pop(drop, None)
        components[name] = None  # reserve the name before recursing (cycles)
        components[name] = rewrite(copied, file_name)
        return name

    def rewrite(node, file_name):
        if isinstance(node, dict):
            out = {}
            for key, value in node.items():
                if key == "$ref" and isinstance(value, str) and not value.startswith("#/components/"):
                    target_file, _, fragment = value.partition("#")
                    out[key] = "#/components/schemas/" + component_for(target_file or file_name, fragment)
                else:
                    out[key] = rewrite(value, file_name)
            return out
        if isinstance(node, list):
            return [rewrite(v, file_name) for v in node]
        return node

    doc["paths"] = rewrite(doc["paths"], "openapi.json")
    doc["components"] = rewrite(doc["components"], "openapi.json")
    doc["components"]["schemas"] = {k: components[k] for k in sorted(components)}
    return doc


def swift_source(doc):
    text = json.dumps(doc, indent=1, ensure_ascii=False, sort_keys=False)
    if '"""#' in text:
        raise SystemExit("bundle: the document holds the raw string's delimiter")
    return (
        "// Generated by `scripts/schemas.py bundle` from schemas/openapi.json and the schemas it\n"
        "// references. Do not edit: change schemas/ and run it again (`scripts/schemas.py check`\n"
        "// fails while this file is out of date).\n\n"
        "/// The OpenAPI 3.1 document `GET /openapi.json` serves: self-contained, every schema in\n"
        "/// `components.schemas`.\n"
        "enum OpenAPIDocument {\n"
        "    static let json = #\"\"\"\n" + text + "\n\"\"\"#\n}\n"
    )


# ------------------------------------------------------------------ HTTP answers

def operation(doc, method, path):
    """The path template and operation of `method path` in the OpenAPI document, or (None, None)."""
    candidates = []
    for template, item in doc["paths"].items():
        pattern = "^" + re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template)) + "$"
        if re.match(pattern, path) and method.lower() in item:
            literal = len(re.sub(r"\{[^/]+?\}", "", template))
            candidates.append((literal, template, item[method.lower()]))
    if not candidates:
        return None, None
    _, template, op = max(candidates)
    return template, op


class HTTPChecker:
    def __init__(self, reg):
        self.reg = reg
        self.doc = load_json(SCHEMAS / "openapi.json")
        self.validators = {}

    def schema_validator(self, schema):
        key = json.dumps(schema, sort_keys=True)
        if key not in self.validators:
            # Relative $refs of the OpenAPI document resolve against the schemas' base.
            wrapped = {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": BASE + "openapi-fragment.json", "allOf": [schema]}
            self.validators[key] = validator(wrapped, self.reg)
        return self.validators[key]

    def check(self, http, body):
        method, path, status = http["method"], http["path"].split("?")[0], str(http["status"])
        template, op = operation(self.doc, method, path)
        if op is None:
            # What no route takes is answered 404 not_found (the document's description says so).
            if status != "404":
                return [f"{method} {path}: not in schemas/openapi.json, and answered {status}, not 404"]
            if (http.get("content_type") or "").split(";")[0].strip().lower() != "application/json":
                return [f"{method} {path}: a route no one takes was answered 404 without a JSON body"]
            try:
                body_json = json.loads(body)
            except ValueError:
                return [f"{method} {path}: a route no one takes was answered 404 without a JSON body"]
            errors = errors_of(self.schema_validator({"$ref": "common.schema.json#/$defs/error"}), body_json)
            if not isinstance(body_json, dict) or not isinstance(body_json.get("detail"), dict) or body_json["detail"].get("code") != "not_found":
                errors.append(f"{method} {path}: a route no one takes was answered 404 without code not_found")
            return errors
        response = op["responses"].get(status) or op["responses"].get("default")
        if response is None:
            return [f"{method} {template}: status {status} is not documented (documented: {', '.join(op['responses'])})"]
        errors = []
        headers = {k.lower(): v for k, v in (http.get("headers") or {}).items()}
        for name, header in (response.get("headers") or {}).items():
            if "$ref" in header:
                header = pointer(self.doc, header["$ref"].lstrip("#"))
            if name.lower() in headers:
                errors += [f"header {name}: {e}" for e in errors_of(self.schema_validator(header["schema"]), headers[name.lower()])]
        content = response.get("content") or {}
        if not content:
            return errors
        media = (http.get("content_type") or "").split(";")[0].strip().lower()
        if media not in content:
            return errors + [f"{method} {template} {status}: content type '{media}' is not documented ({', '.join(content)})"]
        if media == "application/json":
            try:
                instance = json.loads(body)
            except ValueError as e:
                return errors + [f"{method} {template} {status}: the body is not JSON: {e}"]
            # not_found is what no route takes: a documented operation never answers it.
            if isinstance(instance, dict) and isinstance(instance.get("detail"), dict) and instance["detail"].get("code") == "not_found":
                errors.append(f"{method} {path}: answered 404 not_found (no route), but {method} {template} is a route")
            errors += [f"{method} {template} {status}: {e}" for e in errors_of(self.schema_validator(content[media]["schema"]), instance)]
        return errors


# ------------------------------------------------------------------ serve

def serve():
    reg = registry()
    messages = {name: validator({"$ref": BASE + ref}, reg) for name, ref in MESSAGES.items()}
    http = HTTPChecker(reg)
    expected_openapi = bundle()
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            request = json.loads(line)
            if "message" in request:
                v = messages.get(request["message"])
                errors = [f"unknown message kind {request['message']!r}"] if v is None else errors_of(v, request["instance"])
            elif "http" in request:
                errors = http.check(request["http"], request.get("body", ""))
            elif "openapi" in request:
                served = json.loads(request["openapi"])
                errors = [] if served == expected_openapi else ["GET /openapi.json differs from the bundle of schemas/ (run scripts/schemas.py bundle)"]
                errors += openapi_errors(served)
            else:
                errors = [f"unknown request: {sorted(request)}"]
        except Exception as e:  # a broken request is an answer too, never a dead validator
            errors = [f"the validator could not check this: {type(e).__name__}: {e}"]
        sys.stdout.write(json.dumps({"errors": errors}) + "\n")
        sys.stdout.flush()


# ------------------------------------------------------------------ check

def openapi_errors(doc):
    from openapi_spec_validator import OpenAPIV31SpecValidator
    return [f"openapi: {e.message[:300]} at {'/'.join(map(str, e.absolute_path))}" for e in OpenAPIV31SpecValidator(doc).iter_errors()]


def asyncapi_errors(doc):
    errors = []
    if doc.get("asyncapi") != "3.0.0":
        errors.append("asyncapi: 'asyncapi' must be '3.0.0'")
    info = doc.get("info") or {}
    if not isinstance(info.get("title"), str) or not isinstance(info.get("version"), str):
        errors.append("asyncapi: info.title and info.version are required strings")
    channels = doc.get("channels") or {}
    addresses = {c.get("address") for c in channels.values()}
    if addresses != TOPICS:
        errors.append(f"asyncapi: channel addresses {sorted(map(str, addresses))} are not the topics of §2 {sorted(TOPICS)}")
    for key, channel in channels.items():
        for mkey, message in (channel.get("messages") or {}).items():
            try:
                pointer(doc, message["$ref"].lstrip("#"))
            except (KeyError, IndexError, TypeError):
                errors.append(f"asyncapi: channels/{key}/messages/{mkey}: {message.get('$ref')} does not resolve")
    for key, op in (doc.get("operations") or {}).items():
        if op.get("action") not in ("send", "receive"):
            errors.append(f"asyncapi: operations/{key}: action must be send or receive")
        channel_ref = (op.get("channel") or {}).get("$ref", "")
        if not channel_ref.startswith("#/channels/") or channel_ref.split("/")[2] not in channels:
            errors.append(f"asyncapi: operations/{key}: channel {channel_ref!r} is not a channel")
            continue
        for m in op.get("messages") or []:
            if not m.get("$ref", "").startswith(channel_ref + "/messages/"):
                errors.append(f"asyncapi: operations/{key}: message {m.get('$ref')!r} is not one of its channel's")
    for key, message in ((doc.get("components") or {}).get("messages") or {}).items():
        for part in ("payload", "headers"):
            multi = message.get(part)
            if multi is None:
                continue
            if not str(multi.get("schemaFormat", "")).startswith("application/schema+json"):
                errors.append(f"asyncapi: components/messages/{key}/{part}: schemaFormat must be JSON Schema")
    return errors


def all_refs_errors():
    errors = []
    for path in schema_files() + [SCHEMAS / "openapi.json", SCHEMAS / "asyncapi.json"]:
        doc = load_json(path)
        for where, ref in refs_in(doc):
            if ref.startswith("#/components/") or ref.startswith("#/channels/"):
                try:
                    pointer(doc, ref.lstrip("#"))
                except (KeyError, IndexError):
                    errors.append(f"{path.name}: {ref} does not resolve")
                continue
            try:
                resolve(path.name, ref)
            except (KeyError, IndexError, FileNotFoundError):
                errors.append(f"{path.name} at {'/'.join(map(str, where))}: {ref} does not resolve")
    return errors


def yaml_documents(paths):
    from ruamel.yaml import YAML
    yaml = YAML(typ="safe", pure=True)
    for path in paths:
        with open(path, encoding="utf-8") as f:
            yield path, yaml.load(f)


def readme_examples():
    """(line, schema name, document) of each ```json block of the README; a block without a
    `<!-- schema: NAME -->` line just before it is an error (None as its name)."""
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        if lines[i].strip() == "```json":
            marker = lines[i - 1].strip() if i > 0 else ""
            m = re.fullmatch(r"<!-- schema: ([a-z-]+)(?: headers)? -->", marker)
            end = i + 1
            while end < len(lines) and lines[end].strip() != "```":
                end += 1
            yield i + 1, (m.group(1) if m else None), "\n".join(lines[i + 1:end])
            i = end
        i += 1


# Documents each schema must reject: a validator that accepts everything fails here.
NEGATIVE_CONTROLS = [
    ("status-event", {"event_id": "cbevt_" + "0" * 32, "event_type": "WorkflowRun.Exploded", "occurred_at": 1, "org_id": None, "data": {}}),
    ("status-event", {"event_id": "cbevt_" + "0" * 32, "event_type": "WorkflowRun.Started", "occurred_at": 1, "org_id": "cborg_" + "0" * 32,
                      "data": {"workflow_run_id": "cbwr_x"}}),
    ("dead-letter", {"error-code": "invalid_json", "error-message": "x", "source-topic": "t", "source-partition": "0", "source-offset": "1",
                     "authorization": "Bearer ak_live_secret"}),
    ("trigger-request", {"request_type": "assessment_create", "body": {"control_set_ids": []}}),
    ("vendor-event", {"event_id": "e", "event_type": "Vendor.Created", "occurred_at": 1, "org_id": "cborg_" + "0" * 32, "data": {"vendor": {"id": 7}}}),
]


def check():
    reg = registry()
    problems = []
    files = schema_files()
    for path in files:
        schema = load_json(path)
        try:
            Draft202012Validator.check_schema(schema)
        except Exception as e:
            problems.append(f"{path.name}: not a valid 2020-12 schema: {e}")
        if schema.get("$id") != BASE + path.name:
            problems.append(f"{path.name}: $id must be {BASE + path.name}")
    problems += all_refs_errors()

    served = bundle()
    problems += openapi_errors(served)
    if not SWIFT_BUNDLE.exists() or SWIFT_BUNDLE.read_text(encoding="utf-8") != swift_source(served):
        problems.append(f"{SWIFT_BUNDLE.relative_to(ROOT)} is out of date: run scripts/schemas.py bundle")
    problems += asyncapi_errors(load_json(SCHEMAS / "asyncapi.json"))

    # Every schema is used: a message of the AsyncAPI document, the OpenAPI document, or a file format.
    used = {r.partition("#")[0] for doc in (load_json(SCHEMAS / "openapi.json"), load_json(SCHEMAS / "asyncapi.json")) for _, r in refs_in(doc)}
    for path in files:
        if path.name not in used and path.name not in ("workflow.schema.json", "orgs.schema.json", "common.schema.json"):
            problems.append(f"{path.name} is referenced by neither schemas/openapi.json nor schemas/asyncapi.json")

    validators = {p.name.replace(".schema.json", ""): validator({"$ref": load_json(p)["$id"]}, reg) for p in files}
    counted = 0
    for line, name, text in readme_examples():
        if name not in validators:
            problems.append(f"README.md:{line}: a ```json block needs a `<!-- schema: NAME -->` line before it (NAME one of {', '.join(sorted(validators))})")
            continue
        try:
            instance = json.loads(text)
        except ValueError as e:
            problems.append(f"README.md:{line}: not JSON: {e}")
            continue
        problems += [f"README.md:{line} ({name}): {e}" for e in errors_of(validators[name], instance, thorough=True)]
        counted += 1
    if counted == 0:
        problems.append("README.md has no ```json example to validate")

    orgs = [ROOT / "examples" / "orgs.yaml", ROOT / "Tests" / "Fixtures" / "orgs.yaml", ROOT / "Tests" / "Fixtures" / "pipeline" / "orgs.yaml"]
    workflows = sorted((ROOT / "examples" / "workflows").rglob("*.yaml")) + sorted(
        p for p in (ROOT / "Tests" / "Fixtures").rglob("*.yaml") if "workflows" in p.parts and "broken-workflows" not in p.parts)
    for path, document in yaml_documents([p for p in orgs if p.exists()]):
        problems += [f"{path.relative_to(ROOT)}: {e}" for e in errors_of(validators["orgs"], document, thorough=True)]
    for path, document in yaml_documents(workflows):
        problems += [f"{path.relative_to(ROOT)}: {e}" for e in errors_of(validators["workflow"], document, thorough=True)]

    for name, instance in NEGATIVE_CONTROLS:
        if not validators[name].rejected_by_both(instance):
            problems.append(f"the validator accepted a deliberately broken {name}; its verdicts cannot be trusted")
    if not HTTPChecker(reg).check({"method": "GET", "path": "/v1/workflows/runs", "status": 200, "content_type": "application/json"}, '{"items": 1}'):
        problems.append("the validator accepted a deliberately broken run list; its verdicts cannot be trusted")

    if problems:
        for p in problems:
            print(p, file=sys.stderr)
        print(f"schemas: {len(problems)} problem(s)", file=sys.stderr)
        return 1
    print(f"schemas: OK: {len(files)} schemas (2020-12), openapi.json (3.1, openapi-spec-validator), asyncapi.json (3.0 structure), "
          f"{counted} README example(s), {len(workflows)} workflow file(s), {len(orgs)} orgs file(s); "
          f"{len(NEGATIVE_CONTROLS) + 1} broken documents rejected")
    return 0


def main(argv):
    command = argv[1] if len(argv) > 1 else "check"
    if command == "check":
        return check()
    if command == "bundle":
        SWIFT_BUNDLE.write_text(swift_source(bundle()), encoding="utf-8")
        print(f"wrote {SWIFT_BUNDLE.relative_to(ROOT)}")
        return 0
    if command == "serve":
        serve()
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
