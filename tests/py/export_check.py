#!/usr/bin/env python3
"""Independent checks of certfab's cloud export files, with each platform's own tools where
they install (run by tests/it/export_other.rs; the pip packages come from
hsm-fixtures/setup-host.sh).

    export_check.py azure DIR            DPS bodies through the DPS service SDK's msrest models
    export_check.py hono DIR             Hono bodies against the registry-shapes schema
    export_check.py peridio DIR          Peridio bodies against the SDK-derived schema
    export_check.py nrfcloud DIR         nRF Cloud CSV as nrfcloud-utils' csv dialect reads/writes it
    export_check.py microchip DIR SIGNER_PEM   JWS entries with pytrustplatform's verifier and cryptography
    export_check.py csv DIR              plain CSV rows

Prints a JSON summary on stdout; exits 1 with a message on the first violation.
"""
import base64
import copy
import csv
import glob
import hashlib
import io
import json
import os
import re
import sys

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, utils
from cryptography.x509.oid import NameOID

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(os.path.dirname(HERE), "fixtures")


def fail(msg):
    print(msg, file=sys.stderr)
    sys.exit(1)


def files(d, pattern):
    found = sorted(glob.glob(os.path.join(d, pattern)))
    if not found:
        fail(f"no {pattern} in {d}")
    return found


def cn_of(cert):
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return cns[0].value if len(cns) == 1 else None


# ---------------------------------------------------------------- Azure DPS
def azure(d):
    from msrest.serialization import Deserializer
    from provisioningserviceclient.protocol import models

    classes = {k: v for k, v in vars(models).items() if isinstance(v, type)}
    deser = Deserializer(classes)

    def strict(cls_name, data, path):
        """Every key must be one the SDK model knows (msrest ignores unknown keys)."""
        cls = classes[cls_name]
        amap = cls._attribute_map
        by_key = {v["key"]: v["type"] for v in amap.values()}
        extra_ok = any(v["key"] == "" for v in amap.values())
        for k, v in data.items():
            if k not in by_key:
                if extra_ok:
                    continue
                fail(f"{path}.{k}: not a field of the SDK model {cls_name}")
            t = by_key[k]
            if t in classes and isinstance(v, dict):
                strict(t, v, f"{path}.{k}")
            if t.startswith("[") and t[1:-1] in classes:
                for i, item in enumerate(v):
                    strict(t[1:-1], item, f"{path}.{k}[{i}]")
        for attr, rule in cls._validation.items():
            if rule.get("readonly") and amap[attr]["key"] in data:
                fail(f"{path}.{amap[attr]['key']}: read-only in {cls_name}, must not be sent")

    def model(cls_name, data, path):
        strict(cls_name, data, path)
        obj = deser(cls_name, data)
        errors = obj.validate()
        if errors:
            fail(f"{path}: {cls_name} validation: {[str(e) for e in errors]}")
        return obj

    rules = json.load(open(os.path.join(FIXTURES, "azure", "dps-rules.json")))

    def allocation(rec, path):
        """Allocation fields as the spec and the Azure CLI read them together."""
        policy = rec.get("allocationPolicy")
        custom = rec.get("customAllocationDefinition")
        if policy is not None and policy not in rules["allocationPolicies"]:
            fail(f"{path}: allocationPolicy {policy}")
        if policy == "custom":
            if not custom or any(not custom.get(k) for k in rules["customAllocationDefinitionRequired"]):
                fail(f"{path}: custom allocation needs customAllocationDefinition with webhookUrl and apiVersion")
            if custom["apiVersion"] < rules["customAllocationMinApiVersion"]:
                fail(f"{path}: customAllocationDefinition.apiVersion {custom['apiVersion']} is older than DPS accepts")
        elif custom is not None:
            fail(f"{path}: customAllocationDefinition without allocationPolicy custom")
        if policy == "static" and len(rec.get("iotHubs") or []) != rules["staticHubs"]:
            fail(f"{path}: static allocation takes exactly one IoT hub, got {rec.get('iotHubs')}")

    out = {"files": [], "registration_ids": []}
    group = os.path.join(d, "azure-dps-enrollment-group.json")
    bulk = sorted(glob.glob(os.path.join(d, "azure-dps-enrollments-*.json")))
    if not bulk and not os.path.exists(group):
        fail(f"no Azure DPS files in {d}")
    for f in bulk:
        body = json.load(open(f))
        op = model("BulkEnrollmentOperation", body, os.path.basename(f))
        if op.mode not in ("create", "update", "updateIfMatchETag", "delete"):
            fail(f"{f}: mode {op.mode}")
        if not 1 <= len(op.enrollments) <= 10:
            fail(f"{f}: {len(op.enrollments)} enrollments; DPS takes 1 to 10 per bulk call")
        for raw_e in body["enrollments"]:
            rid = raw_e.get("registrationId", "")
            allocation(raw_e, f"{os.path.basename(f)} {rid}")
            if not re.match(rules["registrationId"]["pattern"], rid) or \
                    len(rid) > rules["registrationId"]["maxLengthX509"]:
                fail(f"{f}: registrationId {rid!r} is not a DPS X.509 registration id "
                     f"({rules['registrationId']['pattern']}, at most {rules['registrationId']['maxLengthX509']})")
        for e in op.enrollments:
            if e.attestation.type != "x509":
                fail(f"{f}: attestation type {e.attestation.type}")
            if e.provisioning_status not in ("enabled", "disabled"):
                fail(f"{f}: provisioningStatus {e.provisioning_status}")
            pem = e.attestation.x509.client_certificates.primary.certificate
            cert = x509.load_pem_x509_certificate(pem.encode())
            if cn_of(cert) != e.registration_id:
                fail(f"{f}: registrationId {e.registration_id} != certificate CN {cn_of(cert)}")
            out["registration_ids"].append(e.registration_id)
        out["files"].append({"name": os.path.basename(f), "enrollments": len(op.enrollments)})
    if os.path.exists(group):
        allocation(json.load(open(group)), "group")
        g = model("EnrollmentGroup", json.load(open(group)), "group")
        x = g.attestation.x509
        if x.signing_certificates is not None:
            pem = x.signing_certificates.primary.certificate
            ca = x509.load_pem_x509_certificate(pem.encode())
            out["group_ca_subject"] = ca.subject.rfc4514_string()
        else:
            out["group_ca_reference"] = x.ca_references.primary
        out["group_id"] = g.enrollment_group_id
    print(json.dumps(out))


