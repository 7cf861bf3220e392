"""A WoT consumer that takes a Thing Description at its word, written from
the W3C WoT Thing Description 1.1 recommendation, not from fogbank's code.

    python3 wot_consumer.py TD_URL TOKEN

It fetches the TD and checks, printing one line per finding and exiting 1
if there is any:

- the TD validates against the W3C's TD 1.1 JSON Schema
  (`wot/td-json-schema-validation.json`, from w3c/wot-thing-description,
  publication/ver11/7-resources/validation, under the W3C Software and
  Document License);
- every top-level member that is not a TD term, and every prefix of a
  compact IRI in `@type`, is defined by the `@context` (JSON-LD 1.1);
- there is no `base` taken from the request: if present, it must be the
  origin the TD was fetched from;
- each property's read form, resolved against the TD's address (RFC 3986)
  and fetched, returns its form's content type and a payload valid
  against the property's data schema (the TD's data schema terms are
  JSON Schema's; TD-only terms such as `forms` and `unit` are ignored by
  the validator).

It prints "consumed" when everything holds.
"""

import json
import os
import sys
import urllib.parse
import urllib.request

import jsonschema_rs

HERE = os.path.dirname(os.path.abspath(__file__))
TD_CONTEXT = "https://www.w3.org/2022/wot/td/v1.1"


def fetch(url, token):
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.headers.get_content_type(), response.read()


def context_terms(context):
    """Terms and prefixes the TD's own context defines (beyond the TD's)."""
    entries = context if isinstance(context, list) else [context]
    terms = {}
    for entry in entries:
        if isinstance(entry, dict):
            terms.update(entry)
    return terms


def main():
    td_url, token = sys.argv[1], sys.argv[2]
    findings = []

    content_type, body = fetch(td_url, token)
    if content_type != "application/td+json":
        findings.append(f"TD served as {content_type}")
    td = json.loads(body)

    with open(os.path.join(HERE, "wot", "td-json-schema-validation.json")) as f:
        schema = json.load(f)
    for error in jsonschema_rs.validator_for(schema).iter_errors(td):
        findings.append(f"TD 1.1 schema: {error.message} at {list(error.instance_path)}")

    context = td.get("@context", [])
    contexts = context if isinstance(context, list) else [context]
    if TD_CONTEXT not in contexts:
        findings.append("the @context does not name TD 1.1")
    defined = context_terms(context)
    td_terms = set(schema["properties"])
    for member in td:
        if member not in td_terms and member not in defined:
            findings.append(f"top-level member {member!r} is not defined by the @context")
    types = td.get("@type", [])
    for kind in types if isinstance(types, list) else [types]:
        prefix, colon, _ = kind.partition(":")
        if not colon:
            if kind not in defined:
                findings.append(f"@type {kind!r} is a bare word the @context does not define")
        elif prefix not in defined and not kind.startswith(("http:", "https:", "urn:")):
            findings.append(f"@type {kind!r} uses a prefix the @context does not define")

    origin = "{0.scheme}://{0.netloc}".format(urllib.parse.urlsplit(td_url))
    if "base" in td and td["base"].rstrip("/") != origin:
        findings.append(f"base {td['base']!r} is not where the TD came from ({origin})")
    base = td.get("base", td_url)

    for name, prop in td.get("properties", {}).items():
        data_schema = {k: v for k, v in prop.items() if k != "forms"}
        validator = jsonschema_rs.Draft7Validator(data_schema)
        for form in prop.get("forms", []):
            ops = form.get("op", ["readproperty", "writeproperty"])
            if "readproperty" not in (ops if isinstance(ops, list) else [ops]):
                continue
            url = urllib.parse.urljoin(base, form["href"])
            got_type, payload = fetch(url, token)
            expected_type = form.get("contentType", "application/json")
            if got_type != expected_type:
                findings.append(f"{name}: {url} answered {got_type}, the form says {expected_type}")
                continue
            value = json.loads(payload)
            for error in validator.iter_errors(value):
                findings.append(f"{name}: {json.dumps(value)} does not fit its schema: {error.message}")

    for finding in findings:
        print(finding)
    if findings:
        sys.exit(1)
    print("consumed")


if __name__ == "__main__":
    main()
