//! A deterministic, seeded userspace UDP relay that puts link faults between offices.
//!
//! The kernel on the test hosts has no netem, so cluster tests route a child office's QUIC
//! through this relay to its parent: the child dials [`LinkHandle::local_addr`], the relay
//! forwards to the parent. With no faults set it is a faithful UDP forwarder; with
//! [`Faults`] set on a [`Direction`] it drops, loses, delays, duplicates or reorders
//! datagrams.
//!
//! - **Forwarding.** Each client source address gets its own upstream socket connected to
//!   the target, so the target sees one stable peer per client; replies read on that socket
//!   go back to that client from the listening socket. A client idle for
//!   [`CLIENT_IDLE_TIMEOUT`] is forgotten; [`LinkHandle::set_target`] forgets them all.
//! - **Determinism.** Every random decision of a link direction comes from a generator
//!   seeded from (relay seed, link name, direction), and every datagram draws the same
//!   rolls whatever the faults, so the same datagrams in the same order meet the same fate.
//! - **Bounds.** At most [`MAX_CLIENTS`] clients per link and [`MAX_QUEUED_DATAGRAMS`] or
//!   [`MAX_QUEUED_BYTES`] waiting in each direction's delay queue; beyond, datagrams are
//!   dropped and counted as `overflowed`.
//!
//! A story: the link from Bayin to Chagantolgay loses a third of Bayin's datagrams.
//! ```no_run
//! # async fn story(chagantolgay: std::net::SocketAddr) -> std::io::Result<()> {
//! use amphi_cluster_tests::relay::{Direction, Faults, Relay};
//! let relay = Relay::new(7);
//! let link = relay.link("bayin", "127.0.0.1:0".parse().unwrap(), chagantolgay).await?;
//! link.set(Direction::Up, Faults { loss: 0.3, ..Faults::default() });
//! // Start Bayin with its parent at `link.local_addr()`; later:
//! println!("{}", link.stats());
//! # Ok(()) }
//! ```

use std::cmp::{Ordering, Reverse};
use std::collections::hash_map::Entry;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::fmt;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::{Instant, MissedTickBehavior};

/// Largest datagram forwarded, in bytes; longer ones are truncated by the receive buffer.
pub const MAX_DATAGRAM: usize = 65_535;
/// Most clients (distinct source addresses) one link serves at once.
pub const MAX_CLIENTS: usize = 64;
/// Most datagrams waiting in one link direction's delay queue.
pub const MAX_QUEUED_DATAGRAMS: usize = 4_096;
/// Most bytes waiting in one link direction's delay queue.
pub const MAX_QUEUED_BYTES: usize = 16 * 1024 * 1024;
/// How long a client may send and receive nothing before its upstream socket is closed.
pub const CLIENT_IDLE_TIMEOUT: Duration = Duration::from_secs(5 * 60);

/// How often idle clients are looked for.
const IDLE_SWEEP: Duration = Duration::from_secs(10);
/// Replies read from upstream sockets waiting for the link task.
const REPLY_CHANNEL: usize = 256;
/// The most a reordered datagram is held back beyond its delay and jitter.
const REORDER_HOLD: Duration = Duration::from_millis(50);
/// Added to the jitter to bound how late a duplicate copy follows the original.
const DUPLICATE_GAP: Duration = Duration::from_millis(1);

/// The faults of one direction of one link. The default is a faithful link.
///
/// Probabilities are compared with a uniform roll in `[0, 1)`: `0.0` never, `1.0` always.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Faults {
    /// The link is cut: every datagram is dropped.
    pub down: bool,
    /// Every datagram waits this long before it is sent on.
    pub delay: Duration,
    /// Each datagram's delay varies by up to this much either way, uniformly.
    pub jitter: Duration,
    /// Probability a datagram is lost.
    pub loss: f64,
    /// Probability a datagram is sent twice, the copy up to `jitter` + 1 ms later.
    pub duplicate: f64,
    /// Probability a datagram is held back an extra `delay` + `jitter` + up to 50 ms, so
    /// that later ones overtake it.
    pub reorder: f64,
}

/// Which way a datagram travels on a link.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// From the dialing client (the child office) to the target (the parent office).
    Up,
    /// Replies from the target back to the client.
    Down,
}

