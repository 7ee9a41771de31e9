//! What each fuzz target does, as plain functions of the input bytes.
//!
//! The cargo-fuzz binaries in `fuzz_targets/` call these under libFuzzer (nightly); the
//! root workspace's `tests/tests/fuzz_regressions.rs` compiles this same file as a module on
//! stable and replays every input under `fuzz/corpus/<target>/` and
//! `fuzz/artifacts/<target>/` through them. So this file uses only crates both sides have:
//! `amphi-protocol`, `amphi-node`, `automerge`, `serde_json`, `tempfile`.
//!
//! A target passes an input when it returns; a panic (an assertion here, or one inside the
//! code under test) is a finding.

use std::sync::OnceLock;

use amphi_node::pki::{self, NodeIdentity};
use amphi_node::store::{DocSummary, QuarantineRecord};
use amphi_node::trust::{Trust, cert_id};
use amphi_protocol::attest::Attestation;
use amphi_protocol::wire::Frame;
use amphi_protocol::{DocId, OrgPath};
use automerge::{AutoCommit, ChangeHash, sync};

/// A target: it returns on an acceptable input and panics on a finding.
pub type Target = fn(&[u8]);

/// Every target: its name (the folder under `corpus/` and `artifacts/`) and its function.
pub const TARGETS: &[(&str, Target)] = &[
    ("frame", frame),
    ("certificate", certificate),
    ("store_records", store_records),
    ("sync_message", sync_message),
    ("change_chunk", change_chunk),
    ("bundle", bundle),
    ("dashboard_input", dashboard_input),
    ("whole_case_file", whole_case_file),
];

/// `frame`: the wire codec on bytes from a peer.
///
/// Decoding never panics, with or without the length prefix, and never inflates a deflated
/// body past the frame limit. A plain body is canonical: whatever decodes from one has
/// exactly that plain encoding (no two byte strings mean the same frame). A deflated body may
/// be deflated in many ways, but what it inflates to is the canonical plain body. Every
/// decoded frame encodes, plain or deflated, to bytes that decode to the same frame.
pub fn frame(data: &[u8]) {
    if let Ok((frame, plain)) = Frame::decode_body_sized(data) {
        let canonical = frame.plain_body();
        assert!(plain <= amphi_protocol::wire::MAX_FRAME);
        if Frame::is_deflated(data) {
            assert_eq!(
                canonical.len(),
                plain,
                "{frame:?} inflated from another plain body"
            );
        } else {
            assert_eq!(canonical, data, "{frame:?} re-encodes to other bytes");
        }
        assert_eq!(Frame::decode(&frame.encode()).as_ref(), Ok(&frame));
        assert_eq!(Frame::decode(&frame.encode_deflated()).as_ref(), Ok(&frame));
    }
    streamed_frames(data);
    if let Ok(frame) = Frame::decode(data) {
        if !Frame::is_deflated(&data[4..]) {
            assert_eq!(frame.encode(), data, "{frame:?} re-encodes to other bytes");
        }
        assert_eq!(Frame::decode(&frame.encode()), Ok(frame));
    }
}

/// The bytes as two frame bodies of one session's deflate stream (`amphi/3`), cut where the
/// first byte says: decoding never panics nor inflates past the frame limit, and whatever
/// decodes goes through a fresh stream, twice, to the same frame.
fn streamed_frames(data: &[u8]) {
    use amphi_protocol::wire::{Deflater, FrameDecoder};
    let cut = data.first().map_or(0, |b| usize::from(*b)).min(data.len());
    let mut decoder = FrameDecoder::new();
    for body in [&data[..cut], &data[cut..]] {
        let Ok((frame, plain)) = decoder.decode_body_sized(body) else {
            return;
        };
        assert!(plain <= amphi_protocol::wire::MAX_FRAME);
        let (mut deflater, mut again) = (Deflater::streaming(), FrameDecoder::new());
        for _ in 0..2 {
            let wire = deflater.encode(&frame);
            assert_eq!(
                again.decode_body_sized(&wire[4..]).map(|(f, _)| f).as_ref(),
                Ok(&frame)
            );
        }
    }
}

