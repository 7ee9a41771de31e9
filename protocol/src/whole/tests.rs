//! A case file read whole: honest chunks load with their changes; hostile ones are refused
//! before automerge reads them.

use std::collections::HashSet;

use automerge::ReadDoc as _;
use automerge::transaction::Transactable as _;
use automerge::{ActorId, AutoCommit, ROOT};
use sha2::Digest as _;

use super::*;
use crate::contain::contain;
use crate::syncmsg::{write_sleb as sleb, write_uleb as uleb};

/// A case file written by two offices, saved as a store saves it: the body as it stood
/// after `body_after` changes, then one increment per change since.
fn case_file(changes: usize, body_after: usize) -> (AutoCommit, Vec<Vec<u8>>) {
    let mut doc =
        AutoCommit::new().with_actor(ActorId::from(b"hoboksar-bayin-village..".as_slice()));
    let mut chunks = Vec::new();
    let mut heads = Vec::new();
    for i in 0..changes {
        if i % 3 == 2 {
            doc.set_actor(ActorId::from(b"hoboksar-town-community.".as_slice()));
        } else {
            doc.set_actor(ActorId::from(b"hoboksar-bayin-village..".as_slice()));
        }
        doc.put(ROOT, format!("field{}", i % 5), format!("第{i}次"))
            .unwrap();
        doc.commit();
        if i + 1 == body_after {
            chunks.push(deflated_document(&mut doc));
            heads = doc.get_heads();
        } else if i + 1 > body_after {
            chunks.push(doc.save_after(&heads));
            heads = doc.get_heads();
        }
    }
    (doc, chunks)
}

#[test]
fn a_stored_case_file_reads_back_with_every_change_after_its_dependencies() {
    let (mut doc, chunks) = case_file(12, 8);
    assert_eq!(chunks.len(), 5, "a body and four increments");
    let whole = read_whole(&chunks).unwrap();
    assert_eq!(whole.heads, doc.get_heads());
    let sent: HashSet<_> = doc.get_changes(&[]).iter().map(|c| c.hash()).collect();
    let read: HashSet<_> = whole.changes.iter().map(|c| c.hash()).collect();
    assert_eq!(read, sent);
    let mut before = HashSet::new();
    for change in &whole.changes {
        assert!(change.deps().iter().all(|d| before.contains(d)));
        before.insert(change.hash());
    }
    // Plain, as automerge saves it without compression, it reads the same.
    let plain = read_whole(&[doc.save_nocompress()]).unwrap();
    assert_eq!(plain.changes.len(), 12);
    assert_eq!(plain.heads, whole.heads);
}

#[test]
fn automerge_s_compressed_columns_are_refused_before_they_are_inflated() {
    let mut doc = AutoCommit::new();
    for i in 0..200 {
        doc.put(ROOT, format!("k{i}"), "两栖党员".repeat(20))
            .unwrap();
    }
    doc.commit();
    let saved = doc.save();
    assert!(
        saved.len() < doc.save_nocompress().len(),
        "automerge compressed a column"
    );
    let refused = read_whole(&[saved]).err().unwrap();
    assert!(
        refused.to_string().contains("compressed column"),
        "{refused}"
    );
}

#[test]
fn what_is_not_one_document_chunk_then_changes_is_refused() {
    let (mut doc, chunks) = case_file(4, 2);
    let expect = |chunks: &[Vec<u8>], why: &str| {
        let refused = read_whole(chunks).err().expect(why);
        assert!(refused.to_string().contains(why), "{refused}");
    };
    expect(&[], "no chunk");
    expect(&[Vec::new()], "no chunk");
    expect(&chunks[1..], "starts with its document chunk");
    expect(
        &[chunks[0].clone(), chunks[0].clone()],
        "holds only changes",
    );
    expect(&[b"not a case file".to_vec()], "bad magic bytes");
    let mut cut = doc.save_nocompress();
    cut.truncate(cut.len() - 3);
    assert_eq!(read_whole(&[cut]).err(), Some(SyncMessageError::Truncated));
    // A chunk whose bytes were changed after it was made does not load.
    let mut flipped = doc.save_nocompress();
    let last = flipped.len() - 1;
    flipped[last] ^= 0x01;
    expect(&[flipped], "does not load");
}

