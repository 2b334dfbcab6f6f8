//! Value templates: literal text with `{device_id}`, `{csv.COLUMN}`, `{csr.ATTR}`,
//! `{device.FIELD}` (station mode), `{cert.X}` (manifest-time `cloud:` values) and
//! `{var.NAME}` placeholders. Rendering substitutes whole attribute values; it never builds a
//! DN string, so a value cannot inject separators.

use std::collections::BTreeMap;

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    source: String,
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Lit(String),
    Var(String),
}

/// The values a template may use.
#[derive(Debug, Clone, Default)]
pub struct Vars {
    pub device_id: Option<String>,
    /// Everything else, keyed `csv.X`, `csr.X`, `var.X`.
    pub values: BTreeMap<String, String>,
}

impl TryFrom<String> for Template {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut lit = String::new();
        let mut chars = s.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                    lit.push('{');
                }
                '}' if chars.peek() == Some(&'}') => {
                    chars.next();
                    lit.push('}');
                }
                '{' => {
                    let mut name = String::new();
                    loop {
                        match chars.next() {
                            Some('}') => break,
                            Some(c) => name.push(c),
                            None => return Err(format!("template '{s}' has an unclosed '{{'; write {{{{ for a literal brace")),
                        }
                    }
                    let ok = name == "device_id"
                        || ["csv.", "csr.", "var.", "device.", "cert."]
                            .iter()
                            .any(|p| {
                                name.strip_prefix(p).is_some_and(|rest| {
                                    !rest.is_empty()
                                        && rest.chars().all(|c| {
                                            c.is_ascii_alphanumeric() || c == '_' || c == '-'
                                        })
                                })
                            });
                    if !ok {
                        return Err(format!(
                            "template '{s}' uses unknown placeholder {{{name}}}; use {{device_id}}, {{csv.COLUMN}}, {{csr.CN}} (or another CSR subject attribute), {{device.hw_serial}} (station: what the device reports), {{cert.CN}} (profile cloud: sections) or {{var.NAME}}"
                        ));
                    }
                    if !lit.is_empty() {
                        parts.push(Part::Lit(std::mem::take(&mut lit)));
                    }
                    parts.push(Part::Var(name));
                }
                '}' => {
                    return Err(format!(
                        "template '{s}' has a stray '}}'; write }}}} for a literal brace"
                    ))
                }
                c => lit.push(c),
            }
        }
        if !lit.is_empty() {
            parts.push(Part::Lit(lit));
        }
        Ok(Self { source: s, parts })
    }
}

impl<'de> serde::Deserialize<'de> for Template {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::try_from(s).map_err(serde::de::Error::custom)
    }
}

impl Template {
    /// Renders with `vars`; names the missing placeholder on failure.
    pub fn render(&self, vars: &Vars) -> Result<String, String> {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Lit(s) => out.push_str(s),
                Part::Var(name) if name == "device_id" => {
                    out.push_str(vars.device_id.as_deref().ok_or(
                        "no device id: pass --device-id or set device_id.from in the profile",
                    )?)
                }
                Part::Var(name) => out.push_str(vars.values.get(name).ok_or_else(|| {
                    format!(
                        "template '{}' needs {{{name}}}, which this request does not provide",
                        self.source
                    )
                })?),
            }
        }
        Ok(out)
    }

    /// The template text.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The placeholders it uses.
    pub fn placeholders(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Var(v) => Some(v.as_str()),
            Part::Lit(_) => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_and_escapes() {
        let t = Template::try_from("{{x}}-{device_id}.{csv.site}".to_string()).unwrap();
        let mut v = Vars {
            device_id: Some("SN1".into()),
            ..Default::default()
        };
        v.values.insert("csv.site".into(), "b2".into());
        assert_eq!(t.render(&v).unwrap(), "{x}-SN1.b2");
        v.values.clear();
        assert!(t.render(&v).unwrap_err().contains("csv.site"));
    }

    #[test]
    fn rejects_bad_syntax() {
        assert!(Template::try_from("{serial".to_string()).is_err());
        assert!(Template::try_from("{mac}".to_string())
            .unwrap_err()
            .contains("unknown placeholder"));
        assert!(Template::try_from("a}".to_string()).is_err());
    }
}