/// `bundle`: a store-and-forward file from another office (`Bundle::open`). Opening never
/// panics; what opens re-seals (with the same signature) to exactly the same bytes, so no
/// two files mean the same bundle, and what the signature covers is the body as read.
pub fn bundle(data: &[u8]) {
    use amphi_protocol::bundle::{Bundle, signing_bytes};
    if let Ok(opened) = Bundle::open(data) {
        let resealed = opened.bundle.seal(|_| opened.signature.clone());
        assert_eq!(resealed, data, "the bundle re-seals to other bytes");
        assert_eq!(opened.signed, signing_bytes(&opened.bundle.body()));
    }
}

/// A county CA made once per process, with one office's identity it issued.
pub struct TestCa {
    /// The CA certificate (DER).
    pub ca_der: Vec<u8>,
    /// A node certificate it issued (DER), for `hoboksar/chagantolgay/bayin`.
    pub node: NodeIdentity,
    /// Trust anchored at the CA.
    pub trust: Trust,
}

/// The process's test CA (created on first use, in a temporary folder deleted right after).
pub fn test_ca() -> &'static TestCa {
    static CA: OnceLock<TestCa> = OnceLock::new();
    CA.get_or_init(|| {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let county = OrgPath::parse("hoboksar").expect("an org");
        let bayin = OrgPath::parse("hoboksar/chagantolgay/bayin").expect("an org");
        let ca = dir.path().join("ca");
        let office = dir.path().join("bayin");
        pki::ca_init(&ca, &county).expect("the test CA");
        pki::ca_issue(&ca, &bayin, &office, 30).expect("a node certificate");
        let node = NodeIdentity::load(
            &office.join(pki::NODE_CERT_FILE),
            &office.join(pki::NODE_KEY_FILE),
            &office.join(pki::CA_CERT_FILE),
        )
        .expect("the node identity loads");
        let ca_der = node.ca_der.to_vec();
        let trust = Trust::new(&ca_der).expect("trust in the test CA");
        TestCa {
            ca_der,
            node,
            trust,
        }
    })
}

/// `certificate`: a peer's certificate, parsed as the node parses it.
///
/// The bytes go where a peer's DER goes: [`pki::org_of_cert`] and [`pki::org_of_node_cert`]
/// (what `tls::peer_org` does after the handshake; both parse the X.509 first, as
/// `pki::parse_x509`, which is crate-private), [`pki::spki_sha256`], and [`Trust::admit`]
/// (what a `Frame::Certificate` and a learned certificate go through) against the
/// process's test CA. None may panic; a certificate `admit` accepts names the office
/// `org_of_node_cert` reads, under its [`cert_id`].
pub fn certificate(data: &[u8]) {
    let _ = pki::org_of_cert(data);
    let _ = pki::spki_sha256(data);
    let org = pki::org_of_node_cert(data);
    let ca = test_ca();
    if let Ok(id) = ca.trust.admit(data) {
        assert_eq!(id, cert_id(data));
        let org = org.expect("an admitted certificate names one office");
        assert_eq!(ca.trust.org_of(&id), Some(org));
        assert_eq!(ca.trust.certificate(&id).as_deref(), Some(data));
    }
}

