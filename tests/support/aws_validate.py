#!/usr/bin/env python3
"""Validates AWS IoT request bodies against botocore's own service model (iot 2015-05-28).

stdin: a JSON list of {"operation": "RegisterCACertificate", "params": {...}, "label": "..."}.
stdout: a JSON list of {"label", "operation", "errors": [...]} — an empty errors list is valid.

botocore's ParamValidator checks member names, required members, types and minimum lengths;
it does not enforce maximum lengths, patterns or enums, so those are checked here from the
same shape metadata (patterns using Java-only classes such as \\p{C} are skipped).
"""
import json
import re
import sys

import botocore.session
from botocore.validate import ParamValidator


def extra_checks(shape, value, path, errors):
    t = shape.type_name
    meta = shape.metadata
    if t == "structure" and isinstance(value, dict):
        for k, v in value.items():
            if k in shape.members:
                extra_checks(shape.members[k], v, f"{path}.{k}", errors)
    elif t == "list" and isinstance(value, list):
        for i, v in enumerate(value):
            extra_checks(shape.member, v, f"{path}[{i}]", errors)
    elif t == "string" and isinstance(value, str):
        if "max" in meta and len(value) > meta["max"]:
            errors.append(f"{path}: length {len(value)} > max {meta['max']}")
        if "min" in meta and len(value) < meta["min"]:
            errors.append(f"{path}: length {len(value)} < min {meta['min']}")
        if shape.enum and value not in shape.enum:
            errors.append(f"{path}: {value!r} not in {shape.enum}")
        pat = meta.get("pattern")
        if pat and "\\p{" not in pat and re.fullmatch(pat, value) is None:
            errors.append(f"{path}: {value[:40]!r} does not match {pat}")


def main():
    model = botocore.session.get_session().get_service_model("iot")
    out = []
    for req in json.load(sys.stdin):
        op = model.operation_model(req["operation"])
        shape = op.input_shape
        report = ParamValidator().validate(req["params"], shape)
        errors = [report.generate_report()] if report.has_errors() else []
        extra_checks(shape, req["params"], req["operation"], errors)
        out.append({"label": req.get("label", ""), "operation": req["operation"], "errors": errors,
                    "botocore": botocore.__version__})
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
