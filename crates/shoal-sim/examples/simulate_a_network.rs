//! A client pinging a server in virtual time: on a LAN, on a lossy link, through a partition and
//! a crash, twice with one seed (the run replays exactly), and with an invariant that fails.
//!
//! Run it with `cargo run -p shoal-sim --example simulate_a_network`.

use shoal_core::{Instant, NodeId};
use shoal_sim::{Latency, LinkConfig, Node, Outputs, SimConfig, SimError, Simulation};
use std::time::Duration;

const CLIENT: NodeId = NodeId::new(1);
const SERVER: NodeId = NodeId::new(2);

/// A client (made one with `act`) sends a numbered ping every 10 ms; a server answers each.
#[derive(Default)]
struct Peer {
    client: bool,
    sent: u64,
    answered: u64,
}

impl Node for Peer {
    type Message = u64; // a ping's number, sent back as its answer
    type Timer = ();
    fn on_start(&mut self, _: Instant, _: &mut Outputs<u64, ()>) {}
    fn on_message(&mut self, _: Instant, from: NodeId, n: u64, out: &mut Outputs<u64, ()>) {
        if self.client {
            self.answered += 1;
        } else {
            out.send(from, n);
        }
    }
    fn on_timer(&mut self, _: Instant, _: (), out: &mut Outputs<u64, ()>) {
        self.sent += 1;
        out.send(SERVER, self.sent);
        out.set_timer(Duration::from_millis(10), ());
    }
}

/// A client and a server on `link`, run for `time` (the network's seed is `seed`).
fn start(seed: u64, link: LinkConfig, time: Duration) -> Result<Simulation<Peer>, SimError> {
    let mut sim = Simulation::new(seed, SimConfig::default());
    sim.network_mut().set_default_link(link);
    sim.add_node(CLIENT, Peer::default());
    sim.add_node(SERVER, Peer::default());
    sim.act(CLIENT, |peer, _, out| {
        peer.client = true; // from outside, as a test or an operator would
        out.set_timer(Duration::from_millis(10), ());
    });
    sim.run_for(time, |_| Ok(()))?;
    Ok(sim)
}

fn unanswered(sim: &Simulation<Peer>) -> u64 {
    sim.node(CLIENT).map_or(0, |c| c.sent - c.answered)
}

fn report(label: &str, sim: &Simulation<Peer>) {
    let (now, lost, dropped) = (sim.now(), unanswered(sim), sim.stats().dropped);
    println!("{label}, at {now:?}: {lost} pings unanswered, {dropped} lost in the network");
}

fn main() -> Result<(), SimError> {
    let ms = Duration::from_millis;
    report("1. on a LAN", &start(1, LinkConfig::default(), ms(1000))?);
    let mut lossy = LinkConfig::reliable(Latency::Fixed(ms(2)));
    lossy.loss = 0.2;
    report("2. on a link losing 20%", &start(1, lossy, ms(1000))?);
    let mut sim = start(1, LinkConfig::default(), ms(300))?;
    sim.network_mut().partition(&[CLIENT], &[SERVER]);
    sim.run_for(ms(300), |_| Ok(()))?;
    report("3. partitioned from 300 ms", &sim);
    sim.network_mut().heal();
    sim.crash(SERVER);
    sim.run_for(ms(300), |_| Ok(()))?;
    report("   healed at 600 ms, the server crashed then", &sim);

    let digest = |seed| start(seed, lossy, ms(1000)).map(|sim| sim.trace().digest());
    let (a, b, c) = (digest(7)?, digest(7)?, digest(8)?);
    println!("4. trace digests: seed 7 {a:x}, seed 7 again {b:x}, seed 8 {c:x}");
    let invariant = |sim: &Simulation<Peer>| match unanswered(sim) {
        n if n > 20 => Err(format!("{n} pings unanswered")),
        _ => Ok(()),
    };
    if let Err(e) = start(9, lossy, Duration::ZERO)?.run_for(ms(1000), invariant) {
        println!("5. {e}");
    }
    Ok(())
}
