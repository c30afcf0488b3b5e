//! Binding and serving: a `Listener` accept loop per transport and a `Handler` per connection.
//!
//! The shape follows mini-redis: [`bind`] opens the listeners (loopback TCP, Unix socket),
//! [`run`] accepts until the shutdown future resolves, then tells every connection to finish
//! its current request and waits for them up to a bounded drain. Each listener has its own cap
//! on open connections: the socket's budget serves our uid only (a peer of another uid is
//! checked before it holds a slot, and takes one of TCP's if any is free), so no flood on TCP,
//! where any local uid can connect, delays the owner's CLI on the socket (a shared cap let 128
//! idle connections of uid 65534 hold `stagepass token` for 9-24 s). A connection that has not
//! shown the secret (or our uid) gets [`UNPROVEN_TIMEOUT`] in all, whatever it sends meanwhile,
//! and less when TCP's budget is full: a new TCP connection then takes the slot of the oldest
//! connection that has not shown the secret (it had its chance), so the owner's own TCP clients
//! never queue behind another uid's idle connections (they waited up to 2.4 s behind 500 of
//! them). Only connections that showed the secret, i.e. the owner's, make new ones wait in the
//! backlog. Accept errors (e.g. out of file descriptors) back off instead of spinning. Each
//! connection gets a header-read timeout (slowloris: a request head started and not finished in
//! time) and an idle timeout (no traffic and no request in flight). One watchman thread per
//! server checks every connection a few times per timeout and signals the ones out of time; a
//! connection task itself holds no timer. Arming and cancelling hyper's per-request timer, then
//! a ticking timer per connection, were each a measurable share of a cache hit: every runtime
//! park walked the timer wheel and every wake-up polled the connection's sleep (callgrind: ~800
//! instructions of ~12,400).

use super::conn_peer::ConnPeer;
use super::routes;
use super::signal::Signal;
use super::{ApiState, ConnInfo, Transport};
use crate::attest::PeerKind;
use crate::config::ApiConfig;
use crate::paths::Paths;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::{Semaphore, mpsc};

/// How long a connection may stay open before one of its requests passed the guard (the
/// secret on TCP, our uid on the socket), however busy it is: a client that holds a slot
/// must prove it may, and quickly. Capped by the configured header timeout.
pub const UNPROVEN_TIMEOUT: Duration = Duration::from_secs(2);

/// Why a connection was cut to make room for a newcomer (see [`Conns::evict_oldest_unproven`]).
const EVICTED: &str = "TCP's connection budget is full and no request passed the guard yet";

/// Why the API could not start listening.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// `api.listen` is not loopback.
    #[error("api.listen: {0}")]
    NotLoopback(String),
    /// The TCP port could not be bound.
    #[error(
        "cannot listen on {addr}: {source} (is another program using the port? set [api] port = 0 for a free one, or tcp = false)"
    )]
    Tcp {
        /// Address asked for.
        addr: SocketAddr,
        /// Why.
        source: io::Error,
    },
    /// The Unix socket could not be created.
    #[error("cannot create the socket {path}: {source}")]
    Unix {
        /// Socket path.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
}

/// Listeners that are bound but not yet serving; their addresses are known.
pub struct Bound {
    tcp: Option<TcpListener>,
    unix: Option<UnixListener>,
    tcp_addr: Option<SocketAddr>,
    socket: Option<PathBuf>,
}

impl Bound {
    /// The bound TCP port, if TCP is on.
    pub fn tcp_port(&self) -> Option<u16> {
        self.tcp_addr.map(|a| a.port())
    }

    /// The bound TCP address, if TCP is on.
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp_addr
    }

    /// The socket path, if the socket is on.
    pub fn socket(&self) -> Option<&Path> {
        self.socket.as_deref()
    }
}

