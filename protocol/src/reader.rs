//! Reading an automerge document, now or as it was at given heads.
//!
//! The gate judges a change against the document as its author saw it (at the change's
//! dependencies), so every read in the layouts goes through a [`Reader`] that can look back.

use automerge::iter::MapRange;
use automerge::{AutoCommit, ChangeHash, ObjId, ObjType, ReadDoc, ScalarValueRef, Value, ValueRef};

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

    /// The nested objects of a map with their keys, in key order: what `keys` then `obj` on
    /// each key reads, in one pass over the map instead of a search per key.
    pub fn objects(&self, obj: &ObjId) -> Vec<(String, ObjId)> {
        self.map(obj)
            .filter(|item| matches!(item.value, ValueRef::Object(_)))
            .map(|item| {
                let id = item.id();
                (item.key.into_owned(), id)
            })
            .collect()
    }

    /// The string fields of a map with their keys, in key order: what `keys` then `str` on
    /// each key reads, in one pass (keys holding anything else are left out).
    pub fn str_fields(&self, obj: &ObjId) -> Vec<(String, String)> {
        self.map(obj)
            .filter_map(|item| match item.value {
                ValueRef::Scalar(ScalarValueRef::Str(s)) => {
                    Some((item.key.into_owned(), s.into_owned()))
                }
                _ => None,
            })
            .collect()
    }

    /// Each key's winning value, as `get` would read it; nothing for an object that is not
    /// a map (automerge reads a list's elements as keys otherwise).
    fn map(&self, obj: &ObjId) -> MapRange<'a> {
        if !matches!(self.doc.object_type(obj), Ok(ObjType::Map | ObjType::Table)) {
            return MapRange::default();
        }
        match self.heads {
            Some(h) => self.doc.map_range_at(obj, .., h),
            None => self.doc.map_range(obj, ..),
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

#[cfg(test)]
mod tests {
    use super::*;
    use automerge::{ActorId, ROOT, transaction::Transactable};

    /// Two offices write the same keys concurrently, one of them an object on one side and a
    /// string on the other, then merge.
    fn conflicted() -> (AutoCommit, Vec<ChangeHash>) {
        let mut a = AutoCommit::new().with_actor(ActorId::from(b"village".as_slice()));
        let m = a.put_object(ROOT, "m", ObjType::Map).unwrap();
        a.put(&m, "date", "2026-03-01").unwrap();
        a.put_object(&m, "a1", ObjType::Map).unwrap();
        a.put(&m, "n", 7).unwrap();
        a.put_object(&m, "list", ObjType::List).unwrap();
        let before = a.get_heads();
        let mut b = a.fork().with_actor(ActorId::from(b"community".as_slice()));
        a.put(&m, "both", "from the village").unwrap();
        b.put_object(&m, "both", ObjType::Map).unwrap();
        b.put(&m, "date", "2026-04-01").unwrap();
        b.put_object(&m, "a2", ObjType::Map).unwrap();
        a.merge(&mut b).unwrap();
        (a, before)
    }

    /// A map's objects and string fields, read key by key.
    type ByKey = (Vec<(String, ObjId)>, Vec<(String, String)>);

    fn by_key(r: &Reader<'_>, m: &ObjId) -> ByKey {
        let keys = r.keys(m);
        let objects = keys
            .iter()
            .filter_map(|k| Some((k.clone(), r.obj(m, k)?)))
            .collect();
        let strs = keys
            .iter()
            .filter_map(|k| Some((k.clone(), r.str(m, k)?)))
            .collect();
        (objects, strs)
    }

    #[test]
    fn one_pass_over_a_map_reads_what_a_search_per_key_reads() {
        let (doc, before) = conflicted();
        let m = Reader::now(&doc).obj(&ROOT, "m").unwrap();
        for r in [Reader::now(&doc), Reader::at(&doc, &before)] {
            let (objects, strs) = by_key(&r, &m);
            assert!(!objects.is_empty() && !strs.is_empty());
            assert_eq!(r.objects(&m), objects);
            assert_eq!(r.str_fields(&m), strs);
        }
        let now = Reader::now(&doc);
        let has_both = |keys: Vec<String>| keys.iter().any(|k| k == "both");
        let both_as_object = has_both(now.objects(&m).into_iter().map(|(k, _)| k).collect());
        let both_as_str = has_both(now.str_fields(&m).into_iter().map(|(k, _)| k).collect());
        assert!(
            both_as_object != both_as_str,
            "only the conflict's winner is read"
        );
        let list = now.obj(&m, "list").unwrap();
        assert!(now.objects(&list).is_empty() && now.str_fields(&list).is_empty());
    }
}
