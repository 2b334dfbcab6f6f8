//! `certfab hsm bench`: the token's raw signing rate, the yardstick every certfab throughput
//! figure is divided by.

use super::{Hsm, HsmError, Pkcs11Uri};
use crate::crypto::Signer;
use std::time::{Duration, Instant};

/// Signing rate with a number of parallel sessions.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BenchResult {
    /// Sessions (threads) signing at once.
    pub sessions: usize,
    /// Signatures made.
    pub signatures: u64,
    /// Wall time.
    pub seconds: f64,
    /// Signatures per second.
    pub per_second: f64,
    /// Mean latency of one signature, milliseconds.
    pub mean_latency_ms: f64,
}

/// Signs 32-byte messages with `uri` from `sessions` threads for about `duration` each.
/// What is timed is exactly what issuance pays per certificate: host hash + C_Sign + DER.
pub fn bench(
    hsm: &Hsm,
    uri: &Pkcs11Uri,
    sessions: usize,
    duration: Duration,
) -> Result<BenchResult, HsmError> {
    let keys = (0..sessions)
        .map(|_| hsm.key(uri, None))
        .collect::<Result<Vec<_>, _>>()?;
    let start = Instant::now();
    let counts = std::thread::scope(|s| {
        let handles: Vec<_> = keys
            .iter()
            .map(|k| {
                s.spawn(move || -> Result<u64, HsmError> {
                    let mut n = 0u64;
                    let mut msg = [0u8; 32];
                    while start.elapsed() < duration {
                        msg[..8].copy_from_slice(&n.to_le_bytes());
                        k.sign(&msg).map_err(|e| HsmError::Other(e.to_string()))?;
                        n += 1;
                    }
                    Ok(n)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(HsmError::Other("bench thread panicked".into())))
            })
            .collect::<Result<Vec<u64>, _>>()
    })?;
    let seconds = start.elapsed().as_secs_f64();
    let signatures: u64 = counts.iter().sum();
    Ok(BenchResult {
        sessions,
        signatures,
        seconds,
        per_second: signatures as f64 / seconds,
        mean_latency_ms: if signatures == 0 {
            0.0
        } else {
            seconds * 1000.0 * sessions as f64 / signatures as f64
        },
    })
}