/// Binds the configured listeners. Refuses a non-loopback address whatever the caller checked.
pub async fn bind(cfg: &ApiConfig, paths: &Paths) -> Result<Bound, ServeError> {
    cfg.check_listen().map_err(ServeError::NotLoopback)?;
    let mut bound = Bound {
        tcp: None,
        unix: None,
        tcp_addr: None,
        socket: None,
    };
    if cfg.tcp {
        let addr = SocketAddr::new(cfg.listen, cfg.port);
        let l = TcpListener::bind(addr)
            .await
            .map_err(|source| ServeError::Tcp { addr, source })?;
        if addr.is_ipv4() {
            // A reply that somehow got routed off the host dies at the first hop.
            let _ = l.set_ttl(1);
        }
        bound.tcp_addr = Some(
            l.local_addr()
                .map_err(|source| ServeError::Tcp { addr, source })?,
        );
        bound.tcp = Some(l);
    }
    if cfg.unix_socket {
        let path = paths.socket();
        let unix_err = |source| ServeError::Unix {
            path: path.clone(),
            source,
        };
        crate::paths::ensure_private_dir(&paths.runtime_dir).map_err(unix_err)?;
        // The caller holds the single-instance lock, so a socket file left here is stale.
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(unix_err(e)),
        }
        let l = UnixListener::bind(&path).map_err(unix_err)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .map_err(unix_err)?;
        bound.unix = Some(l);
        bound.socket = Some(path);
    }
    Ok(bound)
}

/// Serves until `shutdown` resolves, then drains open connections for at most `drain`.
///
/// Removes the socket file on the way out.
pub async fn run(
    bound: Bound,
    state: Arc<ApiState>,
    shutdown: impl std::future::Future<Output = ()>,
    drain: Duration,
) {
    let drainer = Arc::new(Conns::default());
    watchman::start(
        Arc::downgrade(&drainer),
        watchman::Timeouts {
            header: state.limits.header_read_timeout(),
            idle: state.limits.idle_timeout(),
            unproven: UNPROVEN_TIMEOUT.min(state.limits.header_read_timeout()),
        },
    );
    let (done_tx, mut done_rx) = mpsc::channel::<()>(1);
    let shared = Shared {
        tcp_limit: Arc::new(Semaphore::new(state.limits.max_connections)),
        socket_limit: Arc::new(Semaphore::new(state.limits.max_connections)),
        state,
        drain: drainer.clone(),
        _done: done_tx,
    };
    let socket = bound.socket.clone();
    let tcp = async {
        match bound.tcp {
            Some(l) => {
                accept_loop(l, shared.clone(), shared.tcp_limit.clone(), Budget::Tcp).await;
            }
            None => std::future::pending().await,
        }
    };
    let unix = async {
        match bound.unix {
            Some(l) => {
                accept_loop(
                    l,
                    shared.clone(),
                    shared.socket_limit.clone(),
                    Budget::Socket,
                )
                .await;
            }
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        () = tcp => {}
        () = unix => {}
        () = shutdown => {}
    }
    drop(shared);
    drainer.start();
    if let Some(p) = socket {
        let _ = std::fs::remove_file(p);
    }
    if tokio::time::timeout(drain, done_rx.recv()).await.is_err() {
        tracing::warn!(
            drain_secs = drain.as_secs(),
            "connections still open after the drain; closing them"
        );
    }
}

/// What every accept loop and connection task shares.
#[derive(Clone)]
struct Shared {
    state: Arc<ApiState>,
    /// Open TCP connections (and socket peers of another uid).
    tcp_limit: Arc<Semaphore>,
    /// Open socket connections of our uid.
    socket_limit: Arc<Semaphore>,
    drain: Arc<Conns>,
    /// Dropped by each connection task when it ends; `run` waits for the last one.
    _done: mpsc::Sender<()>,
}

/// Which connection budget a connection holds a slot of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Budget {
    /// TCP's (any local uid can connect), also taken by socket peers of another uid. Its
    /// connections that have not shown the secret give their slot up to newcomers when it
    /// is full.
    Tcp,
    /// The socket's, for our own uid only.
    Socket,
}

/// A listener we can accept connections from, with the facts the guard needs.
trait Acceptor {
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    fn accept_conn(
        &self,
        attest: bool,
    ) -> impl std::future::Future<Output = io::Result<(Self::Io, ConnInfo)>>;
}

impl Acceptor for TcpListener {
    type Io = TcpStream;
    async fn accept_conn(&self, attest: bool) -> io::Result<(TcpStream, ConnInfo)> {
        let (s, peer) = self.accept().await?;
        let _ = s.set_nodelay(true);
        // Only the addresses now; /proc is read at the first credential request.
        let peer = match (attest, s.local_addr()) {
            (true, Ok(ours)) => Some(Arc::new(ConnPeer::new(PeerKind::Tcp { peer, ours }))),
            _ => None,
        };
        Ok((
            s,
            ConnInfo {
                transport: Transport::Tcp,
                peer,
            },
        ))
    }
}

