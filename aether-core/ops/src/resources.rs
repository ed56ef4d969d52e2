//! What the process uses: memory, threads, open files; limits that warn;
//! and a leak hint.
//!
//! [`ResourceUsage::read`] reads `/proc/self/status` (resident and virtual
//! memory, threads) and counts `/proc/self/fd` (Linux only; elsewhere it
//! returns an error). Allocator statistics (bytes allocated, fragmentation)
//! are not reported: the system allocator does not give them without
//! foreign calls, and Aether installs no allocator of its own; resident
//! memory is the number that matters to an operator anyway.
//!
//! [`RssSampler`] keeps resident-memory samples over a window and fits a
//! line through them: when memory grows steadily (a positive slope and a
//! good fit, over enough samples) it gives a [`LeakHint`] in bytes per
//! hour. Memory that rises and falls (caches, bursts) gives none.
//!
//! [`ResourceMonitor::check`] does both and compares with the
//! [`ResourceLimits`] (the `[resources]` section of the settings),
//! logging a warning for each limit exceeded. Call it every few seconds
//! (every 10 to 60 s is plenty).
//!
//! ```
//! use std::time::Duration;
//!
//! use aether_ops::resources::{ResourceLimits, ResourceMonitor, RssSampler};
//!
//! let limits = ResourceLimits { max_rss_bytes: Some(8 << 30), ..Default::default() };
//! let mut monitor = ResourceMonitor::new(limits, RssSampler::new(Duration::from_secs(3600), 30));
//! # #[cfg(target_os = "linux")] {
//! let report = monitor.check()?;
//! assert!(report.usage.rss_bytes > 0 && report.exceeded.is_empty());
//! assert!(report.leak.is_none()); // one sample says nothing about growth
//! # }
//! # Ok::<(), std::io::Error>(())
//! ```

use std::{
    collections::VecDeque,
    io,
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};

use crate::settings::{SettingsError, Validate};

/// What the process uses at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ResourceUsage {
    /// Resident memory (RSS), in bytes: the memory the process holds in RAM.
    pub rss_bytes: u64,
    /// Virtual memory (VMS), in bytes: everything mapped, resident or not.
    pub vms_bytes: u64,
    /// Threads of the process.
    pub threads: u64,
    /// Open file descriptors (files, sockets, pipes).
    pub open_fds: u64,
}

impl ResourceUsage {
    /// Reads this process's usage from `/proc/self` (Linux).
    pub fn read() -> io::Result<Self> {
        let status = std::fs::read_to_string("/proc/self/status")?;
        let mut usage = Self::parse_status(&status)?;
        // The directory's own descriptor, open while it is read, is listed
        // too: leave it out.
        let listed = std::fs::read_dir("/proc/self/fd")?.count() as u64;
        usage.open_fds = listed.saturating_sub(1);
        Ok(usage)
    }

    /// Reads `VmRSS`, `VmSize` and `Threads` from the text of
    /// `/proc/<pid>/status`.
    fn parse_status(status: &str) -> io::Result<Self> {
        let field = |name: &str| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
                .and_then(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
                .ok_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("no {name} in /proc/self/status"),
                    )
                })
        };
        Ok(Self {
            rss_bytes: field("VmRSS")? * 1024,
            vms_bytes: field("VmSize")? * 1024,
            threads: field("Threads")?,
            open_fds: 0,
        })
    }
}

/// Limits on what the process uses: the `[resources]` section. Each is
/// off when not set; when set, at least 1. Exceeding one logs a warning
/// (the program goes on).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ResourceLimits {
    /// Most resident memory, in bytes.
    pub max_rss_bytes: Option<u64>,
    /// Most threads.
    pub max_threads: Option<u64>,
    /// Most open file descriptors (keep it under `ulimit -n`).
    pub max_open_fds: Option<u64>,
    /// Most steady growth of resident memory, in bytes per hour (see
    /// [`RssSampler`]).
    pub max_rss_growth_bytes_per_hour: Option<u64>,
}