#[test]
fn a_deflated_chunk_is_inflated_only_up_to_the_limit() {
    use std::io::Write as _;
    let mut bomb = DEFLATED_CHUNK.to_vec();
    let mut deflate = flate2::write::DeflateEncoder::new(&mut bomb, flate2::Compression::best());
    deflate.write_all(&vec![0u8; MAX_WHOLE_BYTES + 1]).unwrap();
    deflate.finish().unwrap();
    assert!(bomb.len() < 64 << 10, "{} bytes", bomb.len());
    let refused = read_whole(&[bomb]).err().unwrap();
    assert!(
        matches!(refused, SyncMessageError::TooMany { got, .. } if got == MAX_WHOLE_BYTES as u64 + 1),
        "{refused}"
    );
    let sent = vec![
        vec![0u8; MAX_WHOLE_BYTES / 2 + 1],
        vec![0u8; MAX_WHOLE_BYTES / 2],
    ];
    assert!(matches!(
        read_whole(&sent),
        Err(SyncMessageError::TooMany {
            what: "bytes of a case file sent whole",
            ..
        })
    ));
}

/// A document chunk's columns, to rewrite one: a hostile peer's chunk.
struct Layout {
    /// Actors and heads, as they were.
    head: Vec<u8>,
    changes: Vec<(u32, Vec<u8>)>,
    ops: Vec<(u32, Vec<u8>)>,
    /// The heads' indices, as they were.
    tail: Vec<u8>,
}

impl Layout {
    fn of(chunk: &[u8]) -> Layout {
        let mut r = Cursor { buf: &chunk[9..] };
        let len = r.uleb().unwrap();
        let body = r.take_len(len).unwrap();
        let mut r = Cursor { buf: body };
        for _ in 0..r.uleb().unwrap() {
            let n = r.uleb().unwrap();
            r.take_len(n).unwrap();
        }
        let heads = r.uleb().unwrap();
        r.take_len(heads * 32).unwrap();
        let head = body[..body.len() - r.buf.len()].to_vec();
        let specs = |r: &mut Cursor<'_>| {
            (0..r.uleb().unwrap())
                .map(|_| (r.uleb().unwrap() as u32, r.uleb().unwrap()))
                .collect::<Vec<_>>()
        };
        let (change_specs, op_specs) = (specs(&mut r), specs(&mut r));
        let mut data = |specs: Vec<(u32, u64)>| {
            specs
                .into_iter()
                .map(|(spec, len)| (spec, r.take_len(len).unwrap().to_vec()))
                .collect()
        };
        let changes = data(change_specs);
        let ops = data(op_specs);
        Layout {
            head,
            changes,
            ops,
            tail: r.buf.to_vec(),
        }
    }

    /// The column `(id, type)` of `columns`.
    fn column(columns: &mut [(u32, Vec<u8>)], id: u32, kind: u32) -> &mut Vec<u8> {
        &mut columns
            .iter_mut()
            .find(|(spec, _)| spec >> 4 == id && spec & 0b111 == kind)
            .expect("the column is there")
            .1
    }

    /// The chunk again, with its checksum made for it: automerge would read it.
    fn chunk(&self) -> Vec<u8> {
        let mut body = self.head.clone();
        for columns in [&self.changes, &self.ops] {
            uleb(&mut body, columns.len() as u64);
            for (spec, data) in columns {
                uleb(&mut body, u64::from(*spec));
                uleb(&mut body, data.len() as u64);
            }
        }
        for (_, data) in self.changes.iter().chain(&self.ops) {
            body.extend_from_slice(data);
        }
        body.extend_from_slice(&self.tail);
        let mut typed = vec![CHUNK_DOCUMENT];
        uleb(&mut typed, body.len() as u64);
        typed.extend_from_slice(&body);
        let checksum = sha2::Sha256::digest(&typed);
        let mut chunk = CHUNK_MAGIC.to_vec();
        chunk.extend_from_slice(&checksum[..4]);
        chunk.extend_from_slice(&typed);
        chunk
    }
}

/// A run of `count` copies of `value` (unsigned), as automerge's RLE writes it.
fn run(count: i64, value: u64) -> Vec<u8> {
    let mut out = Vec::new();
    sleb(&mut out, count);
    uleb(&mut out, value);
    out
}

/// A hostile rewrite of an honest case file's document chunk, refused with `why`.
fn refused_after(edit: impl Fn(&mut Layout), why: &str) {
    let (mut doc, _) = case_file(6, 6);
    let honest = doc.save_nocompress();
    let mut layout = Layout::of(&honest);
    assert_eq!(
        read_whole(&[layout.chunk()]).unwrap().heads,
        doc.get_heads(),
        "the rewrite alone changes nothing"
    );
    edit(&mut layout);
    let refused = read_whole(&[layout.chunk()]).err().expect(why);
    assert!(refused.to_string().contains(why), "{refused}");
}