impl Acceptor for UnixListener {
    type Io = UnixStream;
    async fn accept_conn(&self, attest: bool) -> io::Result<(UnixStream, ConnInfo)> {
        let (s, _) = self.accept().await?;
        let cred = s.peer_cred().ok();
        let peer_uid = cred.map(|c| c.uid());
        let peer = attest.then(|| {
            Arc::new(ConnPeer::new(PeerKind::Unix {
                pid: cred
                    .and_then(|c| c.pid())
                    .and_then(|p| u32::try_from(p).ok()),
                uid: peer_uid,
            }))
        });
        Ok((
            s,
            ConnInfo {
                transport: Transport::Unix { peer_uid },
                peer,
            },
        ))
    }
}

/// The `Listener`: accepts, takes a slot of its own budget (`own`), spawns a `Handler` per
/// connection. When TCP's budget is full, the oldest connection that has not shown the
/// secret is cut to make room (see the module docs); when every slot is held by connections
/// that have, the loop stops accepting and new clients wait in the backlog. A socket peer of
/// another uid never waits for a slot of the socket's budget: it is served (refused,
/// `403 forbidden_peer`) in a free TCP slot or dropped at once.
async fn accept_loop<A: Acceptor>(
    listener: A,
    shared: Shared,
    own: Arc<Semaphore>,
    budget: Budget,
) {
    let mut backoff = Duration::from_millis(10);
    loop {
        let (io, info) = match listener.accept_conn(shared.state.attestation).await {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(error = %e, backoff_ms = backoff.as_millis() as u64, "accept failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        backoff = Duration::from_millis(10);
        let foreign = matches!(info.transport, Transport::Unix { peer_uid } if peer_uid != Some(shared.state.own_uid));
        let (permit, holds) = if foreign {
            match shared.tcp_limit.clone().try_acquire_owned() {
                Ok(p) => (p, Budget::Tcp),
                Err(_) => continue,
            }
        } else {
            let p = match own.clone().try_acquire_owned() {
                Ok(p) => p,
                Err(tokio::sync::TryAcquireError::Closed) => return,
                Err(tokio::sync::TryAcquireError::NoPermits) => {
                    if budget == Budget::Tcp {
                        shared.drain.evict_oldest_unproven();
                    }
                    // The evicted connection gives its slot back as soon as its task sees
                    // the signal; without one to evict, wait for a proven one to end.
                    let Ok(p) = own.clone().acquire_owned().await else {
                        return;
                    };
                    p
                }
            };
            (p, budget)
        };
        // Registered here, not in the task: a connection holding a slot is always in the
        // map, so the next full budget can find it to evict.
        let (id, watch) = shared.drain.register(holds);
        let conn = shared.clone();
        tokio::spawn(async move {
            serve_connection(io, info, conn.state.clone(), watch).await;
            conn.drain.deregister(id);
            drop(permit);
            drop(conn);
        });
    }
}

/// The open connections: what `run` tells when the server drains and what the watchman
/// checks for timeouts. Each connection has its own [`Watch`] (a signal shared by all
/// connections, a watch channel, took one lock common to every connection each time any of
/// them woke up, which showed as contention on keep-alive cache hits).
#[derive(Default)]
struct Conns {
    draining: AtomicBool,
    next: AtomicU64,
    map: std::sync::Mutex<std::collections::HashMap<u64, Arc<Watch>>>,
}

/// One connection as the server sees it: its activity, and the signal that makes it stop
/// (a drain, or a timeout the watchman found, named in `expired`).
struct Watch {
    activity: Activity,
    signal: Signal,
    expired: std::sync::OnceLock<&'static str>,
    /// The budget whose slot it holds.
    budget: Budget,
}

impl Conns {
    /// A new connection's id and watch; already signalled if the drain has begun.
    fn register(&self, budget: Budget) -> (u64, Arc<Watch>) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let watch = Arc::new(Watch {
            activity: Activity::default(),
            signal: Signal::default(),
            expired: std::sync::OnceLock::new(),
            budget,
        });
        if let Ok(mut m) = self.map.lock() {
            m.insert(id, watch.clone());
        }
        // After the insert: `start` either saw this connection or set the flag before it.
        if self.draining.load(Ordering::SeqCst) {
            watch.signal.raise();
        }
        (id, watch)
    }

    fn deregister(&self, id: u64) {
        if let Ok(mut m) = self.map.lock() {
            m.remove(&id);
        }
    }

    /// Cuts the oldest open connection of TCP's budget that has not shown the secret (ids
    /// grow with time), to make room for a newcomer; false when there is none. The newest
    /// are spared because a client that has the secret sends it at once: a new connection
    /// is almost always about to prove itself, an old unproven one almost never.
    fn evict_oldest_unproven(&self) -> bool {
        let Ok(m) = self.map.lock() else {
            return false;
        };
        let oldest = m
            .iter()
            .filter(|(_, w)| {
                w.budget == Budget::Tcp && !w.activity.is_proven() && w.expired.get().is_none()
            })
            .min_by_key(|(id, _)| **id);
        match oldest {
            Some((_, w)) => {
                if w.expired.set(EVICTED).is_ok() {
                    w.signal.raise();
                }
                true
            }
            None => false,
        }
    }

    /// Tells every connection, now and later, to finish its request and close.
    fn start(&self) {
        self.draining.store(true, Ordering::SeqCst);
        if let Ok(m) = self.map.lock() {
            for w in m.values() {
                w.signal.raise();
            }
        }
    }

    /// The open connections now (the watchman's round).
    fn snapshot(&self) -> Vec<(u64, Arc<Watch>)> {
        self.map
            .lock()
            .map(|m| m.iter().map(|(id, w)| (*id, w.clone())).collect())
            .unwrap_or_default()
    }
}

/// The `Handler`: one HTTP/1.1 connection until it ends, the watchman finds it out of time
/// (it closes at once), or the server drains (it finishes the request in flight and closes).
async fn serve_connection<I>(io: I, info: ConnInfo, state: Arc<ApiState>, watch: Arc<Watch>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let io = TokioIo::new(Tracked {
        inner: io,
        watch: watch.clone(),
    });
    // A request the fast path declines owns one clone of this connection's context: one
    // uncontended increment. Cloning the agent-wide `Arc<ApiState>` per request instead
    // made both worker threads write the same cache line on every request.
    let ctx = Arc::new(ConnCtx {
        state: state.clone(),
        info,
        watch: watch.clone(),
    });
    let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        if let Some(resp) = routes::cache_hit(&ctx.state, &ctx.info, &req) {
            // A hit passed the guard.
            ctx.watch.activity.prove();
            ctx.watch.activity.answered();
            return Answer::Ready(std::future::ready(resp));
        }
        if !ctx.watch.activity.is_proven()
            && super::guard::check(&ctx.state, &ctx.info, req.headers()).is_ok()
        {
            ctx.watch.activity.prove();
        }
        let ctx = ctx.clone();
        Answer::Pending(Box::pin(async move {
            let _busy = ctx.watch.activity.busy();
            routes::handle(&ctx.state, &ctx.info, req).await
        }))
    });
    let mut builder = http1::Builder::new();
    builder
        // No hyper timer: the watchman times heads and idle connections (module docs).
        .header_read_timeout(None)
        // Hard caps hyper enforces itself (bare 431); the guard answers in JSON below them.
        .max_header_size(
            state
                .limits
                .max_header_bytes
                .saturating_mul(4)
                .max(64 * 1024),
        )
        .keep_alive(true);
    if state.limits.max_headers >= 100 {
        builder.max_headers(state.limits.max_headers.saturating_mul(2));
    }
    let conn = builder.serve_connection(io, svc);
    tokio::pin!(conn);
    let mut draining = false;
    let mut registered = None;
    std::future::poll_fn(|cx| {
        loop {
            // The connection first: it is what nearly every wake-up is for.
            if let Poll::Ready(res) = conn.as_mut().poll(cx) {
                if let Err(e) = res {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return Poll::Ready(());
            }
            if watch.signal.poll_raised(cx, &mut registered).is_pending() {
                return Poll::Pending;
            }
            if let Some(why) = watch.expired.get() {
                tracing::debug!(why, "closing the connection");
                return Poll::Ready(());
            }
            if !draining {
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    })
    .await;
}

/// A request's answer: ready at once (the cache hit, [`routes::cache_hit`]) or the full
/// handler's future, boxed so the hit does not carry (and move) its state machine.
enum Answer {
    Ready(std::future::Ready<routes::ApiResponse>),
    Pending(Pin<Box<dyn Future<Output = routes::ApiResponse> + Send>>),
}

impl Future for Answer {
    type Output = Result<routes::ApiResponse, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            Answer::Ready(r) => Pin::new(r).poll(cx).map(Ok),
            Answer::Pending(f) => f.as_mut().poll(cx).map(Ok),
        }
    }
}

