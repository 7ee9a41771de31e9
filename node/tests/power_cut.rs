//! Every acknowledged write survives a power cut, not only `kill -9`.
//!
//! `kill -9` leaves the kernel's page cache alone, so the crash test cannot tell a store that
//! forgets to fsync from one that does not. Here the store runs on [`PowerCutDisk`], a redb
//! storage backend that keeps what was written since the last `sync_data` apart from what is
//! durable. A power cut keeps the durable image plus only some of those unsynced writes: some
//! are lost whole, some are torn (only a prefix, cut at a 512-byte sector boundary, reaches
//! the disk), and they may land out of order, as a disk reorders unsynced writes.
//!
//! The workload is the node's own: a repo on the store, members created, renamed and given
//! activities through [`members`] (two busy case files pass [`COMPACT_AFTER`] chunks and are
//! compacted), peers' sync states saved without fsync beside them. In each run the disk
//! fails after a random number of operations: from there every write and sync fails, so the
//! store call in flight fails and is not acknowledged, and the power goes. The disk also
//! photographs itself at a few random earlier operations: each photograph is the disk a power
//! cut at that moment would leave, with the write then in flight unacknowledged.
//!
//! On the image each cut leaves, it checks: redb opens it and its integrity check passes;
//! the store opens; every document listed loads, its summary's digest is its heads' digest,
//! and each of its changes has a stored attestation that verifies; the document counts
//! match; every acknowledged write is there with its content, and no write is there that was
//! never made (the one in flight may be either); and the office can write again.
//!
//! `AMPHI_POWER_CUTS=N` runs seeds 1..=N (default 60, on both cores), each a workload cut
//! once by the failing disk and at [`PHOTOS`] earlier points; `AMPHI_POWER_SEED=S` replays
//! one seed.

use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng};
use std::collections::BTreeMap;
use std::io;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use amphi_node::members;
use amphi_node::pki::{
    CA_CERT_FILE, NODE_CERT_FILE, NODE_KEY_FILE, NodeIdentity, ca_init, ca_issue,
};
use amphi_node::repo::Repo;
use amphi_node::store::{COMPACT_AFTER, DocWrite, Store};
use amphi_node::trust::{Signer, Trust};
use amphi_protocol::casefile::{ActivityInput, IdentityPatch, NewMember};
use amphi_protocol::{DocId, DocKind, OrgPath};
use automerge::ActorId;

const BAYIN: &str = "hoboksar/chagantolgay/bayin";

/// The sector size: a torn write keeps whole sectors only.
const SECTOR: u64 = 512;

/// Writes in a workload; the power goes somewhere in it.
const WORKLOAD_WRITES: usize = 150;

/// Earlier points of each run at which the disk is photographed and cut as well.
const PHOTOS: usize = 5;

// ---------------------------------------------------------------------------------------
// The disk

/// One write or resize the disk took since the last `sync_data`.
#[derive(Clone)]
enum Unsynced {
    Write { offset: u64, data: Vec<u8> },
    SetLen(u64),
}

impl Unsynced {
    /// Bytes a write carries (none for a resize).
    fn bytes(&self) -> usize {
        match self {
            Unsynced::Write { data, .. } => data.len(),
            Unsynced::SetLen(_) => 0,
        }
    }

    /// Applies this operation to `image`, keeping only the first `keep` bytes of a write.
    fn apply(&self, image: &mut Vec<u8>, keep: usize) {
        match self {
            Unsynced::SetLen(len) => image.resize(*len as usize, 0),
            Unsynced::Write { offset, data } => write_at(image, *offset, &data[..keep]),
        }
    }
}

/// Writes `data` at `offset`; like a file, a write past the end extends it with zeros.
fn write_at(image: &mut Vec<u8>, offset: u64, data: &[u8]) {
    let start = offset as usize;
    let end = start + data.len();
    if image.len() < end {
        image.resize(end, 0);
    }
    image[start..end].copy_from_slice(data);
}

/// The disk as it was at one moment: what a power cut then would start from.
#[derive(Clone, Default)]
struct Photo {
    /// Disk operations made before this moment.
    ops: u64,
    /// The workload's write in flight then, if any (its index).
    in_flight: Option<usize>,
    durable: Vec<u8>,
    unsynced: Vec<Unsynced>,
}

