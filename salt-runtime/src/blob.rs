//! Large values, stored once in content-addressed files beside the database and passed by
//! reference.
//!
//! A value whose JSON is longer than [`SPILL_BYTES`] (an output, an argument, a run's input, a
//! journaled value) does not travel through protocol messages or database rows: its JSON is
//! written once to `<db dir>/<db file name>.blobs/<sha256 hex>`, and messages and rows carry a
//! [`BlobRef`] instead, serialized as
//!
//! ```json
//! {"$salt_blob": "<sha256 of the value's JSON, 64 lowercase hex digits>", "bytes": 73400320}
//! ```
//!
//! A reference is never put where a user value could be: rows and messages say by their shape
//! (a flag column, a tagged `{"blob": …}` argument, a `blob` field) whether they hold a value or a
//! reference, so a user value that happens to look like a reference is stored and read as
//! what it is.
//!
//! The same value always has the same name (its JSON is written by the same `serde_json` from
//! a `serde_json::Value`, whose objects keep a fixed key order), so a value passed from node to
//! node is stored once. Files are written to a temporary name and renamed into place, so a
//! reader never sees half a blob; the directory is `0700` and the files `0600`, like the
//! database.

use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde_json::Value;

pub use salt_core::blob::{BlobRef, SPILL_BYTES};

/// Why a blob could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// The file system refused.
    #[error("cannot {action} blob {path}: {source}")]
    Io {
        /// Writing or reading.
        action: &'static str,
        /// The file or directory.
        path: String,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The blob a row or message refers to is not there.
    #[error(
        "blob {path} is missing: values larger than 1 MiB are stored beside the database, and its `.blobs` directory must be copied or moved with it"
    )]
    Missing {
        /// The file.
        path: String,
    },
    /// The blob is there but is not the value it should be.
    #[error("blob {path} is damaged: {detail}")]
    Damaged {
        /// The file.
        path: String,
        /// What is wrong.
        detail: String,
    },
}

/// A directory of blobs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blobs {
    dir: PathBuf,
}

impl Blobs {
    /// The blobs of the database at `db`: `<db dir>/<db file name>.blobs`.
    pub fn beside(db: &Path) -> Self {
        let mut name = db.file_name().map(|n| n.to_os_string()).unwrap_or_else(|| "salt.db".into());
        name.push(".blobs");
        Self { dir: db.with_file_name(name) }
    }

    /// The blobs in `dir`.
    pub fn at(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the blob of `r` is.
    pub fn path(&self, r: &BlobRef) -> PathBuf {
        self.dir.join(r.sha256())
    }

    /// Stores `json` (a value's JSON) and returns its reference. A blob of the same content that
    /// is already there is kept as it is.
    pub fn put(&self, json: &[u8]) -> Result<BlobRef, BlobError> {
        let r = BlobRef::of(json);
        let path = self.path(&r);
        if std::fs::metadata(&path).is_ok_and(|m| m.len() == r.bytes()) {
            return Ok(r);
        }
        let io = |path: &Path| {
            let path = path.display().to_string();
            move |source| BlobError::Io { action: "write", path, source }
        };
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&self.dir).map_err(io(&self.dir))?;
        // A name of its own per writer: processes may store the same blob at once.
        let tmp = self.dir.join(format!(".{}.{}.{:x}.tmp", r.sha256(), std::process::id(), unique()));
        let written = (|| {
            let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
            f.write_all(json)?;
            f.sync_data()?;
            std::fs::rename(&tmp, &path)
        })();
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(io(&path)(e));
        }
        Ok(r)
    }

    /// Stores a value's JSON and returns its reference.
    pub fn put_value(&self, value: &Value) -> Result<BlobRef, BlobError> {
        self.put(&serde_json::to_vec(value).unwrap_or_default())
    }

    /// Stores `value` if its JSON is longer than [`SPILL_BYTES`]; `None` if it is small enough
    /// to travel as it is.
    pub fn spill(&self, value: &Value) -> Result<Option<BlobRef>, BlobError> {
        // One pass over the value: writing it out costs no more than measuring it.
        let json = serde_json::to_vec(value).unwrap_or_default();
        if json.len() > SPILL_BYTES { self.put(&json).map(Some) } else { Ok(None) }
    }

    /// The JSON of a stored value.
    pub fn get(&self, r: &BlobRef) -> Result<Vec<u8>, BlobError> {
        let path = self.path(r);
        let shown = || path.display().to_string();
        let bytes = std::fs::read(&path).map_err(|source| match source.kind() {
            std::io::ErrorKind::NotFound => BlobError::Missing { path: shown() },
            _ => BlobError::Io { action: "read", path: shown(), source },
        })?;
        if bytes.len() as u64 != r.bytes() {
            return Err(BlobError::Damaged {
                path: shown(),
                detail: format!("it has {} bytes, not {}", bytes.len(), r.bytes()),
            });
        }
        Ok(bytes)
    }

    /// A stored value.
    pub fn get_value(&self, r: &BlobRef) -> Result<Value, BlobError> {
        let bytes = self.get(r)?;
        serde_json::from_slice(&bytes).map_err(|e| BlobError::Damaged {
            path: self.path(r).display().to_string(),
            detail: format!("it is not JSON: {e}"),
        })
    }
}

