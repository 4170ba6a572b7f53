//! Copying a file fast enough for the downtime without trusting the copy blindly: the source
//! is read once; a second thread computes the checksum of the bytes read while the next
//! stretch is copied; a third reads every stretch of the copy back and compares it, byte for
//! byte, with the bytes the checksum is of; and a fourth has the written stretches put on disk
//! as the copy goes on, so the final fsync waits only for the last one.
//!
//! An earlier copy of the same file (a seed) can instead be brought up to date in place:
//! only the stretches that differ from the source are written, with the same checksum, the
//! same whole read-back (compared with the source's bytes) and the same fsync, so the result
//! is as trustworthy as a new copy.

use std::fs::File;
use std::io::{self, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::mpsc;
use std::thread;

use super::file::{CHUNK, ChecksumAlgorithm, Checksummer};

/// Written bytes are handed to the disk every this many, and every this many bytes of the
/// source when some were written since (a seed's changed pages, scattered over the file): the
/// disk works while the copy goes on instead of all of it waiting for the final fsync.
const WRITE_BACK_EVERY: u64 = 64 << 20;

/// A seed is compared with the source this many bytes at a time, SQLite's default page size:
/// a hub's writes touch pages scattered over the whole file, which would leave few whole
/// chunks unchanged.
const COMPARED_BLOCK: usize = 4096;

/// A copy that reads back as what was copied, on disk.
#[derive(Debug, PartialEq, Eq)]
pub struct CheckedCopy {
    pub size: u64,
    /// `blake3:<hex>` of the bytes read from the source, which the copy reads back as.
    pub checksum: String,
    /// The bytes written into the copy: all of them for a new copy, only the stretches that
    /// differed from the source for an updated seed.
    pub written: u64,
}

/// Where the copy's bytes start from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Start {
    /// An empty file: every byte is written.
    Empty,
    /// An earlier copy: a stretch is written only when it differs from the source's.
    Seed,
}

/// Copies what remains of `source` to a new file `to` (replacing one there), verifies the
/// copy by reading it back, and makes it durable (fsync) before returning. A copy that does
/// not read back as the bytes copied into it is an `InvalidData` error. Syncing the folder
/// that holds `to` is the caller's: it usually renames the copy first.
pub fn copy_checked(source: &mut File, to: &Path) -> io::Result<CheckedCopy> {
    copy_checked_with(source, to, Start::Empty, |_, _| Ok(()))
}

/// Like [`copy_checked`], but `seed` is an existing file, an earlier copy of `source` (or of
/// an older state of it), brought up to date in place: each stretch of the source is compared
/// with the seed's same range and written only when it differs, then the seed is cut or grown
/// to the source's length. The whole result is then read back and checked against the
/// source's checksum, as a new copy is, and made durable (fdatasync): a seed of any content
/// ends byte for byte the source's, or this fails. A failure leaves the seed in any state:
/// the caller removes it or copies over it.
pub fn update_checked(source: &mut File, seed: &Path) -> io::Result<CheckedCopy> {
    copy_checked_with(source, seed, Start::Seed, |_, _| Ok(()))
}

/// Stretches of the source in flight between the copying thread, the checksumming thread and
/// the read-back (each [`CHUNK`] long): they bound the memory used and let each thread work
/// while the others do.
const IN_FLIGHT: usize = 4;

/// A stretch of the source on its way: read (and written into the copy) by the copying
/// thread, checksummed by the next, compared with the copy's same range by the read-back,
/// then handed back to the copying thread to be filled again.
struct Stretch {
    offset: u64,
    bytes: Vec<u8>,
    len: usize,
}