#[derive(Default)]
struct Platter {
    /// What survives any power cut: everything up to the last `sync_data`.
    durable: Vec<u8>,
    /// What reads see: the durable image with every unsynced operation applied (the page cache).
    cached: Vec<u8>,
    /// Writes and resizes since the last `sync_data`, in the order they were made.
    unsynced: Vec<Unsynced>,
    /// Writes, resizes and syncs made so far (those that failed included).
    ops: u64,
    /// Once `ops` passes this, every write, resize and sync fails: the power is going.
    fails_after: Option<u64>,
    /// Operations made before the first `sync_data`.
    before_first_sync: Option<u64>,
    /// The workload's write in flight (its index), told by the workload.
    in_flight: Option<usize>,
    /// Operation counts before which to photograph the disk, latest first.
    photo_at: Vec<u64>,
    photos: Vec<Photo>,
}

/// A redb storage backend that loses what was not synced when [`cut`] says the power went.
/// Clones share the disk, so the test keeps a handle while the store owns one.
///
/// It takes no locks: like redb's `InMemoryBackend`, it keeps the lock methods' default
/// (`Unsupported`), which redb's default `ExclusiveWriter` mode accepts.
#[derive(Clone, Default)]
struct PowerCutDisk(Arc<Mutex<Platter>>);

impl PowerCutDisk {
    /// A disk holding `image`, all of it durable (what a node finds after the power is back).
    fn holding(image: Vec<u8>) -> PowerCutDisk {
        PowerCutDisk(Arc::new(Mutex::new(Platter {
            cached: image.clone(),
            durable: image,
            ..Platter::default()
        })))
    }

    fn platter(&self) -> MutexGuard<'_, Platter> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Writes, resizes and syncs made so far.
    fn ops(&self) -> u64 {
        self.platter().ops
    }

    /// Lets `ops` more writes, resizes and syncs through; every one after fails.
    fn fail_after(&self, ops: u64) {
        let mut p = self.platter();
        p.fails_after = Some(p.ops + ops);
    }

    /// Photographs the disk just before each of these operations (counted from now).
    fn photograph_before(&self, mut ops: Vec<u64>) {
        let mut p = self.platter();
        let now = p.ops;
        ops.sort_unstable_by(|a, b| b.cmp(a));
        p.photo_at = ops.into_iter().map(|n| now + n).collect();
    }

    /// Tells the disk which of the workload's writes is in flight.
    fn writing(&self, write: Option<usize>) {
        self.platter().in_flight = write;
    }

    /// The disk now: what a power cut now would start from.
    fn now(&self) -> Photo {
        let p = self.platter();
        Photo {
            ops: p.ops,
            in_flight: p.in_flight,
            durable: p.durable.clone(),
            unsynced: p.unsynced.clone(),
        }
    }

    /// Photographs the disk if asked to, then counts a write, resize or sync and says
    /// whether it goes through.
    fn operation(p: &mut Platter) -> io::Result<()> {
        while p.photo_at.last() == Some(&p.ops) {
            p.photo_at.pop();
            let photo = Photo {
                ops: p.ops,
                in_flight: p.in_flight,
                durable: p.durable.clone(),
                unsynced: p.unsynced.clone(),
            };
            p.photos.push(photo);
        }
        p.ops += 1;
        match p.fails_after {
            Some(n) if p.ops > n => Err(io::Error::other("the power is going")),
            _ => Ok(()),
        }
    }
}

impl std::fmt::Debug for PowerCutDisk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let p = self.platter();
        f.debug_struct("PowerCutDisk")
            .field("durable", &p.durable.len())
            .field("cached", &p.cached.len())
            .field("unsynced", &p.unsynced.len())
            .finish()
    }
}

impl redb::StorageBackend for PowerCutDisk {
    fn len(&self) -> io::Result<u64> {
        Ok(self.platter().cached.len() as u64)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        let p = self.platter();
        let start = offset as usize;
        let source = p.cached.get(start..start + out.len()).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "read past the end of the disk",
            )
        })?;
        out.copy_from_slice(source);
        Ok(())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut p = self.platter();
        PowerCutDisk::operation(&mut p)?;
        p.cached.resize(len as usize, 0);
        p.unsynced.push(Unsynced::SetLen(len));
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        let mut p = self.platter();
        PowerCutDisk::operation(&mut p)?;
        if p.before_first_sync.is_none() {
            p.before_first_sync = Some(p.ops - 1);
        }
        let Platter {
            durable, unsynced, ..
        } = &mut *p;
        for op in unsynced.drain(..) {
            op.apply(durable, op.bytes());
        }
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut p = self.platter();
        PowerCutDisk::operation(&mut p)?;
        write_at(&mut p.cached, offset, data);
        p.unsynced.push(Unsynced::Write {
            offset,
            data: data.to_vec(),
        });
        Ok(())
    }
}