/// What a connection's requests share: the agent's state, who is on the other end, and the
/// connection's watch (its activity and stop signal).
struct ConnCtx {
    state: Arc<ApiState>,
    info: ConnInfo,
    watch: Arc<Watch>,
}

/// What the watchman needs to tell idle and slow-head connections apart, kept without
/// reading a clock on the IO path: the IO wrapper and the service only bump counters and
/// flags, and the watchman, which looks a few times per timeout, turns them into times. A
/// cache hit is a few microseconds, so a clock read on every read and write was a
/// measurable share of it.
#[derive(Default)]
struct Activity {
    /// Reads and writes that moved bytes (wrapping; only changes matter).
    moved: AtomicU64,
    /// Requests handed to the service so far.
    requests: AtomicU64,
    /// Requests being answered now.
    busy: AtomicUsize,
    /// Bytes of a request head arrived while no request was in flight.
    head_pending: AtomicBool,
    /// A request passed the guard (see [`UNPROVEN_TIMEOUT`]).
    proven: AtomicBool,
}

impl Activity {
    fn touch(&self) {
        self.moved.fetch_add(1, Ordering::Relaxed);
    }

    /// Bytes arrived: with no request in flight they start a request head.
    fn read_bytes(&self) {
        self.touch();
        if self.busy.load(Ordering::Relaxed) == 0 && !self.head_pending.load(Ordering::Relaxed) {
            self.head_pending.store(true, Ordering::Relaxed);
        }
    }

