//! Starting and stopping the node: one pinned glommio executor per shard, joined into the
//! shard meshes, each with its engine, its listener (SO_REUSEPORT, so the kernel spreads
//! clients over shards) and its timers.
//!
//! Stop (SIGTERM/SIGINT): every shard stops accepting and closes its connections once their
//! current batch is answered; when all shards are drained (other shards may still forward
//! to this one until then), each flushes its memtable and closes its engine. A second
//! signal exits at once.
//!
//! In cluster mode each shard also listens for other nodes on `peer_listen`'s port + its
//! shard number, and runs a [`Driver`] that coordinates its clients' requests.

pub mod layout;
pub mod port;
pub mod sched;

use std::net::SocketAddr;
use std::os::unix::io::{FromRawFd, IntoRawFd};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use glommio::net::TcpListener;
use glommio::{Latency, LocalExecutorPoolBuilder, PoolPlacement, Shares};
use shoal_engine::fs::DmaFs;
use shoal_engine::{Db, Durability, GlommioTimer, Options, SystemClock};

use self::layout::{Layout, LayoutError};
use self::port::{BIND_RETRY, BIND_RETRY_STEP};
use crate::cluster::driver::{self, Driver};
use crate::cluster::peer::{self, Inbound, PeerAddr, PeerError, PeerOptions, Peers};
use crate::config::{self, ClusterConfig, Config, Fsync, Sched};
use crate::front::ctx::Ctx;
use crate::mesh::message::{ShardOp, ShardReply};
use crate::mesh::{Mesh, MeshBuilders, MeshError};
use crate::shard::hints::HintStore;
use crate::shard::shutdown::Shutdown;
use crate::shard::store::Store;
use crate::shard::{OPS_SAMPLE_PERIOD, Shard};

