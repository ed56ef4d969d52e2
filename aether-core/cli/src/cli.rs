//! The command line: every command, its options and examples (`--help`).

// The doc comments below are the --help text, written for a terminal
// (`[aether]`), not rustdoc links.
#![allow(rustdoc::broken_intra_doc_links)]

use std::{path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Speaks the aether from a shell: waves as waves, not raw NATS messages.
#[derive(Debug, Parser)]
#[command(
    name = "aether",
    version,
    about = "The aether from a shell: listen to waves, emit them, request and reply, benchmark, replicated state, statistics",
    after_help = "Examples:
  aether listen 'orders.*'                      print every wave on orders.* as it arrives
  aether emit orders.created '{\"id\": 1}'       emit one wave (JSON payload)
  aether request inventory.check '{\"sku\": 7}'  ask, and print the first reply
  aether reply inventory.check --payload '{\"ok\": true}'
  aether state set home living.temp 21.5        write a replicated map
  aether stats                                   the instances on the bus, as a table
  aether bench --count 100000                    emit/receive against your server

Without --nats the server is this machine's `aether node` of the bus, else
nats://127.0.0.1:4222."
)]
pub struct Options {
    #[command(flatten)]
    pub connection: Connection,
    #[command(subcommand)]
    pub command: Command,
}

/// How to reach the bus, shared by every command.
#[derive(Debug, Clone, Args)]
pub struct Connection {
    /// NATS server URL (repeat for a cluster; nats:// or tls://).
    #[arg(
        long,
        value_name = "URL",
        global = true,
        env = "AETHER_NATS",
        hide_env_values = true
    )]
    pub nats: Vec<String>,
    /// The settings directory the programs read (its [aether] section:
    /// servers, TLS, credentials, signing, hopping); flags given here win.
    #[arg(long, value_name = "DIR", global = true)]
    pub config_dir: Option<PathBuf>,
    /// A NATS credentials file (.creds: JWT and NKey seed).
    #[arg(long, value_name = "FILE", global = true)]
    pub creds: Option<PathBuf>,
    /// A NATS token.
    #[arg(
        long,
        value_name = "TOKEN",
        global = true,
        env = "AETHER_NATS_TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
    /// A NATS user (with --password).
    #[arg(long, value_name = "USER", global = true)]
    pub user: Option<String>,
    /// The user's password.
    #[arg(
        long,
        value_name = "PASSWORD",
        global = true,
        env = "AETHER_NATS_PASSWORD",
        hide_env_values = true
    )]
    pub password: Option<String>,
    /// Require TLS, trusting this CA (PEM) for the server's certificate.
    #[arg(long, value_name = "FILE", global = true)]
    pub tls_ca: Option<PathBuf>,
    /// A client certificate (PEM), for servers that verify clients.
    #[arg(long, value_name = "FILE", global = true, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The client certificate's key (PEM).
    #[arg(long, value_name = "FILE", global = true, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// The JetStream domain whose stream stores the durable channels (as
    /// the nats CLI's --js-domain): on a leaf node, the hub's. Over
    /// [aether.durability] domain in the settings.
    #[arg(long, value_name = "DOMAIN", global = true, env = "AETHER_JS_DOMAIN")]
    pub js_domain: Option<String>,
    /// The bus on the LAN (`aether node`): its node on this machine is the
    /// server when no --nats or --config-dir is given.
    #[arg(
        long,
        value_name = "BUS",
        global = true,
        env = "AETHER_BUS",
        default_value = aether_core::lan::DEFAULT_BUS
    )]
    pub bus: String,
    /// The bus's secret file (default: the one this machine's node holds).
    #[arg(long, value_name = "FILE", global = true, env = "AETHER_SECRET_FILE")]
    pub secret_file: Option<PathBuf>,
    /// This tool's vibrator name on the bus (the source of what it emits;
    /// for `keep`, the keeper's name, `keeper-<host name>` when not given).
    #[arg(long, value_name = "NAME", global = true, default_value = "aether-cli")]
    pub name: String,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print waves on PATTERN as they arrive.
    #[command(after_help = "Examples:
  aether listen 'orders.*'
  aether listen '>' --json | jq .channel
  aether listen 'orders.*' --group workers --noise-floor 0.3 --count 10")]
    Listen(ListenArgs),
    /// Emit waves on CHANNEL: PAYLOAD, or each line of standard input.
    #[command(after_help = "Examples:
  aether emit orders.created '{\"id\": 1}' --amplitude 0.9 --key order-1
  aether emit orders.cancelled '{\"id\": 1}' --phase retract
  aether emit metrics.tick tick --count 1000 --rate 100
  tail -f events.jsonl | aether emit events.raw")]
    Emit(EmitArgs),
    /// Emit a request on CHANNEL and print the first reply.
    #[command(after_help = "Examples:
  aether request inventory.check '{\"sku\": 7}' --timeout 2s")]
    Request(RequestArgs),
    /// Answer requests on CHANNEL, with a fixed payload or a command's output.
    #[command(after_help = "Examples:
  aether reply inventory.check --payload '{\"ok\": true}'
  aether reply text.upper --command 'tr a-z A-Z'     (the request's payload on the command's stdin)")]
    Reply(ReplyArgs),
    /// Measure emit/receive or request/reply against a server.
    #[command(after_help = "Examples:
  aether bench --count 200000 --size 128
  aether bench --mode request --count 10000
  aether bench --embedded                     (in this process, no server)")]
    Bench(BenchArgs),
    /// Replicated maps: get, set, delete, list, watch, peers.
    #[command(subcommand)]
    State(StateCommand),
    /// Keep maps for the bus on this machine's disk, so what programs and
    /// one-shot commands write outlives them (`aether node` keeps every
    /// map by itself).
    #[command(after_help = "Examples:
  aether keep --dir /var/lib/aether/maps             (every map on the bus)
  aether keep home sensors --dir maps                (two maps)
  aether keep 'room-*' --dir maps --max-maps 64