/// A number that differs between calls in one process.
fn unique() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_is_stored_once_under_its_hash_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = Blobs::beside(&dir.path().join("salt.db"));
        assert_eq!(blobs.dir(), dir.path().join("salt.db.blobs"));
        let value = serde_json::json!({"rows": ["x".repeat(SPILL_BYTES)]});
        let r = blobs.spill(&value).unwrap().expect("a large value spills");
        assert_eq!(blobs.spill(&value).unwrap(), Some(r.clone()));
        assert_eq!(blobs.get_value(&r).unwrap(), value);
        assert_eq!(r.bytes() as usize, serde_json::to_vec(&value).unwrap().len());
        let files: Vec<_> = std::fs::read_dir(blobs.dir()).unwrap().collect();
        assert_eq!(files.len(), 1, "one file, no temporary left behind");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(blobs.dir()).unwrap().permissions().mode() & 0o777, 0o700);
        assert_eq!(std::fs::metadata(blobs.path(&r)).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(blobs.spill(&serde_json::json!("small")).unwrap(), None);
    }

    #[test]
    fn references_are_small_json_objects_and_never_name_other_files() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = Blobs::at(dir.path());
        let r = blobs.put(b"[1,2,3]").unwrap();
        assert_eq!(
            r.to_json(),
            r#"{"$salt_blob":"a615eeaee21de5179de080de8c3052c8da901138406ba71c38c032845f7d54f4","bytes":7}"#
        );
        assert_eq!(serde_json::from_str::<BlobRef>(&r.to_json()).unwrap(), r);
        for bad in [
            r#"{"$salt_blob":"../../etc/passwd","bytes":1}"#,
            r#"{"$salt_blob":"A615EEAEE21DE5179DE080DE8C3052C8DA901138406BA71C38C032845F7D54F4","bytes":7}"#,
            r#"{"$salt_blob":"a615","bytes":7,"more":1}"#,
        ] {
            assert!(serde_json::from_str::<BlobRef>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_missing_or_damaged_blob_says_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = Blobs::at(dir.path().join("salt.db.blobs"));
        let r = blobs.put(b"\"hello\"").unwrap();
        std::fs::write(blobs.path(&r), b"\"hell\"").unwrap();
        let e = blobs.get_value(&r).unwrap_err().to_string();
        assert!(e.contains("damaged") && e.contains("6 bytes, not 7"), "{e}");
        std::fs::remove_file(blobs.path(&r)).unwrap();
        let e = blobs.get_value(&r).unwrap_err().to_string();
        assert!(e.contains("missing") && e.contains("must be copied or moved with it"), "{e}");
    }
}