/// What a power cut left on the disk.
struct Cut {
    image: Vec<u8>,
    /// Unsynced writes that reached the disk whole.
    kept: usize,
    /// Unsynced writes of which only some sectors reached the disk.
    torn: usize,
    /// Unsynced writes lost whole.
    lost: usize,
}

/// The image after the power goes at the moment of `photo`: the durable image plus a random
/// part of what was not synced. Three ways a disk loses it: the writes reached the disk in
/// order up to some point, the last one torn; or a random subset reached it, some torn; or a
/// random subset reached it in a random order (a disk reorders unsynced writes), some torn.
fn cut(photo: &Photo, rng: &mut Rng) -> Cut {
    let n = photo.unsynced.len();
    let mut order: Vec<usize> = (0..n).collect();
    let mut kept = vec![false; n];
    let mut torn = vec![false; n];
    match rng.below(3) {
        0 => {
            let reached = rng.below(n + 1);
            kept[..reached].fill(true);
            if reached < n {
                kept[reached] = true;
                torn[reached] = true;
            }
        }
        style => {
            let percent = rng.below(101) as u64;
            for i in 0..n {
                kept[i] = rng.chance(percent);
                torn[i] = kept[i] && rng.chance(25);
            }
            if style == 2 {
                for i in (1..n).rev() {
                    order.swap(i, rng.below(i + 1));
                }
            }
        }
    }
    let mut cut = Cut {
        image: photo.durable.clone(),
        kept: 0,
        torn: 0,
        lost: 0,
    };
    for i in order {
        let op = &photo.unsynced[i];
        let keep = match op {
            Unsynced::Write { offset, data } if torn[i] => torn_length(*offset, data, rng),
            _ => op.bytes(),
        };
        if !kept[i] || (keep == 0 && op.bytes() > 0) {
            cut.lost += 1;
            continue;
        }
        if keep < op.bytes() {
            cut.torn += 1;
        } else {
            cut.kept += 1;
        }
        op.apply(&mut cut.image, keep);
    }
    cut
}

/// How much of a torn write reaches the disk: up to a sector boundary inside it (possibly
/// none of it).
fn torn_length(offset: u64, data: &[u8], rng: &mut Rng) -> usize {
    let end = offset + data.len() as u64;
    let first = offset.div_ceil(SECTOR) * SECTOR;
    if first >= end {
        return 0;
    }
    let boundaries = (end - 1 - first) / SECTOR + 1;
    let boundary = first + rng.below(boundaries as usize) as u64 * SECTOR;
    (boundary - offset) as usize
}

// ---------------------------------------------------------------------------------------
// Randomness

/// The crate's seeded generator (as the crash-cycle test uses), with the two draws this
/// test makes.
struct Rng(StdRng);

impl Rng {
    fn seeded(seed: u64) -> Rng {
        Rng(StdRng::seed_from_u64(seed))
    }

    fn below(&mut self, n: usize) -> usize {
        self.0.random_range(0..n)
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.0.random_range(0..100) < percent
    }
}

// ---------------------------------------------------------------------------------------
// The office

/// The office's CA-issued identity, made once for all runs.
struct Office {
    identity: NodeIdentity,
    org: OrgPath,
    _dir: tempfile::TempDir,
}

impl Office {
    fn new() -> Office {
        let dir = tempfile::tempdir().unwrap();
        let org = OrgPath::parse(BAYIN).unwrap();
        let node = dir.path().join("node");
        ca_init(&dir.path().join("ca"), &OrgPath::parse("hoboksar").unwrap()).unwrap();
        ca_issue(&dir.path().join("ca"), &org, &node, 30).unwrap();
        let identity = NodeIdentity::load(
            &node.join(NODE_CERT_FILE),
            &node.join(NODE_KEY_FILE),
            &node.join(CA_CERT_FILE),
        )
        .unwrap();
        Office {
            identity,
            org,
            _dir: dir,
        }
    }

    fn trust(&self) -> Arc<Trust> {
        let trust = Arc::new(Trust::new(&self.identity.ca_der).unwrap());
        trust.admit(&self.identity.cert_der).unwrap();
        trust
    }

    /// The node's repo over `store`, as `amphi run` builds it.
    fn repo(&self, store: Store) -> Repo {
        Repo::new(
            store,
            self.org.clone(),
            ActorId::from(self.identity.actor_id()),
            Signer::new(&self.identity).unwrap(),
            self.trust(),
        )
    }

    /// What `amphi run` does first on a store: learn its own certificate, make its roster.
    fn start(&self, repo: &Repo) -> Result<(), String> {
        repo.learn_certificate(&self.identity.cert_der)
            .map_err(|e| e.to_string())?;
        repo.ensure_own_roster().map_err(|e| e.to_string())
    }
}

