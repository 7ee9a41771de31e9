//! The hostile-peer toolkit works against real offices: what it crafts is what an office
//! reads, and what it observes is what the office did. These tests assert only behaviour
//! any version of the receive path keeps (an honest signed change applies; a frame too big
//! to read ends the session but not the office), never refusal names.

use std::time::Duration;

use amphi_cluster_tests::hostile::{self, HostilePeer, RecvError};
use amphi_cluster_tests::{County, eventually};
use amphi_protocol::DocId;
use amphi_protocol::wire::MAX_FRAME;
use automerge::{ROOT, ReadDoc};

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_honest_crafted_change_signed_by_a_child_office_is_applied_and_relayed() {
    let mut county = County::new();
    county.start_all(&["county", "chagantolgay", "bayin"]).await;
    let id = county.office("bayin").create_member("Oyun").await;
    let doc_id = DocId::parse(&id).unwrap();
    let township = county.office("chagantolgay");
    eventually(WAIT, "the township holds Bayin's member", || async {
        township.case_file(&id).await.map(|_| ())
    })
    .await;

    // Bayin goes offline; someone holding its certificate and key speaks for it.
    county.stop("bayin").await;
    let bayin = county.office("bayin").identity();
    let township = county.office("chagantolgay");
    let mut peer = HostilePeer::connect(&bayin, township).await.unwrap();
    assert_eq!(
        peer.expect_hello(WAIT).await.unwrap(),
        township.org,
        "the township says hello as itself"
    );
    let mut doc = peer.fetch(&doc_id, WAIT).await.unwrap();
    let (_, identity) = doc.get(ROOT, "identity").unwrap().expect("identity map");
    assert_eq!(doc.get_all(&identity, "name").unwrap().len(), 1);

    // The home office renames its own member: within its authority, signed with its key.
    let base = doc.get_heads();
    let change = hostile::rename(&mut doc, &bayin, "Oyunchimeg");
    peer.send_signed(&doc_id, &base, &change, &bayin)
        .await
        .unwrap();

    for office in ["chagantolgay", "county"] {
        let office = county.office(office);
        eventually(WAIT, "the crafted rename is applied", || async {
            let case = office.case_file(&id).await?;
            (case["name"] == "Oyunchimeg").then_some(())
        })
        .await;
    }
    assert!(
        peer.close_reason().is_none(),
        "the session goes on: {:?}",
        peer.close_reason()
    );
    county.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_length_prefix_ends_the_session_but_not_the_office() {
    let mut county = County::new();
    county.start_all(&["county", "chagantolgay"]).await;
    let township = county.office("chagantolgay");
    // A certificate the county CA really issued, for a village that runs no office.
    let rogue = county.issue_identity("hoboksar/chagantolgay/rogue");
    let mut peer = HostilePeer::connect(&rogue, township).await.unwrap();
    assert_eq!(peer.expect_hello(WAIT).await.unwrap(), township.org);

    // A frame that claims one byte more than any frame may have, then a little of it.
    let mut bytes = ((MAX_FRAME + 1) as u32).to_be_bytes().to_vec();
    bytes.extend_from_slice(&[4; 64]);
    peer.send_raw(&bytes).await.unwrap();
    let closure = peer
        .closed(WAIT)
        .await
        .expect("the office closes the session");
    assert!(closure.by_office(), "closed by the office: {closure}");
    assert!(matches!(
        peer.recv(Duration::from_millis(100)).await,
        Err(RecvError::Closed(_) | RecvError::Finished | RecvError::Reset(_))
    ));

    let (code, _) = township.get("/healthz").await;
    assert_eq!(code, 200, "the office still serves");
    // And it still takes new sessions, from the same certificate too.
    let mut again = HostilePeer::connect(&rogue, township).await.unwrap();
    assert_eq!(again.expect_hello(WAIT).await.unwrap(), township.org);
    county.shutdown().await;
}
