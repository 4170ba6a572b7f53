//! Copying a file fast enough for the downtime without trusting the copy blindly: the
//! checksum is computed from the bytes as they are read (the source is read once), every
//! stretch of the copy is read back and checksummed by a second thread while the next one is
//! copied, and a third thread has the written stretches put on disk as the copy goes on, so
//! the final fsync waits only for the last one.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::mpsc;
use std::thread;

use super::file::{CHUNK, ChecksumAlgorithm, Checksummer};

/// Written bytes are handed to the disk every this many: the disk works while the copy goes
/// on instead of all of it waiting for the final fsync.
const WRITE_BACK_EVERY: u64 = 64 << 20;

/// A copy that reads back as what was copied, on disk.
#[derive(Debug, PartialEq, Eq)]
pub struct CheckedCopy {
    pub size: u64,
    /// `blake3:<hex>` of the bytes read from the source, which the copy reads back as.
    pub checksum: String,
}

/// Copies what remains of `source` to a new file `to` (replacing one there), verifies the
/// copy by reading it back, and makes it durable (fsync) before returning. A copy that does
/// not read back as the bytes copied into it is an `InvalidData` error. Syncing the folder
/// that holds `to` is the caller's: it usually renames the copy first.
pub fn copy_checked(source: &mut File, to: &Path) -> io::Result<CheckedCopy> {
    copy_checked_with(source, to, |_, _| Ok(()))
}

/// [`copy_checked`], with `after_write(copy, end)` called after each stretch up to `end` is
/// written and before it is read back: the tests corrupt the copy there.
fn copy_checked_with(
    source: &mut File,
    to: &Path,
    mut after_write: impl FnMut(&File, u64) -> io::Result<()>,
) -> io::Result<CheckedCopy> {
    // Readable too: the copy is read back through a clone of this handle.
    let mut copy = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(to)?;
    let reader = copy.try_clone()?;
    let syncer = copy.try_clone()?;
    let (written_tx, written_rx) = mpsc::channel::<u64>();
    let (write_back_tx, write_back_rx) = mpsc::channel::<()>();
    thread::scope(|scope| {
        let read_back = scope.spawn(move || read_back(&reader, written_rx));
        let written_back = scope.spawn(move || {
            // Each fdatasync waits for what was written before it; the copy goes on meanwhile.
            while write_back_rx.recv().is_ok() {
                while write_back_rx.try_recv().is_ok() {}
                syncer.sync_data()?;
            }
            io::Result::Ok(())
        });
        let copied = (|| -> io::Result<(u64, String)> {
            let mut checksum = Checksummer::new(ChecksumAlgorithm::NEW);
            let mut buffer = vec![0u8; CHUNK];
            let (mut size, mut handed_to_disk) = (0u64, 0u64);
            loop {
                let n = match source.read(&mut buffer) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                    Err(error) => return Err(error),
                };
                checksum.update(&buffer[..n]);
                copy.write_all(&buffer[..n])?;
                size += n as u64;
                after_write(&copy, size)?;
                // A closed channel means the reader failed; its error is reported below.
                let _ = written_tx.send(size);
                if size - handed_to_disk >= WRITE_BACK_EVERY {
                    let _ = write_back_tx.send(());
                    handed_to_disk = size;
                }
            }
            Ok((size, checksum.finish()))
        })();
        drop((written_tx, write_back_tx));
        let read_back = read_back.join().expect("the read-back thread panicked");
        let written_back = written_back.join().expect("the write-back thread panicked");
        let (size, checksum) = copied?;
        let (read_size, read_checksum) = read_back?;
        written_back?;
        if (read_size, &read_checksum) != (size, &checksum) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "the copy reads back as {read_size} bytes with checksum {read_checksum}, not \
                     the {size} bytes with checksum {checksum} copied into it"
                ),
            ));
        }
        copy.sync_all()?;
        Ok(CheckedCopy { size, checksum })
    })
}

/// Reads the copy back up to each length `written` reports, then to its end (which must be
/// the last length reported), and checksums it.
fn read_back(copy: &File, written: mpsc::Receiver<u64>) -> io::Result<(u64, String)> {
    let mut checksum = Checksummer::new(ChecksumAlgorithm::NEW);
    let mut buffer = vec![0u8; CHUNK];
    let mut read = 0u64;
    let mut read_up_to = |end: u64, read: &mut u64| -> io::Result<()> {
        while *read < end {
            let n = (end - *read).min(CHUNK as u64) as usize;
            copy.read_exact_at(&mut buffer[..n], *read)?;
            checksum.update(&buffer[..n]);
            *read += n as u64;
        }
        Ok(())
    };
    for end in written {
        read_up_to(end, &mut read)?;
    }
    // Bytes past the last length written (a copy longer than what was copied) count too.
    let length = copy.metadata()?.len();
    read_up_to(length, &mut read)?;
    Ok((read, checksum.finish()))
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;
    use crate::db::file::size_and_checksum;

    /// A few chunks and a ragged end, of bytes that differ from chunk to chunk.
    fn source_file(dir: &Path) -> std::path::PathBuf {
        let path = dir.join("source");
        let bytes: Vec<u8> = (0..3 * CHUNK + 12_345)
            .map(|i| (i * 31 % 251) as u8)
            .collect();
        fs::write(&path, bytes).expect("source");
        path
    }

    #[test]
    fn the_copy_is_byte_identical_and_its_checksum_is_the_sources() {
        let dir = tempfile::tempdir().expect("dir");
        let source = source_file(dir.path());
        let to = dir.path().join("copy");
        let copied = copy_checked(&mut File::open(&source).expect("open"), &to).expect("copy");
        assert_eq!(
            fs::read(&to).expect("copy"),
            fs::read(&source).expect("source")
        );
        assert_eq!(
            (copied.size, copied.checksum),
            size_and_checksum(&source).expect("checksum")
        );
    }

    #[test]
    fn a_copy_corrupted_after_it_was_written_is_caught_by_reading_it_back() {
        let dir = tempfile::tempdir().expect("dir");
        let source = source_file(dir.path());
        let to = dir.path().join("copy");
        let flip_a_byte_of_the_second_chunk = |copy: &File, end: u64| {
            if end == 2 * CHUNK as u64 {
                copy.write_all_at(&[0x5a], CHUNK as u64 + 7)?;
            }
            Ok(())
        };
        let error = copy_checked_with(
            &mut File::open(&source).expect("open"),
            &to,
            flip_a_byte_of_the_second_chunk,
        )
        .expect_err("a corrupted copy passed");
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
        assert!(error.to_string().contains("reads back"), "{error}");
    }

    #[test]
    fn a_copy_longer_than_what_was_copied_is_caught() {
        let dir = tempfile::tempdir().expect("dir");
        let source = source_file(dir.path());
        let to = dir.path().join("copy");
        let append_at_the_end = |copy: &File, end: u64| {
            if end > 3 * CHUNK as u64 {
                copy.write_all_at(b"stray", end)?;
            }
            Ok(())
        };
        let error = copy_checked_with(
            &mut File::open(&source).expect("open"),
            &to,
            append_at_the_end,
        )
        .expect_err("a longer copy passed");
        assert_eq!(error.kind(), io::ErrorKind::InvalidData, "{error}");
    }
}