impl Direction {
    /// Both directions, `Up` first.
    pub const BOTH: [Direction; 2] = [Direction::Up, Direction::Down];
}

/// What happened to the datagrams of one link direction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DirectionStats {
    /// Datagrams that arrived at the relay.
    pub received: u64,
    /// Datagrams sent on, duplicate copies included.
    pub forwarded: u64,
    /// Bytes sent on, duplicate copies included.
    pub bytes: u64,
    /// Datagrams dropped because the direction was `down`.
    pub dropped: u64,
    /// Datagrams lost at random (`loss`).
    pub lost: u64,
    /// Datagrams given a second copy (`duplicate`).
    pub duplicated: u64,
    /// Datagrams held back so later ones overtake them (`reorder`).
    pub reordered: u64,
    /// Datagrams dropped because a bound was hit: the delay queue was full, the link had
    /// [`MAX_CLIENTS`] clients, or no upstream socket could be opened.
    pub overflowed: u64,
}

/// What happened on one link, per direction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// From the client to the target.
    pub up: DirectionStats,
    /// From the target back to the client.
    pub down: DirectionStats,
    /// Clients with an upstream socket now.
    pub clients: usize,
}

impl LinkStats {
    /// The counters of one direction.
    pub fn direction(&self, direction: Direction) -> &DirectionStats {
        match direction {
            Direction::Up => &self.up,
            Direction::Down => &self.down,
        }
    }

    fn direction_mut(&mut self, direction: Direction) -> &mut DirectionStats {
        match direction {
            Direction::Up => &mut self.up,
            Direction::Down => &mut self.down,
        }
    }
}

impl fmt::Display for DirectionStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} in, {} out ({} B), {} dropped, {} lost, {} duplicated, {} reordered, {} overflowed",
            self.received,
            self.forwarded,
            self.bytes,
            self.dropped,
            self.lost,
            self.duplicated,
            self.reordered,
            self.overflowed
        )
    }
}

impl fmt::Display for LinkStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} clients; up: {}; down: {}",
            self.clients, self.up, self.down
        )
    }
}

/// A relay of seeded, faulty UDP links. Dropping it stops every link and closes their
/// sockets.
pub struct Relay {
    seed: u64,
    names: Mutex<HashSet<String>>,
    tasks: Mutex<JoinSet<()>>,
}

impl Relay {
    /// A relay whose random decisions all follow from `seed`.
    pub fn new(seed: u64) -> Relay {
        Relay {
            seed,
            names: Mutex::default(),
            tasks: Mutex::default(),
        }
    }

    /// Opens link `name`: listens on `listen` (e.g. `0.0.0.0:0`) and forwards datagrams to
    /// `target`, faithfully until faults are set on the returned handle. Names seed the
    /// link's randomness, so they must be unique within a relay.
    pub async fn link(
        &self,
        name: &str,
        listen: SocketAddr,
        target: SocketAddr,
    ) -> io::Result<LinkHandle> {
        if !lock(&self.names).insert(name.to_owned()) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("the relay already has a link named {name:?}; give each link its own name"),
            ));
        }
        let listen = match UdpSocket::bind(listen).await {
            Ok(socket) => socket,
            Err(e) => {
                lock(&self.names).remove(name);
                return Err(e);
            }
        };
        let handle = LinkHandle {
            name: name.into(),
            local_addr: listen.local_addr()?,
            shared: Arc::new(Shared {
                control: Mutex::new(Control {
                    target,
                    generation: 0,
                    faults: [Faults::default(), Faults::default()],
                }),
                stats: Mutex::default(),
            }),
        };
        let task = LinkTask::new(self.seed, &handle, listen);
        lock(&self.tasks).spawn(task.run());
        Ok(handle)
    }
}

/// Controls one link of a [`Relay`]; cheap to clone. Outlives the relay harmlessly (its
/// settings then change nothing and its stats stop moving).
#[derive(Clone)]
pub struct LinkHandle {
    name: Arc<str>,
    local_addr: SocketAddr,
    shared: Arc<Shared>,
}

impl LinkHandle {
    /// The address clients dial to use this link.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The link's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Sets the faults of one direction, for datagrams arriving from now on.
    pub fn set(&self, direction: Direction, faults: Faults) {
        lock(&self.shared.control).faults[direction as usize] = faults;
    }