A write is acknowledged once the keeper holds it on its disk: `aether state
set` waits for that, as a script's map.flush() does. Started again on the
same directory, a keeper serves everything it held.")]
    Keep(KeepArgs),
    /// The statistics every instance on the bus reports, as a table.
    #[command(
        after_help = "Instances report when their [aether.report] interval_ms is set (the
shipped config/default.toml sets 1000).

Examples:
  aether stats
  aether stats --wait 5s --json"
    )]
    Stats(StatsArgs),
    /// The durable channels' JetStream stream, as the server reports it:
    /// waves and bytes against its limits, its copies and leader, and each
    /// durable consumer's backlog. Looks only; changes nothing.
    #[command(
        after_help = "The stream is [aether.durability] stream in the settings (AETHER by default).

Examples:
  aether stream --nats nats://nats-1:4222
  aether stream --json"
    )]
    Stream(StreamArgs),
    /// Run this machine's node of a bus on the LAN: a NATS server for the
    /// programs here, joined to the bus's other nodes.
    #[command(after_help = "Examples:
  aether node --new-secret ~/.config/aether/secret     (once; copy the file to every machine)
  aether node --secret-file ~/.config/aether/secret    (on each machine)
  aether node --secret-file s --peer 192.168.1.20:6222 (name another node by hand)
  aether node --status

