//! Flow control for answers: how many documents a link asks its peer for at once.
//!
//! A sync message about a document the peer holds and this office does not (a *request*: it
//! says "I hold nothing of it") is answered with the whole document — a case file is ~15 KB
//! with its signatures. An office starting empty learns of thousands of such documents from
//! one reconciliation; asked for all at once, the peer queued answers far faster than this
//! office could judge and store them, until its send-queue cap ended the session (measured at
//! 20,000 members). So a link keeps at most a window of requests outstanding; the others are
//! held, each as its latest message, and go out as answers come in. A request is answered
//! when the changes it asked for are stored here, or the two sides agree they are in sync
//! ([`Requests::forget`]). One unanswered for [`REQUEST_TIMEOUT_MS`] stops
//! counting against the window, so a peer that never answers slows this link down but cannot
//! stop it.
//!
//! At most one request per document is outstanding. automerge answers every message that
//! says "I hold nothing" by forgetting what it already sent and sending the whole document
//! again, and in a cold sync both sides speak first (this office's offer, and its reply to
//! the peer's offer, both say so): each case file crossed the wire twice. A later request for
//! a document whose request is outstanding waits behind it, and is dropped when the answer
//! arrives (it would say less than the reply to the answer); it goes only if the first one
//! times out.
//!
//! Only requests wait. A message about a document this office holds goes at once, and drops
//! the document's held request: sync messages are cumulative, so the later one says all.

use std::collections::{HashMap, VecDeque};

use crate::DocId;
use crate::wire::Frame;

/// Requests a link keeps outstanding by default.
pub const REQUEST_WINDOW: usize = 64;

/// A request unanswered this long (milliseconds) no longer counts against the window.
pub const REQUEST_TIMEOUT_MS: i64 = 10_000;

/// The requests of one link: outstanding, and held until the window has room.
#[derive(Debug)]
pub struct Requests {
    window: usize,
    /// Sent and not yet answered: when each was sent (caller's clock, ms).
    outstanding: HashMap<DocId, i64>,
    /// Held for room in the window, in the order they were made; a document's entry may be
    /// stale (its request was sent or dropped since): `held` decides.
    queue: VecDeque<DocId>,
    held: HashMap<DocId, Frame>,
    /// Held behind the outstanding request for the same document.
    behind: HashMap<DocId, Frame>,
    /// Requests that timed out unanswered since [`Requests::take_unanswered`] was last asked.
    unanswered: Vec<DocId>,
}

impl Requests {
    /// At most `window` (at least 1) outstanding at once.
    pub fn new(window: usize) -> Requests {
        Requests {
            window: window.max(1),
            outstanding: HashMap::new(),
            queue: VecDeque::new(),
            held: HashMap::new(),
            behind: HashMap::new(),
            unanswered: Vec::new(),
        }
    }

    /// Sends `frame`, a request about `doc`, into `frames` if the window has room; holds it
    /// otherwise (replacing a request held for `doc`), and behind the outstanding request if
    /// `doc` has one.
    pub fn send_or_hold(&mut self, doc: DocId, frame: Frame, now_ms: i64, frames: &mut Vec<Frame>) {
        self.expire(now_ms);
        if self.outstanding.contains_key(&doc) {
            self.behind.insert(doc, frame);
        } else if self.outstanding.len() < self.window {
            self.held.remove(&doc);
            self.outstanding.insert(doc, now_ms);
            frames.push(frame);
        } else if self.held.insert(doc.clone(), frame).is_none() {
            self.queue.push_back(doc);
        }
    }

    /// A message that is not a request goes about `doc`: its held request says less.
    pub fn superseded(&mut self, doc: &DocId) {
        self.held.remove(doc);
        self.behind.remove(doc);
    }

    /// `doc` is now held here (its request is answered), or gone from this link: nothing
    /// about it is awaited or held.
    pub fn forget(&mut self, doc: &DocId) {
        self.outstanding.remove(doc);
        self.superseded(doc);
    }

    /// Sends held requests, oldest first, while the window has room.
    pub fn release(&mut self, now_ms: i64, frames: &mut Vec<Frame>) {
        self.expire(now_ms);
        while self.outstanding.len() < self.window {
            let Some(doc) = self.queue.pop_front() else {
                break;
            };
            if let Some(frame) = self.held.remove(&doc) {
                self.outstanding.insert(doc, now_ms);
                frames.push(frame);
            }
        }
    }

    /// True when [`Requests::release`] would send something at `now_ms`, or find a request
    /// unanswered.
    pub fn can_release(&self, now_ms: i64) -> bool {
        (!self.held.is_empty() && self.outstanding.len() < self.window)
            || self
                .outstanding
                .values()
                .any(|sent| now_ms - sent >= REQUEST_TIMEOUT_MS)
    }

    /// Requests held, waiting for room or for the request before them.
    pub fn held(&self) -> usize {
        self.held.len() + self.behind.len()
    }

    /// True while requests are held or outstanding: time alone may move them on.
    pub fn waiting(&self) -> bool {
        !self.outstanding.is_empty() || self.held() > 0
    }

    /// Documents whose request timed out unanswered since this was last asked (each once;
    /// one with a request held behind it is asked again, and not listed).
    pub fn take_unanswered(&mut self) -> Vec<DocId> {
        std::mem::take(&mut self.unanswered)
    }

