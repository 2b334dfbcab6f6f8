//! The profile's `cloud:` section: attributes a cloud platform gets for each device, as
//! templates rendered into every manifest device line's `cloud` object when the manifest is
//! built (docs/profiles.md "cloud").
//!
//! A manifest is built from the ledger alone, which keeps each device's id and certificate but
//! not the CSV row, CSR or station readings it came from. So cloud templates may use only what
//! is known then: `{device_id}`, `{cert.serial}`, `{cert.sha256}`, `{cert.spki_sha256}`, the
//! certificate's subject attributes as `{cert.CN}`, `{cert.serialNumber}`, … (what the
//! profile's subject templates rendered at issuance), `{var.batch}`, `{var.station}` and
//! `{var.NAME}` from `certfab manifest build --var NAME=VALUE`.

use super::template::{Template, Vars};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// One value in the `cloud:` tree.
#[derive(Debug, Clone, PartialEq)]
pub enum CloudValue {
    /// A string template.
    Text(Template),
    /// true/false.
    Bool(bool),
    /// An integer.
    Int(i64),
    List(Vec<CloudValue>),
    /// A nested map.
    Map(BTreeMap<String, CloudValue>),
}

/// The parsed `cloud:` section.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Cloud {
    /// Top-level entries.
    pub entries: BTreeMap<String, CloudValue>,
}

/// Placeholder prefixes a cloud template may use (see the module docs).
const AVAILABLE: &str = "{device_id}, {cert.serial}, {cert.sha256}, {cert.spki_sha256}, {cert.CN} (or another subject attribute), {var.batch}, {var.station} or {var.NAME} (manifest build --var)";

impl Cloud {
    /// Parses the YAML `cloud:` mapping; errors name the dotted key.
    pub fn from_yaml(v: &serde_yaml_ng::Value) -> Result<Self, (String, String)> {
        let serde_yaml_ng::Value::Mapping(m) = v else {
            return Err((
                "cloud".into(),
                "cloud must be a mapping of names to values".into(),
            ));
        };
        let mut entries = BTreeMap::new();
        for (k, v) in m {
            let k = key(k, "cloud")?;
            let path = format!("cloud.{k}");
            entries.insert(k, value(v, &path)?);
        }
        let cloud = Self { entries };
        if let Some(t) = cloud.entries.get("tenant") {
            match t {
                CloudValue::Text(t) if t.placeholders().next().is_none() => {}
                _ => {
                    return Err((
                        "tenant".into(),
                        "cloud.tenant must be a constant string (one tenant per profile; exports never mix tenants)".into(),
                    ))
                }
            }
        }
        Ok(cloud)
    }

    /// The tenant (`cloud.tenant`), if set.
    pub fn tenant(&self) -> Option<String> {
        match self.entries.get("tenant") {
            Some(CloudValue::Text(t)) => Some(t.source().to_string()),
            _ => None,
        }
    }

    /// The section as written (templates as their source text), for the manifest header.
    pub fn as_written(&self) -> Map<String, Value> {
        fn w(v: &CloudValue) -> Value {
            match v {
                CloudValue::Text(t) => Value::String(t.source().to_string()),
                CloudValue::Bool(b) => Value::Bool(*b),
                CloudValue::Int(i) => Value::from(*i),
                CloudValue::List(l) => Value::Array(l.iter().map(w).collect()),
                CloudValue::Map(m) => {
                    Value::Object(m.iter().map(|(k, v)| (k.clone(), w(v))).collect())
                }
            }
        }
        self.entries
            .iter()
            .map(|(k, v)| (k.clone(), w(v)))
            .collect()
    }

    /// Renders every entry for one device; the error names the key and the placeholder.
    pub fn render(&self, vars: &Vars) -> Result<Map<String, Value>, String> {
        fn r(v: &CloudValue, vars: &Vars, path: &str) -> Result<Value, String> {
            Ok(match v {
                CloudValue::Text(t) => {
                    Value::String(t.render(vars).map_err(|e| format!("{path}: {e}"))?)
                }
                CloudValue::Bool(b) => Value::Bool(*b),
                CloudValue::Int(i) => Value::from(*i),
                CloudValue::List(l) => Value::Array(
                    l.iter()
                        .enumerate()
                        .map(|(i, x)| r(x, vars, &format!("{path}[{i}]")))
                        .collect::<Result<_, _>>()?,
                ),
                CloudValue::Map(m) => Value::Object(
                    m.iter()
                        .map(|(k, x)| Ok((k.clone(), r(x, vars, &format!("{path}.{k}"))?)))
                        .collect::<Result<_, String>>()?,
                ),
            })
        }
        self.entries
            .iter()
            .map(|(k, v)| Ok((k.clone(), r(v, vars, &format!("cloud.{k}"))?)))
            .collect()
    }
}