Programs on this machine then connect with no URL (the CLI, the Python
package, Aether::discover).")]
    Node(NodeArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    #[command(after_help = "Examples:
  aether completions bash > ~/.local/share/bash-completion/completions/aether
  aether completions zsh > ~/.zfunc/_aether")]
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

/// A duration as people write it: `500ms`, `2s`, `1m`, or seconds.
pub fn duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| c.is_ascii_alphabetic()) {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a duration (500ms, 2s, 1m)"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(format!("{text:?}: the unit is one of ms, s, m, h")),
    };
    if !(0.0..=1e9).contains(&seconds) || seconds.is_nan() {
        return Err(format!("{text:?} is out of range"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// A size in bytes: `65536`, `512KiB`, `64MiB`, `1GiB`.
pub fn size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| c.is_ascii_alphabetic()) {
        Some(at) => text.split_at(at),
        None => (text, "B"),
    };
    let value: u64 = number
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a size (65536, 512KiB, 64MiB, 1GiB)"))?;
    let unit = match unit {
        "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        _ => return Err(format!("{text:?}: the unit is one of B, KiB, MiB, GiB")),
    };
    value
        .checked_mul(unit)
        .ok_or_else(|| format!("{text:?} is out of range"))
}

#[derive(Debug, Args)]
pub struct ListenArgs {
    /// The channel pattern: `orders.created`, `orders.*`, `>` for all.
    pub pattern: String,
    /// One JSON object per wave and line, for scripts.
    #[arg(long)]
    pub json: bool,
    /// Hear only waves at least this strong, in [0, 1].
    #[arg(long, value_name = "AMPLITUDE", default_value_t = 0.0)]
    pub noise_floor: f64,
    /// Share the waves with the other listeners of this group (each wave
    /// to one of them).
    #[arg(long, value_name = "GROUP")]
    pub group: Option<String>,
    /// Stop after this many waves.
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
}

/// A phase by name or in radians.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum PhaseName {
    /// 0: the wave asserts something.
    Assert,
    /// π: the wave retracts it.
    Retract,
}

#[derive(Debug, Args)]
pub struct WaveArgs {
    /// Importance in [0, 1].
    #[arg(long, default_value_t = 1.0)]
    pub amplitude: f64,
    /// `assert`, `retract`, or radians in [0, 2π).
    #[arg(long, default_value = "assert")]
    pub phase: String,
    /// Decay per second (exponential); 0: none.
    #[arg(long, value_name = "PER_S", default_value_t = 0.0)]
    pub decay: f64,
    /// The correlation key (interference is judged per key).
    #[arg(long, value_name = "KEY")]
    pub key: Option<String>,
}

#[derive(Debug, Args)]
pub struct EmitArgs {
    /// The channel, `orders.created`.
    pub channel: String,
    /// The payload: JSON if it parses as JSON, else sent as text. Without
    /// it, each line of standard input is one wave.
    pub payload: Option<String>,
    #[command(flatten)]
    pub wave: WaveArgs,
    /// Emit the payload this many times.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub count: u64,
    /// At most this many waves a second (default: as fast as the bus takes them).
    #[arg(long, value_name = "PER_S")]
    pub rate: Option<f64>,
    /// How long to wait for the connection: while the outbox is full, and
    /// at the end for every accepted wave to leave (10s, 1m). Waves still
    /// unsent then are abandoned: counted on stderr, and the exit status
    /// is 1.
    #[arg(long, value_parser = duration, default_value = "10s")]
    pub wait: Duration,
}

#[derive(Debug, Args)]
pub struct RequestArgs {
    /// The channel, `inventory.check`.
    pub channel: String,
    /// The payload: JSON if it parses as JSON, else sent as text.
    pub payload: String,
    #[command(flatten)]
    pub wave: WaveArgs,
    /// How long to wait for the reply: 500ms, 2s, 1m.
    #[arg(long, value_parser = duration, default_value = "5s")]
    pub timeout: Duration,
    /// Print the reply as one JSON object.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ReplyArgs {
    /// The channel (or pattern) to answer on.
    pub channel: String,
    /// Answer every request with this payload (JSON if it parses).
    #[arg(long, conflicts_with = "command", required_unless_present = "command")]
    pub payload: Option<String>,
    /// Answer with what this shell command prints, given the request's
    /// payload on its standard input.
    #[arg(long, value_name = "SHELL_COMMAND")]
    pub command: Option<String>,
    /// Share the requests with the other repliers of this group.
    #[arg(long, value_name = "GROUP")]
    pub group: Option<String>,
    /// Stop after this many requests.
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
}