fn new_member(name: &str) -> NewMember {
    NewMember {
        name: name.to_owned(),
        gender: "female".into(),
        ethnicity: "Mongol".into(),
        birth_date: "1971-03-02".into(),
        joined_at: "1996-07-01".into(),
        home_org: OrgPath::parse(BAYIN).unwrap(),
        id_number: None,
        phone: None,
        education: None,
        categories: vec!["farmer-herder".into()],
    }
}

// ---------------------------------------------------------------------------------------
// The workload

/// One write the workload makes.
#[derive(Debug, Clone)]
enum Write {
    /// A new member (`POST /api/v1/members`).
    Create { name: String },
    /// A member renamed (`PATCH /api/v1/members/{id}`).
    Rename { id: String, name: String },
    /// An activity recorded (`POST …/activities`).
    Activity { id: String, description: String },
    /// A peer's sync state saved, not forced to disk (never acknowledged as durable).
    SyncState { id: String },
}

/// A write made, and whether it was acknowledged.
struct Made {
    write: Write,
    /// `Some` if the store call returned Ok: the id of the member written.
    acknowledged: Option<String>,
}

/// Picks the next write: most go to two busy case files, so they pass [`COMPACT_AFTER`]
/// chunks and are compacted.
fn next_write(made: &[Made], n: usize, rng: &mut Rng) -> Write {
    let created: Vec<&str> = made
        .iter()
        .filter(|m| matches!(m.write, Write::Create { .. }))
        .filter_map(|m| m.acknowledged.as_deref())
        .collect();
    if created.is_empty() || rng.chance(8) {
        return Write::Create {
            name: format!("Member {n}"),
        };
    }
    let id = if rng.chance(85) {
        created[rng.below(created.len().min(2))]
    } else {
        created[rng.below(created.len())]
    }
    .to_owned();
    match rng.below(10) {
        0 => Write::SyncState { id },
        1..=4 => Write::Rename {
            id,
            name: format!("Renamed {n}"),
        },
        _ => Write::Activity {
            id,
            description: format!("Activity {n}"),
        },
    }
}

/// Makes `write` through the node's code path; `Some(member id)` if acknowledged.
fn make(repo: &Repo, write: &Write) -> Option<String> {
    match write {
        Write::Create { name } => members::create(repo, &new_member(name))
            .ok()
            .map(|file| file.id),
        Write::Rename { id, name } => {
            let patch = IdentityPatch {
                name: Some(name.clone()),
                ..IdentityPatch::default()
            };
            members::patch(repo, id, &patch).ok().map(|_| id.clone())
        }
        Write::Activity { id, description } => {
            let activity = ActivityInput {
                date: "2026-01-15".into(),
                kind: "study".into(),
                description: description.clone(),
                points: Some(2),
            };
            members::add_activity(repo, id, &activity)
                .ok()
                .map(|_| id.clone())
        }
        Write::SyncState { id } => {
            let doc = DocId::parse(id).unwrap();
            repo.store()
                .save_sync_state(&doc, "hoboksar/chagantolgay", b"a peer's sync state")
                .ok()
                .map(|_| id.clone())
        }
    }
}

/// Runs the workload on `disk` (after `prepare`) until a write fails or all were made.
fn workload(
    office: &Office,
    disk: &PowerCutDisk,
    prepare: impl FnOnce(),
    rng: &mut Rng,
) -> Vec<Made> {
    let store = Store::open_with_backend(disk.clone(), BAYIN).expect("a new store opens");
    let repo = office.repo(store);
    office
        .start(&repo)
        .expect("a new store takes the first writes");
    prepare();
    let mut made: Vec<Made> = Vec::new();
    for n in 0..WORKLOAD_WRITES {
        let write = next_write(&made, n, rng);
        disk.writing(Some(n));
        let acknowledged = make(&repo, &write);
        disk.writing(None);
        let failed = acknowledged.is_none();
        made.push(Made {
            write,
            acknowledged,
        });
        if failed {
            break;
        }
    }
    made
}

/// A case file as the acknowledged writes left it.
#[derive(Debug, Default)]
struct Member {
    name: String,
    activities: Vec<String>,
    /// Acknowledged writes to it (each one a chunk, until compaction).
    writes: u64,
}

/// What must be in the store after a cut: the acknowledged writes made before it; and the
/// write in flight at the cut, which may be there or not.
struct Expected<'a> {
    members: BTreeMap<&'a str, Member>,
    acknowledged: usize,
    in_flight: Option<&'a Write>,
}

