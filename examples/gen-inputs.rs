//! Writes benchmark inputs: a CSV of N devices with P-256 public keys or CSRs (made here, in
//! software, as devices or secure elements would), streamed so 1,000,000 rows need no memory.
//!
//! cargo run --release --example gen-inputs -- pubkey|csr N OUT.csv

use der::EncodePem;
use p256::pkcs8::EncodePublicKey;
use std::io::Write;
use std::str::FromStr;
use x509_cert::builder::{Builder, RequestBuilder};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let (kind, n, out) = match args.as_slice() {
        [_, k, n, o] => (k.as_str(), n.parse::<u64>()?, o),
        _ => return Err("usage: gen-inputs pubkey|csr N OUT.csv".into()),
    };
    let mut w = std::io::BufWriter::new(std::fs::File::create(out)?);
    writeln!(
        w,
        "device_id,{}",
        if kind == "csr" { "csr" } else { "pubkey" }
    )?;
    for i in 1..=n {
        let sk = p256::ecdsa::SigningKey::random(&mut p256::elliptic_curve::rand_core::OsRng);
        let id = format!("DEV{i:07}");
        let pem = match kind {
            "csr" => {
                RequestBuilder::new(x509_cert::name::Name::from_str(&format!("CN={id}"))?, &sk)?
                    .build::<p256::ecdsa::DerSignature>()?
                    .to_pem(der::pem::LineEnding::LF)?
            }
            "pubkey" => sk
                .verifying_key()
                .to_public_key_pem(der::pem::LineEnding::LF)?,
            _ => return Err("kind must be pubkey or csr".into()),
        };
        writeln!(w, "{id},\"{}\"", pem.trim_end())?;
    }
    w.flush()?;
    Ok(())
}