/// [`copy_checked`] or [`update_checked`], with `after_write(copy, end)` called after each
/// stretch up to `end` is in place (written, or found equal) and before it is read back: the
/// tests corrupt the copy there.
///
/// Three threads work side by side on each stretch in turn: this one reads it from the source
/// and writes it (or its differences) into the copy; a second computes the checksum of the
/// source's bytes; a third reads the copy's same range back and compares it with them, byte
/// for byte, so the copy is checked against the very bytes the checksum is of. A fourth has
/// the written stretches put on disk as the copy goes on.
fn copy_checked_with(
    source: &mut File,
    to: &Path,
    start: Start,
    mut after_write: impl FnMut(&File, u64) -> io::Result<()>,
) -> io::Result<CheckedCopy> {
    // Readable too: the copy is read back through a clone of this handle, and a seed is
    // compared with the source through this one.
    let copy = File::options()
        .read(true)
        .write(true)
        .create(start == Start::Empty)
        .truncate(start == Start::Empty)
        .open(to)?;
    let reader = copy.try_clone()?;
    let syncer = copy.try_clone()?;
    let (to_checksum, checksummed_rx) = mpsc::sync_channel::<Stretch>(IN_FLIGHT);
    let (to_read_back, read_back_rx) = mpsc::sync_channel::<Stretch>(IN_FLIGHT);
    let (returned, free) = mpsc::sync_channel::<Vec<u8>>(IN_FLIGHT);
    for _ in 0..IN_FLIGHT {
        returned
            .send(vec![0u8; CHUNK])
            .expect("the channel holds IN_FLIGHT stretches");
    }
    let (write_back_tx, write_back_rx) = mpsc::channel::<()>();
    thread::scope(|scope| {
        let checksummed = scope.spawn(move || {
            let mut checksum = Checksummer::new(ChecksumAlgorithm::NEW);
            for stretch in checksummed_rx {
                checksum.update(&stretch.bytes[..stretch.len]);
                // A closed channel means the read-back failed; its error is reported below.
                if to_read_back.send(stretch).is_err() {
                    break;
                }
            }
            checksum.finish()
        });
        let read_back = scope.spawn(move || read_back(&reader, read_back_rx, returned));
        let written_back = scope.spawn(move || {
            // Each fdatasync waits for what was written before it; the copy goes on meanwhile.
            while write_back_rx.recv().is_ok() {
                while write_back_rx.try_recv().is_ok() {}
                syncer.sync_data()?;
            }
            io::Result::Ok(())
        });
        let copied = (|| -> io::Result<(u64, u64)> {
            // The seed's bytes of the same range, for a seed only.
            let mut seed_buffer = match start {
                Start::Empty => Vec::new(),
                Start::Seed => vec![0u8; CHUNK],
            };
            let (mut size, mut written) = (0u64, 0u64);
            // Where what remains of the source starts.
            let origin = source.stream_position()?;
            // The bytes written, and the source's bytes read, when last handed to the disk.
            let (mut handed_to_disk, mut handed_at) = (0u64, 0u64);
            // No free stretch means the read-back failed; its error is reported below.
            while let Ok(mut buffer) = free.recv() {
                let n = read_at_most(source, &mut buffer, origin + size)?;
                if n == 0 {
                    break;
                }
                written += match start {
                    Start::Empty => {
                        copy.write_all_at(&buffer[..n], size)?;
                        n as u64
                    }
                    Start::Seed => {
                        let seed_n = read_at_most(&copy, &mut seed_buffer[..n], size)?;
                        write_differences(&copy, &buffer[..n], &seed_buffer[..seed_n], size)?
                    }
                };
                let offset = size;
                size += n as u64;
                after_write(&copy, size)?;
                let stretch = Stretch {
                    offset,
                    bytes: buffer,
                    len: n,
                };
                if to_checksum.send(stretch).is_err() {
                    break;
                }
                let unsynced = written - handed_to_disk;
                if unsynced >= WRITE_BACK_EVERY
                    || (unsynced > 0 && size - handed_at >= WRITE_BACK_EVERY)
                {
                    let _ = write_back_tx.send(());
                    (handed_to_disk, handed_at) = (written, size);
                }
            }
            // What remains of the source is read: it is left at its end, as a read leaves it.
            source.seek(SeekFrom::Start(origin + size))?;
            if start == Start::Seed {
                // A seed longer than the source loses its tail; the read-back checks the
                // length after this.
                copy.set_len(size)?;
            }
            Ok((size, written))
        })();
        drop((to_checksum, write_back_tx));
        let checksum = checksummed.join().expect("the checksum thread panicked");
        let read_back = read_back.join().expect("the read-back thread panicked");
        let written_back = written_back.join().expect("the write-back thread panicked");
        let (size, written) = copied?;
        let read_size = read_back?;
        written_back?;
        if read_size != size {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("the copy reads back as {read_size} bytes, not the {size} copied"),
            ));
        }
        match start {
            Start::Empty => copy.sync_all()?,
            // The file existed: its data and length are what must reach the disk.
            Start::Seed => copy.sync_data()?,
        }
        Ok(CheckedCopy {
            size,
            checksum,
            written,
        })
    })
}