impl Expected<'_> {
    /// After a cut during write `in_flight` (or after write `before - 1`, with none in flight).
    fn at<'a>(made: &'a [Made], before: usize, in_flight: Option<usize>) -> Expected<'a> {
        let mut members: BTreeMap<&str, Member> = BTreeMap::new();
        let mut acknowledged = 0;
        for m in &made[..before] {
            let Some(id) = m.acknowledged.as_deref() else {
                continue;
            };
            let member = members.entry(id).or_default();
            match &m.write {
                Write::Create { name } | Write::Rename { name, .. } => member.name = name.clone(),
                Write::Activity { description, .. } => member.activities.push(description.clone()),
                Write::SyncState { .. } => continue,
            }
            member.writes += 1;
            acknowledged += 1;
        }
        Expected {
            members,
            acknowledged,
            in_flight: in_flight.map(|i| &made[i].write),
        }
    }
}

// ---------------------------------------------------------------------------------------
// After the power is back

/// What one cut showed.
#[derive(Default)]
struct Outcome {
    acknowledged: usize,
    /// Acknowledged writes missing after the cut (must be 0).
    lost_writes: usize,
    unsynced_kept: usize,
    unsynced_torn: usize,
    unsynced_lost: usize,
    in_flight_survived: bool,
    compacted: bool,
    docs: usize,
    problems: Vec<String>,
}

/// Opens the store on what the cut left and checks it (see the module doc).
fn check_after_cut(office: &Office, image: &[u8], expected: &Expected<'_>, out: &mut Outcome) {
    // redb's own check first, on a copy of the image.
    match redb::Database::builder().create_with_backend(PowerCutDisk::holding(image.to_vec())) {
        Ok(mut db) => match db.check_integrity() {
            Ok(true) => {}
            Ok(false) => out
                .problems
                .push("redb's integrity check had to repair the store".into()),
            Err(e) => out
                .problems
                .push(format!("redb's integrity check failed: {e}")),
        },
        Err(e) => out
            .problems
            .push(format!("redb does not open the image: {e}")),
    }

    let store = match Store::open_with_backend(PowerCutDisk::holding(image.to_vec()), BAYIN) {
        Ok(store) => store,
        Err(e) => {
            out.problems.push(format!("the store does not open: {e}"));
            out.lost_writes = expected.acknowledged;
            return;
        }
    };
    let repo = office.repo(store);
    let store = repo.store();

    let summaries = match store.summaries() {
        Ok(s) => s,
        Err(e) => {
            out.problems.push(format!("summaries do not read: {e}"));
            return;
        }
    };
    out.docs = summaries.len();
    let counts = store.doc_counts();
    let counted = counts.by_kind.values().sum::<u64>() + counts.leaving;
    if counted != summaries.len() as u64 {
        out.problems.push(format!(
            "doc counts say {counted} documents, the index lists {}",
            summaries.len()
        ));
    }
    // What `amphi verify` checks: every document loads, its summary names its heads, every
    // change has its attestation and verifies.
    match amphi_node::backup::verify(&repo, amphi_node::backup::Inventory::Skip) {
        Ok(found) => out.problems.extend(
            found
                .problems
                .iter()
                .map(|p| format!("amphi verify: {}: {}", p.doc, p.what)),
        ),
        Err(e) => out.problems.push(format!("amphi verify fails: {e}")),
    }
    for (id, summary) in &summaries {
        if id.kind() == DocKind::Member && !expected.members.contains_key(id.as_str()) {
            match expected.in_flight {
                Some(Write::Create { name }) if summary.name == *name => {
                    out.in_flight_survived = true;
                }
                _ => out.problems.push(format!(
                    "{id} ({}) is there but was never created",
                    summary.name
                )),
            }
        }
    }

    for (id, member) in &expected.members {
        let file = match members::get(&repo, id) {
            Ok(file) => file,
            Err(e) => {
                out.problems
                    .push(format!("acknowledged member {id} is gone: {e}"));
                out.lost_writes += member.writes as usize;
                continue;
            }
        };
        if file.name != member.name {
            match expected.in_flight {
                Some(Write::Rename { id: i, name }) if i == id && *name == file.name => {
                    out.in_flight_survived = true;
                }
                _ => {
                    out.problems.push(format!(
                        "{id} is named {:?}, but the last acknowledged name is {:?}",
                        file.name, member.name
                    ));
                    out.lost_writes += 1;
                }
            }
        }
        let present: Vec<&str> = file
            .activities
            .iter()
            .map(|a| a.description.as_str())
            .collect();
        for a in &member.activities {
            if !present.contains(&a.as_str()) {
                out.problems
                    .push(format!("{id}: acknowledged activity {a:?} is gone"));
                out.lost_writes += 1;
            }
        }
        for a in present {
            if member.activities.iter().any(|e| e == a) {
                continue;
            }
            match expected.in_flight {
                Some(Write::Activity { id: i, description }) if i == id && description == a => {
                    out.in_flight_survived = true;
                }
                _ => out
                    .problems
                    .push(format!("{id}: activity {a:?} is there but was never added")),
            }
        }
    }

    // The office goes on: the store takes writes again.
    if let Err(e) = office.start(&repo) {
        out.problems
            .push(format!("the office cannot start on the store: {e}"));
    } else if let Err(e) = members::create(&repo, &new_member("After the cut")) {
        out.problems
            .push(format!("the store takes no write after the cut: {e}"));
    }
}

