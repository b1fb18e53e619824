//! Hostile input to a membership core: random bytes and mutations of real traffic (datagrams,
//! push-pull requests and responses recorded from a simulated cluster), on fixed seeds. Every
//! input must be refused or handled without a panic (overflow checks are on in test builds),
//! and the node's state must stay within its bounds after each one.

mod common;

use common::{id, lan_link};
use shoal_core::{Instant, NodeId};
use shoal_membership::member::MAX_INCARNATION;
use shoal_membership::sim::{sim_addr, SimMember, SimPacket, SimTimer};
use shoal_membership::{MembershipConfig, Output, RequestId, Swim, Timer};
use shoal_sim::{Mutator, Node, Outputs, SimConfig, Simulation};
use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

/// Inputs per seed: enough to reach deep into every message kind, few enough for CI.
const CASES: usize = 20_000;
const SEEDS: u64 = 4;

/// A simulated member that also records every packet it receives.
struct Recording {
    inner: SimMember,
    seen: Rc<RefCell<Vec<SimPacket>>>,
}

impl Node for Recording {
    type Message = SimPacket;
    type Timer = SimTimer;

    fn on_start(&mut self, now: Instant, out: &mut Outputs<SimPacket, SimTimer>) {
        self.inner.on_start(now, out);
    }

    fn on_message(
        &mut self,
        now: Instant,
        from: NodeId,
        message: SimPacket,
        out: &mut Outputs<SimPacket, SimTimer>,
    ) {
        self.seen.borrow_mut().push(message.clone());
        self.inner.on_message(now, from, message, out);
    }

    fn on_timer(&mut self, now: Instant, timer: SimTimer, out: &mut Outputs<SimPacket, SimTimer>) {
        self.inner.on_timer(now, timer, out);
    }

    fn on_crash(&mut self) {
        self.inner.on_crash();
    }
}

/// Real traffic of a 5-node cluster with metadata, a crash (suspicions, deaths) and a
/// restart (refutation): datagrams, reliable requests and reliable responses.
struct Corpus {
    datagrams: Vec<Vec<u8>>,
    requests: Vec<Vec<u8>>,
    responses: Vec<Vec<u8>>,
}

fn record_traffic() -> Corpus {
    let seen = Rc::new(RefCell::new(Vec::new()));
    let mut sim = Simulation::new(
        1,
        SimConfig {
            link: lan_link(0.0),
            ..SimConfig::default()
        },
    );
    let seeds = [id(1), id(2)];
    for i in 1..=5 {
        let meta = format!("zone-{i}").into_bytes();
        let member = SimMember::new(id(i), meta, MembershipConfig::lan(), &seeds, 100 + i).unwrap();
        sim.add_node(
            id(i),
            Recording {
                inner: member,
                seen: Rc::clone(&seen),
            },
        );
    }
    let secs = Duration::from_secs;
    sim.run_for(secs(20), |_| Ok(())).unwrap();
    sim.crash(id(5));
    sim.run_for(secs(30), |_| Ok(())).unwrap();
    sim.restart(id(5));
    sim.run_for(secs(40), |_| Ok(())).unwrap();
    let mut corpus = Corpus {
        datagrams: Vec::new(),
        requests: Vec::new(),
        responses: Vec::new(),
    };
    for packet in seen.borrow().iter() {
        match packet {
            SimPacket::Datagram(bytes) => corpus.datagrams.push(bytes.clone()),
            SimPacket::Request { bytes, .. } => corpus.requests.push(bytes.clone()),
            SimPacket::Response {
                bytes: Some(bytes), ..
            } => corpus.responses.push(bytes.clone()),
            SimPacket::Response { bytes: None, .. } => {}
        }
    }
    // Keep the corpus small and varied: every 7th datagram, all reliable exchanges.
    corpus.datagrams = corpus.datagrams.into_iter().step_by(7).collect();
    corpus
}

