//! File helpers every backup shares: checksums, free space, the folder of a path, and making a
//! rename durable. Errors are plain `io::Error`s: callers say which file they were at.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use sha2::{Digest, Sha256};

/// The hash a checksum was computed with, named by the checksum's prefix (`blake3:<hex>`).
/// New checksums are BLAKE3, about three times as fast as SHA-256 and as hard to forge, because
/// the backup's checksum is computed inside the downtime; `sha256:` checksums, which earlier
/// releases recorded, still verify.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChecksumAlgorithm {
    Sha256,
    Blake3,
}

impl ChecksumAlgorithm {
    /// The algorithm of every checksum hubgrade records now.
    pub const NEW: ChecksumAlgorithm = ChecksumAlgorithm::Blake3;

    const ALL: [ChecksumAlgorithm; 2] = [ChecksumAlgorithm::Sha256, ChecksumAlgorithm::Blake3];

    fn prefix(self) -> &'static str {
        match self {
            ChecksumAlgorithm::Sha256 => "sha256:",
            ChecksumAlgorithm::Blake3 => "blake3:",
        }
    }

    /// The algorithm a recorded checksum names by its prefix; an unknown prefix is an error
    /// (`InvalidInput`) naming the ones hubgrade knows.
    pub fn of(checksum: &str) -> io::Result<ChecksumAlgorithm> {
        ChecksumAlgorithm::ALL
            .into_iter()
            .find(|algorithm| checksum.starts_with(algorithm.prefix()))
            .ok_or_else(|| {
                let known: Vec<&str> = ChecksumAlgorithm::ALL.iter().map(|a| a.prefix()).collect();
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "the checksum {checksum:?} names no hash hubgrade knows (it knows {})",
                        known.join(", ")
                    ),
                )
            })
    }
}

/// A checksum computed a piece at a time.
pub struct Checksummer(Hasher);

enum Hasher {
    Sha256(Sha256),
    // Boxed: BLAKE3's state is about 2 KiB.
    Blake3(Box<blake3::Hasher>),
}

impl Checksummer {
    pub fn new(algorithm: ChecksumAlgorithm) -> Checksummer {
        Checksummer(match algorithm {
            ChecksumAlgorithm::Sha256 => Hasher::Sha256(Sha256::new()),
            ChecksumAlgorithm::Blake3 => Hasher::Blake3(Box::default()),
        })
    }

    pub fn update(&mut self, bytes: &[u8]) {
        match &mut self.0 {
            Hasher::Sha256(hasher) => hasher.update(bytes),
            Hasher::Blake3(hasher) => {
                hasher.update(bytes);
            }
        }
    }

    /// `<algorithm>:<hex>`.
    pub fn finish(self) -> String {
        let (algorithm, digest) = match self.0 {
            Hasher::Sha256(hasher) => (ChecksumAlgorithm::Sha256, hasher.finalize().to_vec()),
            Hasher::Blake3(hasher) => (
                ChecksumAlgorithm::Blake3,
                hasher.finalize().as_bytes().to_vec(),
            ),
        };
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        format!("{}{hex}", algorithm.prefix())
    }
}

/// The size of the pieces files are read and copied in.
pub(crate) const CHUNK: usize = 1 << 20;

/// Size and checksum (`blake3:<hex>`, see [`ChecksumAlgorithm::NEW`]) of a file.
pub fn size_and_checksum(path: &Path) -> io::Result<(u64, String)> {
    size_and_checksum_as(path, ChecksumAlgorithm::NEW)
}

/// Size and checksum of a file, computed the way `recorded` was (its prefix), to compare with
/// it.
pub fn size_and_checksum_like(path: &Path, recorded: &str) -> io::Result<(u64, String)> {
    size_and_checksum_as(path, ChecksumAlgorithm::of(recorded)?)
}

fn size_and_checksum_as(path: &Path, algorithm: ChecksumAlgorithm) -> io::Result<(u64, String)> {
    let mut file = File::open(path)?;
    let mut checksum = Checksummer::new(algorithm);
    let mut buffer = vec![0u8; CHUNK];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        checksum.update(&buffer[..n]);
        size += n as u64;
    }
    Ok((size, checksum.finish()))
}

/// Bytes available to an unprivileged writer in the file system holding `dir`.
pub fn available_space(dir: &Path) -> io::Result<u64> {
    let stats = rustix::fs::statvfs(dir)?;
    Ok(stats.f_bavail.saturating_mul(stats.f_frsize))
}

/// The folder holding `path` ("." for a bare file name).
pub fn folder_of(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

/// Flushes `dir`'s entries to disk, so a file renamed into it survives a crash.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums_name_their_hash_and_match_the_published_test_vectors() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("abc");
        std::fs::write(&path, b"abc").expect("write");
        let blake3 = "blake3:6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85";
        let sha256 = "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(size_and_checksum(&path).expect("new"), (3, blake3.into()));
        for recorded in [blake3, sha256] {
            assert_eq!(
                size_and_checksum_like(&path, recorded).expect("like"),
                (3, recorded.into())
            );
        }
        let error = size_and_checksum_like(&path, "md5:900150983cd24fb0d6963f7d28e17f72")
            .expect_err("md5 is not known");
        assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
        assert!(error.to_string().contains("sha256:, blake3:"), "{error}");
    }
}
