//! Choosing and reporting simulation seeds.

/// The environment variable that pins a simulation's seed for replay.
pub const SEED_ENV: &str = "SHOAL_SIM_SEED";

/// The seed to run with: `SHOAL_SIM_SEED` if set (decimal or `0x` hex), otherwise a fresh
/// random one. Either way it is printed to stderr, so a failing run can be replayed exactly.
/// An unparsable `SHOAL_SIM_SEED` is reported and ignored rather than silently misread.
pub fn seed_from_env_or_random() -> u64 {
    let seed = match std::env::var(SEED_ENV) {
        Ok(text) => match parse_seed(&text) {
            Some(seed) => seed,
            None => {
                eprintln!("shoal-sim: ignoring unparsable {SEED_ENV}={text:?}");
                shoal_core::rng::entropy_seed()
            }
        },
        Err(_) => shoal_core::rng::entropy_seed(),
    };
    eprintln!("shoal-sim: seed {seed} (replay with {SEED_ENV}={seed})");
    seed
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
