//! Whole-cluster scenarios in the deterministic simulator.

mod common;

use common::*;
use shoal_membership::MembershipConfig;
use std::time::Duration;

const S: fn(u64) -> Duration = Duration::from_secs;

#[test]
fn small_cluster_joins_and_converges() {
    let mut sim = cluster(1, 20, &MembershipConfig::lan(), 0.0);
    let all: Vec<_> = (1..=20).map(id).collect();
    let at = run_until_ok(&mut sim, S(1), S(60), |s| all_see(s, &all)).unwrap();
    println!("converged at {at:?}");
}