fn key(k: &serde_yaml_ng::Value, path: &str) -> Result<String, (String, String)> {
    match k {
        serde_yaml_ng::Value::String(s) if !s.is_empty() => Ok(s.clone()),
        _ => Err((
            path.rsplit('.').next().unwrap_or(path).to_string(),
            format!("{path}: keys must be non-empty strings"),
        )),
    }
}

fn value(v: &serde_yaml_ng::Value, path: &str) -> Result<CloudValue, (String, String)> {
    use serde_yaml_ng::Value as Y;
    let last = path.rsplit(['.', '[']).next().unwrap_or(path).to_string();
    let fail = |msg: String| (last.clone(), format!("{path}: {msg}"));
    Ok(match v {
        Y::String(s) => {
            let t = Template::try_from(s.clone()).map_err(&fail)?;
            if let Some(p) = t
                .placeholders()
                .find(|p| *p != "device_id" && !p.starts_with("cert.") && !p.starts_with("var."))
            {
                return Err(fail(format!(
                    "{{{p}}} is not known when a manifest is built (the ledger keeps the device id and certificate, not the CSV row, CSR or station readings); use {AVAILABLE}"
                )));
            }
            CloudValue::Text(t)
        }
        Y::Bool(b) => CloudValue::Bool(*b),
        Y::Number(n) => match n.as_i64() {
            Some(i) if i.unsigned_abs() <= super::super::manifest::canon::MAX_SAFE_INT => {
                CloudValue::Int(i)
            }
            _ => {
                return Err(fail(format!(
                    "{n} is not an integer within ±(2^53-1); quote it to make it a string"
                )))
            }
        },
        Y::Sequence(s) => CloudValue::List(
            s.iter()
                .enumerate()
                .map(|(i, x)| value(x, &format!("{path}[{i}]")))
                .collect::<Result<_, _>>()?,
        ),
        Y::Mapping(m) => {
            let mut out = BTreeMap::new();
            for (k, x) in m {
                let k = key(k, path)?;
                let p = format!("{path}.{k}");
                out.insert(k, value(x, &p)?);
            }
            CloudValue::Map(out)
        }
        Y::Null => return Err(fail("empty value; write \"\" for an empty string".into())),
        Y::Tagged(_) => return Err(fail("YAML tags are not supported here".into())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(y: &str) -> Result<Cloud, (String, String)> {
        Cloud::from_yaml(&serde_yaml_ng::from_str(y).unwrap())
    }

    #[test]
    fn renders_nested() {
        let c = parse("thing_name: \"{device_id}\"\nattributes: {model: X1, lot: \"{var.batch}\", n: 3}\ntags: [a, \"{cert.CN}\"]\ntenant: acme\n").unwrap();
        let mut vars = Vars {
            device_id: Some("SN1".into()),
            ..Default::default()
        };
        vars.values.insert("var.batch".into(), "b-1".into());
        vars.values.insert("cert.CN".into(), "SN1".into());
        let out = Value::Object(c.render(&vars).unwrap());
        assert_eq!(
            out,
            serde_json::json!({"thing_name": "SN1", "attributes": {"model": "X1", "lot": "b-1", "n": 3}, "tags": ["a", "SN1"], "tenant": "acme"})
        );
        assert_eq!(c.tenant().as_deref(), Some("acme"));
        assert_eq!(c.as_written()["thing_name"], "{device_id}");
    }

    #[test]
    fn refuses_what_the_ledger_does_not_keep() {
        let e = parse("a: \"{csv.lot}\"").unwrap_err();
        assert!(
            e.1.contains("cloud.a") && e.1.contains("not known"),
            "{e:?}"
        );
        assert!(parse("a: 1.5").is_err());
        assert!(parse("a: ~").is_err());
        assert!(parse("tenant: \"{device_id}\"").is_err());
    }
}