    /// Requests unanswered for [`REQUEST_TIMEOUT_MS`] stop counting; one waiting behind such
    /// a request goes first.
    fn expire(&mut self, now_ms: i64) {
        let expired: Vec<DocId> = self
            .outstanding
            .iter()
            .filter(|(_, sent)| now_ms - **sent >= REQUEST_TIMEOUT_MS)
            .map(|(doc, _)| doc.clone())
            .collect();
        for doc in expired {
            self.outstanding.remove(&doc);
            if let Some(frame) = self.behind.remove(&doc) {
                self.held.insert(doc.clone(), frame);
                self.queue.push_front(doc);
            } else {
                self.unanswered.push(doc);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(n: u8) -> DocId {
        DocId::new_member([n; 8])
    }

    fn request(n: u8) -> Frame {
        Frame::Sync {
            doc: doc(n),
            message: vec![n],
            attestations: vec![],
        }
    }

    fn sent(frames: &mut Vec<Frame>) -> Vec<u8> {
        frames
            .drain(..)
            .map(|f| match f {
                Frame::Sync { message, .. } => message[0],
                other => panic!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn at_most_a_window_is_outstanding_and_answers_let_the_rest_go_in_order() {
        let mut r = Requests::new(2);
        let mut frames = Vec::new();
        for n in 1..=5 {
            r.send_or_hold(doc(n), request(n), 0, &mut frames);
        }
        assert_eq!(sent(&mut frames), [1, 2]);
        assert_eq!(r.held(), 3);
        assert!(!r.can_release(1));
        r.forget(&doc(2));
        assert!(r.can_release(1));
        r.release(1, &mut frames);
        assert_eq!(sent(&mut frames), [3]);
        // A second request about an outstanding document waits behind it, and its answer
        // drops it.
        r.send_or_hold(doc(1), request(1), 2, &mut frames);
        assert!(frames.is_empty());
        assert_eq!(r.held(), 3);
        r.forget(&doc(1));
        r.forget(&doc(3));
        r.release(3, &mut frames);
        assert_eq!(sent(&mut frames), [4, 5]);
        assert_eq!(r.held(), 0);
    }

    #[test]
    fn a_held_request_is_replaced_by_a_later_one_and_dropped_when_superseded() {
        let mut r = Requests::new(1);
        let mut frames = Vec::new();
        r.send_or_hold(doc(1), request(1), 0, &mut frames);
        r.send_or_hold(doc(2), request(2), 0, &mut frames);
        let later = Frame::Sync {
            doc: doc(2),
            message: vec![22],
            attestations: vec![],
        };
        r.send_or_hold(doc(2), later, 0, &mut frames);
        r.send_or_hold(doc(3), request(3), 0, &mut frames);
        assert_eq!(sent(&mut frames), [1]);
        assert_eq!(r.held(), 2);
        r.superseded(&doc(3));
        r.forget(&doc(1));
        r.release(1, &mut frames);
        assert_eq!(sent(&mut frames), [22], "the latest request, once");
        r.forget(&doc(2));
        r.release(2, &mut frames);
        assert!(frames.is_empty(), "doc 3's request was superseded");
        r.send_or_hold(doc(4), request(4), 3, &mut frames);
        r.forget(&doc(4));
        r.send_or_hold(doc(5), request(5), 3, &mut frames);
        assert_eq!(sent(&mut frames), [4, 5]);
    }

    #[test]
    fn an_unanswered_request_stops_counting_after_the_timeout() {
        let mut r = Requests::new(1);
        let mut frames = Vec::new();
        r.send_or_hold(doc(1), request(1), 0, &mut frames);
        r.send_or_hold(doc(2), request(2), 0, &mut frames);
        assert_eq!(sent(&mut frames), [1]);
        assert!(!r.can_release(REQUEST_TIMEOUT_MS - 1));
        assert!(r.can_release(REQUEST_TIMEOUT_MS));
        r.release(REQUEST_TIMEOUT_MS, &mut frames);
        assert_eq!(sent(&mut frames), [2]);
        assert_eq!(r.take_unanswered(), [doc(1)], "listed once");
        assert!(r.take_unanswered().is_empty());
        assert!(r.waiting());
        // One waiting behind an unanswered request goes when that one times out (and that
        // document is still awaited: not listed).
        r.send_or_hold(doc(2), request(22), REQUEST_TIMEOUT_MS, &mut frames);
        assert!(frames.is_empty());
        assert!(r.can_release(2 * REQUEST_TIMEOUT_MS));
        r.release(2 * REQUEST_TIMEOUT_MS, &mut frames);
        assert_eq!(sent(&mut frames), [22]);
        assert!(r.take_unanswered().is_empty());
        // An unanswered request with nothing held is found by time alone.
        assert!(!r.can_release(3 * REQUEST_TIMEOUT_MS - 1));
        assert!(r.can_release(3 * REQUEST_TIMEOUT_MS));
        r.release(3 * REQUEST_TIMEOUT_MS, &mut frames);
        assert_eq!(r.take_unanswered(), [doc(2)]);
        assert!(!r.waiting());
    }
}
