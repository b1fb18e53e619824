//! One-way latency distributions for simulated links.

use shoal_core::Rng;
use std::time::Duration;

/// How long a message takes to cross a link.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Latency {
    /// Always the same.
    Fixed(Duration),
    /// Uniform in `[min, max]`.
    Uniform {
        /// Fastest delivery.
        min: Duration,
        /// Slowest delivery.
        max: Duration,
    },
    /// `min` plus an exponentially distributed extra with mean `mean_extra`: mostly fast, with a
    /// long tail, like a real network under load. Capped at `min + 20 × mean_extra`.
    LongTail {
        /// Fastest delivery.
        min: Duration,
        /// Mean of the exponential part.
        mean_extra: Duration,
    },
}

impl Latency {
    /// Draws one latency.
    pub fn sample(&self, rng: &mut impl Rng) -> Duration {
        match *self {
            Latency::Fixed(d) => d,
            Latency::Uniform { min, max } => rng.duration_between(min, max),
            Latency::LongTail { min, mean_extra } => {
                let u = rng.unit_f64();
                let factor = (-(1.0 - u).ln()).min(20.0);
                min + mean_extra.mul_f64(factor)
            }
        }
    }
}

impl Default for Latency {
    /// A LAN: 0.5 to 2 ms.
    fn default() -> Self {
        Latency::Uniform {
            min: Duration::from_micros(500),
            max: Duration::from_millis(2),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_core::DetRng;

    #[test]
    fn samples_stay_within_each_distribution() {
        let mut rng = DetRng::from_seed(1);
        let ms = Duration::from_millis;
        assert_eq!(Latency::Fixed(ms(3)).sample(&mut rng), ms(3));
        for _ in 0..1_000 {
            let u = Latency::Uniform {
                min: ms(1),
                max: ms(4),
            }
            .sample(&mut rng);
            assert!(u >= ms(1) && u <= ms(4));
            let t = Latency::LongTail {
                min: ms(1),
                mean_extra: ms(2),
            }
            .sample(&mut rng);
            assert!(t >= ms(1) && t <= ms(41));
        }
    }
}