    /// A request answered without waiting (the cache hit): it arrived and is done.
    fn answered(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.head_pending.store(false, Ordering::Relaxed);
    }

    fn prove(&self) {
        self.proven.store(true, Ordering::Relaxed);
    }

    fn is_proven(&self) -> bool {
        self.proven.load(Ordering::Relaxed)
    }

    fn busy(&self) -> Busy<'_> {
        self.busy.fetch_add(1, Ordering::Relaxed);
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.head_pending.store(false, Ordering::Relaxed);
        Busy(self)
    }

    /// What the watchman reads at each look.
    fn sample(&self) -> Sample {
        let busy = self.busy.load(Ordering::Relaxed) > 0;
        Sample {
            moved: self.moved.load(Ordering::Relaxed),
            requests: self.requests.load(Ordering::Relaxed),
            busy,
            head_pending: !busy && self.head_pending.load(Ordering::Relaxed),
            proven: self.is_proven(),
        }
    }
}

/// One look at a connection's [`Activity`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Sample {
    moved: u64,
    requests: u64,
    busy: bool,
    head_pending: bool,
    proven: bool,
}

/// What the watchman remembers of one connection between looks.
#[derive(Debug, Clone, Copy)]
struct Seen {
    /// When the watchman first saw the connection.
    first: std::time::Instant,
    moved: u64,
    quiet_since: std::time::Instant,
    /// The request count when a pending head was first seen, and when.
    head: Option<(u64, std::time::Instant)>,
}

impl Seen {
    fn new(first: Sample, now: std::time::Instant) -> Self {
        Seen {
            first: now,
            moved: first.moved,
            quiet_since: now,
            head: None,
        }
    }

