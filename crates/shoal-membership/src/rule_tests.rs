//! One test per protocol rule, driving a single core with hand-made packets.

use crate::config::MembershipConfig;
use crate::event::MemberEventKind;
use crate::keyring::Keyring;
use crate::member::MemberState;
use crate::message::{Alive, Dead, IndirectPing, Message, Ping, Suspect, UserBroadcast};
use crate::output::{Output, Timer, TimerKind};
use crate::packet::{push_part, Kind, PacketCodec};
use crate::sim::sim_addr;
use crate::swim::{Swim, SwimError};
use shoal_core::{codec, Instant, NodeId};
use std::net::SocketAddr;
use std::time::Duration;

fn id(n: u64) -> NodeId {
    NodeId::new(n)
}

fn addr(n: u64) -> SocketAddr {
    sim_addr(id(n))
}

fn at(secs: f64) -> Instant {
    Instant::from_nanos((secs * 1e9) as u64)
}

fn node_with(config: MembershipConfig) -> Swim {
    let mut swim = Swim::new(id(1), addr(1), Vec::new(), 0, config, 1).unwrap();
    swim.start(at(0.0));
    drain(&mut swim);
    swim
}

fn node() -> Swim {
    node_with(MembershipConfig::lan())
}

fn drain(swim: &mut Swim) -> Vec<Output> {
    std::iter::from_fn(|| swim.poll_output()).collect()
}

fn body(messages: &[Message]) -> Vec<u8> {
    let mut body = Vec::new();
    for m in messages {
        assert!(push_part(&mut body, &codec::encode(m).unwrap(), 4096));
    }
    body
}

fn packet(messages: &[Message]) -> Vec<u8> {
    PacketCodec::new(String::new(), None, false).seal(Kind::Datagram, &body(messages))
}

fn deliver(swim: &mut Swim, now: Instant, from: u64, messages: &[Message]) -> Vec<Output> {
    swim.handle_datagram(now, addr(from), &packet(messages));
    drain(swim)
}

fn alive(n: u64, incarnation: u64) -> Message {
    Message::Alive(Alive {
        id: id(n),
        addr: addr(n),
        incarnation,
        meta: Vec::new(),
    })
}

fn suspect(n: u64, incarnation: u64, from: u64) -> Message {
    Message::Suspect(Suspect {
        id: id(n),
        incarnation,
        from: id(from),
    })
}

fn dead(n: u64, incarnation: u64, from: u64) -> Message {
    Message::Dead(Dead {
        id: id(n),
        incarnation,
        from: id(from),
    })
}

fn events(outputs: &[Output]) -> Vec<(MemberEventKind, u64)> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Event(e) => Some((e.kind, e.id.get())),
            _ => None,
        })
        .collect()
}

fn state(swim: &Swim, n: u64) -> Option<(MemberState, u64)> {
    swim.member(id(n)).map(|m| (m.state, m.incarnation))
}

fn datagrams_to(outputs: &[Output], n: u64) -> usize {
    outputs
        .iter()
        .filter(|o| matches!(o, Output::Datagram { to, .. } if *to == addr(n)))
        .count()
}

fn timers(outputs: &[Output]) -> Vec<(Duration, Timer)> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Timer { after, timer } => Some((*after, timer.clone())),
            _ => None,
        })
        .collect()
}

/// A node that knows members 2..=n as alive.
fn node_knowing(n: u64) -> Swim {
    let mut swim = node();
    let news: Vec<Message> = (2..=n).map(|m| alive(m, 0)).collect();
    for chunk in news.chunks(20) {
        deliver(&mut swim, at(0.0), 2, chunk);
    }
    swim
}

#[test]
fn a_new_member_joins_and_newer_incarnations_replace_older_ones() {
    let mut swim = node();
    assert_eq!(
        events(&deliver(&mut swim, at(1.0), 2, &[alive(2, 3)])),
        [(MemberEventKind::Joined, 2)]
    );
    assert_eq!(state(&swim, 2), Some((MemberState::Alive, 3)));
    // The same news again is a no-op; older news is stale and counted.
    assert!(events(&deliver(&mut swim, at(1.0), 2, &[alive(2, 3), alive(2, 1)])).is_empty());
    assert_eq!(swim.stats().stale_updates, 1);
    assert_eq!(swim.num_live(), 2);
}