/// `store_records`: every record the store reads back from disk, from the same bytes.
///
/// An attestation ([`Attestation::decode`]), a proof (`vouch::Proof::decode`, which must
/// also chain), a quarantine record and a document summary
/// (JSON), a peer's sync state (`automerge::sync::State::decode`), a stored document (a
/// chunk as `store::read_chunk` reads it — inflated if the store deflated it — then decoded
/// with `store::decode_document`, which contains automerge's panics: counted, not
/// findings), and the keys the store
/// parses (document ids, change hashes). None may panic; what decodes survives a
/// round trip.
pub fn store_records(data: &[u8]) {
    let_contained_panics_unwind();
    if let Some(attestation) = Attestation::decode(data) {
        assert_eq!(attestation.encode(), data, "attestations are canonical");
    }
    // A stored proof: the change it proves (32 bytes), then its encoding.
    if let Some((proves, encoded)) = data.split_first_chunk::<32>()
        && let Some(proof) = amphi_protocol::vouch::Proof::decode(ChangeHash(*proves), encoded)
    {
        assert!(proof.chains(), "a decoded proof chains");
        let again = amphi_protocol::vouch::Proof::decode(proof.proves, &proof.encode());
        assert_eq!(again.as_ref(), Some(&proof), "a written proof reads back");
    }
    if let Ok(record) = serde_json::from_slice::<QuarantineRecord>(data) {
        let json = serde_json::to_vec(&record).expect("a record serialises");
        let again: QuarantineRecord =
            serde_json::from_slice(&json).expect("a written record reads back");
        assert_eq!(serde_json::to_vec(&again).expect("serialises"), json);
    }
    if let Ok(summary) = serde_json::from_slice::<DocSummary>(data) {
        let json = serde_json::to_vec(&summary).expect("a summary serialises");
        let again: DocSummary = serde_json::from_slice(&json).expect("a written summary reads");
        assert_eq!(again, summary);
    }
    // automerge 0.12 decodes a sync state with unsorted heads, but its encoder
    // `debug_assert!`s they are sorted (sync.rs `encode_hashes`): with debug assertions on
    // (tests, fuzzing), re-encoding such a state panics. The node writes only states
    // automerge made (sorted); only a tampered store holds others. Round-trip the rest.
    if let Ok(state) = sync::State::decode(data)
        && state.shared_heads.is_sorted()
    {
        let bytes = state.encode();
        let again = sync::State::decode(&bytes).expect("a written sync state reads back");
        assert_eq!(again.encode(), bytes);
    }
    // A stored chunk: deflated by the store, or automerge's bytes as they are.
    if let Ok(plain) = amphi_node::store::read_chunk(data)
        && let Ok(mut doc) = amphi_node::store::decode_document(&plain)
    {
        let heads = doc.get_heads();
        let saved = doc.save();
        let mut again = amphi_node::store::decode_document(&saved).expect("a saved document loads");
        assert_eq!(again.get_heads(), heads);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = DocId::parse(text);
        let _ = OrgPath::parse(text);
        let _ = text.parse::<ChangeHash>();
    }
}

/// Accepts every signature: the `sync_message` target is about what comes after (structure,
/// authority, automerge), which a fuzzer could not reach through real signatures.
struct AnySignature;

impl amphi_protocol::attest::Authenticator for AnySignature {
    fn authenticate(
        &self,
        _: &automerge::Change,
        _: &OrgPath,
        _: Option<&Attestation>,
    ) -> Result<(), amphi_protocol::refusal::Refusal> {
        Ok(())
    }
    fn check_revocation(&self, _: &str, _: &str) -> Result<(), amphi_protocol::refusal::Refusal> {
        Ok(())
    }
}

/// Signatures are the byte 1; vouching checks everything else (nothing else here).
struct OneGoodSignature;

impl amphi_protocol::attest::Authenticator for OneGoodSignature {
    fn authenticate(
        &self,
        change: &automerge::Change,
        _: &OrgPath,
        attestation: Option<&Attestation>,
    ) -> Result<(), amphi_protocol::refusal::Refusal> {
        let offered = amphi_protocol::attest::offered_for(change, attestation)?;
        match offered.signature.as_slice() {
            [1] => Ok(()),
            _ => Err(amphi_protocol::refusal::Refusal::BadSignature),
        }
    }
    fn authenticate_vouched(
        &self,
        change: &automerge::Change,
        _: &OrgPath,
        attestation: Option<&Attestation>,
    ) -> Result<(), amphi_protocol::refusal::Refusal> {
        amphi_protocol::attest::offered_for(change, attestation).map(|_| ())
    }
    fn check_revocation(&self, _: &str, _: &str) -> Result<(), amphi_protocol::refusal::Refusal> {
        Ok(())
    }
}

/// For each change a sync message carries: a good signature, a forged one or none, by the
/// first byte of its hash.
fn signatures_by_hash(message: &[u8]) -> Vec<Attestation> {
    use amphi_protocol::syncmsg::{SyncMessage, decode_change};
    let Ok(decoded) = SyncMessage::decode(message) else {
        return Vec::new();
    };
    decoded
        .changes
        .iter()
        .filter_map(|chunk| decode_change(chunk).ok())
        .filter_map(|c| {
            let hash = c.hash();
            let signature = match hash.0[0] % 3 {
                0 => vec![1],
                1 => vec![2],
                _ => return None,
            };
            Some(Attestation {
                change: hash,
                cert: [0; 32],
                signature,
            })
        })
        .collect()
}