    /// Folds in a look at `now`; the reason to close the connection once it has been open
    /// `t.unproven` without a request passing the guard, a request head has taken longer
    /// than `t.header`, or the connection has been quiet with no request in flight for
    /// `t.idle`. A state is only dated at the look that sees it, so with looks
    /// every quarter timeout a slow head or an idle connection is cut within 1.5x its
    /// timeout after the watchman first saw it (at most a quarter timeout after it opened);
    /// both are resource bounds, not deadlines anyone waits on.
    fn look(
        &mut self,
        s: Sample,
        now: std::time::Instant,
        t: &watchman::Timeouts,
    ) -> Option<&'static str> {
        let (header_timeout, idle) = (t.header, t.idle);
        if !s.proven && now.duration_since(self.first) >= t.unproven {
            return Some("no request passed the guard within the first-request timeout");
        }
        if s.moved != self.moved {
            self.moved = s.moved;
            self.quiet_since = now;
        }
        if s.head_pending {
            match self.head {
                // Still the same unfinished head as at an earlier look.
                Some((r, since)) if r == s.requests => {
                    if now.duration_since(since) >= header_timeout {
                        return Some("request head not received within the header timeout");
                    }
                }
                _ => self.head = Some((s.requests, now)),
            }
        } else {
            self.head = None;
        }
        if !s.busy && !s.head_pending && now.duration_since(self.quiet_since) >= idle {
            return Some("idle");
        }
        None
    }
}

/// The thread that times connections out (see the module docs).
mod watchman {
    use super::{Conns, Seen};
    use std::collections::HashMap;
    use std::sync::Weak;
    use std::time::{Duration, Instant};

    /// The limits the watchman enforces.
    #[derive(Debug, Clone, Copy)]
    pub(super) struct Timeouts {
        /// A request head, once started.
        pub(super) header: Duration,
        /// No traffic and no request in flight.
        pub(super) idle: Duration,
        /// Open without a request that passed the guard.
        pub(super) unproven: Duration,
    }

    /// Starts the watchman of one server's connections; it ends within one look of the
    /// server dropping `conns`. Looks every quarter of the shortest timeout (at least 10 ms).
    pub(super) fn start(conns: Weak<Conns>, t: Timeouts) {
        let every = (t.header / 4)
            .min(t.idle / 4)
            .min(t.unproven / 4)
            .max(Duration::from_millis(10));
        let spawned = std::thread::Builder::new()
            .name("stagepass-conns".into())
            .spawn(move || run(&conns, every, &t));
        if let Err(e) = spawned {
            // Without it connections are not timed out, but everything else works.
            tracing::error!(error = %e, "cannot start the connection watchman thread");
        }
    }

    fn run(conns: &Weak<Conns>, every: Duration, t: &Timeouts) {
        let mut seen: HashMap<u64, Seen> = HashMap::new();
        loop {
            std::thread::sleep(every);
            let Some(open) = conns.upgrade().map(|c| c.snapshot()) else {
                return;
            };
            let now = Instant::now();
            seen.retain(|id, _| open.iter().any(|(open_id, _)| open_id == id));
            for (id, watch) in open {
                let sample = watch.activity.sample();
                let state = seen.entry(id).or_insert_with(|| Seen::new(sample, now));
                if let Some(why) = state.look(sample, now, t)
                    && watch.expired.set(why).is_ok()
                {
                    watch.signal.raise();
                }
            }
        }
    }
}

/// A request in flight; the connection is not idle while one lives.
struct Busy<'a>(&'a Activity);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Ordering::Relaxed);
        self.0.touch();
    }
}

/// An IO stream that records when bytes last moved.
struct Tracked<I> {
    inner: I,
    watch: Arc<Watch>,
}