#[test]
fn suspect_of_the_current_incarnation_wins_over_alive_and_refutation_wins_back() {
    let mut swim = node_knowing(10);
    let out = deliver(&mut swim, at(1.0), 3, &[suspect(2, 0, 3)]);
    assert_eq!(events(&out), [(MemberEventKind::Suspect, 2)]);
    // Alive at the same incarnation does not clear a suspicion; a higher one does.
    assert!(events(&deliver(&mut swim, at(1.1), 3, &[alive(2, 0)])).is_empty());
    assert_eq!(state(&swim, 2), Some((MemberState::Suspect, 0)));
    let out = deliver(&mut swim, at(1.2), 2, &[alive(2, 1)]);
    assert_eq!(events(&out), [(MemberEventKind::AliveAgain, 2)]);
    // A suspicion of the older incarnation is now stale.
    deliver(&mut swim, at(1.3), 3, &[suspect(2, 0, 3)]);
    assert_eq!(state(&swim, 2), Some((MemberState::Alive, 1)));
}

#[test]
fn a_node_suspected_or_declared_dead_refutes_with_a_higher_incarnation() {
    let mut swim = node_knowing(5);
    deliver(&mut swim, at(1.0), 3, &[suspect(1, 0, 3)]);
    assert_eq!(swim.incarnation(), 1);
    assert_eq!(
        swim.health_score(),
        1,
        "refuting raises the local health score"
    );
    deliver(&mut swim, at(2.0), 3, &[dead(1, 4, 3)]);
    assert_eq!(swim.incarnation(), 5);
    assert_eq!(state(&swim, 1), Some((MemberState::Alive, 5)));
    assert_eq!(swim.stats().refutations, 2);
    // The refutation is gossiped.
    let out = {
        swim.gossip_now(at(2.1));
        drain(&mut swim)
    };
    assert!(out.iter().any(|o| matches!(o, Output::Datagram { .. })));
}

/// Regression: an accusation at incarnation `u64::MAX` made `refute` overflow (a panic with
/// overflow checks, a wrap to 0 without, after which the node could never refute again). Any
/// news above `MAX_INCARNATION`, by datagram or push-pull, is now refused and counted.
#[test]
fn news_at_an_impossible_incarnation_is_refused_and_refuting_still_works() {
    use crate::member::{WireMember, MAX_INCARNATION};
    use crate::message::{PushPull, ReliableRequest};
    let mut swim = node_knowing(5);
    for m in [
        suspect(1, u64::MAX, 3),
        dead(1, u64::MAX, 3),
        alive(1, u64::MAX),
        suspect(2, MAX_INCARNATION + 1, 3),
        dead(2, u64::MAX, 3),
        alive(2, u64::MAX),
    ] {
        deliver(&mut swim, at(1.0), 3, &[m]);
    }
    assert_eq!(swim.incarnation(), 0);
    assert_eq!(state(&swim, 2), Some((MemberState::Alive, 0)));
    assert_eq!(swim.stats().incarnations_refused, 6);
    assert_eq!(swim.stats().refutations, 0);
    // The same accusation inside a push-pull.
    let accused = WireMember {
        id: id(1),
        addr: addr(1),
        incarnation: u64::MAX,
        state: MemberState::Dead,
        meta: Vec::new(),
    };
    let request = ReliableRequest::PushPull(PushPull {
        join: false,
        members: vec![accused],
    });
    let sealed = PacketCodec::new(String::new(), None, false)
        .seal(Kind::Request, &codec::encode(&request).unwrap());
    assert!(swim
        .handle_reliable_request(at(1.5), addr(3), &sealed)
        .is_some());
    assert_eq!(swim.incarnation(), 0);
    assert_eq!(swim.stats().incarnations_refused, 7);
    // An accusation at the bound is refused too: its refutation could not be accepted.
    deliver(&mut swim, at(2.0), 3, &[suspect(1, MAX_INCARNATION, 3)]);
    assert_eq!(swim.incarnation(), 0);
    assert_eq!(swim.stats().incarnations_refused, 8);
    // The highest accusation accepted is refuted at the bound, and a peer believes the
    // refutation.
    deliver(&mut swim, at(3.0), 3, &[suspect(1, MAX_INCARNATION - 1, 3)]);
    assert_eq!(swim.incarnation(), MAX_INCARNATION);
    assert_eq!(swim.stats().refutations, 1);
    let mut peer = node_knowing(5);
    deliver(&mut peer, at(3.0), 3, &[suspect(2, MAX_INCARNATION - 1, 3)]);
    assert_eq!(
        state(&peer, 2),
        Some((MemberState::Suspect, MAX_INCARNATION - 1))
    );
    deliver(&mut peer, at(3.1), 2, &[alive(2, MAX_INCARNATION)]);
    assert_eq!(state(&peer, 2), Some((MemberState::Alive, MAX_INCARNATION)));
}

