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
];

/// `frame`: the wire codec on bytes from a peer.
///
/// Decoding never panics, with or without the length prefix; whatever decodes re-encodes to
/// exactly the same bytes (the encoding is canonical: no two byte strings mean the same
/// frame) and decodes again to the same frame.
pub fn frame(data: &[u8]) {
    if let Ok(frame) = Frame::decode_body(data) {
        let bytes = frame.encode();
        assert_eq!(&bytes[4..], data, "{frame:?} re-encodes to other bytes");
        assert_eq!(Frame::decode(&bytes).as_ref(), Ok(&frame));
    }
    if let Ok(frame) = Frame::decode(data) {
        let bytes = frame.encode();
        assert_eq!(bytes, data, "{frame:?} re-encodes to other bytes");
        assert_eq!(Frame::decode(&bytes), Ok(frame));
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
/// An attestation ([`Attestation::decode`]), a quarantine record and a document summary
/// (JSON), a peer's sync state (`automerge::sync::State::decode`), a stored document (the
/// concatenated chunks `Store::load` hands to `AutoCommit::load`), and the keys the store
/// parses (document ids, change hashes). None may panic; what decodes survives a
/// round trip.
pub fn store_records(data: &[u8]) {
    if let Some(attestation) = Attestation::decode(data) {
        assert_eq!(attestation.encode(), data, "attestations are canonical");
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
    if let Ok(mut doc) = AutoCommit::load(data) {
        let heads = doc.get_heads();
        let saved = doc.save();
        let mut again = AutoCommit::load(&saved).expect("a saved document loads");
        assert_eq!(again.get_heads(), heads);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = DocId::parse(text);
        let _ = OrgPath::parse(text);
        let _ = text.parse::<ChangeHash>();
    }
}
