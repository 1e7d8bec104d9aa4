//! References to large values stored once, by the hash of their JSON (see the runtime's
//! `blob` module for where they are stored).

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Values whose JSON is longer than this many bytes (1 MiB) are stored as blobs.
pub const SPILL_BYTES: usize = 1 << 20;

/// A reference to a stored value: its hash and the length of its JSON.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "RawRef", into = "RawRef")]
pub struct BlobRef {
    sha256: String,
    bytes: u64,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRef {
    #[serde(rename = "$salt_blob")]
    sha256: String,
    bytes: u64,
}

impl TryFrom<RawRef> for BlobRef {
    type Error = String;

    fn try_from(raw: RawRef) -> Result<Self, String> {
        // The hash names a file: nothing but 64 hex digits may reach a path.
        if raw.sha256.len() == 64 && raw.sha256.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            Ok(Self { sha256: raw.sha256, bytes: raw.bytes })
        } else {
            Err(format!("`{}` is not a sha256 in lowercase hex", crate::text::short(&raw.sha256)))
        }
    }
}

impl From<BlobRef> for RawRef {
    fn from(r: BlobRef) -> Self {
        Self { sha256: r.sha256, bytes: r.bytes }
    }
}

impl BlobRef {
    /// The reference of a value whose JSON is `json`.
    pub fn of(json: &[u8]) -> Self {
        Self { sha256: hex(&Sha256::digest(json)), bytes: json.len() as u64 }
    }

    /// The sha256 of the value's JSON, in lowercase hex.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// The length of the value's JSON in bytes.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The reference as JSON: `{"$salt_blob": "<sha256>", "bytes": N}`.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}
