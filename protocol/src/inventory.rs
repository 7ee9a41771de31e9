//! Which shared documents differ between two offices: the reconciliation seam.
//!
//! Today each side sends the (id, heads digest) pairs of the documents the other may hold,
//! and each side syncs the documents whose digest differs or that the other lacks. This is
//! O(documents shared) on every connect; range-based set reconciliation can replace it
//! behind [`differing`] and the `Inventory` frames without touching the sync sessions.

use std::collections::BTreeMap;

use automerge::ChangeHash;
use sha2::{Digest as _, Sha256};

use crate::ids::DocId;
use crate::wire::{DIGEST_LEN, Digest};

/// The digest of a document's heads (sorted, as automerge returns them).
pub fn heads_digest(heads: &[ChangeHash]) -> Digest {
    let mut sorted: Vec<&ChangeHash> = heads.iter().collect();
    sorted.sort();
    let mut h = Sha256::new();
    for head in sorted {
        h.update(head.0);
    }
    let full = h.finalize();
    full[..DIGEST_LEN].try_into().expect("digest length")
}

/// Documents this side should start syncing: those it holds whose digest differs from the
/// peer's or that the peer lacks. Documents only the peer holds are the peer's to start.
pub fn differing(ours: &BTreeMap<DocId, Digest>, theirs: &BTreeMap<DocId, Digest>) -> Vec<DocId> {
    ours.iter()
        .filter(|(id, digest)| theirs.get(*id) != Some(*digest))
        .map(|(id, _)| id.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_documents_that_differ_or_are_missing_are_synced() {
        let id = |n| DocId::new_member([n; 8]);
        let ours = BTreeMap::from([(id(1), [1; 16]), (id(2), [2; 16]), (id(3), [3; 16])]);
        let theirs = BTreeMap::from([(id(1), [1; 16]), (id(2), [9; 16]), (id(4), [4; 16])]);
        assert_eq!(differing(&ours, &theirs), vec![id(2), id(3)]);
        assert!(differing(&ours, &ours).is_empty());
    }

    #[test]
    fn digest_ignores_head_order() {
        let a = ChangeHash([1; 32]);
        let b = ChangeHash([2; 32]);
        assert_eq!(heads_digest(&[a, b]), heads_digest(&[b, a]));
        assert_ne!(heads_digest(&[a]), heads_digest(&[b]));
        assert_ne!(heads_digest(&[]), heads_digest(&[a]));
    }
}
