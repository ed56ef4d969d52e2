//! Diffraction: a wave that nobody hears on its channel bends to the nearest
//! parent channel that has a resonator.
//!
//! A wave built with [`diffracting(true)`](crate::WaveBuilder::diffracting)
//! that finds no resonator on `orders.eu.created` is emitted again on
//! `orders.eu`, then on `orders`, until someone hears it. Each bend is one
//! level up ([`Channel::parent`](crate::Channel::parent)) and one hop: its
//! source amplitude is weakened by `physics.diffraction_factor` (default 0.5)
//! and it is measured again by the attenuation rule, so a wave that bends
//! twice arrives with `a0 · factor² · attenuation_factor²`. The hop limit
//! holds (past it the wave is dropped), a wave that dies on the way is
//! dropped as expired, and one that finds nobody up to the root is unrouted.
//! Bends are counted (`StatsSnapshot::diffracted`).
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use aether_core::{Aether, Vibrator, Wave};
//!
//! let aether = Aether::default();
//! let mut ops = Vibrator::create("ops", &aether).await?;
//! ops.resonate_on("alerts").await?; // nobody on alerts.disk
//! let disk = Vibrator::create("disk", &aether).await?;
//! disk.emit(Wave::builder("alerts.disk").diffracting(true).build()?).await?;
//!
//! let wave = ops.receive().await.unwrap();
//! assert_eq!(wave.channel().as_str(), "alerts");
//! assert_eq!(wave.propagation_count(), 1);
//! assert!((wave.amplitude().value() - 0.5 * 0.95).abs() < 1e-9);
//! assert_eq!(aether.stats().diffracted, 1);
//! # Ok(()) }
//! ```
//!
//! The embedded medium knows at once whether anyone listens. Over NATS the
//! emitting aether publishes a diffracting (or reflectable) wave with a reply
//! subject of its own and learns from the server's "no responders" status
//! that nobody heard it (`medium/nats/probe.rs`).

use crate::{
    AetherConfig, ReflectionReason, Wave, admission::Life, stats::Counters, wave::unix_nanos,
};

/// Bends `wave`, which nobody heard, one level up: `Ok` if it goes on to
/// the parent channel; otherwise why it stops, counted (no parent: unrouted;
/// past the hop limit; dead).
#[cfg_attr(not(feature = "nats"), allow(dead_code))]
pub(crate) fn bend(
    wave: &mut Wave,
    config: &AetherConfig,
    stats: &Counters,
) -> Result<(), ReflectionReason> {
    Bending::of(config).bend(wave, stats)
}

/// What bending needs of an aether's settings.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Bending {
    /// Amplitude kept per bend (`physics.diffraction_factor`).
    factor: f64,
    /// The life rules a bent wave is judged by.
    life: Life,
}

impl Bending {
    pub(crate) fn of(config: &AetherConfig) -> Self {
        Self {
            factor: config.physics.diffraction_factor,
            life: Life::of(config),
        }
    }

    /// [`bend`], with these settings.
    pub(crate) fn bend(&self, wave: &mut Wave, stats: &Counters) -> Result<(), ReflectionReason> {
        let Some(parent) = wave.channel().parent() else {
            stats.unrouted();
            return Err(ReflectionReason::NoResonator);
        };
        wave.diffract(parent, self.factor);
        // A bend is a hop: the wave has hopped, so the rules measure it.
        if let Err(reason) = self.life.judge(wave, unix_nanos()) {
            stats.dropped(reason);
            return Err(reason.into());
        }
        stats.diffracted();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DropReason;
    use crate::physics::PhysicsConfig;

    fn config(factor: f64, max_propagation: u32) -> AetherConfig {
        AetherConfig {
            max_propagation,
            physics: PhysicsConfig {
                diffraction_factor: factor,
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn each_bend_is_a_hop_and_a_factor() {
        let stats = Counters::default();
        let mut wave = Wave::builder("a.b.c").diffracting(true).build().unwrap();
        let config = config(0.5, 10);
        assert_eq!(bend(&mut wave, &config, &stats), Ok(()));
        assert_eq!(wave.channel().as_str(), "a.b");
        assert!((wave.amplitude().value() - 0.5 * 0.95).abs() < 1e-12);
        assert_eq!(bend(&mut wave, &config, &stats), Ok(()));
        assert_eq!(wave.channel().as_str(), "a");
        assert_eq!(wave.propagation_count(), 2);
        assert!((wave.amplitude().value() - 0.25 * 0.95 * 0.95).abs() < 1e-12);
        assert_eq!(
            bend(&mut wave, &config, &stats),
            Err(ReflectionReason::NoResonator)
        );
        let counted = stats.snapshot();
        assert_eq!((counted.diffracted, counted.unrouted), (2, 1));
    }

    #[test]
    fn the_hop_limit_and_death_stop_a_bend() {
        let stats = Counters::default();
        let mut wave = Wave::new("a.b", ());
        assert_eq!(
            bend(&mut wave, &config(0.5, 0), &stats),
            Err(ReflectionReason::PropagationLimit)
        );
        let mut weak = Wave::builder("a.b").amplitude(0.015).build().unwrap();
        assert_eq!(
            bend(&mut weak, &config(0.5, 10), &stats),
            Err(ReflectionReason::Expired)
        );
        let counted = stats.snapshot();
        assert_eq!(counted.dropped(DropReason::PropagationLimit), 1);
        assert_eq!(counted.dropped(DropReason::Expired), 1);
        assert_eq!(counted.diffracted, 0);
    }
}