/// Cuts the power at the moment of `photo` and checks what comes back.
fn cut_and_check(office: &Office, photo: &Photo, made: &[Made], rng: &mut Rng) -> Outcome {
    let before = photo.in_flight.unwrap_or(made.len());
    let expected = Expected::at(made, before, photo.in_flight);
    let cut = cut(photo, rng);
    let mut out = Outcome {
        acknowledged: expected.acknowledged,
        unsynced_kept: cut.kept,
        unsynced_torn: cut.torn,
        unsynced_lost: cut.lost,
        compacted: expected.members.values().any(|m| m.writes > COMPACT_AFTER),
        ..Outcome::default()
    };
    let checked = catch_unwind(AssertUnwindSafe(|| {
        check_after_cut(office, &cut.image, &expected, &mut out)
    }));
    if let Err(panic) = checked {
        let why = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        out.problems.push(format!("panicked after the cut: {why}"));
    }
    out
}

/// What makes `disk` fail after a random number of operations (up to `ops_budget`) and
/// photograph itself at [`PHOTOS`] random points before: a workload calls it once its store
/// is open.
fn power_goes<'d>(disk: &'d PowerCutDisk, ops_budget: u64, rng: &mut Rng) -> impl FnOnce() + 'd {
    let fails_after = rng.below(ops_budget as usize + 1) as u64;
    let photos_at: Vec<u64> = (0..PHOTOS)
        .map(|_| rng.below(fails_after as usize + 1) as u64)
        .collect();
    move || {
        disk.fail_after(fails_after);
        disk.photograph_before(photos_at);
    }
}

/// One seed: the workload on a fresh disk that fails after a random number of operations
/// (up to `ops_budget`), photographed at [`PHOTOS`] random points before; every photograph
/// and the failed disk are cut and checked. Returns (cut description, outcome) per cut.
fn one_run(office: &Office, seed: u64, ops_budget: u64) -> Vec<(String, Outcome)> {
    let mut rng = Rng::seeded(seed);
    let disk = PowerCutDisk::default();
    let power_goes = power_goes(&disk, ops_budget, &mut rng);
    let made = workload(office, &disk, power_goes, &mut rng);
    let mut failed = disk.now();
    if made.last().is_some_and(|m| m.acknowledged.is_none()) {
        failed.in_flight = Some(made.len() - 1);
    }
    let photos = std::mem::take(&mut disk.platter().photos);
    let mut outcomes = vec![(
        format!("the disk failing after {} operations", failed.ops),
        cut_and_check(office, &failed, &made, &mut rng),
    )];
    for photo in &photos {
        outcomes.push((
            format!("a cut before operation {}", photo.ops),
            cut_and_check(office, photo, &made, &mut rng),
        ));
    }
    outcomes
}