#[test]
fn dead_beats_suspect_and_only_a_higher_incarnation_revives() {
    let mut swim = node_knowing(10);
    deliver(&mut swim, at(1.0), 3, &[suspect(2, 0, 3)]);
    let out = deliver(&mut swim, at(1.5), 3, &[dead(2, 0, 3)]);
    assert_eq!(events(&out), [(MemberEventKind::Dead, 2)]);
    assert_eq!(swim.num_live(), 9);
    assert!(events(&deliver(&mut swim, at(2.0), 2, &[alive(2, 0)])).is_empty());
    let out = deliver(&mut swim, at(3.0), 2, &[alive(2, 1)]);
    assert_eq!(events(&out), [(MemberEventKind::Joined, 2)]);
    assert_eq!(swim.num_live(), 10);
}

#[test]
fn a_left_member_is_dropped_at_once_not_suspected() {
    let mut swim = node_knowing(4);
    let out = deliver(&mut swim, at(1.0), 2, &[dead(2, 0, 2)]);
    assert_eq!(events(&out), [(MemberEventKind::Left, 2)]);
    assert_eq!(state(&swim, 2), Some((MemberState::Left, 0)));
}

#[test]
fn a_left_notice_arriving_after_a_dead_verdict_turns_it_into_left() {
    let mut swim = node_knowing(4);
    deliver(&mut swim, at(1.0), 3, &[dead(2, 0, 3)]);
    let out = deliver(&mut swim, at(2.0), 3, &[dead(2, 0, 2)]);
    assert_eq!(events(&out), [(MemberEventKind::Left, 2)]);
    assert_eq!(state(&swim, 2), Some((MemberState::Left, 0)));
    // Dead never goes back over Left, and a Left for an older incarnation is stale.
    assert!(events(&deliver(&mut swim, at(3.0), 3, &[dead(2, 0, 3)])).is_empty());
    deliver(&mut swim, at(3.0), 3, &[dead(4, 0, 3)]);
    deliver(&mut swim, at(3.0), 3, &[alive(4, 2)]);
    deliver(&mut swim, at(3.5), 3, &[dead(4, 2, 3)]);
    assert!(events(&deliver(&mut swim, at(4.0), 4, &[dead(4, 1, 4)])).is_empty());
    assert_eq!(state(&swim, 4), Some((MemberState::Dead, 2)));
}

#[test]
fn confirmations_shorten_the_suspicion_and_expiry_declares_dead() {
    // 1000 members: min timeout 12 s, max 72 s, k = 2.
    let mut swim = node_knowing(1000);
    let out = deliver(&mut swim, at(10.0), 3, &[suspect(2, 0, 3)]);
    let first = timers(&out);
    assert!(first
        .iter()
        .any(|(after, t)| *after == Duration::from_secs(72) && t.0 == TimerKind::Suspicion(id(2))));
    let out = deliver(&mut swim, at(11.0), 4, &[suspect(2, 0, 4)]);
    let (after, _) = timers(&out)[0].clone();
    // 72 − 60 × ln 2 / ln 3 ≈ 34.14 s after the start, re-armed 1 s in.
    assert!((after.as_secs_f64() - 33.14).abs() < 0.01, "{after:?}");
    deliver(&mut swim, at(12.0), 5, &[suspect(2, 0, 5)]);
    // Fully confirmed: 12 s after the suspicion started, it is dead, no last chance needed.
    swim.handle_timer(at(21.9), Timer(TimerKind::Suspicion(id(2))));
    assert_eq!(state(&swim, 2).unwrap().0, MemberState::Suspect);
    swim.handle_timer(at(22.0), Timer(TimerKind::Suspicion(id(2))));
    assert_eq!(state(&swim, 2).unwrap().0, MemberState::Dead);
}