#[test]
fn a_document_declaring_a_billion_ops_or_successors_is_refused_unread() {
    refused_after(
        |l| *Layout::column(&mut l.ops, 4, 2) = run(1 << 30, 1),
        "ops in a document",
    );
    refused_after(
        |l| *Layout::column(&mut l.ops, 8, 0) = run(1 << 30, 1),
        "successors in a document",
    );
}

#[test]
fn a_change_graph_past_its_document_is_refused_unread() {
    refused_after(
        |l| *Layout::column(&mut l.changes, 0, 1) = run(1 << 30, 0),
        "changes in a document",
    );
    refused_after(
        |l| *Layout::column(&mut l.changes, 4, 0) = run(6, 1 << 20),
        "dependencies in a document",
    );
    // A change whose last op counter says it holds a billion ops: automerge would size its
    // ops from it.
    refused_after(
        |l| {
            let mut steps = Vec::new();
            sleb(&mut steps, 6);
            sleb(&mut steps, 1 << 30);
            *Layout::column(&mut l.changes, 1, 3) = steps;
        },
        "last op counter",
    );
    refused_after(
        |l| {
            let mut steps = Vec::new();
            sleb(&mut steps, -2);
            sleb(&mut steps, 1);
            sleb(&mut steps, 1 << 40);
            *Layout::column(&mut l.changes, 0, 3) = steps;
        },
        "sequence number",
    );
    refused_after(
        |l| {
            let spec = &mut l.ops[0].0;
            *spec |= 0b1000;
        },
        "compressed column in a document's ops",
    );
}

/// Two keys of one object, their ops swapped in the document chunk: the chunk's heads
/// still match the one change it rebuilds.
fn keys_out_of_order() -> (AutoCommit, Vec<u8>) {
    let mut doc = AutoCommit::new();
    doc.put(ROOT, "a", "x").unwrap();
    doc.put(ROOT, "b", "x").unwrap();
    doc.commit();
    let mut layout = Layout::of(&doc.save_nocompress());
    let mut keys = Vec::new();
    sleb(&mut keys, -2);
    for key in [b'b', b'a'] {
        uleb(&mut keys, 1);
        keys.push(key);
    }
    *Layout::column(&mut layout.ops, 1, 5) = keys;
    let mut counters = Vec::new();
    for step in [-2, 2, -1] {
        sleb(&mut counters, step);
    }
    *Layout::column(&mut layout.ops, 2, 3) = counters;
    (doc, layout.chunk())
}

#[test]
fn automerge_loads_ops_out_of_order_unchecked_but_for_a_debug_assertion() {
    let (_, chunk) = keys_out_of_order();
    match contain("loading ops out of order", || AutoCommit::load(&chunk)) {
        // Builds with debug assertions (every test run): only automerge's own debug
        // assertion stops it.
        Err(fault) => assert!(fault.message.contains("validate_op_order"), "{fault}"),
        // Release builds: it loads, and reads otherwise than its own changes applied.
        Ok(loaded) => {
            let mut loaded = loaded.expect("it loads");
            let mut applied = AutoCommit::new();
            applied.apply_changes(loaded.get_changes(&[])).unwrap();
            assert_eq!(applied.get_heads(), loaded.get_heads());
            assert!(applied.get(ROOT, "a").unwrap().is_some());
            assert!(
                loaded.get(ROOT, "a").unwrap().is_none(),
                "automerge checks op order now"
            );
        }
    }
}

#[test]
fn from_ops_out_of_order_only_their_changes_come_and_they_apply_as_written() {
    let (mut doc, chunk) = keys_out_of_order();
    match read_whole(&[chunk]) {
        Err(refused) => assert!(refused.to_string().contains("engine failed"), "{refused}"),
        Ok(whole) => {
            let mut applied = AutoCommit::new();
            applied.apply_changes(whole.changes).unwrap();
            assert_eq!(whole.heads, doc.get_heads());
            assert_eq!(
                applied.get(ROOT, "a").unwrap().map(|v| v.0.to_string()),
                doc.get(ROOT, "a").unwrap().map(|v| v.0.to_string())
            );
        }
    }
}