    /// Sets the same faults on both directions.
    pub fn set_both(&self, faults: Faults) {
        lock(&self.shared.control).faults = [faults.clone(), faults];
    }

    /// The faults of one direction now.
    pub fn faults(&self, direction: Direction) -> Faults {
        lock(&self.shared.control).faults[direction as usize].clone()
    }

    /// What has happened on the link so far.
    pub fn stats(&self) -> LinkStats {
        *lock(&self.shared.stats)
    }

    /// Forwards to a new target from now on, through new upstream sockets (e.g. the parent
    /// office's container came back with a new address). Datagrams already queued still go
    /// to the old target.
    pub fn set_target(&self, target: SocketAddr) {
        let mut control = lock(&self.shared.control);
        control.target = target;
        control.generation += 1;
    }
}

/// State a link's handles share with its task.
struct Shared {
    control: Mutex<Control>,
    stats: Mutex<LinkStats>,
}

/// What the handles set and the task obeys.
struct Control {
    target: SocketAddr,
    /// Bumped on every target change, so the task knows to drop its clients.
    generation: u64,
    /// Indexed by `Direction as usize`.
    faults: [Faults; 2],
}

/// Locks a mutex whose data stays consistent even if a holder panicked.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The random draws for one datagram. All are drawn for every datagram, so each decision
/// depends only on the datagram's position in its direction, not on which faults are set.
struct Rolls {
    loss: f64,
    duplicate: f64,
    reorder: f64,
    jitter: f64,
    duplicate_gap: f64,
    reorder_hold: f64,
}

impl Rolls {
    fn draw(rng: &mut StdRng) -> Rolls {
        Rolls {
            loss: rng.random(),
            duplicate: rng.random(),
            reorder: rng.random(),
            jitter: rng.random(),
            duplicate_gap: rng.random(),
            reorder_hold: rng.random(),
        }
    }
}

/// What becomes of one datagram.
#[derive(Debug, PartialEq)]
enum Fate {
    /// The direction is down.
    Dropped,
    /// Lost at random.
    Lost,
    /// Sent after `delay`, and a copy after `copy_delay` if duplicated.
    Sent {
        delay: Duration,
        copy_delay: Option<Duration>,
        reordered: bool,
    },
}

impl Fate {
    /// Decides a datagram's fate from the direction's faults and its rolls.
    fn decide(faults: &Faults, rolls: &Rolls) -> Fate {
        if faults.down {
            return Fate::Dropped;
        }
        if rolls.loss < faults.loss {
            return Fate::Lost;
        }
        let jitter = faults.jitter.as_secs_f64() * (2.0 * rolls.jitter - 1.0);
        let mut delay = Duration::from_secs_f64((faults.delay.as_secs_f64() + jitter).max(0.0));
        let reordered = rolls.reorder < faults.reorder;
        if reordered {
            delay += faults.delay + faults.jitter + REORDER_HOLD.mul_f64(rolls.reorder_hold);
        }
        let copy_delay = (rolls.duplicate < faults.duplicate)
            .then(|| delay + (faults.jitter + DUPLICATE_GAP).mul_f64(rolls.duplicate_gap));
        Fate::Sent {
            delay,
            copy_delay,
            reordered,
        }
    }
}

/// The seed of one link direction's generator: (relay seed, link name, direction) mixed
/// with FNV-1a and splitmix64, stable across Rust versions and platforms.
fn lane_seed(seed: u64, link: &str, direction: Direction) -> u64 {
    let name = link.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    });
    splitmix64(splitmix64(seed ^ splitmix64(name)) ^ direction as u64)
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Where a queued datagram goes.
enum Destination {
    /// Up: to the target, through the client's upstream socket.
    Target(Arc<UdpSocket>),
    /// Down: to this client, from the listening socket.
    Client(SocketAddr),
}

/// A datagram waiting in a delay queue; ordered by when it is due, then by arrival.
struct Queued {
    due: Instant,
    seq: u64,
    payload: Arc<[u8]>,
    to: Destination,
}

impl PartialEq for Queued {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Queued {}
impl PartialOrd for Queued {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Queued {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.due, self.seq).cmp(&(other.due, other.seq))
    }
}

/// One direction of a link: its generator and its delay queue.
struct Lane {
    rng: StdRng,
    queue: BinaryHeap<Reverse<Queued>>,
    queued_bytes: usize,
    next_seq: u64,
}