impl Validate for ResourceLimits {
    fn validate(&self) -> Result<(), SettingsError> {
        for (key, value) in self.named() {
            if value == Some(0) {
                return Err(SettingsError::invalid(
                    key,
                    "0",
                    "must be at least 1 when set",
                ));
            }
        }
        Ok(())
    }
}

impl ResourceLimits {
    fn named(&self) -> [(&'static str, Option<u64>); 4] {
        [
            ("max_rss_bytes", self.max_rss_bytes),
            ("max_threads", self.max_threads),
            ("max_open_fds", self.max_open_fds),
            (
                "max_rss_growth_bytes_per_hour",
                self.max_rss_growth_bytes_per_hour,
            ),
        ]
    }

    /// The limits `usage` and `leak` exceed, each logged as a warning.
    pub fn check(&self, usage: &ResourceUsage, leak: Option<&LeakHint>) -> Vec<LimitExceeded> {
        let growth = leak.map(|hint| hint.bytes_per_hour.max(0.0) as u64);
        let measured = [
            Some(usage.rss_bytes),
            Some(usage.threads),
            Some(usage.open_fds),
            growth,
        ];
        let mut exceeded = Vec::new();
        for ((limit, max), value) in self.named().into_iter().zip(measured) {
            if let (Some(max), Some(value)) = (max, value)
                && value > max
            {
                tracing::warn!(limit, value, max, "resource limit exceeded");
                exceeded.push(LimitExceeded { limit, value, max });
            }
        }
        exceeded
    }
}

/// One limit exceeded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LimitExceeded {
    /// The key of the limit, like `max_rss_bytes`.
    pub limit: &'static str,
    /// What was measured.
    pub value: u64,
    /// The limit.
    pub max: u64,
}

/// Steady growth of resident memory: maybe a leak.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LeakHint {
    /// Growth, in bytes per hour (the slope of the fitted line).
    pub bytes_per_hour: f64,
    /// How well a line fits the samples, in `[0, 1]` (1: a straight line).
    pub r_squared: f64,
    /// Samples the fit used.
    pub samples: usize,
    /// Time between the first and the last of them.
    pub span: Duration,
}

/// Resident-memory samples over a window, and the fitted growth.
#[derive(Clone, Debug)]
pub struct RssSampler {
    window: Duration,
    min_samples: usize,
    min_r_squared: f64,
    samples: VecDeque<(Instant, u64)>,
}

impl RssSampler {
    /// Keeps the samples of the last `window`, and gives a hint from
    /// `min_samples` of them on (at least 3), when the line fits with
    /// r² ≥ 0.8.
    pub fn new(window: Duration, min_samples: usize) -> Self {
        Self {
            window,
            min_samples: min_samples.max(3),
            min_r_squared: 0.8,
            samples: VecDeque::new(),
        }
    }

    /// How well a line must fit the samples (r², in `[0, 1]`) for a hint;
    /// default 0.8. Higher: fewer hints, surer ones.
    #[must_use]
    pub fn min_r_squared(mut self, r_squared: f64) -> Self {
        self.min_r_squared = r_squared.clamp(0.0, 1.0);
        self
    }

    /// Adds a sample taken `at` (samples come in time order), and forgets
    /// those older than the window.
    pub fn record(&mut self, at: Instant, rss_bytes: u64) {
        if self.samples.back().is_some_and(|(last, _)| at < *last) {
            return; // out of order: ignored
        }
        self.samples.push_back((at, rss_bytes));
        while self
            .samples
            .front()
            .is_some_and(|(first, _)| at.duration_since(*first) > self.window)
        {
            self.samples.pop_front();
        }
    }

