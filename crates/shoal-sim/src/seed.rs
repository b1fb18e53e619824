//! Choosing and reporting simulation seeds.

/// The environment variable that pins a simulation's seed for replay.
pub const SEED_ENV: &str = "SHOAL_SIM_SEED";

/// The environment variable that asks simulation tests to explore: to draw a fresh random
/// base seed instead of their fixed one (any value but `0` or empty).
pub const EXPLORE_ENV: &str = "SHOAL_SIM_EXPLORE";

/// The seed to run with: `SHOAL_SIM_SEED` if set (decimal or `0x` hex); otherwise a fresh
/// random one if `SHOAL_SIM_EXPLORE` is set; otherwise `fixed`, so that CI runs the same
/// seeds every time (a red run reproduces, a green one proves the same thing). Either way it
/// is printed to stderr, so a failing run can be replayed exactly, and its seed kept as a
/// regression test. An unparsable `SHOAL_SIM_SEED` is reported and ignored rather than
/// silently misread.
pub fn seed_from_env_or(fixed: u64) -> u64 {
    let explore = std::env::var(EXPLORE_ENV).is_ok_and(|v| !v.is_empty() && v != "0");
    let chosen = || {
        if explore {
            shoal_core::rng::entropy_seed()
        } else {
            fixed
        }
    };
    let seed = match std::env::var(SEED_ENV) {
        Ok(text) => match parse_seed(&text) {
            Some(seed) => seed,
            None => {
                eprintln!("shoal-sim: ignoring unparsable {SEED_ENV}={text:?}");
                chosen()
            }
        },
        Err(_) => chosen(),
    };
    eprintln!("shoal-sim: seed {seed} (replay with {SEED_ENV}={seed})");
    seed
}

/// The seeds a simulation test runs: `SHOAL_SIM_SEED` alone if it is set (to replay one);
/// otherwise `count` seeds from a base that is `fixed` (CI), or fresh with
/// `SHOAL_SIM_EXPLORE` (see [`seed_from_env_or`]). Every simulation test takes its seeds
/// here, so every one replays and explores the same way.
pub fn seeds_from_env_or(fixed: u64, count: u64) -> Vec<u64> {
    let replay = std::env::var(SEED_ENV)
        .ok()
        .and_then(|text| parse_seed(&text))
        .is_some();
    let base = seed_from_env_or(fixed);
    let count = if replay { 1 } else { count };
    (0..count).map(|i| base.wrapping_add(i)).collect()
}

/// Parses a seed written in decimal or as `0x`-prefixed hex.
pub fn parse_seed(text: &str) -> Option<u64> {
    let text = text.trim();
    match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_parse_in_decimal_and_hex() {
        assert_eq!(parse_seed("42"), Some(42));
        assert_eq!(parse_seed(" 0x2A "), Some(42));
        assert_eq!(parse_seed("forty-two"), None);
    }
}
