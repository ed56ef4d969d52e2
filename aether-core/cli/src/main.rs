//! `aether`: the aether from a shell. `aether --help` lists the commands,
//! `aether <command> --help` their options with examples.
//!
//! | module | idea |
//! | --- | --- |
//! | `cli` | the command line (clap) |
//! | `connect` | reaching the bus: settings directory, flags, errors that say what to do |
//! | `show` | printing waves and changes, for people and as JSON lines |
//! | `talk` | `listen`, `emit`, `request`, `reply` |
//! | `bench` | `bench`: emit/receive and request/reply, with the benchmarks' report shape |
//! | `state` | `state get|set|delete|list|watch|peers` |
//! | `stats` | `stats`: the instances' reports as a table |
//! | `node` | `node`: this machine's node of a bus on the LAN (a supervised nats-server) |
//!
//! Exit status: 0 done; 1 the bus or a request failed (the message says
//! why and what to try); 2 the command line or a value on it is wrong.

#![forbid(unsafe_code)]

mod bench;
mod cli;
mod connect;
mod keep;
mod node;
mod show;
mod state;
mod stats;
mod stream;
mod talk;

use std::{fmt, process::ExitCode};

use clap::{CommandFactory, Parser};

use crate::cli::{Command, Options};

/// Why a command failed, and the exit status it gives.
#[derive(Debug)]
pub struct Failure {
    message: String,
    status: u8,
}

impl Failure {
    /// Something on the command line is wrong: status 2.
    pub fn usage(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            status: 2,
        }
    }

    /// What it says.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The bus, a request or the system failed: status 1.
    pub fn runtime(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            status: 1,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let options = Options::parse();
    if matches!(options.command, Command::Node(_) | Command::Keep(_)) {
        log_warnings();
    }
    let outcome = if matches!(
        options.command,
        Command::Emit(_) | Command::Listen(_) | Command::Node(_) | Command::Keep(_)
    ) {
        // `emit` stops on SIGINT and SIGTERM itself, and says what it
        // sent and abandoned; `listen` what it heard and dropped; `node`
        // stops its server first; `keep` closes its maps.
        run(options).await
    } else {
        tokio::select! {
            outcome = run(options) => outcome,
            _ = tokio::signal::ctrl_c() => Ok(()),
        }
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("error: {failure}");
            ExitCode::from(failure.status)
        }
    }
}

/// The library's warnings (a ledger damaged or on a full disk, a peer
/// refused) on standard error, for the commands that run until stopped:
/// `AETHER_LOG` (`warn` by default; `info`, `debug`, or directives such as
/// `aether_core::state=debug`) says how much.
fn log_warnings() {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_env("AETHER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .try_init();
}

async fn run(options: Options) -> Result<(), Failure> {
    let connection = &options.connection;
    match options.command {
        Command::Listen(args) => talk::listen(connection, args).await,
        Command::Emit(args) => talk::emit(connection, args).await,
        Command::Request(args) => talk::request(connection, args).await,
        Command::Reply(args) => talk::reply(connection, args).await,
        Command::Bench(args) => bench::run(connection, args).await,
        Command::State(command) => state::run(connection, command).await,
        Command::Stats(args) => stats::run(connection, args).await,
        Command::Stream(args) => stream::run(connection, args).await,
        Command::Node(args) => node::run(connection, args).await,
        Command::Keep(args) => keep::run(connection, args).await,
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Options::command(),
                "aether",
                &mut std::io::stdout(),
            );
            Ok(())
        }
    }
}