#[test]
fn a_weakly_confirmed_suspicion_gets_a_last_chance_probe_that_a_refutation_answers() {
    let mut swim = node_knowing(1000);
    deliver(&mut swim, at(0.0), 3, &[suspect(2, 0, 3)]);
    swim.handle_timer(at(72.0), Timer(TimerKind::Suspicion(id(2))));
    let out = drain(&mut swim);
    assert_eq!(
        state(&swim, 2).unwrap().0,
        MemberState::Suspect,
        "not yet dead"
    );
    assert_eq!(
        datagrams_to(&out, 2),
        1,
        "a direct probe carrying the suspicion"
    );
    // Its ack is expected (not counted as unexpected) and changes nothing by itself.
    let seq = *swim.last_chance_seqs.back().expect("a last-chance probe");
    deliver(&mut swim, at(72.4), 2, &[Message::Ack { seq }]);
    assert_eq!(swim.stats().last_chance_acks, 1);
    assert_eq!(swim.stats().unexpected_acks, 0);
    assert_eq!(state(&swim, 2).unwrap().0, MemberState::Suspect);
    // The member refutes in time.
    deliver(&mut swim, at(72.5), 2, &[alive(2, 1)]);
    swim.handle_timer(at(73.0), Timer(TimerKind::Suspicion(id(2))));
    assert_eq!(state(&swim, 2), Some((MemberState::Alive, 1)));

    // Without Lifeguard's buddy system, expiry is final.
    let mut plain = node_with(MembershipConfig::lan().without_lifeguard());
    deliver(&mut plain, at(0.0), 2, &[alive(2, 0), alive(3, 0)]);
    deliver(&mut plain, at(0.0), 3, &[suspect(2, 0, 3)]);
    plain.handle_timer(at(4.0), Timer(TimerKind::Suspicion(id(2))));
    assert_eq!(state(&plain, 2).unwrap().0, MemberState::Dead);
}

#[test]
fn a_probe_is_answered_and_a_misdirected_one_is_ignored() {
    let mut swim = node_knowing(3);
    let ping = |target| {
        Message::Ping(Ping {
            seq: 7,
            target: id(target),
            suspicion: None,
        })
    };
    let out = deliver(&mut swim, at(1.0), 2, &[ping(1)]);
    assert_eq!(datagrams_to(&out, 2), 1);
    let out = deliver(&mut swim, at(1.0), 2, &[ping(9)]);
    assert_eq!(datagrams_to(&out, 2), 0);
    assert_eq!(swim.stats().misdirected_pings, 1);
}

#[test]
fn a_failed_probe_goes_indirect_then_suspects_and_missing_nacks_raise_awareness() {
    let mut swim = node_knowing(6);
    swim.handle_timer(at(1.0), Timer(TimerKind::Probe(0)));
    let out = drain(&mut swim);
    let target = out
        .iter()
        .find_map(|o| match o {
            Output::Datagram { to, .. } => crate::sim::sim_node(*to),
            _ => None,
        })
        .expect("a ping went out");
    let seq = swim.probe.as_ref().unwrap().seq;
    swim.handle_timer(at(1.5), Timer(TimerKind::ProbeTimeout(seq)));
    let out = drain(&mut swim);
    let helpers = out
        .iter()
        .filter(|o| matches!(o, Output::Datagram { to, .. } if *to != sim_addr(target)))
        .count();
    assert_eq!(helpers, 3, "indirect_checks relays asked");
    assert!(
        out.iter().any(|o| matches!(o, Output::Reliable { .. })),
        "TCP fallback ping"
    );
    // One nack of three expected: the two missing ones count against our own health.
    deliver(&mut swim, at(1.8), 3, &[Message::Nack { seq }]);
    swim.handle_timer(at(2.0), Timer(TimerKind::ProbeEnd(seq)));
    assert_eq!(swim.member(target).unwrap().state, MemberState::Suspect);
    assert_eq!(swim.health_score(), 2);
    assert_eq!(swim.stats().probe_failures, 1);
}