/// The node under attack and what it asked to be done.
struct Target {
    swim: Swim,
    now: Instant,
    timers: Vec<(Instant, Timer)>,
    pending: Vec<RequestId>,
}

impl Target {
    fn new(seed: u64) -> Self {
        let config = MembershipConfig {
            max_members: 64,
            ..MembershipConfig::lan()
        };
        let mut swim = Swim::new(id(1), sim_addr(id(1)), b"zone-1".to_vec(), 0, config, seed)
            .expect("a valid node");
        let now = Instant::from_nanos(1_000_000_000);
        swim.start(now);
        let mut target = Self {
            swim,
            now,
            timers: Vec::new(),
            pending: Vec::new(),
        };
        target.drain();
        target
    }

    /// Takes the core's outputs, checking each is within its bounds.
    fn drain(&mut self) {
        while let Some(output) = self.swim.poll_output() {
            match output {
                Output::Datagram { bytes, .. } => {
                    assert!(bytes.len() <= 1400, "a datagram of {} bytes", bytes.len())
                }
                Output::Reliable { id, .. } => self.pending.push(id),
                Output::Timer { after, timer } => self.timers.push((self.now + after, timer)),
                _ => {}
            }
        }
    }

    /// Fires the timers that are due after moving the clock on by `by`.
    fn advance(&mut self, by: Duration) {
        self.now += by;
        let now = self.now;
        let (due, later): (Vec<_>, Vec<_>) = self.timers.drain(..).partition(|(at, _)| *at <= now);
        self.timers = later;
        for (_, timer) in due {
            self.swim.handle_timer(now, timer);
        }
        self.drain();
    }

    fn check_bounds(&self, case: usize, seed: u64) {
        let swim = &self.swim;
        assert!(
            swim.incarnation() <= MAX_INCARNATION + 1,
            "seed {seed} case {case}: incarnation {}",
            swim.incarnation()
        );
        assert!(
            swim.members().len() <= 64,
            "seed {seed} case {case}: table over its bound"
        );
        assert!(
            swim.members()
                .iter()
                .all(|m| m.incarnation <= MAX_INCARNATION),
            "seed {seed} case {case}: a member above the incarnation bound"
        );
        assert!(
            self.timers.len() < 100_000,
            "seed {seed} case {case}: timers pile up"
        );
    }
}

#[test]
fn random_and_mutated_packets_are_refused_or_handled_within_bounds() {
    let corpus = record_traffic();
    assert!(
        corpus.datagrams.len() > 50,
        "{} datagrams",
        corpus.datagrams.len()
    );
    assert!(!corpus.requests.is_empty() && !corpus.responses.is_empty());
    for seed in shoal_sim::seeds_from_env_or(0x5EED_0101, SEEDS) {
        let mut mutator = Mutator::new(seed);
        let mut target = Target::new(seed);
        let from = sim_addr(id(2));
        for case in 0..CASES {
            match case % 10 {
                0..=6 => {
                    let input = mutator.next_input(&corpus.datagrams);
                    target.swim.handle_datagram(target.now, from, &input);
                }
                7 | 8 => {
                    let input = mutator.next_input(&corpus.requests);
                    let _ = target
                        .swim
                        .handle_reliable_request(target.now, from, &input);
                }
                _ => {
                    // Answers need an exchange of ours to answer: a join makes one.
                    if target.pending.is_empty() {
                        let _ = target.swim.join(target.now, &[from]);
                        target.drain();
                    }
                    if let Some(exchange) = target.pending.pop() {
                        let input = mutator.next_input(&corpus.responses);
                        target
                            .swim
                            .handle_reliable_response(target.now, exchange, Ok(input));
                    }
                }
            }
            target.drain();
            if case % 50 == 49 {
                target.advance(Duration::from_millis(700));
            }
            target.check_bounds(case, seed);
        }
        let stats = target.swim.stats();
        assert!(
            stats.packets_malformed > 0,
            "seed {seed}: no input was refused as malformed: the mutations are too tame"
        );
    }
}
