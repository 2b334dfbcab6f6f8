#!/usr/bin/env python3
"""Validates `certfab --json station` output against docs/station-events.schema.json with the
jsonschema package (hsm-fixtures/setup-host.sh installs it), so the documented event format and
the events certfab prints cannot drift apart (run by tests/it/station.rs).

    station_events.py SCHEMA < EVENTS.jsonl

Also checks the order the schema's description promises: started first, summary after every
device, manifest last (a run refused at start-up prints no event at all). Prints the number of events per kind as JSON; exits 1 naming the first
line that does not fit.
"""
import json
import sys

from jsonschema import Draft202012Validator


def main():
    with open(sys.argv[1], encoding="utf-8") as f:
        schema = json.load(f)
    Draft202012Validator.check_schema(schema)
    validator = Draft202012Validator(schema)
    kinds = []
    for n, line in enumerate(sys.stdin, 1):
        try:
            event = json.loads(line)
        except ValueError as e:
            sys.exit(f"line {n}: not JSON ({e}): {line[:200]!r}")
        if not validator.is_valid(event):
            kind = event.get("event") if isinstance(event, dict) else None
            if kind in schema["$defs"]:
                # The branch for this event's kind says what is wrong (oneOf names them all).
                branch = Draft202012Validator({"$ref": f"#/$defs/{kind}", "$defs": schema["$defs"]})
                errors = list(branch.iter_errors(event))
            else:
                errors = list(validator.iter_errors(event))
            detail = "; ".join(f"{'/'.join(map(str, e.absolute_path)) or '(event)'}: {e.message}"
                               for e in errors)
            sys.exit(f"line {n}: {kind!r} event does not fit the schema: {detail}\n"
                     f"  {line.strip()[:400]}")
        kinds.append(event["event"])
    if kinds and kinds[0] != "started":
        sys.exit(f"the first event is {kinds[:1]}, not started")
    if "summary" in kinds:
        s = kinds.index("summary")
        if "device" in kinds[s:] or kinds[s + 1:] not in ([], ["manifest"]):
            sys.exit(f"events after the summary: {kinds[s + 1:]}")
    print(json.dumps({k: kinds.count(k) for k in sorted(set(kinds))}))


if __name__ == "__main__":
    main()