#[test]
fn an_indirect_probe_is_relayed_and_its_ack_forwarded_or_nacked() {
    let mut swim = node_knowing(4);
    let request = Message::IndirectPing(IndirectPing {
        seq: 42,
        target: id(3),
        target_addr: addr(3),
        want_nack: true,
        suspicion: None,
    });
    let out = deliver(&mut swim, at(1.0), 2, std::slice::from_ref(&request));
    assert_eq!(datagrams_to(&out, 3), 1);
    let relay_seq = *swim.relays.keys().next().unwrap();
    let out = deliver(&mut swim, at(1.1), 3, &[Message::Ack { seq: relay_seq }]);
    assert_eq!(datagrams_to(&out, 2), 1, "ack forwarded to the origin");
    // A second relay that times out sends a nack.
    deliver(&mut swim, at(2.0), 2, &[request]);
    let relay_seq = *swim.relays.keys().next().unwrap();
    swim.handle_timer(at(2.5), Timer(TimerKind::RelayTimeout(relay_seq)));
    assert_eq!(datagrams_to(&drain(&mut swim), 2), 1);
}

#[test]
fn a_member_claiming_a_held_address_or_moving_while_live_is_refused() {
    let mut swim = node_knowing(3);
    let impostor = Message::Alive(Alive {
        id: id(9),
        addr: addr(2),
        incarnation: 0,
        meta: Vec::new(),
    });
    deliver(&mut swim, at(1.0), 9, &[impostor]);
    assert!(swim.member(id(9)).is_none());
    let mover = Message::Alive(Alive {
        id: id(2),
        addr: addr(8),
        incarnation: 5,
        meta: Vec::new(),
    });
    deliver(&mut swim, at(1.0), 8, std::slice::from_ref(&mover));
    assert_eq!(swim.member(id(2)).unwrap().addr, addr(2));
    assert_eq!(swim.stats().address_conflicts, 2);
    // Someone claiming to be us is refuted, not believed.
    deliver(&mut swim, at(1.0), 8, &[alive(1, 3)]);
    assert_eq!(swim.incarnation(), 4);
}

#[test]
fn a_dead_member_is_reclaimed_from_a_new_address_after_the_reclaim_time() {
    let mut config = MembershipConfig::lan();
    config.dead_node_reclaim_time = Duration::from_secs(60);
    let mut swim = node_with(config);
    deliver(&mut swim, at(0.0), 2, &[alive(2, 0), alive(3, 0)]);
    deliver(&mut swim, at(1.0), 3, &[dead(2, 0, 3)]);
    let moved = Message::Alive(Alive {
        id: id(2),
        addr: addr(8),
        incarnation: 0,
        meta: Vec::new(),
    });
    deliver(&mut swim, at(30.0), 8, std::slice::from_ref(&moved));
    assert_eq!(swim.member(id(2)).unwrap().addr, addr(2), "too early");
    let out = deliver(&mut swim, at(62.0), 8, &[moved]);
    assert_eq!(events(&out), [(MemberEventKind::Reclaimed, 2)]);
    assert_eq!(swim.member(id(2)).unwrap().addr, addr(8));
}

#[test]
fn metadata_over_the_bound_is_refused_locally_and_from_peers() {
    let mut swim = node();
    assert_eq!(
        swim.set_meta(vec![0; 513]),
        Err(SwimError::MetaTooLarge {
            size: 513,
            limit: 512
        })
    );
    swim.set_meta(b"zone=a".to_vec()).unwrap();
    assert_eq!(
        swim.incarnation(),
        1,
        "metadata is versioned by incarnation"
    );
    let fat = Message::Alive(Alive {
        id: id(2),
        addr: addr(2),
        incarnation: 0,
        meta: vec![0; 600],
    });
    deliver(&mut swim, at(1.0), 2, &[fat]);
    assert!(swim.member(id(2)).is_none());
    assert_eq!(swim.stats().meta_too_large, 2);
    let out = deliver(&mut swim, at(1.0), 2, &[alive(2, 0)]);
    let out2 = deliver(
        &mut swim,
        at(1.0),
        2,
        &[Message::Alive(Alive {
            id: id(2),
            addr: addr(2),
            incarnation: 1,
            meta: b"x".to_vec(),
        })],
    );
    assert_eq!(events(&out), [(MemberEventKind::Joined, 2)]);
    assert_eq!(events(&out2), [(MemberEventKind::Updated, 2)]);
}

