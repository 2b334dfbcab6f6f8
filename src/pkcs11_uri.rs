//! RFC 7512 `pkcs11:` URIs naming a token and a key on it: text only (the site config parses
//! them; `hsm/` resolves them on a token).

/// What a `pkcs11:` URI selects. Only the attributes certfab uses are kept; a URI that carries
/// a PIN value is refused, since it would put a secret in a config file or argv.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pkcs11Uri {
    /// `token=` label
    pub token: Option<String>,
    /// `serial=` token serial
    pub serial: Option<String>,
    pub manufacturer: Option<String>,
    pub model: Option<String>,
    pub slot_id: Option<u64>,
    /// `object=` label
    pub object: Option<String>,
    /// `id=` CKA_ID bytes
    pub id: Option<Vec<u8>>,
    /// `type=` (private, public, cert, …)
    pub kind: Option<String>,
}

/// A URI that is not RFC 7512 or asks for something certfab refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid pkcs11 URI '{uri}': {why}")]
pub struct UriError {
    /// The URI as given.
    pub uri: String,
    /// What is wrong and how to fix it.
    pub why: String,
}

impl UriError {
    /// A malformed key URI is a usage error (exit 2).
    pub fn exit_code(&self) -> crate::exit::ExitCode {
        crate::exit::ExitCode::Usage
    }
}

impl Pkcs11Uri {
    /// Parses `pkcs11:token=…;object=…;id=%01%02;type=private`.
    pub fn parse(uri: &str) -> Result<Self, UriError> {
        // The query may carry a PIN: never echo it.
        let shown = if uri.contains("pin-value") {
            "pkcs11:… (not shown: it carries a PIN)".to_string()
        } else {
            uri.to_string()
        };
        let err = |why: &str| UriError {
            uri: shown.clone(),
            why: why.into(),
        };
        let rest = uri
            .strip_prefix("pkcs11:")
            .ok_or_else(|| err("it must start with 'pkcs11:'"))?;
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        let mut out = Self::default();
        for q in query.split('&').filter(|q| !q.is_empty()) {
            let (k, _) = q.split_once('=').unwrap_or((q, ""));
            if k == "pin-value" {
                return Err(err(
                    "pin-value puts the PIN in the URI; set the PIN source in the site config (env:, file: or prompt)",
                ));
            }
        }
        for attr in path.split(';').filter(|a| !a.is_empty()) {
            let (k, v) = attr
                .split_once('=')
                .ok_or_else(|| err(&format!("attribute '{attr}' has no '='")))?;
            let v = pct_decode(v).map_err(|e| err(&e))?;
            let text = || String::from_utf8(v.clone()).map_err(|_| err("attribute is not UTF-8"));
            match k {
                "token" => out.token = Some(text()?),
                "serial" => out.serial = Some(text()?),
                "manufacturer" => out.manufacturer = Some(text()?),
                "model" => out.model = Some(text()?),
                "slot-id" => {
                    out.slot_id = Some(
                        text()?
                            .parse()
                            .map_err(|_| err("slot-id is not a number"))?,
                    )
                }
                "object" => out.object = Some(text()?),
                "id" => out.id = Some(v),
                "type" => {
                    let t = text()?;
                    if !["private", "public", "cert", "secret-key", "data"].contains(&t.as_str()) {
                        return Err(err(
                            "type must be private, public, cert, secret-key or data",
                        ));
                    }
                    out.kind = Some(t)
                }
                "pin-value" => {
                    return Err(err(
                        "pin-value puts the PIN in the URI; set the PIN source in the site config",
                    ))
                }
                // Other RFC 7512 attributes (library-*, slot-*) do not narrow what certfab uses.
                _ => {}
            }
        }
        Ok(out)
    }

    /// Whether this URI names a single object (by label or id).
    pub fn names_object(&self) -> bool {
        self.object.is_some() || self.id.is_some()
    }
}

impl std::fmt::Display for Pkcs11Uri {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts = Vec::new();
        let mut push = |k: &str, v: &[u8]| parts.push(format!("{k}={}", pct_encode(v)));
        if let Some(v) = &self.token {
            push("token", v.as_bytes());
        }
        if let Some(v) = &self.serial {
            push("serial", v.as_bytes());
        }
        if let Some(v) = &self.object {
            push("object", v.as_bytes());
        }
        if let Some(v) = &self.id {
            push("id", v);
        }
        if let Some(v) = &self.kind {
            push("type", v.as_bytes());
        }
        write!(f, "pkcs11:{}", parts.join(";"))
    }
}

fn pct_decode(s: &str) -> Result<Vec<u8>, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3).ok_or("truncated %-escape")?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| format!("bad %-escape %{hex}"))?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Ok(out)
}

fn pct_encode(v: &[u8]) -> String {
    v.iter()
        .map(|&c| {
            if c.is_ascii_alphanumeric() || b"-._~".contains(&c) {
                (c as char).to_string()
            } else {
                format!("%{c:02X}")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rfc7512_examples() {
        let u = Pkcs11Uri::parse("pkcs11:token=line%201;object=issuing-ca;id=%01%ab;type=private")
            .unwrap();
        assert_eq!(u.token.as_deref(), Some("line 1"));
        assert_eq!(u.object.as_deref(), Some("issuing-ca"));
        assert_eq!(u.id.as_deref(), Some(&[1u8, 0xab][..]));
        assert_eq!(Pkcs11Uri::parse(&u.to_string()).unwrap(), u);
    }

    #[test]
    fn refuses_pin_value() {
        let e = Pkcs11Uri::parse("pkcs11:token=a?pin-value=1234").unwrap_err();
        assert!(e.why.contains("PIN source"));
        assert!(!e.to_string().contains("1234"), "{e}");
        let e = Pkcs11Uri::parse("pkcs11:object=k;pin-value=SECRET99").unwrap_err();
        assert!(!e.to_string().contains("SECRET99"), "{e}");
        assert!(Pkcs11Uri::parse("token=a").is_err());
        assert!(Pkcs11Uri::parse("pkcs11:id=%zz").is_err());
    }
}