/// Writes the blocks of `chunk`, the source's bytes from `offset`, that differ from `seed`, the
/// copy's bytes from the same offset (shorter where the copy ends), each run of them in one
/// write; returns the bytes written.
fn write_differences(copy: &File, chunk: &[u8], seed: &[u8], offset: u64) -> io::Result<u64> {
    let mut written = 0;
    let mut write = |from: usize, to: usize| -> io::Result<()> {
        copy.write_all_at(&chunk[from..to], offset + from as u64)?;
        written += (to - from) as u64;
        Ok(())
    };
    // Where the run of differing blocks being gathered starts.
    let mut differing_since = None;
    for from in (0..chunk.len()).step_by(COMPARED_BLOCK) {
        let to = (from + COMPARED_BLOCK).min(chunk.len());
        let same = seed.get(from..to) == Some(&chunk[from..to]);
        match (same, differing_since) {
            (false, None) => differing_since = Some(from),
            (true, Some(since)) => {
                write(since, from)?;
                differing_since = None;
            }
            _ => {}
        }
    }
    if let Some(since) = differing_since {
        write(since, chunk.len())?;
    }
    Ok(written)
}

/// Reads `file` from `offset` into `buffer` until it is full or the file ends; returns how
/// many bytes were read.
fn read_at_most(file: &File, buffer: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut read = 0;
    while read < buffer.len() {
        match file.read_at(&mut buffer[read..], offset + read as u64) {
            Ok(0) => break,
            Ok(n) => read += n,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error),
        }
    }
    Ok(read)
}