#[test]
fn bad_packets_are_counted_and_change_nothing() {
    let mut swim = node_knowing(3);
    let before = (swim.members().to_vec(), swim.incarnation());
    let good = packet(&[alive(7, 0)]);
    let mut wrong_label =
        PacketCodec::new("other".into(), None, false).seal(Kind::Datagram, &body(&[alive(7, 0)]));
    let encrypted = PacketCodec::new(String::new(), Some(Keyring::new([1; 32])), false)
        .seal(Kind::Datagram, &body(&[alive(7, 0)]));
    let mut bad_message = body(&[alive(7, 0)]);
    bad_message.extend_from_slice(&[0, 3, 0xFF, 0xFF, 0xFF]);
    let bad_message =
        PacketCodec::new(String::new(), None, false).seal(Kind::Datagram, &bad_message);
    let inputs: Vec<Vec<u8>> = vec![
        Vec::new(),
        b"garbage".to_vec(),
        good[..good.len() - 1].to_vec(),
        vec![0; 2000],
        std::mem::take(&mut wrong_label),
        encrypted,
        bad_message,
    ];
    for bytes in &inputs {
        swim.handle_datagram(at(1.0), addr(7), bytes);
    }
    // Every truncation of a good packet is refused too.
    for cut in 0..good.len() {
        swim.handle_datagram(at(1.0), addr(7), &good[..cut]);
    }
    assert_eq!((swim.members().to_vec(), swim.incarnation()), before);
    let s = swim.stats();
    assert_eq!(s.packets_wrong_label, 1);
    assert_eq!(s.packets_decrypt_failed, 1);
    assert!(s.packets_malformed >= 5 + good.len() as u64 - 1);
    assert!(drain(&mut swim)
        .iter()
        .all(|o| !matches!(o, Output::Event(_))));
}

#[test]
fn encrypted_nodes_refuse_plaintext_unless_told_to_accept_it() {
    let mut config = MembershipConfig::lan();
    config.keyring = Some(Keyring::new([5; 32]));
    let mut strict = node_with(config.clone());
    strict.handle_datagram(at(1.0), addr(2), &packet(&[alive(2, 0)]));
    assert!(strict.member(id(2)).is_none());
    assert_eq!(strict.stats().packets_unencrypted, 1);
    config.accept_plaintext = true;
    let mut lenient = node_with(config);
    lenient.handle_datagram(at(1.0), addr(2), &packet(&[alive(2, 0)]));
    assert!(lenient.member(id(2)).is_some());
}

#[test]
fn user_broadcasts_are_delivered_once_and_the_queue_is_bounded() {
    let mut config = MembershipConfig::lan();
    config.user_broadcast_queue_limit = 2;
    let mut swim = node_with(config);
    let user = Message::User(UserBroadcast {
        origin: id(4),
        seq: 1,
        payload: b"hello".to_vec(),
    });
    let out = deliver(&mut swim, at(1.0), 2, std::slice::from_ref(&user));
    // Delivered with the id of the member that broadcast it, not the relay's.
    assert!(out.contains(&Output::UserMessage(crate::UserMessage {
        from: id(4),
        payload: b"hello".to_vec(),
    })));
    let out = deliver(&mut swim, at(1.0), 3, &[user]);
    assert!(
        !out.iter().any(|o| matches!(o, Output::UserMessage(_))),
        "delivered once"
    );
    swim.broadcast(b"a".to_vec()).unwrap();
    assert_eq!(
        swim.broadcast(b"b".to_vec()),
        Err(SwimError::BroadcastQueueFull { limit: 2 })
    );
    assert!(matches!(
        swim.broadcast(vec![0; 2000]),
        Err(SwimError::BroadcastTooLarge { .. })
    ));
}

#[test]
fn dead_and_left_members_are_reaped_after_their_retention() {
    let mut config = MembershipConfig::lan();
    config.dead_retention = Duration::from_secs(100);
    config.left_retention = Duration::from_secs(40);
    let mut swim = node_with(config);
    deliver(
        &mut swim,
        at(0.0),
        2,
        &[alive(2, 0), alive(3, 0), alive(4, 0)],
    );
    deliver(&mut swim, at(1.0), 3, &[dead(2, 0, 3), dead(3, 0, 3)]);
    swim.handle_timer(at(50.0), Timer(TimerKind::Reap));
    assert!(swim.member(id(3)).is_none(), "left: reaped");
    assert!(swim.member(id(2)).is_some(), "dead: kept for reconnection");
    swim.handle_timer(at(102.0), Timer(TimerKind::Reap));
    assert!(swim.member(id(2)).is_none());
    assert_eq!(swim.members().len(), 2);
    assert_eq!(swim.num_live(), 2);
}

