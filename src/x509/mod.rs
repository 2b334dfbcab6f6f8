//! X.509 building blocks shared by the CA ceremony (`ca/`) and device issuance (`issue/`), so
//! neither needs the other: the TBS builder and extension encoders, names and attribute types,
//! times, serial numbers, the parsed CA certificate, and PEM. No token and no ledger; the only
//! file it reads is a CA certificate a config names.

mod cert;
mod name;
mod oid;
mod serial;
mod signed;
mod tbs;
mod text;
mod time;

pub use cert::{CaCert, CaError};
pub use name::{any_text, attr_text, name, AttrType, MATTER_PID, MATTER_VID};
pub use oid::parse_oid;
pub use serial::{new_serial, FixedSerials, RandomSerials, SerialSource, RANDOM_BYTES};
pub use signed::{cert_serial, cert_spki, pem, split_signed};
pub use tbs::{
    assemble, authority_key_id, basic_constraints, build_tbs, extended_key_usage,
    hardware_module_name, ia5, key_usage, subject_alt_name, subject_key_id, BuildError, CertSpec,
};
pub use text::tbs_text;
pub use time::{no_expiry, time_of, x509_time};
