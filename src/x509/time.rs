//! X.509 times: encoding (RFC 5280 §4.1.2.5) and decoding, with the 802.1AR "no expiry" value.

use super::BuildError;
use der::asn1::{GeneralizedTime, UtcTime};
use time::OffsetDateTime;
use x509_cert::time::Time;

/// RFC 5280 §4.1.2.5: UTCTime through 2049, GeneralizedTime from 2050.
pub fn x509_time(t: OffsetDateTime) -> Result<Time, BuildError> {
    let secs =
        u64::try_from(t.unix_timestamp()).map_err(|_| BuildError("time before 1970".into()))?;
    let d = std::time::Duration::from_secs(secs);
    Ok(if t.year() < 2050 {
        Time::UtcTime(UtcTime::from_unix_duration(d)?)
    } else {
        Time::GeneralTime(GeneralizedTime::from_unix_duration(d)?)
    })
}

/// The IEEE 802.1AR / RFC 5280 "no well-defined expiration" value.
pub fn no_expiry() -> Result<Time, BuildError> {
    Ok(Time::GeneralTime(GeneralizedTime::from_date_time(
        der::DateTime::new(9999, 12, 31, 23, 59, 59)?,
    )))
}

/// Converts an X.509 time to OffsetDateTime; `None` for the no-expiry value.
pub fn time_of(t: &x509_cert::time::Time) -> Option<OffsetDateTime> {
    let dt = t.to_date_time();
    if dt.year() == 9999 && dt.month() == 12 && dt.day() == 31 {
        return None;
    }
    OffsetDateTime::from_unix_timestamp(dt.unix_duration().as_secs() as i64).ok()
}