impl Lane {
    fn new(seed: u64, link: &str, direction: Direction) -> Lane {
        Lane {
            rng: StdRng::seed_from_u64(lane_seed(seed, link, direction)),
            queue: BinaryHeap::new(),
            queued_bytes: 0,
            next_seq: 0,
        }
    }

    /// Decides the fate of a datagram that arrived `now` and queues its copies.
    fn accept(
        &mut self,
        faults: &Faults,
        payload: &[u8],
        to: Destination,
        now: Instant,
        stats: &mut DirectionStats,
    ) {
        stats.received += 1;
        match Fate::decide(faults, &Rolls::draw(&mut self.rng)) {
            Fate::Dropped => stats.dropped += 1,
            Fate::Lost => stats.lost += 1,
            Fate::Sent {
                delay,
                copy_delay,
                reordered,
            } => {
                stats.reordered += u64::from(reordered);
                let payload: Arc<[u8]> = payload.into();
                if let Some(copy_delay) = copy_delay {
                    stats.duplicated += 1;
                    let copy = match &to {
                        Destination::Target(socket) => Destination::Target(socket.clone()),
                        Destination::Client(addr) => Destination::Client(*addr),
                    };
                    self.push(now + delay, payload.clone(), to, stats);
                    self.push(now + copy_delay, payload, copy, stats);
                } else {
                    self.push(now + delay, payload, to, stats);
                }
            }
        }
    }

    fn push(
        &mut self,
        due: Instant,
        payload: Arc<[u8]>,
        to: Destination,
        stats: &mut DirectionStats,
    ) {
        if self.queue.len() >= MAX_QUEUED_DATAGRAMS
            || self.queued_bytes + payload.len() > MAX_QUEUED_BYTES
        {
            stats.overflowed += 1;
            return;
        }
        self.queued_bytes += payload.len();
        let seq = self.next_seq;
        self.next_seq += 1;
        self.queue.push(Reverse(Queued {
            due,
            seq,
            payload,
            to,
        }));
    }

    /// When the next queued datagram is due.
    fn next_due(&self) -> Option<Instant> {
        self.queue.peek().map(|Reverse(q)| q.due)
    }

    /// Takes the next datagram if it is due by `now`.
    fn pop_due(&mut self, now: Instant) -> Option<Queued> {
        if self.next_due()? > now {
            return None;
        }
        let Reverse(queued) = self.queue.pop()?;
        self.queued_bytes -= queued.payload.len();
        Some(queued)
    }
}

/// A client of a link: its own upstream socket and the task reading replies from it.
struct Client {
    upstream: Arc<UdpSocket>,
    last_seen: Instant,
    replies: JoinHandle<()>,
}

impl Drop for Client {
    fn drop(&mut self) {
        self.replies.abort();
    }
}

/// A reply from the target for a client.
type Reply = (SocketAddr, Vec<u8>);

/// Something the link task must handle.
enum Event {
    /// Queued datagrams may be due.
    Timer,
    /// A datagram from a client.
    FromClient(io::Result<(usize, SocketAddr)>),
    /// A reply from the target.
    FromTarget(Reply),
    /// Time to forget idle clients.
    Sweep,
}

/// The task running one link: reads both directions, queues and sends.
struct LinkTask {
    listen: UdpSocket,
    shared: Arc<Shared>,
    generation: u64,
    clients: HashMap<SocketAddr, Client>,
    up: Lane,
    down: Lane,
    replies_tx: mpsc::Sender<Reply>,
    replies_rx: mpsc::Receiver<Reply>,
}

impl LinkTask {
    fn new(seed: u64, handle: &LinkHandle, listen: UdpSocket) -> LinkTask {
        let (replies_tx, replies_rx) = mpsc::channel(REPLY_CHANNEL);
        LinkTask {
            listen,
            shared: handle.shared.clone(),
            generation: 0,
            clients: HashMap::new(),
            up: Lane::new(seed, &handle.name, Direction::Up),
            down: Lane::new(seed, &handle.name, Direction::Down),
            replies_tx,
            replies_rx,
        }
    }

