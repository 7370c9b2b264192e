//! Checkpoints outside the database: an append-only file, one signed
//! checkpoint (a compact JWS) per line, written (and synced) after each
//! checkpoint is committed. Whoever can rewrite the database cannot make
//! the log agree with a checkpoint kept here, on another disk, or by a
//! monitor that copies `GET /v1/audit/checkpoints` (ADR 0012).

use std::fs::{File, OpenOptions};
use std::io::{Read as _, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use mandate_core::{CheckpointClaims, Jwks, verify_checkpoint};

/// One checkpoint read from a file: its token and what it says.
#[derive(Debug, Clone)]
pub struct KeptCheckpoint {
    pub token: String,
    pub claims: CheckpointClaims,
}

/// A checkpoint file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointFileError {
    #[error("cannot read the checkpoint file `{0}`: {1}")]
    Io(PathBuf, std::io::Error),
    #[error(
        "line {line} of the checkpoint file `{path}` is not a checkpoint signed by this authority's key ({why})"
    )]
    Bad {
        path: PathBuf,
        line: usize,
        why: String,
    },
}

/// Reads the checkpoints kept in `path`, verified against `jwks`, in
/// sequence order. A missing file holds none. A last line cut short (a
/// crash while it was written, so no newline ends it) is left out; any
/// other line that does not verify is an error naming it.
pub fn read_checkpoint_file(
    path: &Path,
    jwks: &Jwks,
) -> Result<Vec<KeptCheckpoint>, CheckpointFileError> {
    let mut text = String::new();
    match File::open(path) {
        Ok(mut f) => {
            f.read_to_string(&mut text)
                .map_err(|e| CheckpointFileError::Io(path.to_owned(), e))?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(CheckpointFileError::Io(path.to_owned(), e)),
    }
    let complete = text.ends_with('\n');
    let lines: Vec<&str> = text.split('\n').collect();
    let last = lines.len().saturating_sub(1);
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        match verify_checkpoint(line, jwks, None) {
            Ok(claims) => out.push(KeptCheckpoint {
                token: line.to_owned(),
                claims,
            }),
            Err(_) if i == last && !complete => {
                tracing::warn!(
                    file = %path.display(),
                    "the checkpoint file ends in a line cut short (a crash while it was written); ignoring it"
                );
            }
            Err(e) => {
                return Err(CheckpointFileError::Bad {
                    path: path.to_owned(),
                    line: i + 1,
                    why: e.to_string(),
                });
            }
        }
    }
    // Two writers (the server and `mandate init`) may interleave lines.
    out.sort_by_key(|c| c.claims.seq);
    out.dedup_by(|a, b| a.claims.seq == b.claims.seq && a.claims.head == b.claims.head);
    Ok(out)
}

/// The file, open for appending.
#[derive(Debug)]
pub(crate) struct CheckpointFile {
    path: PathBuf,
    file: File,
}

impl CheckpointFile {
    /// Opens (or creates, mode 0600) `path` for appending. A last line a
    /// crash cut short (no newline ends it) is cut off, so the file reads
    /// as whole lines again.
    pub(crate) fn open(path: &Path) -> std::io::Result<Self> {
        use std::io::{Seek as _, SeekFrom};
        /// Longer than any checkpoint line.
        const TAIL: u64 = 8_192;
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o600)
            .open(path)?;
        let len = file.metadata()?.len();
        if len > 0 {
            let from = len.saturating_sub(TAIL);
            let mut tail = Vec::new();
            file.seek(SeekFrom::Start(from))?;
            file.read_to_end(&mut tail)?;
            if tail.last() != Some(&b'\n') {
                let keep = match tail.iter().rposition(|b| *b == b'\n') {
                    Some(i) => from + i as u64 + 1,
                    None if from == 0 => 0,
                    // Not a file of checkpoint lines: left for reading to
                    // name it.
                    None => len,
                };
                if keep < len {
                    tracing::warn!(
                        file = %path.display(),
                        cut = len - keep,
                        "the checkpoint file ended in a line cut short (a crash while it was written); cutting it off"
                    );
                    file.set_len(keep)?;
                    file.sync_data()?;
                }
            }
        }
        Ok(Self {
            path: path.to_owned(),
            file,
        })
    }

    /// Appends one checkpoint and waits until it is on disk.
    pub(crate) fn append(&mut self, token: &str) -> std::io::Result<()> {
        let mut line = String::with_capacity(token.len() + 1);
        line.push_str(token);
        line.push('\n');
        // One write of a whole line: appends from two processes interleave
        // by lines, not within one.
        self.file.write_all(line.as_bytes())?;
        self.file.sync_data()
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}
