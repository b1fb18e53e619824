//! Network partitions, planned from the seed: which nodes drop which peers' traffic. Each
//! node's rules are set through its `/v1/admin/faults` (its transport fault filter cuts
//! Raft, RPC and gossip alike); both sides of every cut get rules (a node's own rules
//! decide what it sends and what it accepts).

use shoal_core::{DetRng, Rng};

/// One partition: a description and every node's drop rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    /// What it is, for the summary (`majority [1, 2] / minority [3]`).
    pub detail: String,
    /// The nodes on the small side (the minority, the isolated node, the one-way node),
    /// by index.
    pub hit: Vec<usize>,
    /// For each node (by index): the peers (by index) whose traffic it drops, and in which
    /// direction (`inbound`, `outbound`, `both`).
    pub rules: Vec<Vec<(usize, &'static str)>>,
}

/// Plans the `turn`-th partition of a run (from 0) of `count` nodes. The kinds take turns,
/// a clean cut first: a majority from a minority, then a leader (`leader`, by index, when
/// known) from everyone, then one node's traffic in one direction only; the seed draws the
/// nodes.
pub fn plan(rng: &mut DetRng, turn: u64, count: usize, leader: Option<usize>) -> Partition {
    let mut rules = vec![Vec::new(); count];
    let cut_both = |rules: &mut Vec<Vec<(usize, &'static str)>>, a: usize, b: usize| {
        rules[a].push((b, "both"));
        rules[b].push((a, "both"));
    };
    let label = |nodes: &[usize]| {
        let ids: Vec<String> = nodes.iter().map(|i| (i + 1).to_string()).collect();
        format!("[{}]", ids.join(", "))
    };
    match turn % 3 {
        0 => {
            let mut order: Vec<usize> = (0..count).collect();
            for i in (1..count).rev() {
                order.swap(i, rng.below(i as u64 + 1) as usize);
            }
            let (minority, majority) = order.split_at((count - 1) / 2);
            let (mut minority, mut majority) = (minority.to_vec(), majority.to_vec());
            minority.sort_unstable();
            majority.sort_unstable();
            for &a in &minority {
                for &b in &majority {
                    cut_both(&mut rules, a, b);
                }
            }
            Partition {
                detail: format!(
                    "majority {} / minority {}",
                    label(&majority),
                    label(&minority)
                ),
                hit: minority,
                rules,
            }
        }
        1 => {
            let (x, known) = match leader {
                Some(x) => (x, true),
                None => (rng.below(count as u64) as usize, false),
            };
            for b in (0..count).filter(|&b| b != x) {
                cut_both(&mut rules, x, b);
            }
            Partition {
                detail: if known {
                    format!("isolate leader {}", x + 1)
                } else {
                    format!("isolate {} (no leader known)", x + 1)
                },
                hit: vec![x],
                rules,
            }
        }
        _ => {
            let x = rng.below(count as u64) as usize;
            // A mute node's messages are lost (requests and answers alike), a deaf node
            // hears nothing; the other direction flows.
            let mute = rng.chance(0.5);
            let (own, others) = if mute {
                ("outbound", "inbound")
            } else {
                ("inbound", "outbound")
            };
            for b in (0..count).filter(|&b| b != x) {
                rules[x].push((b, own));
                rules[b].push((x, others));
            }
            Partition {
                detail: format!(
                    "one-way: {} {}",
                    x + 1,
                    if mute {
                        "cannot send"
                    } else {
                        "cannot receive"
                    }
                ),
                hit: vec![x],
                rules,
            }
        }
    }
}

impl Partition {
    /// Whether it cuts both ways (a majority from a minority, or a node from everyone),
    /// rather than one node's traffic one way.
    pub fn is_clean_cut(&self) -> bool {
        !self.detail.starts_with("one-way")
    }
}

#[cfg(test)]
mod tests {
    use super::plan;
    use shoal_core::DetRng;

    /// Every kind comes up in turn; a majority/minority cut separates a minority from a
    /// majority with rules on both sides; the other kinds hit one node.
    #[test]
    fn partitions_cut_what_they_say() {
        let mut seen = std::collections::HashSet::new();
        for seed in 0..200 {
            let mut rng = DetRng::from_seed(seed);
            let p = plan(&mut rng, seed % 3, 5, Some(2));
            let kind = p.detail.split(' ').next().unwrap().to_string();
            seen.insert(kind.clone());
            assert_eq!(p.is_clean_cut(), seed % 3 != 2, "{p:?}");
            match kind.as_str() {
                "majority" => {
                    assert_eq!(p.hit.len(), 2, "{p:?}");
                    for &a in &p.hit {
                        let cut: Vec<usize> = p.rules[a].iter().map(|r| r.0).collect();
                        assert_eq!(cut.len(), 3, "{p:?}");
                        assert!(cut.iter().all(|b| !p.hit.contains(b)), "{p:?}");
                        for &b in &cut {
                            assert!(p.rules[b].contains(&(a, "both")), "{p:?}");
                        }
                    }
                }
                "isolate" => {
                    assert_eq!(p.hit, vec![2]);
                    assert_eq!(p.rules[2].len(), 4);
                    assert!((0..5)
                        .filter(|&b| b != 2)
                        .all(|b| p.rules[b] == [(2, "both")]));
                }
                "one-way:" => {
                    let x = p.hit[0];
                    assert_eq!(p.rules[x].len(), 4);
                    let own = p.rules[x][0].1;
                    let others = if own == "outbound" {
                        "inbound"
                    } else {
                        "outbound"
                    };
                    assert!((0..5)
                        .filter(|&b| b != x)
                        .all(|b| p.rules[b] == [(x, others)]));
                }
                other => panic!("unknown kind {other}"),
            }
        }
        assert_eq!(seen.len(), 3, "{seen:?}");
    }
}