#[test]
fn a_join_through_unreachable_seeds_retries_with_backoff_then_fails() {
    // Regression: the default retried forever, so `MembershipNode::join` never returned
    // when no seed answered. The default now gives up.
    let config = MembershipConfig::lan();
    let max = config.join_max_attempts;
    assert!(max > 0, "the default join must give up");
    let mut swim = node_with(config);
    swim.join(at(0.0), &[addr(1), addr(2), addr(3), addr(2)])
        .unwrap();
    let mut attempts = 0;
    let mut now = 0.0;
    loop {
        let out = drain(&mut swim);
        if let Some(Output::JoinFinished(result)) =
            out.iter().find(|o| matches!(o, Output::JoinFinished(_)))
        {
            assert_eq!(result, &Err(SwimError::JoinFailed { attempts: max }));
            break;
        }
        let requests: Vec<_> = out
            .iter()
            .filter_map(|o| match o {
                Output::Reliable { id, to, .. } => Some((*id, *to)),
                _ => None,
            })
            .collect();
        if !requests.is_empty() {
            attempts += 1;
            // Our own address and the duplicate are skipped.
            assert_eq!(requests.len(), 2);
            for (rid, _) in requests {
                swim.handle_reliable_response(at(now), rid, Err(()));
            }
            continue;
        }
        let (after, timer) = timers(&out)
            .into_iter()
            .find(|(_, t)| matches!(t.0, TimerKind::JoinRetry(_)))
            .expect("a retry timer");
        assert!(after >= Duration::from_millis(500) * attempts, "{after:?}");
        now += after.as_secs_f64();
        swim.handle_timer(at(now), timer);
    }
    assert_eq!(attempts, max);
}

#[test]
fn leaving_stops_probing_and_announces_left() {
    let mut swim = node_knowing(5);
    swim.leave(at(1.0));
    assert!(swim.has_left() && !swim.leave_announced());
    assert_eq!(swim.num_live(), 4);
    assert_eq!(swim.set_meta(Vec::new()), Err(SwimError::Left));
    for round in 0..20 {
        swim.gossip_now(at(1.0 + f64::from(round) * 0.2));
    }
    assert!(swim.leave_announced());
    swim.handle_timer(at(5.0), Timer(TimerKind::Probe(0)));
    assert!(swim.probe.is_none(), "no probing after leave");
}

#[test]
fn a_leaving_node_spends_its_notice_only_on_live_members() {
    let mut swim = node_knowing(5);
    deliver(&mut swim, at(1.0), 3, &[dead(4, 0, 3), dead(5, 0, 3)]);
    drain(&mut swim);
    swim.leave(at(1.5));
    let mut outputs = Vec::new();
    for round in 0..20 {
        swim.gossip_now(at(1.5 + f64::from(round) * 0.2));
        outputs.extend(drain(&mut swim));
    }
    assert!(swim.leave_announced());
    assert_eq!(datagrams_to(&outputs, 4) + datagrams_to(&outputs, 5), 0);
    assert!(datagrams_to(&outputs, 2) + datagrams_to(&outputs, 3) > 0);
    assert!(swim.probe.is_none(), "no probing after leave");
}

#[test]
fn the_member_table_is_bounded_and_further_members_are_refused() {
    let mut swim = node_with(MembershipConfig {
        max_members: 5,
        ..MembershipConfig::lan()
    });
    let news: Vec<Message> = (2..=9).map(|m| alive(m, 0)).collect();
    deliver(&mut swim, at(0.0), 2, &news);
    assert_eq!(swim.members().len(), 5, "this node and four others");
    assert_eq!(swim.stats().members_refused, 4);
    // Members already known still get news.
    deliver(&mut swim, at(1.0), 2, &[alive(3, 1)]);
    assert_eq!(state(&swim, 3), Some((MemberState::Alive, 1)));
    assert!(MembershipConfig {
        max_members: 1,
        ..MembershipConfig::lan()
    }
    .validate()
    .is_err());
}