#[test]
fn acknowledged_writes_survive_a_power_cut_at_any_point() {
    let started = Instant::now();
    let office = Office::new();
    // How many disk operations a whole workload makes, so cuts fall anywhere in it.
    let ops_budget = {
        let disk = PowerCutDisk::default();
        let made = workload(&office, &disk, || {}, &mut Rng::seeded(0));
        assert_eq!(
            made.len(),
            WORKLOAD_WRITES,
            "a write failed without a power cut"
        );
        disk.ops()
    };
    let seeds: Vec<u64> = match std::env::var("AMPHI_POWER_SEED") {
        Ok(s) => vec![s.parse().expect("AMPHI_POWER_SEED is a number")],
        Err(_) => {
            let n: u64 = std::env::var("AMPHI_POWER_CUTS")
                .map_or(60, |s| s.parse().expect("AMPHI_POWER_CUTS is a number"));
            (1..=n).collect()
        }
    };
    let workers = 2;
    let results: Vec<(u64, String, Outcome)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|w| {
                let (office, seeds) = (&office, &seeds);
                s.spawn(move || {
                    let mine = seeds.iter().enumerate().filter(|(i, _)| i % workers == w);
                    mine.flat_map(|(_, &seed)| {
                        one_run(office, seed, ops_budget)
                            .into_iter()
                            .map(move |(what, outcome)| (seed, what, outcome))
                    })
                    .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    let sum = |f: fn(&Outcome) -> usize| results.iter().map(|(_, _, o)| f(o)).sum::<usize>();
    println!(
        "{} power cuts over {} seeds in {:.1} s ({ops_budget} disk operations in a whole workload): {} acknowledged writes checked, {} lost; unsynced writes at the cuts: {} kept, {} torn, {} lost; {} cuts after a compaction, {} with the write in flight surviving; {} documents checked",
        results.len(),
        seeds.len(),
        started.elapsed().as_secs_f64(),
        sum(|o| o.acknowledged),
        sum(|o| o.lost_writes),
        sum(|o| o.unsynced_kept),
        sum(|o| o.unsynced_torn),
        sum(|o| o.unsynced_lost),
        sum(|o| o.compacted as usize),
        sum(|o| o.in_flight_survived as usize),
        sum(|o| o.docs),
    );
    let failures: Vec<String> = results
        .iter()
        .filter(|(_, _, o)| !o.problems.is_empty())
        .map(|(seed, what, o)| format!("seed {seed}, {what}: {}", o.problems.join("; ")))
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} cuts failed (replay a seed with AMPHI_POWER_SEED=S):\n{}",
        failures.len(),
        results.len(),
        failures.join("\n")
    );
}

#[test]
fn a_store_cut_before_its_first_sync_opens_empty_or_fails_cleanly() {
    // The disk operations a new store makes before its first sync.
    let before_sync = {
        let probe = PowerCutDisk::default();
        Store::open_with_backend(probe.clone(), BAYIN).unwrap();
        probe
            .platter()
            .before_first_sync
            .expect("a new store syncs")
    };
    let mut opened = 0;
    let mut refused = BTreeMap::<String, usize>::new();
    for seed in 1..=200u64 {
        let mut rng = Rng::seeded(seed);
        let disk = PowerCutDisk::default();
        disk.fail_after(rng.below(before_sync as usize + 1) as u64);
        assert!(
            Store::open_with_backend(disk.clone(), BAYIN).is_err(),
            "a store opened without syncing"
        );
        let cut = cut(&disk.now(), &mut rng);
        match Store::open_with_backend(PowerCutDisk::holding(cut.image), BAYIN) {
            Ok(store) => {
                assert!(store.summaries().unwrap().is_empty(), "cut {seed}");
                assert_eq!(store.doc_counts(), Default::default(), "cut {seed}");
                opened += 1;
            }
            Err(e) => *refused.entry(e.to_string()).or_default() += 1,
        }
    }
    println!(
        "200 cuts before a new store's first sync: {opened} opened empty, refused: {refused:?}"
    );
}

// ---------------------------------------------------------------------------------------
// Group commit

/// Case files received from a peer, written unflushed a few at a time and then flushed
/// together (as a session does), on a disk whose power goes at a random point, photographed
/// at [`PHOTOS`] random points before. Returns, per cut, what it showed.
fn group_commit_run(seed: u64, ops_budget: u64) -> Vec<(String, Vec<String>, usize)> {
    let mut rng = Rng::seeded(seed);
    let disk = PowerCutDisk::default();
    let power_goes = power_goes(&disk, ops_budget, &mut rng);
    let (written, flushed_at) = group_commit_workload(&disk, power_goes);
    let photos = std::mem::take(&mut disk.platter().photos);
    let failed = format!("the disk failing after {} operations", disk.ops());
    let mut cuts = vec![(failed, disk.now())];
    cuts.extend(
        photos
            .into_iter()
            .map(|p| (format!("a cut before operation {}", p.ops), p)),
    );
    cuts.into_iter()
        .map(|(what, photo)| {
            // Acknowledged: the writes of every flush that returned before the cut.
            let acknowledged: Vec<&(DocId, i64)> = flushed_at
                .iter()
                .filter(|(_, ops)| *ops <= photo.ops)
                .flat_map(|(batch, _)| &written[batch.clone()])
                .collect();
            let cut = cut(&photo, &mut rng);
            (
                what,
                check_group_commit(&cut.image, &written, &acknowledged),
                acknowledged.len(),
            )
        })
        .collect()
}

/// Writes batches of 1 to 4 new case files unflushed, each batch then flushed, until the disk
/// fails. Returns every write attempted (id, value) and, per flush that returned, the range
/// of writes it made durable and the disk's operation count when it returned.
#[allow(clippy::type_complexity)]
fn group_commit_workload(
    disk: &PowerCutDisk,
    prepare: impl FnOnce(),
) -> (Vec<(DocId, i64)>, Vec<(std::ops::Range<usize>, u64)>) {
    let store = Store::open_with_backend(disk.clone(), BAYIN).expect("a new store opens");
    prepare();
    let (mut written, mut flushed_at) = (Vec::new(), Vec::new());
    for batch in 0..30u8 {
        let from = written.len();
        for n in 0..1 + batch % 4 {
            let id = DocId::new_member([batch, n, 0, 0, 0, 0, 0, 7]);
            let value = i64::from(batch) * 10 + i64::from(n);
            let mut doc = automerge::AutoCommit::new();
            automerge::transaction::Transactable::put(&mut doc, automerge::ROOT, "value", value)
                .unwrap();
            doc.commit();
            let summary = amphi_protocol::office::summarise(&id, &mut doc);
            written.push((id.clone(), value));
            let write = DocWrite {
                id: &id,
                doc: &mut doc,
                heads_before: &[],
                summary: &summary,
                attestations: &[],
                proofs: &[],
            };
            if store
                .save_unflushed(write, Some(("hoboksar", b"state")))
                .is_err()
            {
                return (written, flushed_at);
            }
        }
        if store.flush().is_err() {
            return (written, flushed_at);
        }
        flushed_at.push((from..written.len(), disk.ops()));
    }
    (written, flushed_at)
}

/// Opens what a cut left: redb's check passes, the store opens, every acknowledged case
/// file is there with its value, nothing is there that was never written, and the counts
/// match the index. Returns the problems found.
fn check_group_commit(
    image: &[u8],
    written: &[(DocId, i64)],
    acknowledged: &[&(DocId, i64)],
) -> Vec<String> {
    let mut problems = Vec::new();
    match redb::Database::builder().create_with_backend(PowerCutDisk::holding(image.to_vec())) {
        Ok(mut db) => {
            if !db.check_integrity().unwrap_or(false) {
                problems.push("redb's integrity check failed or repaired the store".into());
            }
        }
        Err(e) => problems.push(format!("redb does not open the image: {e}")),
    }
    let store = match Store::open_with_backend(PowerCutDisk::holding(image.to_vec()), BAYIN) {
        Ok(store) => store,
        // Only a store cut before its first durable commit may not open: then nothing was
        // acknowledged.
        Err(_) if acknowledged.is_empty() => return problems,
        Err(e) => {
            problems.push(format!("the store does not open: {e}"));
            return problems;
        }
    };
    let value_of = |id: &DocId| -> Option<i64> {
        let doc = store.load(id).ok()??;
        match automerge::ReadDoc::get(&doc, automerge::ROOT, "value").ok()?? {
            (automerge::Value::Scalar(s), _) => s.as_i64(),
            _ => None,
        }
    };
    for (id, value) in acknowledged {
        if value_of(id) != Some(*value) {
            problems.push(format!("acknowledged case file {id} is lost"));
        }
    }
    let summaries = store.summaries().unwrap_or_default();
    for (id, _) in &summaries {
        match written.iter().find(|(w, _)| w == id) {
            Some((_, value)) if value_of(id) == Some(*value) => {}
            _ => problems.push(format!("case file {id} is there but was never written so")),
        }
    }
    let counted: u64 = store.doc_counts().by_kind.values().sum();
    if counted != summaries.len() as u64 {
        problems.push(format!(
            "doc counts say {counted} documents, the index lists {}",
            summaries.len()
        ));
    }
    problems
}

#[test]
fn received_case_files_written_unflushed_survive_a_power_cut_once_flushed() {
    let ops_budget = {
        let disk = PowerCutDisk::default();
        let (written, flushed_at) = group_commit_workload(&disk, || {});
        assert_eq!(flushed_at.len(), 30, "a flush failed without a power cut");
        assert_eq!(flushed_at.last().unwrap().0.end, written.len());
        disk.ops()
    };
    let mut checked = 0;
    let mut failures = Vec::new();
    for seed in 1..=60u64 {
        for (what, problems, acknowledged) in group_commit_run(seed, ops_budget) {
            checked += acknowledged;
            if !problems.is_empty() {
                failures.push(format!("seed {seed}, {what}: {}", problems.join("; ")));
            }
        }
    }
    println!("group commit: {checked} acknowledged case files checked after power cuts");
    assert!(checked > 0, "no cut came after a flush");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