# ---------------------------------------------------------------- Hono
def hono(d):
    import jsonschema

    schema = json.load(open(os.path.join(FIXTURES, "hono", "registry-shapes.schema.json")))
    checker = jsonschema.Draft202012Validator.FORMAT_CHECKER

    def validate(defn, data, path):
        s = dict(schema)
        s["$ref"] = f"#/$defs/{defn}"
        v = jsonschema.Draft202012Validator(s, format_checker=checker)
        errs = sorted(v.iter_errors(data), key=lambda e: list(e.path))
        if errs:
            fail(f"{path}: not a Hono {defn}: {errs[0].message} at {list(errs[0].path)}")
        for dt in _datetimes(data):
            # RFC 3339 date-time, as Hono parses it (jsonschema checks the format only when
            # an RFC 3339 library is installed, so check the shape here too).
            import datetime
            try:
                datetime.datetime.fromisoformat(dt.replace("Z", "+00:00"))
            except ValueError:
                fail(f"{path}: {dt!r} is not an RFC 3339 date-time")

    out = {"devices": []}
    tenant = json.load(open(os.path.join(d, "hono-tenant.json")))
    validate("Tenant", tenant, "hono-tenant.json")
    ca = tenant["trusted-ca"][0]
    known = schema["$defs"]["Placeholders"]["enum"]
    for key in ("auth-id-template", "auto-provisioning-device-id-template"):
        if key in ca:
            # IdentityTemplate.checkValidity: `\{\{(.*?)\}\}`, at least one, all supported.
            found = ["{{%s}}" % m for m in re.findall(r"\{\{(.*?)\}\}", ca[key])]
            if not found or any(p not in known for p in found):
                fail(f"trusted-ca {key} {ca[key]!r}: Hono accepts only the placeholders {known}")
    for k in ("subject-dn", "public-key", "not-before", "not-after"):
        if k not in ca:
            fail(f"trusted-ca lacks {k}")
    out["trusted_ca"] = ca
    for f in files(d, "hono-devices-*.jsonl"):
        for n, line in enumerate(open(f), 1):
            rec = json.loads(line)
            where = f"{os.path.basename(f)}:{n}"
            validate("TenantId", rec["tenant-id"], where + " tenant-id")
            validate("DeviceId", rec["device-id"], where + " device-id")
            validate("Device", rec["device"], where + " device")
            validate("CredentialsSet", rec["credentials"], where + " credentials")
            c = rec["credentials"][0]
            if c["type"] != "x509-cert":
                fail(f"{where}: credential type {c['type']}")
            out["devices"].append({"device-id": rec["device-id"], "tenant-id": rec["tenant-id"],
                                   "auth-id": c["auth-id"], "secrets": c["secrets"]})
    print(json.dumps(out))


