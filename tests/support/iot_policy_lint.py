#!/usr/bin/env python3
"""Lints AWS IoT policy documents with parliament (AWS IAM policy auditor, whose action and
resource-type database comes from AWS's Service Authorization Reference).

stdin: a JSON list of {"label", "document"} (document = the policy JSON object).
stdout: a JSON list of {"label", "findings": [...]}; empty findings = clean.

IoT policies are evaluated with their policy variables substituted, so
${iot:Connection.Thing.ThingName} is replaced by a concrete thing name before linting
(parliament does not parse IoT policy variables). The IoT-only condition key
iot:Connection.Thing.IsAttached is not in the IAM database and is the one finding ignored
(documented: https://docs.aws.amazon.com/iot/latest/developerguide/thing-policy-examples.html).
"""
import json
import sys

from parliament import analyze_policy_string

IGNORED = {("UNKNOWN_CONDITION_FOR_ACTION", "iot:Connection.Thing.IsAttached")}


def main():
    out = []
    for item in json.load(sys.stdin):
        text = json.dumps(item["document"]).replace("${iot:Connection.Thing.ThingName}", "thing-001")
        policy = analyze_policy_string(text, include_community_auditors=False)
        findings = []
        for f in policy.findings:
            detail = json.dumps(f.detail, default=str)
            if any(f.issue == i and k in detail for i, k in IGNORED):
                continue
            findings.append({"issue": f.issue, "detail": detail})
        out.append({"label": item["label"], "findings": findings})
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