/// How often a shard with `fsync = interval` syncs its log.
const SYNC_INTERVAL: Duration = Duration::from_secs(1);
/// How often shard 0 of a member measures the node's load for gossip: load changes slowly,
/// and each measurement asks every shard.
const LOAD_PERIOD: Duration = Duration::from_secs(5);
/// How long shutdown waits for connections to finish their batch and for the other shards.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Poll period while waiting for connections or other shards to drain.
const DRAIN_POLL: Duration = Duration::from_millis(5);
/// Share of CPU the engine's background flushes get against requests (requests get 1000).
const BACKGROUND_SHARES: usize = 250;
/// The system engine's memtable and block cache: it holds hints, which stay few and small
/// unless a member is down, and are read back in order once.
const SYSTEM_MEMTABLE_BYTES: usize = 4 << 20;
const SYSTEM_CACHE_BYTES: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    #[error("{addr} is already in use by another process")]
    PortInUse { addr: SocketAddr },
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Layout(#[from] LayoutError),
    #[error("shard {shard}: cannot open its engine: {source}")]
    Engine {
        shard: usize,
        #[source]
        source: shoal_engine::Error,
    },
    #[error("shard {shard}: {source}")]
    Io {
        shard: usize,
        #[source]
        source: std::io::Error,
    },
    #[error("shard mesh: {0}")]
    Mesh(#[from] MeshError),
    #[error("executors: {0}")]
    Executor(String),
    #[error("shard {shard}: peer transport: {source}")]
    Peer {
        shard: usize,
        #[source]
        source: PeerError,
    },
    #[error("cluster: {0}")]
    Cluster(String),
}

/// State every shard thread shares: the stop flag set by the signal thread, and the
/// shutdown barrier.
struct Shared {
    stop: AtomicBool,
    drained: AtomicUsize,
    /// This start's generation, for a cluster member.
    generation: AtomicU64,
}

/// Runs the node until it is stopped by SIGTERM/SIGINT.
pub fn run(config: Config) -> Result<(), ServerError> {
    let shared = Arc::new(Shared {
        stop: AtomicBool::new(false),
        drained: AtomicUsize::new(0),
        generation: AtomicU64::new(0),
    });
    block_stop_signals(&shared);
    run_until_stopped(config, shared)
}

fn run_until_stopped(mut config: Config, shared: Arc<Shared>) -> Result<(), ServerError> {
    let layout = Layout {
        shards: config.shards,
        partitions: config.partitions,
        node: config
            .cluster
            .as_ref()
            .and_then(|c| c.member(c.me))
            .map(|m| m.name.clone()),
    };
    config.data_dir = layout.prepare(&config.data_dir)?;
    if config.cluster.is_some() {
        let unix_secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let generation = layout::next_generation(&config.data_dir, unix_secs)?;
        shared.generation.store(generation, Ordering::Release);
    }
    config.listen = claim_port(config.listen)?;
    tracing::info!(
        listen = %config.listen,
        shards = config.shards,
        data_dir = %config.data_dir.display(),
        fsync = config.fsync.as_str(),
        sched = config.sched.as_str(),
        "starting"
    );
    let n = config.shards;
    let placement = if n <= config::cores() {
        PoolPlacement::MaxSpread(n, None)
    } else {
        PoolPlacement::Unbound(n)
    };
    let meshes = MeshBuilders::new(n);
    let config = Arc::new(config);
    let handles = LocalExecutorPoolBuilder::new(placement)
        .name("shoal-shard")
        .spin_before_park(Duration::from_micros(config.spin_us))
        .on_all_shards(move || async move {
            if let Err(e) = sched::set_current(config.sched) {
                tracing::warn!(error = %e, sched = config.sched.as_str(), "cannot set the executor's scheduling policy; keeping the inherited one");
            }
            let result = shard_main(&config, meshes, &shared).await;
            if let Err(e) = &result {
                tracing::error!(error = %e, "shard failed; stopping the node");
                shared.stop.store(true, Ordering::Release);
                shared.drained.fetch_add(1, Ordering::AcqRel);
            }
            result
        })
        .map_err(|e| ServerError::Executor(e.to_string()))?;
    let mut first_error = None;
    for r in handles.join_all() {
        match r {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                first_error.get_or_insert(e);
            }
            Err(e) => {
                first_error.get_or_insert(ServerError::Executor(e.to_string()));
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => {
            tracing::info!("stopped");
            Ok(())
        }
    }
}

/// Refuses a port another process holds (see [`port`]), and turns port 0 into a concrete free
/// port all shards then use.
fn claim_port(addr: SocketAddr) -> Result<SocketAddr, ServerError> {
    port::claim(addr)
        .and_then(|l| l.local_addr())
        .map_err(|source| match source.kind() {
            std::io::ErrorKind::AddrInUse => ServerError::PortInUse { addr },
            _ => ServerError::Listen { addr, source },
        })
}

/// Blocks SIGINT/SIGTERM in every thread (executors inherit the mask) and waits for them in a
/// dedicated thread: the first sets the stop flag, a second exits at once.
fn block_stop_signals(shared: &Arc<Shared>) {
    // SAFETY: a sigset_t is plain data that sigemptyset initialises; the calls only read
    // and write that set and this thread's signal mask.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    };
    let shared = Arc::clone(shared);
    std::thread::spawn(move || {
        let mut stops = 0;
        loop {
            let mut sig: libc::c_int = 0;
            // SAFETY: `set` is an initialised signal set and `sig` a valid out-pointer.
            if unsafe { libc::sigwait(&set, &mut sig) } != 0 {
                continue;
            }
            stops += 1;
            if stops > 1 {
                tracing::warn!(signal = sig, "second stop signal: exiting now");
                std::process::exit(1);
            }
            tracing::info!(signal = sig, "stop signal: draining connections");
            shared.stop.store(true, Ordering::Release);
        }
    });
}

/// Binds this shard's listener, retrying while a previous process's socket lingers.
async fn bind(addr: SocketAddr) -> Result<TcpListener, ServerError> {
    let deadline = Instant::now() + BIND_RETRY;
    loop {
        match port::listen_shared(addr) {
            // SAFETY: `into_raw_fd` hands over a bound, listening socket that nothing else owns.
            Ok(l) => return Ok(unsafe { TcpListener::from_raw_fd(l.into_raw_fd()) }),
            Err(source) => {
                if source.kind() != std::io::ErrorKind::AddrInUse || Instant::now() >= deadline {
                    return Err(ServerError::Listen { addr, source });
                }
                glommio::timer::sleep(BIND_RETRY_STEP).await;
            }
        }
    }
}

async fn shard_main(
    config: &Config,
    meshes: MeshBuilders,
    shared: &Shared,
) -> Result<(), ServerError> {
    let (mesh, mut receivers) = Mesh::join(meshes).await?;
    let id = mesh.me();
    let io = |source| ServerError::Io { shard: id, source };
    let dir = layout::shard_dir(&config.data_dir, id);
    let fs = DmaFs::new(&dir).await.map_err(io)?;
    let clock = Arc::new(SystemClock);
    let options = Options {
        durability: durability(config.fsync),
        memory_budget_bytes: config.shard_memory_budget(),
        memtable_bytes: config.memtable_bytes,
        block_cache_bytes: config.cache_bytes,
        clock: clock.clone(),
        // Delayed writes must sleep on the shard's timer, not block its thread.
        timer: Arc::new(GlommioTimer),
        ..Options::default()
    };
    let db = Db::open(fs, &dir, options)
        .await
        .map_err(|source| ServerError::Engine { shard: id, source })?;
    let background = glommio::executor().create_task_queue(
        Shares::Static(BACKGROUND_SHARES),
        Latency::NotImportant,
        "engine-background",
    );
    glommio::spawn_local_into(db.background(), background)
        .map_err(|e| ServerError::Executor(e.to_string()))?
        .detach();
    let shard = Rc::new(Shard::new(
        id,
        config.shards,
        config.partitions,
        Store::new(db.clone(), clock.clone()),
    ));
    let mesh = Rc::new(mesh);
    let shutdown = Rc::new(Shutdown::default());
    let generation = shared.generation.load(Ordering::Acquire);
    let (driver, system) = match &config.cluster {
        Some(cluster) => {
            let system = open_system(config, id, background).await?;
            let hints = Rc::new(HintStore::new(system.clone()));
            let started =
                start_cluster(cluster, config, generation, &shard, &mesh, &shutdown, hints);
            (Some(started.await?), Some(system))
        }
        None => (None, None),
    };
    if let Some(driver) = &driver {
        driver.serve_mesh(receivers.take_cluster());
    }
    crate::mesh::serve(&mesh, &shard, receivers);
    let ctx = Rc::new(Ctx {
        shard: Rc::clone(&shard),
        mesh,
        config: Rc::new(config.clone()),
        clock,
        started: Instant::now(),
        driver,
    });
    let listener = bind(config.listen).await?;
    tracing::info!(shard = id, listen = %config.listen, "ready");
    let acceptor = {
        let ctx = Rc::clone(&ctx);
        let shutdown = Rc::clone(&shutdown);
        glommio::spawn_local(async move { accept_loop(listener, ctx, shutdown).await })
    };

    // The shard's ticker: throughput samples, interval syncs, io_uring workers' policy, the
    // node's load for gossip (shard 0 of a member), and the stop flag.
    let mut last_sync = Instant::now();
    let mut last_load = Instant::now();
    let mut io_workers = sched::IoWorkers::of_current_thread();
    let mut workers_warned = false;
    while !shared.stop.load(Ordering::Acquire) {
        glommio::timer::sleep(OPS_SAMPLE_PERIOD).await;
        shard.counters.sample_ops();
        if config.sched == Sched::Batch {
            if let Err(e) = io_workers.normalize() {
                if !std::mem::replace(&mut workers_warned, true) {
                    tracing::warn!(shard = id, error = %e, "cannot reset the policy of io_uring workers");
                }
            }
        }
        if let Some(driver) = ctx.driver.as_ref().filter(|_| id == 0) {
            if last_load.elapsed() >= LOAD_PERIOD {
                last_load = Instant::now();
                driver.set_load(node_load(&ctx).await);
            }
        }
        if config.fsync == Fsync::Interval && last_sync.elapsed() >= SYNC_INTERVAL {
            last_sync = Instant::now();
            if let Err(e) = db.sync().await {
                tracing::error!(shard = id, error = %e, "interval sync failed");
            }
        }
    }

    shutdown.trigger();
    acceptor.await;
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    while shard.counters.connections.get() > 0 && Instant::now() < deadline {
        glommio::timer::sleep(DRAIN_POLL).await;
    }
    shared.drained.fetch_add(1, Ordering::AcqRel);
    while shared.drained.load(Ordering::Acquire) < config.shards && Instant::now() < deadline {
        glommio::timer::sleep(DRAIN_POLL).await;
    }
    for db in std::iter::once(&db).chain(&system) {
        if let Err(e) = db.flush().await {
            tracing::error!(shard = id, error = %e, "flush at shutdown failed");
        }
        db.close()
            .await
            .map_err(|source| ServerError::Engine { shard: id, source })?;
    }
    tracing::info!(shard = id, "shard stopped");
    Ok(())
}

/// The node's data on disk (tables and log of every shard), summed over the mesh.
async fn node_load(ctx: &Ctx) -> u64 {
    let mut total = 0;
    for shard in 0..ctx.shard.shards {
        let stats = if shard == ctx.shard.id {
            Some(ctx.shard.stats())
        } else {
            match ctx.mesh.call(shard, &ShardOp::Stats).await {
                Ok(ShardReply::Stats(s)) => Some(*s),
                _ => None,
            }
        };
        if let Some(s) = stats {
            total += s.sstable_bytes + s.log_bytes;
        }
    }
    total
}

/// The engine durability `fsync` asks for.
fn durability(fsync: Fsync) -> Durability {
    match fsync {
        Fsync::Always => Durability::Sync,
        Fsync::Interval | Fsync::Never => Durability::Buffered,
    }
}

/// Opens shard `id`'s system engine (a cluster member's hints): small, since it holds only
/// what waits for a member that is down.
async fn open_system(
    config: &Config,
    id: usize,
    background: glommio::TaskQueueHandle,
) -> Result<Db<DmaFs>, ServerError> {
    let dir = layout::system_dir(&config.data_dir, id);
    std::fs::create_dir_all(&dir).map_err(|source| ServerError::Io { shard: id, source })?;
    let fs = DmaFs::new(&dir)
        .await
        .map_err(|source| ServerError::Io { shard: id, source })?;
    let options = Options {
        durability: durability(config.fsync),
        memtable_bytes: SYSTEM_MEMTABLE_BYTES,
        block_cache_bytes: SYSTEM_CACHE_BYTES,
        timer: Arc::new(GlommioTimer),
        ..Options::default()
    };
    let db = Db::open(fs, &dir, options)
        .await
        .map_err(|source| ServerError::Engine { shard: id, source })?;
    glommio::spawn_local_into(db.background(), background)
        .map_err(|e| ServerError::Executor(e.to_string()))?
        .detach();
    Ok(db)
}

/// Starts this shard's part of the cluster once its hint store is open: its driver, its
/// peer listener and the driver's ticker.
async fn start_cluster(
    cluster: &ClusterConfig,
    config: &Config,
    generation: u64,
    shard: &Rc<Shard>,
    mesh: &Rc<Mesh>,
    shutdown: &Rc<Shutdown>,
    hints: Rc<HintStore<DmaFs>>,
) -> Result<Rc<Driver>, ServerError> {
    {
        {
            let id = shard.id;
            let stored_hints = hints
                .list()
                .await
                .map_err(|e| ServerError::Cluster(e.to_string()))?;
            let ring = cluster
                .ring(config.partitions)
                .map_err(|e| ServerError::Cluster(e.to_string()))?;
            let members = cluster
                .members
                .iter()
                .filter(|m| m.id != cluster.me)
                .map(|m| PeerAddr {
                    node: m.id,
                    base: m.peer,
                    shards: m.shards as u16,
                })
                .collect();
            let peers = Peers::new(cluster.me, members, PeerOptions::default());
            let parts = driver::Parts {
                config: cluster.clone(),
                ring,
                generation,
                mesh: Rc::clone(mesh),
                peers,
                hints,
                stored_hints,
            };
            let driver = Driver::new(Rc::clone(shard), parts);
            let base = cluster.peer_listen;
            let addr = SocketAddr::new(base.ip(), base.port() + id as u16);
            let listener =
                peer::listen(addr).map_err(|source| ServerError::Peer { shard: id, source })?;
            tracing::info!(shard = id, peer_listen = %addr, generation, "cluster member ready");
            let on_frame: Rc<dyn Fn(Inbound)> = {
                let driver = Rc::clone(&driver);
                Rc::new(move |frame| driver.handle_inbound(frame))
            };
            let stop = Rc::clone(shutdown);
            glommio::spawn_local(peer::serve(
                listener,
                shoal_cluster::frame::PAYLOAD_LEN_MAX,
                on_frame,
                async move { stop.wait().await },
            ))
            .detach();
            let ticking = Rc::clone(&driver);
            glommio::spawn_local(async move {
                loop {
                    glommio::timer::sleep(driver::TICK).await;
                    ticking.tick();
                }
            })
            .detach();
            Ok(driver)
        }
    }
}

async fn accept_loop(listener: TcpListener, ctx: Rc<Ctx>, shutdown: Rc<Shutdown>) {
    loop {
        let accepted = futures_lite::future::or(async { Some(listener.accept().await) }, async {
            shutdown.wait().await;
            None
        })
        .await;
        match accepted {
            None => return,
            Some(Ok(stream)) => {
                let ctx = Rc::clone(&ctx);
                let shutdown = Rc::clone(&shutdown);
                glommio::spawn_local(crate::front::conn::serve(stream, ctx, shutdown)).detach();
            }
            Some(Err(e)) => {
                tracing::warn!(error = %e, "accept failed");
                // Out of descriptors and the like: back off instead of spinning.
                glommio::timer::sleep(peer::ACCEPT_ERROR_PAUSE).await;
            }
        }
    }
}