    async fn run(mut self) {
        let mut buf = vec![0; MAX_DATAGRAM];
        let mut sweep = tokio::time::interval(IDLE_SWEEP);
        sweep.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            self.send_due().await;
            let next_due = [self.up.next_due(), self.down.next_due()]
                .into_iter()
                .flatten()
                .min();
            let event = tokio::select! {
                biased;
                () = sleep_until(next_due) => Event::Timer,
                received = self.listen.recv_from(&mut buf) => Event::FromClient(received),
                Some(reply) = self.replies_rx.recv() => Event::FromTarget(reply),
                _ = sweep.tick() => Event::Sweep,
            };
            match event {
                Event::Timer => {}
                Event::FromClient(Ok((len, client))) => self.forward_up(client, &buf[..len]).await,
                Event::FromClient(Err(e)) if is_transient(&e) => {}
                Event::FromClient(Err(e)) => {
                    eprintln!("relay: the listening socket failed, the link stops: {e}");
                    return;
                }
                Event::FromTarget((client, payload)) => self.forward_down(client, &payload),
                Event::Sweep => self.forget_idle_clients(),
            }
        }
    }

    /// Sends every queued datagram that is due, oldest due first.
    async fn send_due(&mut self) {
        let now = Instant::now();
        for direction in Direction::BOTH {
            let lane = match direction {
                Direction::Up => &mut self.up,
                Direction::Down => &mut self.down,
            };
            while let Some(queued) = lane.pop_due(now) {
                let sent = match &queued.to {
                    Destination::Target(upstream) => upstream.send(&queued.payload).await,
                    Destination::Client(addr) => self.listen.send_to(&queued.payload, *addr).await,
                };
                if sent.is_ok() {
                    let mut stats = lock(&self.shared.stats);
                    let stats = stats.direction_mut(direction);
                    stats.forwarded += 1;
                    stats.bytes += queued.payload.len() as u64;
                }
            }
        }
    }

    async fn forward_up(&mut self, client: SocketAddr, payload: &[u8]) {
        let (faults, target, generation) = {
            let control = lock(&self.shared.control);
            let faults = control.faults[Direction::Up as usize].clone();
            (faults, control.target, control.generation)
        };
        if generation != self.generation {
            self.generation = generation;
            self.clients.clear();
        }
        let now = Instant::now();
        let upstream = self.upstream_for(client, target, now).await;
        let mut stats = lock(&self.shared.stats);
        stats.clients = self.clients.len();
        let up = &mut stats.up;
        match upstream {
            Some(upstream) => {
                let to = Destination::Target(upstream);
                self.up.accept(&faults, payload, to, now, up);
            }
            None => {
                up.received += 1;
                up.overflowed += 1;
            }
        }
    }

    /// The client's upstream socket, opened if it is new and there is room.
    async fn upstream_for(
        &mut self,
        client: SocketAddr,
        target: SocketAddr,
        now: Instant,
    ) -> Option<Arc<UdpSocket>> {
        if !self.clients.contains_key(&client) && self.clients.len() >= MAX_CLIENTS {
            self.forget_idle_clients();
            if self.clients.len() >= MAX_CLIENTS {
                return None;
            }
        }
        match self.clients.entry(client) {
            Entry::Occupied(mut known) => {
                known.get_mut().last_seen = now;
                Some(known.get().upstream.clone())
            }
            Entry::Vacant(new) => {
                let upstream = Arc::new(open_upstream(target).await.ok()?);
                let replies = tokio::spawn(read_replies(
                    client,
                    upstream.clone(),
                    self.replies_tx.clone(),
                ));
                new.insert(Client {
                    upstream: upstream.clone(),
                    last_seen: now,
                    replies,
                });
                Some(upstream)
            }
        }
    }

    fn forward_down(&mut self, client: SocketAddr, payload: &[u8]) {
        let now = Instant::now();
        if let Some(known) = self.clients.get_mut(&client) {
            known.last_seen = now;
        }
        let faults = lock(&self.shared.control).faults[Direction::Down as usize].clone();
        let mut stats = lock(&self.shared.stats);
        let to = Destination::Client(client);
        self.down.accept(&faults, payload, to, now, &mut stats.down);
    }

    fn forget_idle_clients(&mut self) {
        let now = Instant::now();
        self.clients
            .retain(|_, client| now.duration_since(client.last_seen) < CLIENT_IDLE_TIMEOUT);
        lock(&self.shared.stats).clients = self.clients.len();
    }
}