def _datetimes(x):
    if isinstance(x, dict):
        for k, v in x.items():
            if k in ("not-before", "not-after") and isinstance(v, str):
                yield v
            else:
                yield from _datetimes(v)
    elif isinstance(x, list):
        for v in x:
            yield from _datetimes(v)


# ---------------------------------------------------------------- Peridio
def peridio(d):
    import jsonschema

    schema = json.load(open(os.path.join(FIXTURES, "peridio", "api-shapes.schema.json")))

    def validate(defn, data, path):
        s = dict(schema)
        s["$ref"] = f"#/$defs/{defn}"
        errs = list(jsonschema.Draft202012Validator(s).iter_errors(data))
        if errs:
            fail(f"{path}: {errs[0].message}")

    out = {"devices": [], "imported": []}
    jitp = os.path.join(d, "peridio-ca-jitp-v1.json")
    if os.path.exists(jitp):
        body = json.load(open(jitp))
        validate("jitp_settings", body, "peridio-ca-jitp-v1.json")
        out["jitp"] = body["jitp"]
        x509.load_pem_x509_certificate(open(os.path.join(d, "peridio-ca.pem"), "rb").read())
    for f in sorted(glob.glob(os.path.join(d, "peridio-devices-*.jsonl"))):
        for n, line in enumerate(open(f), 1):
            rec = json.loads(line)
            validate("device_line", rec, f"{os.path.basename(f)}:{n}")
            pem = base64.b64decode(rec["device_certificate"]["certificate"], validate=True)
            cert = x509.load_pem_x509_certificate(pem)
            if rec["device"]["identifier"] != cn_of(cert):
                fail(f"{f}:{n}: identifier {rec['device']['identifier']!r} is not the certificate's CN {cn_of(cert)!r}")
            out["devices"].append({"identifier": rec["device"]["identifier"],
                                   "cn": cn_of(cert), "tags": rec["device"].get("tags")})
    spec = json.load(open(os.path.join(FIXTURES, "peridio", "device-import.json")))
    for f in sorted(glob.glob(os.path.join(d, "peridio-device-import-*.csv"))):
        raw = open(f, newline="").read()
        rows = list(csv.reader(io.StringIO(raw, newline="")))
        if not rows or rows[0] != spec["columns"]:
            fail(f"{f}: header {rows[:1]} is not {spec['columns']}")
        for n, r in enumerate(rows[1:], 2):
            if len(r) != len(spec["columns"]):
                fail(f"{f}:{n}: {len(r)} fields, want {len(spec['columns'])}")
            row = dict(zip(spec["columns"], r))
            for k in spec["required"]:
                if not row[k]:
                    fail(f"{f}:{n}: {k} is empty")
            certs = [x509.load_pem_x509_certificate(p.encode()) for p in row["certificates"].split(spec["certificateSeparator"])]
            for c in certs:
                if cn_of(c) != row["identifier"]:
                    fail(f"{f}:{n}: identifier {row['identifier']!r} is not the certificate's CN {cn_of(c)!r}")
            out["imported"].append({"identifier": row["identifier"],
                                    "tags": row["tags"].split(spec["tagSeparator"]) if row["tags"] else [],
                                    "product_prn": row["product_prn"], "cohort_prn": row["cohort_prn"]})
    print(json.dumps(out))