/// What `aether bench` measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BenchMode {
    /// One vibrator emits, another receives: rate, latency, loss.
    Emit,
    /// Requests one at a time, a replier answers: latency percentiles.
    Request,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// What to measure.
    #[arg(long, value_enum, default_value = "emit")]
    pub mode: BenchMode,
    /// Waves (or requests) in the run.
    #[arg(long, value_name = "N", default_value_t = 100_000)]
    pub count: u64,
    /// Payload bytes per wave.
    #[arg(long, value_name = "BYTES", default_value_t = 128)]
    pub size: usize,
    /// The channel to measure on (a bench channel of its own by default).
    #[arg(long, value_name = "CHANNEL")]
    pub channel: Option<String>,
    /// Run on the embedded medium, in this process, instead of a server.
    #[arg(long)]
    pub embedded: bool,
    /// The report as one JSON object.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum StateCommand {
    /// Print the value of KEY.
    Get {
        /// The map.
        map: String,
        /// The key.
        key: String,
    },
    /// Set KEY to VALUE (JSON if it parses, else text).
    Set {
        /// The map.
        map: String,
        /// The key.
        key: String,
        /// The value.
        value: String,
        #[command(flatten)]
        held: HeldArgs,
    },
    /// Delete KEY (a tombstone).
    Delete {
        /// The map.
        map: String,
        /// The key.
        key: String,
        #[command(flatten)]
        held: HeldArgs,
    },
    /// Print every key and value.
    List {
        /// The map.
        map: String,
        /// One JSON object, key to value.
        #[arg(long)]
        json: bool,
    },
    /// Print each change to keys that PATTERN matches, as it comes.
    Watch {
        /// The map.
        map: String,
        /// Keys to watch: `living.*`, `>` (default: all).
        #[arg(default_value = ">")]
        pattern: String,
        /// One JSON object per change and line.
        #[arg(long)]
        json: bool,
        /// Stop after this many changes.
        #[arg(long, value_name = "N")]
        count: Option<u64>,
    },
    /// The map's live replicas.
    Peers {
        /// The map.
        map: String,
    },
}

#[derive(Debug, Args)]
pub struct NodeArgs {
    /// Write a new random secret to FILE (readable by its owner only) and
    /// exit; copy it to the bus's other machines.
    // Not `exclusive`: the global options, which may come from the
    // environment (AETHER_BUS), would conflict with it.
    #[arg(long, value_name = "FILE", conflicts_with_all = [
        "status", "node_name", "listen", "port", "cluster_port", "peer", "data",
        "jetstream", "interface", "no_scout", "nats_server", "keep", "no_keep",
    ])]
    pub new_secret: Option<PathBuf>,
    /// Print the running node's members and exit.
    #[arg(long)]
    pub status: bool,
    /// This node's name in the cluster (default: the host name and a
    /// suffix kept in the data directory).
    #[arg(long, value_name = "NAME")]
    pub node_name: Option<String>,
    /// The address programs and other nodes reach this machine on (the
    /// listeners bind it; default all addresses).
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0")]
    pub listen: String,
    /// The port programs connect to (default: a free one).
    #[arg(long)]
    pub port: Option<u16>,
    /// The port other nodes' routes connect to (default: a free one).
    #[arg(long)]
    pub cluster_port: Option<u16>,
    /// Another node's cluster address, HOST:PORT (repeat for several): for
    /// networks where nodes cannot find each other by themselves.
    #[arg(long, value_name = "HOST:PORT")]
    pub peer: Vec<String>,
    /// Where the node keeps its name, its server's configuration, its
    /// certificates (`tls/`, with the bus's authority in `tls/ca.pem` for
    /// other NATS clients) and (with --jetstream) JetStream's store.
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// Run JetStream (durable channels). A cluster's JetStream needs a
    /// majority of its nodes up: three nodes survive the loss of one, two
    /// do not, and one alone never starts it.
    #[arg(long)]
    pub jetstream: bool,
    /// The network interface to announce and look for nodes on (default:
    /// every interface with multicast).
    #[arg(long, value_name = "NAME")]
    pub interface: Option<String>,
    /// Neither announce this node nor look for others (only --peer).
    #[arg(long)]
    pub no_scout: bool,
    /// The nats-server binary (default: AETHER_NATS_SERVER, then PATH).
    #[arg(long, value_name = "PATH")]
    pub nats_server: Option<PathBuf>,
    /// The maps this node keeps for the bus in `<data>/state`, by name or
    /// pattern (`*` for any run of characters; repeat for several):
    /// default every map, so what a one-shot command or script writes
    /// outlives it.
    #[arg(long, value_name = "PATTERN", default_value = "*")]
    pub keep: Vec<String>,
    /// Keep no map (a map then lives only as long as the programs that
    /// hold it).
    #[arg(long, conflicts_with = "keep")]
    pub no_keep: bool,
    /// Serve the node's keeper's metrics (maps kept, refused, forgotten,
    /// bytes held, and its connection's counts) at http://ADDR/metrics.
    #[arg(long, value_name = "ADDR", conflicts_with = "no_keep")]
    pub metrics_listen: Option<std::net::SocketAddr>,
}

