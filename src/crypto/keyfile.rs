//! Private keys made on the host, as the PKCS#8 files certfab hands out.

use secrecy::{ExposeSecret, SecretString};
use zeroize::Zeroizing;

/// A generated key as PKCS#8 PEM: encrypted (PBES2, PBKDF2-SHA256 with `iterations`,
/// AES-256-CBC, fresh salt and IV) under `passphrase`, or plain when it is `None`.
pub fn encode_key_pem(
    key: &p256::SecretKey,
    passphrase: Option<&SecretString>,
    iterations: u32,
) -> Result<Zeroizing<String>, String> {
    use p256::pkcs8::EncodePrivateKey;
    let doc = key.to_pkcs8_der().map_err(|e| e.to_string())?;
    Ok(match passphrase {
        Some(pass) => {
            let mut salt = [0u8; 16];
            let mut iv = [0u8; 16];
            getrandom::getrandom(&mut salt).map_err(|e| e.to_string())?;
            getrandom::getrandom(&mut iv).map_err(|e| e.to_string())?;
            let params =
                pkcs8::pkcs5::pbes2::Parameters::pbkdf2_sha256_aes256cbc(iterations, &salt, &iv)
                    .map_err(|e| e.to_string())?;
            let info =
                pkcs8::PrivateKeyInfo::try_from(doc.as_bytes()).map_err(|e| e.to_string())?;
            let enc = info
                .encrypt_with_params(params, pass.expose_secret().as_bytes())
                .map_err(|e| e.to_string())?;
            Zeroizing::new(
                enc.to_pem("ENCRYPTED PRIVATE KEY", pkcs8::LineEnding::LF)
                    .map_err(|e| e.to_string())?
                    .to_string(),
            )
        }
        None => Zeroizing::new(
            doc.to_pem("PRIVATE KEY", pkcs8::LineEnding::LF)
                .map_err(|e| e.to_string())?
                .to_string(),
        ),
    })
}
