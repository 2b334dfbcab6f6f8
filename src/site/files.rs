//! The files a signing command reads from its arguments and the certificate files it writes.

use crate::error::{Error, ExitCode};

/// Reads a file named on the command line: a regular file or a pipe (`--csr /dev/stdin`),
/// never a device or directory; at most one byte past the 64 KiB limit, so an endless pipe
/// cannot exhaust memory. The messages never quote the content.
pub fn read_input(path: &std::path::Path, what: &str) -> Result<Vec<u8>, Error> {
    use crate::input::{read_user_file, Pipes, ReadError};
    read_user_file(path, crate::csr::MAX_INPUT, Pipes::Allowed).map_err(|e| Error::Input {
        path: path.display().to_string(),
        code: match e {
            ReadError::TooLarge(_) => ExitCode::Rejected,
            _ => ExitCode::Usage,
        },
        msg: match e {
            ReadError::TooLarge(_) => {
                format!("{what} is over the 64 KiB limit; refused before parsing")
            }
            e => format!("cannot read {what}: {e}"),
        },
    })
}

/// `--var NAME=VALUE` flags as a map from `{prefix}NAME` to VALUE.
pub fn parse_vars(
    vars: &[String],
    prefix: &str,
) -> Result<std::collections::BTreeMap<String, String>, Error> {
    let mut map = std::collections::BTreeMap::new();
    for v in vars {
        let (k, val) = v
            .split_once('=')
            .ok_or_else(|| Error::Usage(format!("--var '{v}' must be NAME=VALUE")))?;
        map.insert(format!("{prefix}{k}"), val.to_string());
    }
    Ok(map)
}

/// Writes a new device certificate as `cert_path` (the leaf) and `chain_path` (the leaf, then
/// the issuer's chain, with the root if `with_root`); both must not exist yet.
pub fn write_cert_files(
    ca: &crate::issue::IssuingCa,
    der: &[u8],
    with_root: bool,
    cert_path: &std::path::Path,
    chain_path: &std::path::Path,
) -> Result<(), Error> {
    let leaf = crate::x509::pem(der);
    let chain = ca.chain_pem(der, with_root);
    use crate::output::{Access, Durability, Existing, OutDir};
    let (dir, cert_name) = crate::output::split(cert_path)?;
    let (chain_dir, chain_name) = crate::output::split(chain_path)?;
    if dir != chain_dir {
        return Err(Error::Usage(
            "cert.pem and chain.pem must be in one directory".into(),
        ));
    }
    let out = OutDir::create(dir)?;
    let cert = out.stage(cert_name, leaf.as_bytes(), Access::Shared, Durability::Now)?;
    let chain = out.stage(
        chain_name,
        chain.as_bytes(),
        Access::Shared,
        Durability::Now,
    )?;
    cert.commit(Existing::Refuse)?;
    if let Err(e) = chain.commit(Existing::Refuse) {
        // Leave no half result: a cert.pem without its chain.pem looks finished to scripts.
        let _ = out.remove(cert_name);
        return Err(e.into());
    }
    out.sync_dir()?;
    Ok(())
}