#[derive(Debug, Args)]
pub struct KeepArgs {
    /// The maps to keep, by name or pattern (`*` for any run of
    /// characters).
    #[arg(value_name = "MAP", default_value = "*")]
    pub maps: Vec<String>,
    /// Where the maps are kept, one directory each (one keeper at a time).
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    /// Most maps kept; others are refused, counted and logged (default:
    /// the settings' [aether.state.keeper] max_maps, 256).
    #[arg(long, value_name = "N")]
    pub max_maps: Option<usize>,
    /// Most bytes of keys and values all its maps hold together (512KiB,
    /// 64MiB); a write past it is refused as full (default: the settings'
    /// [aether.state.keeper] max_bytes, 64MiB).
    #[arg(long, value_name = "SIZE", value_parser = size)]
    pub max_bytes: Option<u64>,
}

/// How a write waits to be held elsewhere.
#[derive(Clone, Copy, Debug, Args)]
pub struct HeldArgs {
    /// How long to wait for a keeper (any other long-running replica when
    /// the map has no keeper; other one-shot commands acknowledge nothing)
    /// to acknowledge the write; it fails (exit 1) when none does.
    #[arg(long, value_parser = duration, default_value = "5s", value_name = "DURATION")]
    pub wait: Duration,
    /// Wait for this many keepers (`aether node`, a gateway that keeps
    /// maps) instead of any one replica.
    #[arg(long, value_name = "N", conflicts_with = "no_wait",
          value_parser = clap::value_parser!(u16).range(1..))]
    pub keepers: Option<u16>,
    /// Return once the write is sent, held by nobody else perhaps (it is
    /// lost if no other replica or keeper is running).
    #[arg(long, conflicts_with = "wait")]
    pub no_wait: bool,
}

#[derive(Debug, Args)]
pub struct StreamArgs {
    /// The stream as one JSON object.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct StatsArgs {
    /// How long to gather reports: 3s, 10s.
    #[arg(long, value_parser = duration, default_value = "3s")]
    pub wait: Duration,
    /// The reports as JSON, one object per instance and line.
    #[arg(long)]
    pub json: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_people_write_them() {
        assert_eq!(duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(duration("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(duration("1m"), Ok(Duration::from_secs(60)));
        assert!(duration("soon").is_err());
        assert!(duration("5 weeks").is_err());
        assert!(duration("-1s").is_err());
    }

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(size("65536"), Ok(65536));
        assert_eq!(size("512KiB"), Ok(512 << 10));
        assert_eq!(size("64MiB"), Ok(64 << 20));
        assert_eq!(size("1GiB"), Ok(1 << 30));
        assert!(size("64MB").is_err(), "a unit of its own only");
        assert!(size("big").is_err());
        assert!(size("-1").is_err());
        assert!(size("99999999999999GiB").is_err());
    }

    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        Options::command().debug_assert();
    }
}
