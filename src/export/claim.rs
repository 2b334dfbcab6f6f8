//! The fleet claim's id in the ledger, from the manifest being exported. The claim certificate
//! itself is issued like any other (`issue::claim`, opened by `site::issue_claim`); the
//! exporter only renders it.

use super::{ExportError, ExportInput};

/// The claim's ledger device id: `fleet-claim-<batch>` for a manifest of one batch.
pub fn default_claim_id(input: &ExportInput) -> Result<String, ExportError> {
    match input.batch_ids.as_slice() {
        [one] => Ok(format!("fleet-claim-{one}")),
        ids => Err(ExportError::Usage(format!(
            "the manifest covers {} batches ({}); a claim certificate is per batch: pass --claim-id NAME",
            ids.len(),
            ids.join(", ")
        ))),
    }
}
