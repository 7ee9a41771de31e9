//! Reading an automerge document, now or as it was at given heads.
//!
//! The gate judges a change against the document as its author saw it (at the change's
//! dependencies), so every read in the layouts goes through a [`Reader`] that can look back.

use automerge::{AutoCommit, ChangeHash, ObjId, ReadDoc, Value};

/// Reads a document at its current state or at fixed heads.
pub struct Reader<'a> {
    doc: &'a AutoCommit,
    heads: Option<&'a [ChangeHash]>,
}

impl<'a> Reader<'a> {
    /// Reads the document as it is now.
    pub fn now(doc: &'a AutoCommit) -> Self {
        Reader { doc, heads: None }
    }

    /// Reads the document as it was at `heads`.
    pub fn at(doc: &'a AutoCommit, heads: &'a [ChangeHash]) -> Self {
        Reader {
            doc,
            heads: Some(heads),
        }
    }

    fn get(&self, obj: &ObjId, key: &str) -> Option<(Value<'a>, ObjId)> {
        let got = match self.heads {
            Some(h) => self.doc.get_at(obj, key, h),
            None => self.doc.get(obj, key),
        };
        got.ok().flatten()
    }

    /// A string field, `None` when missing, null or not a string.
    pub fn str(&self, obj: &ObjId, key: &str) -> Option<String> {
        match self.get(obj, key)? {
            (Value::Scalar(s), _) => s.as_str().map(str::to_owned),
            _ => None,
        }
    }

    /// A string field with the id of the op that wrote it (its place in history).
    pub fn str_with_id(&self, obj: &ObjId, key: &str) -> Option<(String, ObjId)> {
        match self.get(obj, key)? {
            (Value::Scalar(s), id) => s.as_str().map(|s| (s.to_owned(), id)),
            _ => None,
        }
    }

    /// An integer field.
    pub fn int(&self, obj: &ObjId, key: &str) -> Option<i64> {
        match self.get(obj, key)? {
            (Value::Scalar(s), _) => s.as_i64(),
            _ => None,
        }
    }

    /// A nested object (map or list) under `key`.
    pub fn obj(&self, obj: &ObjId, key: &str) -> Option<ObjId> {
        match self.get(obj, key)? {
            (Value::Object(_), id) => Some(id),
            _ => None,
        }
    }

    /// The keys of a map, sorted.
    pub fn keys(&self, obj: &ObjId) -> Vec<String> {
        match self.heads {
            Some(h) => self.doc.keys_at(obj, h).collect(),
            None => self.doc.keys(obj).collect(),
        }
    }

    /// The items of a list.
    pub fn list(&self, obj: &ObjId) -> Vec<(Value<'a>, ObjId)> {
        let len = match self.heads {
            Some(h) => self.doc.length_at(obj, h),
            None => self.doc.length(obj),
        };
        (0..len)
            .filter_map(|i| {
                let got = match self.heads {
                    Some(h) => self.doc.get_at(obj, i, h),
                    None => self.doc.get(obj, i),
                };
                got.ok().flatten()
            })
            .collect()
    }

    /// The strings of a list of strings (other items are skipped).
    pub fn strings(&self, obj: &ObjId) -> Vec<String> {
        self.list(obj)
            .into_iter()
            .filter_map(|(v, _)| match v {
                Value::Scalar(s) => s.as_str().map(str::to_owned),
                _ => None,
            })
            .collect()
    }
}