# ---------------------------------------------------------------- nRF Cloud
def nrfcloud(d):
    spec = json.load(open(os.path.join(FIXTURES, "nrfcloud", "onboard-fields.json")))
    id_re = re.compile(spec["deviceId"]["pattern"], re.IGNORECASE)
    sub_re = re.compile(spec["subType"]["pattern"])
    tag_re = re.compile(spec["tag"]["pattern"])
    fw_re = re.compile(spec["fwType"]["pattern"])
    pem_re = re.compile(spec["certPem"]["pattern"])
    out = {"files": []}
    ids = []
    for f in files(d, "nrfcloud-onboard-*.csv"):
        raw = open(f, newline="").read()
        rows = list(csv.reader(io.StringIO(raw, newline=""), delimiter=","))
        # nrfcloud-utils' reader (nrf_cloud_onboard.read_onboarding_csv) refuses > 1000 rows.
        if len(rows) > spec["maxRows"]:
            fail(f"{f}: {len(rows)} rows; nRF Cloud onboarding takes at most {spec['maxRows']}")
        if "\n\n" in raw or raw.startswith("\n"):
            fail(f"{f}: a blank line, which OnboardDevices refuses")
        # Written the way nrfcloud-utils' save_onboarding_csv writes rows.
        again = io.StringIO(newline="")
        csv.writer(again, delimiter=",", lineterminator="\n", quoting=csv.QUOTE_MINIMAL).writerows(rows)
        if again.getvalue() != raw:
            fail(f"{f}: bytes differ from Python csv (QUOTE_MINIMAL, \\n) for the same rows")
        # Nordic's own reader accepts it and sees the same device ids.
        from nrfcloud_utils.nrf_cloud_onboard import read_onboarding_csv
        listed = read_onboarding_csv(f)
        if listed is None or [x[0] for x in listed] != [r[0] for r in rows]:
            fail(f"{f}: nrfcloud-utils read_onboarding_csv refused it or saw other ids")
        # And Nordic's own writer, given the same values, writes the same bytes (small files:
        # it re-reads the file for every row it appends).
        if len(rows) <= 50:
            import logging
            import tempfile
            from nrfcloud_utils.cli_helpers import save_onboarding_csv
            logging.disable(logging.CRITICAL)
            with tempfile.TemporaryDirectory() as t:
                theirs = os.path.join(t, "onboard.csv")
                for r in rows:
                    save_onboarding_csv(theirs, True, False, r[0], r[1], r[2], r[3], r[4].encode("ascii"))
                if open(theirs, newline="").read() != raw:
                    fail(f"{f}: differs from what nrfcloud-utils save_onboarding_csv writes for the same rows")
            out["nordic_writer_identical"] = True
        for n, r in enumerate(rows, 1):
            if len(r) != 5:
                fail(f"{f}:{n}: {len(r)} columns, want 5")
            dev_id, sub, tags, fw, pem = r
            if not id_re.match(dev_id):
                fail(f"{f}:{n}: deviceId {dev_id!r} does not match {spec['deviceId']['pattern']} (i)")
            if not sub_re.match(sub):
                fail(f"{f}:{n}: subType {sub!r} does not match {spec['subType']['pattern']}")
            for t in (tags.split("|") if tags else []):
                if not tag_re.match(t):
                    fail(f"{f}:{n}: tag {t!r} does not match {spec['tag']['pattern']}")
            for t in (fw.split("|") if fw else []):
                if not fw_re.match(t):
                    fail(f"{f}:{n}: firmware type {t!r} does not match {spec['fwType']['pattern']}")
            if not pem_re.match(pem):
                fail(f"{f}:{n}: certPem does not match {spec['certPem']['pattern']}")
            cert = x509.load_pem_x509_certificate(pem.encode("ascii"))
            key = cert.public_key()
            if not (isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp256r1"):
                fail(f"{f}:{n}: the certificate is not ES256 (its key is not EC P-256)")
            ids.append(dev_id)
            out.setdefault("first", {"id": dev_id, "tags": tags, "fw": fw, "cn": cn_of(cert)})
        out["files"].append({"name": os.path.basename(f), "rows": len(rows)})
    if len(set(ids)) != len(ids):
        fail("a device id appears twice")
    out["ids"] = len(ids)
    print(json.dumps(out))


# ---------------------------------------------------------------- Microchip
def b64url_dec(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def microchip(d, signer_pem):
    from pytrustplatform.manifest.manifest import Manifest, ManifestSigner

    signer_bytes = open(signer_pem, "rb").read()
    signer_cert = x509.load_pem_x509_certificate(signer_bytes)
    ski = signer_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    out = {"files": [], "unique_ids": []}
    for f in files(d, "microchip-manifest-*.json"):
        entries = json.load(open(f))
        if not isinstance(entries, list):
            fail(f"{f}: not a JSON array")
        # Microchip's own verifier (pytrustplatform), given certfab's signer certificate.
        for sse in Manifest(entries, signer_ca=ManifestSigner(signer_bytes)):
            sse.verify()
        for e in entries:
            prot = json.loads(b64url_dec(e["protected"]))
            if prot["alg"] != "ES256" or prot["typ"] != "JWT":
                fail(f"{f}: protected header {prot}")
            if b64url_dec(prot["kid"]) != ski:
                fail(f"{f}: kid is not the signer's subjectKeyIdentifier")
            if b64url_dec(prot["x5t#S256"]) != signer_cert.fingerprint(hashes.SHA256()):
                fail(f"{f}: x5t#S256 is not the signer certificate's SHA-256")
            # And with plain cryptography: ES256 over protected.payload, r||s.
            sig = b64url_dec(e["signature"])
            if len(sig) != 64:
                fail(f"{f}: signature is {len(sig)} bytes, want 64")
            der = utils.encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
            signer_cert.public_key().verify(der, f"{e['protected']}.{e['payload']}".encode(), ec.ECDSA(hashes.SHA256()))
            p = json.loads(b64url_dec(e["payload"]))
            if p["uniqueId"] != e["header"]["uniqueId"]:
                fail(f"{f}: header uniqueId differs from payload")
            for k in ("version", "model", "partNumber", "manufacturer", "provisioner", "distributor",
                      "provisioningTimestamp", "uniqueId", "publicKeySet"):
                if k not in p:
                    fail(f"{f}: payload lacks {k}")
            jwk = p["publicKeySet"]["keys"][0]
            leaf = x509.load_der_x509_certificate(base64.b64decode(jwk["x5c"][0], validate=True))
            ca = x509.load_der_x509_certificate(base64.b64decode(jwk["x5c"][1], validate=True))
            leaf.verify_directly_issued_by(ca)
            nums = leaf.public_key().public_numbers()
            if (int.from_bytes(b64url_dec(jwk["x"]), "big"), int.from_bytes(b64url_dec(jwk["y"]), "big")) != (nums.x, nums.y):
                fail(f"{f}: JWK x/y are not the certificate's public key")
            out["unique_ids"].append(p["uniqueId"])
            out.setdefault("first_payload", p)
        out["files"].append({"name": os.path.basename(f), "entries": len(entries)})
    print(json.dumps(out))


# ---------------------------------------------------------------- plain CSV
def plain_csv(d):
    out = {"files": [], "rows": []}
    header = None
    for f in files(d, "devices-*.csv"):
        r = list(csv.reader(open(f, newline="")))
        if header is None:
            header = r[0]
        elif r[0] != header:
            fail(f"{f}: header differs between shards")
        for row in r[1:]:
            if len(row) != len(header):
                fail(f"{f}: row has {len(row)} cells, header {len(header)}")
            out["rows"].append(dict(zip(header, row)))
        out["files"].append({"name": os.path.basename(f), "rows": len(r) - 1})
    out["header"] = header
    print(json.dumps(out))


def main():
    if len(sys.argv) < 3:
        fail(__doc__)
    kind, d = sys.argv[1], sys.argv[2]
    {"azure": azure, "hono": hono, "peridio": peridio, "nrfcloud": nrfcloud, "csv": plain_csv}.get(
        kind, lambda d: microchip(d, sys.argv[3]) if kind == "microchip" else fail(__doc__))(d)


if __name__ == "__main__":
    main()