/// Sleeps until `due`, or forever if nothing is due.
async fn sleep_until(due: Option<Instant>) {
    match due {
        Some(due) => tokio::time::sleep_until(due).await,
        None => std::future::pending().await,
    }
}

/// A socket on an ephemeral port of `target`'s address family, connected to `target`.
async fn open_upstream(target: SocketAddr) -> io::Result<UdpSocket> {
    let any: SocketAddr = match target {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(any).await?;
    socket.connect(target).await?;
    Ok(socket)
}

/// Reads the target's replies for `client` and hands them to the link task.
async fn read_replies(client: SocketAddr, upstream: Arc<UdpSocket>, replies: mpsc::Sender<Reply>) {
    let mut buf = vec![0; MAX_DATAGRAM];
    loop {
        match upstream.recv(&mut buf).await {
            Ok(len) => {
                if replies.send((client, buf[..len].to_vec())).await.is_err() {
                    return;
                }
            }
            Err(e) if is_transient(&e) => {}
            Err(e) => {
                eprintln!("relay: reading replies for {client} failed: {e}");
                return;
            }
        }
    }
}

/// Errors a UDP socket reports for one datagram (an ICMP unreachable from an earlier send,
/// a signal) rather than for itself.
fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Long enough for any datagram on loopback.
    const PATIENCE: Duration = Duration::from_millis(1_500);
    /// Datagrams sent before waiting for the relay to catch up, so no socket buffer fills.
    const BURST: usize = 32;

    /// A relay with one link from a client socket to a target socket, both on loopback.
    struct Rig {
        _relay: Relay,
        link: LinkHandle,
        client: UdpSocket,
        target: UdpSocket,
    }

    impl Rig {
        async fn new(seed: u64) -> Rig {
            let relay = Relay::new(seed);
            let target = bind().await;
            let link = relay
                .link("bayin", loopback(), target.local_addr().unwrap())
                .await
                .unwrap();
            Rig {
                _relay: relay,
                link,
                client: bind().await,
                target,
            }
        }

        /// Sends a datagram from `client` through the link.
        async fn send_up(&self, client: &UdpSocket, payload: &[u8]) {
            client
                .send_to(payload, self.link.local_addr())
                .await
                .unwrap();
        }

        /// Sends `count` numbered datagrams from the client, in bursts the relay keeps up with.
        async fn send_numbered(&self, count: u32) {
            for n in 0..count {
                self.send_up(&self.client, &n.to_be_bytes()).await;
                if (n as usize + 1).is_multiple_of(BURST) || n + 1 == count {
                    self.relay_has_received(u64::from(n) + 1).await;
                }
            }
        }

        async fn relay_has_received(&self, count: u64) {
            let start = Instant::now();
            while self.link.stats().up.received < count {
                assert!(start.elapsed() < PATIENCE, "the relay fell behind");
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }

        /// Numbers of the datagrams the target receives until it has `count` of them or
        /// nothing more comes within `quiet`.
        async fn target_numbers(&self, count: usize, quiet: Duration) -> Vec<u32> {
            let mut numbers = Vec::new();
            while numbers.len() < count {
                match receive(&self.target, quiet).await {
                    Some((payload, _)) => {
                        numbers.push(u32::from_be_bytes(payload.try_into().unwrap()))
                    }
                    None => break,
                }
            }
            numbers
        }
    }

    fn loopback() -> SocketAddr {
        (Ipv4Addr::LOCALHOST, 0).into()
    }

    async fn bind() -> UdpSocket {
        UdpSocket::bind(loopback()).await.unwrap()
    }

    async fn receive(socket: &UdpSocket, within: Duration) -> Option<(Vec<u8>, SocketAddr)> {
        let mut buf = vec![0; MAX_DATAGRAM];
        let (len, from) = tokio::time::timeout(within, socket.recv_from(&mut buf))
            .await
            .ok()?
            .unwrap();
        buf.truncate(len);
        Some((buf, from))
    }

    #[tokio::test]
    async fn forwards_faithfully_both_ways_keeping_clients_apart() {
        let rig = Rig::new(1).await;
        let (alice, bob) = (&rig.client, &bind().await);
        rig.send_up(alice, b"from alice").await;
        let (payload, alice_peer) = receive(&rig.target, PATIENCE).await.unwrap();
        assert_eq!(payload, b"from alice");
        rig.send_up(bob, b"from bob").await;
        let (payload, bob_peer) = receive(&rig.target, PATIENCE).await.unwrap();
        assert_eq!(payload, b"from bob");
        assert_ne!(
            alice_peer, bob_peer,
            "each client has its own upstream peer"
        );

        rig.send_up(alice, b"alice again").await;
        let (payload, peer) = receive(&rig.target, PATIENCE).await.unwrap();
        assert_eq!(
            (payload.as_slice(), peer),
            (&b"alice again"[..], alice_peer)
        );

        rig.target.send_to(b"to bob", bob_peer).await.unwrap();
        rig.target.send_to(b"to alice", alice_peer).await.unwrap();
        let (payload, from) = receive(bob, PATIENCE).await.unwrap();
        assert_eq!(
            (payload.as_slice(), from),
            (&b"to bob"[..], rig.link.local_addr())
        );
        let (payload, from) = receive(alice, PATIENCE).await.unwrap();
        assert_eq!(
            (payload.as_slice(), from),
            (&b"to alice"[..], rig.link.local_addr())
        );

        let stats = rig.link.stats();
        assert_eq!(
            (stats.up.forwarded, stats.down.forwarded, stats.clients),
            (3, 2, 2)
        );
        assert_eq!(
            stats.up.bytes,
            (b"from alice".len() + b"from bob".len() + b"alice again".len()) as u64
        );
    }

    #[tokio::test]
    async fn without_jitter_datagrams_keep_their_order() {
        let rig = Rig::new(2).await;
        rig.link.set(
            Direction::Up,
            Faults {
                delay: Duration::from_millis(5),
                ..Faults::default()
            },
        );
        rig.send_numbered(200).await;
        let numbers = rig.target_numbers(200, PATIENCE).await;
        assert_eq!(numbers, (0..200).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn down_on_up_only_is_an_asymmetric_link() {
        let rig = Rig::new(3).await;
        rig.send_up(&rig.client, b"hello").await;
        let (_, peer) = receive(&rig.target, PATIENCE).await.unwrap();

        rig.link.set(
            Direction::Up,
            Faults {
                down: true,
                ..Faults::default()
            },
        );
        rig.send_up(&rig.client, b"into the void").await;
        assert_eq!(receive(&rig.target, Duration::from_millis(200)).await, None);

        rig.target.send_to(b"still here", peer).await.unwrap();
        let (payload, _) = receive(&rig.client, PATIENCE).await.unwrap();
        assert_eq!(payload, b"still here");
        let stats = rig.link.stats();
        assert_eq!((stats.up.forwarded, stats.up.dropped), (1, 1));
        assert_eq!((stats.down.forwarded, stats.down.dropped), (1, 0));
    }

    /// How many of 1,000 datagrams a link with 30 % loss loses under `seed`, checking that
    /// the target receives all the others.
    async fn lost_of_a_thousand(seed: u64) -> u64 {
        let rig = Rig::new(seed).await;
        rig.link.set(
            Direction::Up,
            Faults {
                loss: 0.3,
                ..Faults::default()
            },
        );
        let receiving = async { rig.target_numbers(1_000, Duration::from_millis(150)).await };
        let (numbers, ()) = tokio::join!(receiving, rig.send_numbered(1_000));
        let stats = rig.link.stats();
        assert_eq!(stats.up.lost + stats.up.forwarded, 1_000);
        assert_eq!(numbers.len() as u64, stats.up.forwarded);
        stats.up.lost
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn loss_is_in_band_and_the_same_for_the_same_seed() {
        let first = lost_of_a_thousand(42).await;
        assert!(
            (230..=370).contains(&first),
            "lost {first} of 1,000 at 30 %"
        );
        assert_eq!(
            lost_of_a_thousand(42).await,
            first,
            "same seed, same losses"
        );
        let others = [lost_of_a_thousand(43).await, lost_of_a_thousand(44).await];
        assert!(
            others.iter().any(|&lost| lost != first),
            "other seeds lose differently"
        );
    }

    #[test]
    fn lanes_draw_from_distinct_seeds() {
        let up = lane_seed(1, "bayin", Direction::Up);
        assert_ne!(up, lane_seed(1, "bayin", Direction::Down));
        assert_ne!(up, lane_seed(1, "xingfu", Direction::Up));
        assert_ne!(up, lane_seed(2, "bayin", Direction::Up));
        assert_eq!(up, lane_seed(1, "bayin", Direction::Up));
    }

    #[tokio::test]
    async fn duplicate_one_delivers_every_datagram_twice() {
        let rig = Rig::new(5).await;
        rig.link.set(
            Direction::Up,
            Faults {
                duplicate: 1.0,
                ..Faults::default()
            },
        );
        let receiving = rig.target_numbers(100, PATIENCE);
        let (mut numbers, ()) = tokio::join!(receiving, rig.send_numbered(50));
        numbers.sort();
        let twice: Vec<u32> = (0..50).flat_map(|n| [n, n]).collect();
        assert_eq!(numbers, twice);
        assert_eq!(receive(&rig.target, Duration::from_millis(50)).await, None);
        assert_eq!(rig.link.stats().up.duplicated, 50);
    }

    #[tokio::test]
    async fn delay_holds_datagrams_back() {
        let rig = Rig::new(6).await;
        rig.link.set(
            Direction::Up,
            Faults {
                delay: Duration::from_millis(200),
                ..Faults::default()
            },
        );
        let sent = Instant::now();
        rig.send_up(&rig.client, b"slow").await;
        let (payload, _) = receive(&rig.target, PATIENCE).await.unwrap();
        let waited = sent.elapsed();
        assert_eq!(payload, b"slow");
        assert!(
            waited >= Duration::from_millis(190),
            "arrived after {waited:?}"
        );
    }

    #[tokio::test]
    async fn reorder_lets_later_datagrams_overtake_without_losing_any() {
        let rig = Rig::new(7).await;
        rig.link.set(
            Direction::Up,
            Faults {
                delay: Duration::from_millis(5),
                reorder: 0.2,
                ..Faults::default()
            },
        );
        let receiving = rig.target_numbers(300, PATIENCE);
        let (numbers, ()) = tokio::join!(receiving, rig.send_numbered(300));
        let overtaken = numbers.windows(2).filter(|pair| pair[0] > pair[1]).count();
        assert!(overtaken > 0, "no datagram arrived out of order");
        let mut sorted = numbers.clone();
        sorted.sort();
        assert_eq!(
            sorted,
            (0..300).collect::<Vec<_>>(),
            "none lost, none doubled"
        );
        assert!(rig.link.stats().up.reordered > 0);
    }

    #[tokio::test]
    async fn a_new_target_gets_new_upstream_sockets() {
        let rig = Rig::new(8).await;
        rig.send_up(&rig.client, b"to the old").await;
        assert!(receive(&rig.target, PATIENCE).await.is_some());
        let restarted = bind().await;
        rig.link.set_target(restarted.local_addr().unwrap());
        rig.send_up(&rig.client, b"to the new").await;
        let (payload, peer) = receive(&restarted, PATIENCE).await.unwrap();
        assert_eq!(payload, b"to the new");
        restarted.send_to(b"back", peer).await.unwrap();
        assert_eq!(receive(&rig.client, PATIENCE).await.unwrap().0, b"back");
        assert_eq!(rig.link.stats().clients, 1);
    }

    #[test]
    fn fate_follows_the_faults() {
        let rolls = Rolls {
            loss: 0.5,
            duplicate: 0.5,
            reorder: 0.5,
            jitter: 1.0,
            duplicate_gap: 0.0,
            reorder_hold: 0.0,
        };
        let ms = Duration::from_millis;
        let down = Faults {
            down: true,
            ..Faults::default()
        };
        assert_eq!(Fate::decide(&down, &rolls), Fate::Dropped);
        let lossy = Faults {
            loss: 0.6,
            ..Faults::default()
        };
        assert_eq!(Fate::decide(&lossy, &rolls), Fate::Lost);
        let all = Faults {
            delay: ms(100),
            jitter: ms(10),
            duplicate: 0.6,
            reorder: 0.6,
            ..Faults::default()
        };
        // 100 + 10 jitter, then held back 100 + 10 more; the copy at once after.
        let expected = Fate::Sent {
            delay: ms(220),
            copy_delay: Some(ms(220)),
            reordered: true,
        };
        assert_eq!(Fate::decide(&all, &rolls), expected);
    }
}