/// A real two-dwelling case file as the township holds it, and the messages an honest
/// county would send it after more work at both offices (the `sync_message` seeds).
pub struct GateFixture {
    /// The case file's id.
    pub id: DocId,
    /// The township's copy, saved.
    pub saved: Vec<u8>,
    /// Honest sync messages from a peer holding more.
    pub messages: Vec<Vec<u8>>,
}

/// The fixture (built once per process).
pub fn gate_fixture() -> &'static GateFixture {
    use amphi_protocol::casefile::{self, ActivityInput, NewMember, ResidenceInput};
    use amphi_protocol::docsync::DocSync;
    use amphi_protocol::gate;
    use amphi_protocol::stamp::Stamp;
    use automerge::ActorId;
    static FIXTURE: OnceLock<GateFixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let bayin = OrgPath::parse("hoboksar/chagantolgay/bayin").unwrap();
        let xingfu = OrgPath::parse("hoboksar/hoboksar-town/xingfu").unwrap();
        let mut t = 1_790_000_000_000;
        let mut stamp = || {
            t += 1000;
            Stamp::at(t)
        };
        let mut doc = AutoCommit::new().with_actor(ActorId::from(&[1u8; 16][..]));
        let member: NewMember = serde_json::from_value(serde_json::json!({
            "name": "Oyun", "gender": "female", "ethnicity": "Mongol",
            "birth_date": "1971-03-02", "joined_at": "1996-07-01", "home_org": bayin.as_str(),
            "categories": ["two-dwelling"]}))
        .unwrap();
        casefile::create(&mut doc, &member).unwrap();
        let id = DocId::member_created_by(&gate::commit_as(&mut doc, &bayin, &stamp()).unwrap());
        let s = stamp();
        let residence = ResidenceInput {
            org: xingfu.clone(),
            since: "2026-10-15".into(),
            until: None,
        };
        casefile::assign_residence(
            &mut doc,
            &casefile::assignment_id(&id, [1; 4]),
            Some(&residence),
            &bayin,
            &s,
        )
        .unwrap();
        gate::commit_as(&mut doc, &bayin, &s).unwrap();
        let saved = doc.save();
        // More work: an activity at each office, a report-in, an identity edit.
        let activity = |n: u8| ActivityInput {
            date: "2026-11-02".into(),
            kind: "study".into(),
            description: format!("study {n}"),
            points: Some(2),
        };
        let mut community = doc.fork().with_actor(ActorId::from(&[2u8; 16][..]));
        let s = stamp();
        casefile::add_activity(
            &mut community,
            &format!("a-{:016x}", 2),
            &activity(2),
            &xingfu,
        )
        .unwrap();
        gate::commit_as(&mut community, &xingfu, &s).unwrap();
        let s = stamp();
        casefile::report_in(&mut community, &xingfu, "2026-10-20").unwrap();
        gate::commit_as(&mut community, &xingfu, &s).unwrap();
        let s = stamp();
        casefile::add_activity(&mut doc, &format!("a-{:016x}", 1), &activity(1), &bayin).unwrap();
        gate::commit_as(&mut doc, &bayin, &s).unwrap();
        doc.merge(&mut community).unwrap();
        // An honest exchange between a county holding all of it and the township's copy.
        let mut township = AutoCommit::load(&saved).unwrap();
        let (mut county_sync, mut township_sync) = (DocSync::default(), DocSync::default());
        let (county_org, township_org) = (
            OrgPath::parse("hoboksar").unwrap(),
            OrgPath::parse("hoboksar/chagantolgay").unwrap(),
        );
        let mut messages = Vec::new();
        for _ in 0..6 {
            if let Some(out) = county_sync.generate(&mut doc) {
                let cx = gate::Inbound {
                    id: &id,
                    peer: &county_org,
                    me: &township_org,
                    now_ms: i64::MAX / 2,
                    auth: &AnySignature,
                    attestations: &[],
                };
                township_sync.receive(&mut township, &out.message, &cx, &mut AutoCommit::new);
                messages.push(out.message);
            }
            if let Some(out) = township_sync.generate(&mut township) {
                let cx = gate::Inbound {
                    id: &id,
                    peer: &township_org,
                    me: &county_org,
                    now_ms: i64::MAX / 2,
                    auth: &AnySignature,
                    attestations: &[],
                };
                county_sync.receive(&mut doc, &out.message, &cx, &mut AutoCommit::new);
            }
        }
        assert_eq!(
            township.get_heads(),
            doc.get_heads(),
            "the honest exchange completes"
        );
        GateFixture {
            id,
            saved,
            messages,
        }
    })
}