    /// Samples in the window.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// Whether there is no sample.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// The growth when resident memory grows steadily over the window (a
    /// least-squares line through the samples, rising, fitting well
    /// enough, from enough samples); none otherwise.
    pub fn leak_hint(&self) -> Option<LeakHint> {
        let n = self.samples.len();
        let (first, _) = *self.samples.front()?;
        let (last, _) = *self.samples.back()?;
        if n < self.min_samples {
            return None;
        }
        let points = || {
            self.samples
                .iter()
                .map(move |(at, rss)| (at.duration_since(first).as_secs_f64(), *rss as f64))
        };
        let (mean_x, mean_y) = points().fold((0.0, 0.0), |(sx, sy), (x, y)| (sx + x, sy + y));
        let (mean_x, mean_y) = (mean_x / n as f64, mean_y / n as f64);
        let (mut sxx, mut syy, mut sxy) = (0.0, 0.0, 0.0);
        for (x, y) in points() {
            let (dx, dy) = (x - mean_x, y - mean_y);
            sxx += dx * dx;
            syy += dy * dy;
            sxy += dx * dy;
        }
        if sxx == 0.0 || syy == 0.0 {
            return None; // one instant, or memory flat
        }
        let slope = sxy / sxx; // bytes per second
        let r_squared = sxy * sxy / (sxx * syy);
        (slope > 0.0 && r_squared >= self.min_r_squared).then(|| LeakHint {
            bytes_per_hour: slope * 3600.0,
            r_squared,
            samples: n,
            span: last.duration_since(first),
        })
    }
}

/// What one [`ResourceMonitor::check`] found.
#[derive(Clone, Debug, PartialEq)]
pub struct ResourceReport {
    /// The usage read.
    pub usage: ResourceUsage,
    /// Steady memory growth, if any.
    pub leak: Option<LeakHint>,
    /// The limits exceeded (each logged as a warning).
    pub exceeded: Vec<LimitExceeded>,
}

/// Reads the usage, keeps the memory samples and checks the limits.
#[derive(Clone, Debug)]
pub struct ResourceMonitor {
    limits: ResourceLimits,
    sampler: RssSampler,
}

impl ResourceMonitor {
    /// A monitor with these limits, sampling memory into `sampler`.
    pub fn new(limits: ResourceLimits, sampler: RssSampler) -> Self {
        Self { limits, sampler }
    }

    /// Replaces the limits (after a settings reload).
    pub fn set_limits(&mut self, limits: ResourceLimits) {
        self.limits = limits;
    }

    /// Reads the usage now, records it and checks it.
    pub fn check(&mut self) -> io::Result<ResourceReport> {
        Ok(self.check_usage(Instant::now(), ResourceUsage::read()?))
    }

