use std::io;

/// Errors from the test kit. Start failures carry the tail of the server log.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No `nats-server` binary could be found.
    #[error(
        "nats-server binary not found on PATH, in /usr/sbin or in /usr/bin; \
         install it with `apt-get install -y nats-server`"
    )]
    ServerNotFound,
    /// An I/O operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What the kit was doing.
        context: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A nats-server did not become ready.
    #[error("nats-server failed to start: {reason}\n--- server log (tail) ---\n{log_tail}")]
    StartFailed {
        /// Why the start was considered failed.
        reason: String,
        /// The last lines of the server log.
        log_tail: String,
    },
    /// A bounded wait ran out.
    #[error("timed out: {0}")]
    Timeout(String),
    /// The server answered `-ERR`.
    #[error("server error: -ERR {0}")]
    Server(String),
    /// The peer closed the connection.
    #[error("connection closed by peer")]
    ConnectionClosed,
    /// The peer sent something this kit could not parse.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// Certificate or key generation failed.
    #[error("certificate generation failed: {0}")]
    Pki(String),
    /// NKey generation, parsing or signing failed.
    #[error("nkey error: {0}")]
    NKey(String),
}

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}