/// Panics inside the gate's `contain` are caught there (the change is refused): they are
/// counted ([`CONTAINED`]) and printed, not findings. libFuzzer's own hook, which aborts on
/// any panic, still sees every other one.
pub static CONTAINED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn let_contained_panics_unwind() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if amphi_protocol::contain::inside() {
                let n = CONTAINED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if n < 20 {
                    eprintln!("contained panic (the change is refused): {info}");
                }
            } else {
                previous(info);
            }
        }));
    });
}

/// `change_chunk`: one change chunk from a peer, as the gate reads it.
///
/// Decoding never panics, and a chunk that decodes has at most `MAX_OPS` ops and
/// `MAX_PREDS` predecessors in all, as automerge itself counts them: the column counts
/// (`amphi_protocol::columns`) let nothing bigger reach automerge's parser. The ops the
/// gate keeps from the canonical-encoding check are exactly a fresh decode's.
pub fn change_chunk(data: &[u8]) {
    use amphi_protocol::columns::{MAX_OPS, MAX_PREDS};
    use amphi_protocol::syncmsg::{decode_change, decode_change_with_ops};
    let_contained_panics_unwind();
    let Ok(change) = decode_change(data) else {
        return;
    };
    assert!(change.len() <= MAX_OPS, "{} ops", change.len());
    let ops = change.decode().operations;
    let preds: usize = ops.iter().map(|op| op.pred.len()).sum();
    assert!(preds <= MAX_PREDS, "{preds} predecessors");
    let kept = decode_change_with_ops(data).expect("decodes as decode_change did");
    assert_eq!(kept.change.hash(), change.hash());
    assert_eq!(kept.ops, ops);
}

/// `whole_case_file`: a case file sent whole, as a peer's store would hold it
/// (`amphi_protocol::whole::read_whole`), cut into up to three chunks where the first two
/// bytes say.
///
/// Reading never panics nor aborts (automerge's panics inside it are contained: counted, not
/// findings). What reads has at most `MAX_DOC_OPS` ops in all the changes it rebuilds; they
/// apply to an empty document, contained, to exactly the heads the chunks declare; and that
/// document can be passed on: saved as a store saves it, it reads back whole to the same
/// heads and changes.
pub fn whole_case_file(data: &[u8]) {
    use amphi_protocol::columns::MAX_DOC_OPS;
    use amphi_protocol::whole::{deflated_document, read_whole};
    use std::collections::BTreeSet;
    let_contained_panics_unwind();
    let (cuts, rest) = data.split_at(data.len().min(2));
    let mut chunks: Vec<&[u8]> = Vec::new();
    let mut left = rest;
    for cut in cuts {
        let (chunk, after) = left.split_at(usize::from(*cut).min(left.len()));
        chunks.push(chunk);
        left = after;
    }
    chunks.push(left);
    chunks.retain(|c| !c.is_empty());
    let Ok(whole) = read_whole(&chunks) else {
        return;
    };
    let ops: usize = whole.changes.iter().map(|c| c.len()).sum();
    assert!(ops as u64 <= MAX_DOC_OPS, "{ops} ops");
    let hashes: BTreeSet<ChangeHash> = whole.changes.iter().map(|c| c.hash()).collect();
    let mut doc = AutoCommit::new();
    let applied = amphi_protocol::contain::contain("applying a case file's changes", || {
        doc.apply_changes(whole.changes)
    });
    let Ok(Ok(())) = applied else {
        return;
    };
    assert_eq!(
        doc.get_heads(),
        whole.heads,
        "its changes make the heads it declared"
    );
    let again = read_whole(&[deflated_document(&mut doc)]).expect("passed on whole, it reads");
    assert_eq!(again.heads, whole.heads);
    let rebuilt: BTreeSet<ChangeHash> = again.changes.iter().map(|c| c.hash()).collect();
    assert_eq!(rebuilt, hashes, "passed on whole, the same changes come");
}

