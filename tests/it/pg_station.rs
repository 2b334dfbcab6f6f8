//! Issue 12, "station overhead < 5 ms per device with 4 concurrent stations" on a central
//! ledger: what a station's device costs the server, counted by the server itself (round
//! trips, the part of them made holding the writers' lock, WAL flushes), figures the load of
//! the machine does not change. The times are pg_bench's (`--ignored`).

use crate::common::{pg, Line};
use crate::pg_bench::{overhead_ms, start_station, StatementLog};

/// A passing device at a station costs few round trips, and few of them hold the writers'
/// lock, for which every other station waits; yet each of its three durable commits is still
/// flushed to disk before certfab goes on (docs/station.md "Durable commits per device").
#[test]
fn item12_station_overhead_round_trips_lock_and_flushes() {
    let line = Line::on_postgres();
    let (cluster, _) = line.pg.as_ref().unwrap();
    let ledger = cluster.ledger("pgstation");
    let config = pg::station_config(&line, "st", "station-1", 10, &ledger);
    // A first shift creates the schema; the second is measured.
    let warm = start_station(&line, &config, "W", 2);
    assert_eq!(overhead_ms(&warm.wait_with_output().unwrap()).len(), 2);
    let n = 40;
    let log = StatementLog::start(cluster);
    let shift = start_station(&line, &config, "P", n);
    let passed = overhead_ms(&shift.wait_with_output().unwrap()).len();
    let s = log.stop(cluster);
    s.print("1 station", n);
    assert_eq!(passed, n, "every device passes");
    let per = |x: f64| x / n as f64;
    // Before issue 12's work, with this shift's own statements: 37.0 round trips per
    // device, 32.0 of them holding the lock; 25.6 and 23.8 after.
    assert!(
        per(s.trips as f64) <= 27.0,
        "{:.1} round trips per device",
        per(s.trips as f64)
    );
    assert!(
        per(s.trips_in_lock as f64) <= 25.0,
        "{:.1} round trips per device holding the writers' lock",
        per(s.trips_in_lock as f64)
    );
    // Three durable commits per device: each flushed (one station: no flush to share).
    assert!(
        per(s.wal_syncs) >= 3.0,
        "{:.2} WAL flushes per device: a commit was not made durable",
        per(s.wal_syncs)
    );
}