    /// Records and checks `usage`, read `at`.
    pub fn check_usage(&mut self, at: Instant, usage: ResourceUsage) -> ResourceReport {
        self.sampler.record(at, usage.rss_bytes);
        let leak = self.sampler.leak_hint();
        if let Some(hint) = &leak {
            tracing::debug!(
                bytes_per_hour = hint.bytes_per_hour as u64,
                r_squared = hint.r_squared,
                samples = hint.samples,
                "resident memory grows steadily"
            );
        }
        let exceeded = self.limits.check(&usage, leak.as_ref());
        ResourceReport {
            usage,
            leak,
            exceeded,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    /// A deterministic noise in [-1, 1].
    fn noise(i: u64) -> f64 {
        let x = i
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (x >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
    }

    fn sampler_with(samples: u64, every: Duration, rss: impl Fn(u64) -> f64) -> RssSampler {
        let mut sampler = RssSampler::new(Duration::from_secs(24 * 3600), 10);
        let start = Instant::now();
        for i in 0..samples {
            sampler.record(start + every * i as u32, rss(i) as u64);
        }
        sampler
    }

    #[test]
    fn steady_growth_gives_its_rate_per_hour() {
        // 1 MiB a minute over an hour, with ±2 MiB of noise: 60 MiB/h.
        let base = 200.0 * MIB as f64;
        let sampler = sampler_with(61, Duration::from_secs(60), |i| {
            base + i as f64 * MIB as f64 + 2.0 * MIB as f64 * noise(i)
        });
        let hint = sampler.leak_hint().expect("steady growth");
        let rate = hint.bytes_per_hour / MIB as f64;
        assert!((rate - 60.0).abs() < 3.0, "{rate} MiB/h");
        assert!(hint.r_squared > 0.9, "{hint:?}");
        assert_eq!((hint.samples, hint.span), (61, Duration::from_secs(3600)));
    }

    #[test]
    fn flat_noisy_falling_or_sawtooth_memory_gives_no_hint() {
        let base = 200.0 * MIB as f64;
        let every = Duration::from_secs(60);
        let flat = sampler_with(60, every, |_| base);
        let noisy = sampler_with(60, every, |i| base + 5.0 * MIB as f64 * noise(i));
        let falling = sampler_with(60, every, |i| base - i as f64 * MIB as f64);
        let sawtooth = sampler_with(60, every, |i| base + (i % 10) as f64 * 10.0 * MIB as f64);
        for (name, sampler) in [
            ("flat", flat),
            ("noisy", noisy),
            ("falling", falling),
            ("sawtooth", sawtooth),
        ] {
            assert_eq!(sampler.leak_hint(), None, "{name}");
        }
    }

    #[test]
    fn too_few_samples_give_no_hint_and_old_ones_are_forgotten() {
        let growth = |i: u64| (100 + i) as f64 * MIB as f64;
        assert_eq!(
            sampler_with(9, Duration::from_secs(60), growth).leak_hint(),
            None
        );
        assert!(
            sampler_with(10, Duration::from_secs(60), growth)
                .leak_hint()
                .is_some()
        );

        let mut sampler = RssSampler::new(Duration::from_secs(600), 3);
        let start = Instant::now();
        for i in 0..30u32 {
            sampler.record(start + Duration::from_secs(60) * i, 100 * MIB);
        }
        assert_eq!(
            sampler.len(),
            11,
            "the samples of the last 10 minutes, ends included"
        );
        sampler.record(start, 1); // out of order
        assert_eq!(sampler.len(), 11);
    }

    #[test]
    fn reads_this_process() {
        let usage = ResourceUsage::read().unwrap();
        assert!(
            usage.rss_bytes > 0 && usage.vms_bytes >= usage.rss_bytes,
            "{usage:?}"
        );
        assert!(usage.threads >= 1 && usage.open_fds >= 3, "{usage:?}");
        let parsed = ResourceUsage::parse_status(
            "Name:\tx\nVmSize:\t  2048 kB\nVmRSS:\t  1024 kB\nThreads:\t3\n",
        )
        .unwrap();
        assert_eq!(
            parsed,
            ResourceUsage {
                rss_bytes: 1024 * 1024,
                vms_bytes: 2048 * 1024,
                threads: 3,
                open_fds: 0
            }
        );
        assert!(ResourceUsage::parse_status("Name:\tx\n").is_err());
    }

    #[test]
    fn limits_are_checked() {
        let limits = ResourceLimits {
            max_rss_bytes: Some(100 * MIB),
            max_threads: Some(8),
            max_open_fds: None,
            max_rss_growth_bytes_per_hour: Some(10 * MIB),
        };
        let mut monitor =
            ResourceMonitor::new(limits, RssSampler::new(Duration::from_secs(3600), 3));
        let start = Instant::now();
        let usage = |rss| ResourceUsage {
            rss_bytes: rss,
            vms_bytes: 4 * rss,
            threads: 9,
            open_fds: 10_000,
        };
        let first = monitor.check_usage(start, usage(90 * MIB));
        assert_eq!(
            first.exceeded,
            [LimitExceeded {
                limit: "max_threads",
                value: 9,
                max: 8
            }]
        );
        monitor.check_usage(start + Duration::from_secs(60), usage(95 * MIB));
        let third = monitor.check_usage(start + Duration::from_secs(120), usage(101 * MIB));
        let names: Vec<_> = third.exceeded.iter().map(|e| e.limit).collect();
        assert_eq!(
            names,
            [
                "max_rss_bytes",
                "max_threads",
                "max_rss_growth_bytes_per_hour"
            ]
        );
        assert!(third.leak.unwrap().bytes_per_hour > 300.0 * MIB as f64);

        assert!(ResourceLimits::default().validate().is_ok());
        let zero = ResourceLimits {
            max_open_fds: Some(0),
            ..Default::default()
        };
        assert_eq!(zero.validate().unwrap_err().key(), Some("max_open_fds"));
    }
}
