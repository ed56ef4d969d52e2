use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::timeout;

use crate::Error;

/// Bound on connecting to the upstream for one accepted connection.
const UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone, Copy, Debug, Default)]
struct Control {
    stalled: bool,
    cut_epoch: u64,
}

/// A loopback TCP proxy for network-fault tests: every accepted connection is forwarded both
/// ways to `upstream`, and the test can [`stall`](Self::stall), [`cut`](Self::cut) or
/// [`refuse`](Self::refuse) connections.
///
/// All tasks end when the proxy is dropped (open connections are closed then).
#[derive(Debug)]
pub struct TcpProxy {
    addr: SocketAddr,
    upstream: SocketAddr,
    control: watch::Sender<Control>,
    refuse: Arc<AtomicBool>,
    active: Arc<AtomicUsize>,
    accepted: Arc<AtomicUsize>,
    accept_task: JoinHandle<()>,
}

struct ActiveGuard(Arc<AtomicUsize>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl TcpProxy {
    /// Listens on `127.0.0.1:0` and forwards to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Result<TcpProxy, Error> {
        let listener = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
            .await
            .map_err(|e| Error::io("TcpProxy: bind 127.0.0.1:0", e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::io("TcpProxy: local_addr", e))?;
        let (control, control_rx) = watch::channel(Control::default());
        let refuse = Arc::new(AtomicBool::new(false));
        let active = Arc::new(AtomicUsize::new(0));
        let accepted = Arc::new(AtomicUsize::new(0));
        let accept_task = tokio::spawn(accept_loop(
            listener,
            upstream,
            control_rx,
            refuse.clone(),
            active.clone(),
            accepted.clone(),
        ));
        Ok(TcpProxy {
            addr,
            upstream,
            control,
            refuse,
            active,
            accepted,
            accept_task,
        })
    }

    /// The address clients should connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address connections are forwarded to.
    pub fn upstream(&self) -> SocketAddr {
        self.upstream
    }

    /// `nats://<addr>`.
    pub fn url(&self) -> String {
        format!("nats://{}", self.addr)
    }

    /// Stops forwarding bytes in both directions on every connection (current and new) while
    /// keeping the sockets open: peers see silence, not an error.
    pub fn stall(&self) {
        self.control.send_modify(|c| c.stalled = true);
    }

    /// Undoes [`stall`](Self::stall); held bytes are delivered.
    pub fn resume(&self) {
        self.control.send_modify(|c| c.stalled = false);
    }

    /// Closes every current connection (both sides); new connections are still accepted.
    pub fn cut(&self) {
        self.control.send_modify(|c| c.cut_epoch += 1);
    }

    /// While `true`, new connections are accepted and immediately closed.
    pub fn refuse(&self, refuse: bool) {
        self.refuse.store(refuse, Ordering::SeqCst);
    }

    /// Number of connections currently being forwarded.
    pub fn connections(&self) -> usize {
        self.active.load(Ordering::SeqCst)
    }

    /// Number of connections accepted and forwarded since start (refused ones not counted).
    pub fn total_connections(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        // Dropping `control` (after this) closes the watch channel, which ends every
        // connection task.
        self.accept_task.abort();
    }
}

async fn accept_loop(
    listener: TcpListener,
    upstream: SocketAddr,
    control: watch::Receiver<Control>,
    refuse: Arc<AtomicBool>,
    active: Arc<AtomicUsize>,
    accepted: Arc<AtomicUsize>,
) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            // Transient accept errors (e.g. EMFILE): back off briefly.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        if refuse.load(Ordering::SeqCst) {
            drop(client);
            continue;
        }
        if control.has_changed().is_err() {
            return; // proxy dropped
        }
        let epoch = control.borrow().cut_epoch;
        active.fetch_add(1, Ordering::SeqCst);
        accepted.fetch_add(1, Ordering::SeqCst);
        let guard = ActiveGuard(active.clone());
        let control = control.clone();
        tokio::spawn(async move {
            let _guard = guard;
            serve(client, upstream, control, epoch).await;
        });
    }
}

async fn serve(
    client: TcpStream,
    upstream: SocketAddr,
    mut control: watch::Receiver<Control>,
    epoch: u64,
) {
    let server = tokio::select! {
        r = timeout(UPSTREAM_CONNECT_TIMEOUT, TcpStream::connect(upstream)) => match r {
            Ok(Ok(s)) => s,
            _ => return,
        },
        _ = wait_cut(&mut control, epoch) => return,
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client_r, client_w) = client.into_split();
    let (server_r, server_w) = server.into_split();
    // When either direction ends (EOF, error, cut, proxy dropped), both sockets are closed.
    tokio::select! {
        _ = pump(client_r, server_w, control.clone(), epoch) => {}
        _ = pump(server_r, client_w, control, epoch) => {}
    }
}

/// Resolves when the connection must be closed (cut or proxy dropped).
async fn wait_cut(control: &mut watch::Receiver<Control>, epoch: u64) {
    loop {
        if control.borrow_and_update().cut_epoch != epoch {
            return;
        }
        if control.changed().await.is_err() {
            return;
        }
    }
}

/// Waits until bytes may flow; `false` when the connection must be closed instead.
async fn wait_flowing(control: &mut watch::Receiver<Control>, epoch: u64) -> bool {
    loop {
        {
            let c = control.borrow_and_update();
            if c.cut_epoch != epoch {
                return false;
            }
            if !c.stalled {
                return true;
            }
        }
        if control.changed().await.is_err() {
            return false;
        }
    }
}

async fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    mut control: watch::Receiver<Control>,
    epoch: u64,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        if !wait_flowing(&mut control, epoch).await {
            return;
        }
        // A control change while reading restarts the loop (TcpStream reads are cancel safe).
        let n = tokio::select! {
            r = from.read(&mut buf) => match r {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            changed = control.changed() => {
                if changed.is_err() {
                    return;
                }
                continue;
            }
        };
        // Bytes read just before a stall are held until resume.
        if !wait_flowing(&mut control, epoch).await {
            return;
        }
        tokio::select! {
            r = to.write_all(&buf[..n]) => if r.is_err() { return },
            _ = wait_cut(&mut control, epoch) => return,
        }
    }
}
