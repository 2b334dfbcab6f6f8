//! The tenant rule exporters and audits share: one output never mixes tenants.

/// Two tenants met where one was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} mixes tenants {}; produce one output per tenant (filter by --tenant or --profile)", .tenants.join(" and "))]
pub struct MixedTenants {
    /// What was being assembled.
    pub what: String,
    /// The tenants found ("(none)" for records without one).
    pub tenants: Vec<String>,
}

/// The single tenant of `items` (None when none has one), or an error naming the tenants when
/// they differ. Records without a tenant and records with one do not mix either.
pub fn single_tenant<'a>(
    what: &str,
    items: impl IntoIterator<Item = Option<&'a str>>,
) -> Result<Option<String>, MixedTenants> {
    let mut seen = std::collections::BTreeSet::new();
    for t in items {
        seen.insert(t);
    }
    match seen.len() {
        0 => Ok(None),
        1 => Ok(seen.into_iter().next().flatten().map(str::to_string)),
        _ => Err(MixedTenants {
            what: what.into(),
            tenants: seen
                .into_iter()
                .map(|t| t.unwrap_or("(none)").to_string())
                .collect(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_tenant_or_refuse() {
        assert_eq!(single_tenant("x", []).unwrap(), None);
        assert_eq!(
            single_tenant("x", [Some("a"), Some("a")]).unwrap(),
            Some("a".into())
        );
        assert_eq!(single_tenant("x", [None, None]).unwrap(), None);
        let e = single_tenant("manifest", [Some("a"), None, Some("b")]).unwrap_err();
        assert_eq!(e.tenants, ["(none)", "a", "b"]);
        assert!(e.to_string().contains("manifest mixes tenants"));
    }
}