impl<I: AsyncRead + Unpin> AsyncRead for Tracked<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.watch.activity.read_bytes();
        }
        r
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Tracked<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.watch.activity.touch();
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.watch.activity.touch();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    const HEAD: Duration = Duration::from_secs(10);
    const IDLE: Duration = Duration::from_secs(60);
    const UNPROVEN: Duration = Duration::from_secs(2);
    const T: watchman::Timeouts = watchman::Timeouts {
        header: HEAD,
        idle: IDLE,
        unproven: UNPROVEN,
    };

    /// A look at a connection that passed the guard.
    fn sample(moved: u64, requests: u64, busy: bool, head_pending: bool) -> Sample {
        Sample {
            moved,
            requests,
            busy,
            head_pending,
            proven: true,
        }
    }

    /// Issue 19: when TCP's budget is full, the oldest connection of that budget that has
    /// not shown the secret makes room; proven connections and the socket's never do.
    #[test]
    fn a_full_tcp_budget_evicts_the_oldest_unproven_connection_only() {
        let conns = Conns::default();
        let (_, socket) = conns.register(Budget::Socket);
        let (_, proven) = conns.register(Budget::Tcp);
        proven.activity.prove();
        let (_, old) = conns.register(Budget::Tcp);
        let (_, young) = conns.register(Budget::Tcp);
        assert!(conns.evict_oldest_unproven());
        assert_eq!(old.expired.get(), Some(&EVICTED));
        for w in [&socket, &proven, &young] {
            assert_eq!(w.expired.get(), None);
        }
        // The next newcomer takes the next oldest; then nothing is left to evict.
        assert!(conns.evict_oldest_unproven());
        assert_eq!(young.expired.get(), Some(&EVICTED));
        assert!(!conns.evict_oldest_unproven());
        assert_eq!(socket.expired.get(), None);
        assert_eq!(proven.expired.get(), None);
    }

    #[test]
    fn a_head_that_does_not_finish_is_cut_after_the_header_timeout() {
        let t0 = Instant::now();
        let mut seen = Seen::new(sample(0, 0, false, false), t0);
        // Bytes keep trickling in (moved changes), but the same head never completes.
        assert_eq!(
            seen.look(sample(1, 0, false, true), t0 + HEAD / 4, &T),
            None
        );
        assert_eq!(seen.look(sample(2, 0, false, true), t0 + HEAD, &T), None);
        assert_eq!(
            seen.look(sample(3, 0, false, true), t0 + HEAD / 4 + HEAD, &T),
            Some("request head not received within the header timeout")
        );
    }

    #[test]
    fn keep_alive_requests_and_busy_connections_are_not_cut() {
        let t0 = Instant::now();
        let mut seen = Seen::new(sample(0, 0, false, false), t0);
        // A new head per look, each completed: never the same unfinished head twice.
        for i in 1..20u64 {
            let at = t0 + HEAD * u32::try_from(i).unwrap();
            assert_eq!(seen.look(sample(i, i, false, true), at, &T), None);
        }
        // A request in flight far beyond both timeouts (a slow IdP refresh) is not idle.
        let later = t0 + IDLE * 10;
        assert_eq!(seen.look(sample(99, 20, true, false), later, &T), None);
        assert_eq!(
            seen.look(sample(99, 20, true, false), later + IDLE * 2, &T),
            None
        );
    }

    #[test]
    fn a_quiet_connection_is_cut_after_the_idle_timeout() {
        let t0 = Instant::now();
        let mut seen = Seen::new(sample(5, 1, false, false), t0);
        assert_eq!(
            seen.look(sample(5, 1, false, false), t0 + IDLE / 2, &T),
            None
        );
        // Traffic resets the quiet time.
        assert_eq!(
            seen.look(sample(6, 2, false, false), t0 + IDLE - HEAD, &T),
            None
        );
        assert_eq!(seen.look(sample(6, 2, false, false), t0 + IDLE, &T), None);
        assert_eq!(
            seen.look(sample(6, 2, false, false), t0 + IDLE * 2, &T),
            Some("idle")
        );
    }

    #[test]
    fn a_connection_that_never_passes_the_guard_is_cut_after_the_unproven_timeout() {
        let t0 = Instant::now();
        let unproven = |moved, requests, busy, head_pending| Sample {
            proven: false,
            ..sample(moved, requests, busy, head_pending)
        };
        let mut seen = Seen::new(unproven(0, 0, false, false), t0);
        // Busy with refused requests and trickling bytes: still cut at the unproven timeout.
        assert_eq!(
            seen.look(unproven(1, 1, false, true), t0 + UNPROVEN / 2, &T),
            None
        );
        assert_eq!(
            seen.look(unproven(2, 2, true, false), t0 + UNPROVEN, &T),
            Some("no request passed the guard within the first-request timeout")
        );
        // The same life with a request that passed the guard is not cut.
        let mut seen = Seen::new(sample(0, 0, false, false), t0);
        assert_eq!(
            seen.look(sample(1, 1, false, true), t0 + UNPROVEN / 2, &T),
            None
        );
        assert_eq!(
            seen.look(sample(2, 2, true, false), t0 + UNPROVEN, &T),
            None
        );
    }
}