/// Reads back the copy's range of each stretch, compares it with the stretch's bytes and
/// hands the stretch back through `returned`; once they end, checks the copy ends there too.
/// Returns the length read back, which must be the length copied.
fn read_back(
    copy: &File,
    stretches: mpsc::Receiver<Stretch>,
    returned: mpsc::SyncSender<Vec<u8>>,
) -> io::Result<u64> {
    let mut buffer = vec![0u8; CHUNK];
    let mut read = 0u64;
    for stretch in stretches {
        let on_disk = &mut buffer[..stretch.len];
        copy.read_exact_at(on_disk, stretch.offset)?;
        if *on_disk != stretch.bytes[..stretch.len] {
            let at = on_disk
                .iter()
                .zip(&stretch.bytes)
                .position(|(a, b)| a != b)
                .unwrap_or_default() as u64;
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "the copy reads back differently from the bytes copied into it at byte {}",
                    stretch.offset + at
                ),
            ));
        }
        read = stretch.offset + stretch.len as u64;
        // The copying thread may be done; nothing waits for this stretch then.
        let _ = returned.send(stretch.bytes);
    }
    // Bytes past the last stretch (a copy longer than what was copied) count too.
    Ok(read.max(copy.metadata()?.len()))
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;
    use crate::db::file::size_and_checksum;

    /// A few chunks and a ragged end, of bytes that differ from chunk to chunk.
    fn source_file(dir: &Path) -> std::path::PathBuf {
        let path = dir.join("source");
        fs::write(&path, source_bytes()).expect("source");
        path
    }

    fn source_bytes() -> Vec<u8> {
        (0..3 * CHUNK + 12_345)
            .map(|i| (i * 31 % 251) as u8)
            .collect()
    }

    /// Brings `seed` (bytes) up to date with the file `source`; checks the result is the
    /// source byte for byte, with its checksum, and returns how many bytes were written.
    fn update(dir: &Path, source: &Path, seed: &[u8]) -> u64 {
        let to = dir.join("seed");
        fs::write(&to, seed).expect("seed");
        let updated = update_checked(&mut File::open(source).expect("open"), &to).expect("update");
        assert_eq!(
            fs::read(&to).expect("updated seed"),
            fs::read(source).expect("source")
        );
        assert_eq!(
            (updated.size, updated.checksum),
            size_and_checksum(source).expect("checksum")
        );
        updated.written
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

    /// Copies (from `start`) with one byte of the second chunk flipped on disk once that
    /// chunk is done; the read-back must refuse it.
    fn assert_a_flipped_byte_is_caught(to: &Path, start: Start) {
        let source = source_file(to.parent().expect("a folder"));
        let flip_a_byte_of_the_second_chunk = |copy: &File, end: u64| {
            if end == 2 * CHUNK as u64 {
                copy.write_all_at(&[0x5a], CHUNK as u64 + 7)?;
            }
            Ok(())
        };
        let error = copy_checked_with(
            &mut File::open(&source).expect("open"),
            to,
            start,
            flip_a_byte_of_the_second_chunk,
        )
        .expect_err("a copy that does not read back as the source passed");
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
        assert!(error.to_string().contains("reads back"), "{error}");
    }

    #[test]
    fn a_copy_corrupted_after_it_was_written_is_caught_by_reading_it_back() {
        let dir = tempfile::tempdir().expect("dir");
        assert_a_flipped_byte_is_caught(&dir.path().join("copy"), Start::Empty);
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
            Start::Empty,
            append_at_the_end,
        )
        .expect_err("a longer copy passed");
        assert_eq!(error.kind(), io::ErrorKind::InvalidData, "{error}");
    }

    #[test]
    fn an_updated_seed_is_the_source_byte_for_byte_and_only_changed_stretches_are_written() {
        let dir = tempfile::tempdir().expect("dir");
        let seed = source_bytes();
        let source = dir.path().join("source");

        // Pages changed by the running hub since the seed was made: two pages written, three
        // neighbours in one write.
        let mut changed = seed.clone();
        changed[10] ^= 0xff;
        changed[2 * CHUNK + 4096..2 * CHUNK + 8192].fill(0);
        changed[CHUNK - 4096..CHUNK + 8192].fill(1);
        fs::write(&source, &changed).expect("source");
        assert_eq!(
            update(dir.path(), &source, &seed),
            5 * COMPARED_BLOCK as u64
        );

        // Grown: the new pages are written, and the seed's last, partial block.
        let mut grown = seed.clone();
        grown.extend((0..CHUNK + 100).map(|i| (i % 7) as u8));
        fs::write(&source, &grown).expect("source");
        let kept = seed.len() / COMPARED_BLOCK * COMPARED_BLOCK;
        let tail = (grown.len() - kept) as u64;
        assert_eq!(update(dir.path(), &source, &seed), tail);

        // Shrunk: nothing to write, the seed's tail is cut.
        let shrunk = &seed[..2 * CHUNK + 512];
        fs::write(&source, shrunk).expect("source");
        assert_eq!(update(dir.path(), &source, &seed), 0);

        // Unchanged: nothing written at all.
        fs::write(&source, &seed).expect("source");
        assert_eq!(update(dir.path(), &source, &seed), 0);
    }

    #[test]
    fn a_corrupted_or_missing_stretch_of_the_seed_is_rewritten() {
        let dir = tempfile::tempdir().expect("dir");
        let source = source_file(dir.path());
        let mut seed = source_bytes();
        seed[CHUNK + 77] ^= 0x01;
        assert_eq!(update(dir.path(), &source, &seed), COMPARED_BLOCK as u64);
        // A seed cut short (a write interrupted), and an empty one: the rest is written.
        let cut = &source_bytes()[..CHUNK + 5];
        assert_eq!(
            update(dir.path(), &source, cut),
            (source_bytes().len() - CHUNK) as u64
        );
        assert_eq!(
            update(dir.path(), &source, &[]),
            source_bytes().len() as u64
        );
    }

    #[test]
    fn a_seed_changed_after_it_was_compared_is_caught_by_reading_it_back() {
        let dir = tempfile::tempdir().expect("dir");
        let to = dir.path().join("seed");
        fs::write(&to, source_bytes()).expect("seed");
        // The second chunk is found equal and so not written; then it changes on disk.
        assert_a_flipped_byte_is_caught(&to, Start::Seed);
    }

    #[test]
    fn a_missing_seed_is_an_error_not_a_new_copy() {
        let dir = tempfile::tempdir().expect("dir");
        let source = source_file(dir.path());
        let to = dir.path().join("no-seed");
        let error = update_checked(&mut File::open(&source).expect("open"), &to)
            .expect_err("a missing seed was updated");
        assert_eq!(error.kind(), io::ErrorKind::NotFound);
        assert!(!to.exists());
    }
}