/// `sync_message`: a peer's sync message through the gate into a real case file, exactly as
/// a session receives it (`DocSync::receive`), then the reply generated from the state it
/// left. No panic may escape (panics inside automerge that the gate contains are counted,
/// see [`CONTAINED`]). Afterwards the document still saves and loads to the same heads,
/// everything applied is in it, and the same message again applies nothing. And the gate's
/// way of applying the changes that pass together ends exactly as applying each on its own
/// (`gate::Taking::Together` against `gate::Taking::OneAtATime`), with every signature good and
/// again with each change signed well, forged or not at all (chained signatures, `vouch`).
pub fn sync_message(data: &[u8]) {
    use amphi_protocol::docsync::DocSync;
    use amphi_protocol::gate::{Inbound, Taking};
    let_contained_panics_unwind();
    let f = gate_fixture();
    let (county, township) = (
        OrgPath::parse("hoboksar").unwrap(),
        OrgPath::parse("hoboksar/chagantolgay").unwrap(),
    );
    let mut doc = AutoCommit::load(&f.saved).unwrap();
    let mut sync = DocSync::default();
    let cx = Inbound {
        id: &f.id,
        peer: &county,
        me: &township,
        now_ms: 1_800_000_000_000,
        auth: &AnySignature,
        attestations: &[],
    };
    let taken = |taking: Taking, cx: &Inbound<'_>| {
        let mut doc = AutoCommit::load(&f.saved).unwrap();
        let (mut state, mut held) = (sync::State::new(), Vec::new());
        let admission = amphi_protocol::gate::receive_taking(
            taking,
            &mut doc,
            &mut state,
            data,
            cx,
            &Default::default(),
            &mut held,
            &mut || AutoCommit::load(&f.saved).unwrap(),
        );
        format!("{admission:?} {:?} {state:?} {held:?}", doc.get_heads())
    };
    // With every signature good, and again with signatures that matter: each change of the
    // message gets a good signature, a forged one or none, by its hash, so runs signed only
    // at their top, forged tops, unsigned changes with nothing above them and proofs are
    // all reached. Both ways of taking a message must agree.
    let signatures = signatures_by_hash(data);
    let checked = Inbound {
        auth: &OneGoodSignature,
        attestations: &signatures,
        ..cx
    };
    for cx in [&cx, &checked] {
        assert_eq!(
            taken(Taking::Together, cx),
            taken(Taking::OneAtATime, cx),
            "taking the changes together ended otherwise than one at a time"
        );
    }
    let admission = sync.receive(&mut doc, data, &cx, &mut || {
        AutoCommit::load(&f.saved).unwrap()
    });
    for h in &admission.applied {
        assert!(
            doc.get_change_by_hash(h).is_some(),
            "applied {h} is not in the document"
        );
    }
    let heads = doc.get_heads();
    let reloaded = AutoCommit::load(&doc.save()).map(|mut d| d.get_heads());
    assert_eq!(
        reloaded.ok(),
        Some(heads),
        "the document no longer saves and loads"
    );
    let _ = sync.generate(&mut doc);
    // The same message again changes nothing.
    let again = sync.receive(&mut doc, data, &cx, &mut || {
        AutoCommit::load(&f.saved).unwrap()
    });
    assert!(again.applied.is_empty(), "a message applied twice");
}

/// `dashboard_input`: what a browser or an office's file hands the dashboard.
///
/// The same bytes as a posted form ([`untrusted::form_fields`]: at most 64 fields, none
/// with an empty name unless posted so, every name and value whole UTF-8 by type), as a
/// translation file ([`untrusted::translation`]), and as a session cookie and form token
/// ([`untrusted::session`]: bytes nobody signed are never a session). None may panic.
pub fn dashboard_input(data: &[u8]) {
    use amphi_node::dashboard::untrusted;
    let fields = untrusted::form_fields(data);
    assert!(fields.len() <= 64, "{} fields", fields.len());
    let text = String::from_utf8_lossy(data);
    let _ = untrusted::translation(&text);
    let (value, given) = text.split_once('&').unwrap_or((&text, ""));
    let (session, form) = untrusted::session("fuzz-token", value, given);
    assert!(!session, "unsigned bytes made a session: {value:?}");
    let _ = form;
}
