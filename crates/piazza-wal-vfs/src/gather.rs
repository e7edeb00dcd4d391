//! The gathering of WAL appends, apart from the FFI: what is written
//! where, and when.

use crate::FLUSH_AT;

/// A WAL frame header: page number, database size for a commit frame (else
/// 0), salts and checksums (SQLite's `WAL_FRAME_HDRSIZE`).
const FRAME_HEADER: usize = 24;

/// The WAL file's own header, written at offset 0 when the log starts over.
const WAL_HEADER: usize = 32;

/// Where gathered bytes go: `write(bytes, offset)`, returning SQLite's
/// result code (0 for success).
pub(crate) trait Sink {
    fn write(&mut self, bytes: &[u8], offset: i64) -> i32;
}

/// WAL appends not yet written, and where the log is in its transactions.
///
/// SQLite writes a committing transaction's frames in order, the commit
/// frame last, and only then publishes them. After the commit frame it may
/// still write: the headers of earlier frames of the transaction again
/// (their checksums, when it wrote a page twice) and, with
/// `synchronous=FULL` on a disk without power-safe overwrite, copies of the
/// commit frame up to a sector boundary. Those go straight through
/// (`through`), so that everything is in the file before publication. The
/// next transaction's first write ends that: a non-commit frame header at
/// or past the end of the commit frame, or the log's header at offset 0
/// when it starts over.
#[derive(Default)]
pub(crate) struct Gathered {
    bytes: Vec<u8>,
    /// The file offset of `bytes[0]`.
    start: i64,
    /// The last write was a commit frame's header: its page ends the commit.
    commit_page_next: bool,
    /// After a commit frame, until the next transaction: write through.
    through: bool,
    /// Where the last commit frame ended.
    commit_end: i64,
}

impl Gathered {
    /// Takes one write of SQLite's: gathers it, or writes it (and what was
    /// gathered) to `sink` when the rules above say so.
    pub(crate) fn write(&mut self, bytes: &[u8], offset: i64, sink: &mut impl Sink) -> i32 {
        let header = bytes.len() == FRAME_HEADER;
        let commit_header = header && bytes[4..8] != [0; 4];
        if self.through {
            let next_transaction =
                (header && !commit_header && offset >= self.commit_end) || (offset == 0 && bytes.len() == WAL_HEADER);
            if !next_transaction {
                return sink.write(bytes, offset);
            }
            self.through = false;
        }
        let continues = self.bytes.is_empty() || offset == self.end();
        if !continues || bytes.len() >= FLUSH_AT {
            let rc = self.flush(sink);
            if rc != 0 {
                return rc;
            }
        }
        if bytes.len() >= FLUSH_AT {
            return sink.write(bytes, offset);
        }
        if self.bytes.is_empty() {
            self.start = offset;
        }
        self.bytes.extend_from_slice(bytes);
        let ends_commit = self.commit_page_next;
        self.commit_page_next = commit_header;
        if ends_commit {
            self.through = true;
            self.commit_end = offset + bytes.len() as i64;
            return self.flush(sink);
        }
        if self.bytes.len() >= FLUSH_AT {
            return self.flush(sink);
        }
        0
    }

    /// Writes what was gathered, if anything. On an error the bytes are
    /// dropped all the same, as a failed direct write would have left them.
    pub(crate) fn flush(&mut self, sink: &mut impl Sink) -> i32 {
        if self.bytes.is_empty() {
            return 0;
        }
        let rc = sink.write(&self.bytes, self.start);
        self.bytes.clear();
        self.commit_page_next = false;
        rc
    }

    fn end(&self) -> i64 {
        self.start + self.bytes.len() as i64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A file in memory, with the writes it was given.
    #[derive(Default)]
    struct Memory {
        content: Vec<u8>,
        writes: usize,
    }

    impl Sink for Memory {
        fn write(&mut self, bytes: &[u8], offset: i64) -> i32 {
            let offset = offset as usize;
            if self.content.len() < offset + bytes.len() {
                self.content.resize(offset + bytes.len(), 0);
            }
            self.content[offset..offset + bytes.len()].copy_from_slice(bytes);
            self.writes += 1;
            0
        }
    }

    fn header(commit: bool) -> Vec<u8> {
        let mut header = vec![0xAA; FRAME_HEADER];
        header[4..8].copy_from_slice(&[0, 0, 0, u8::from(commit)]);
        header
    }

    #[test]
    fn a_transaction_reaches_the_file_in_one_write_at_its_commit_frame() {
        let (mut gathered, mut file) = (Gathered::default(), Memory::default());
        let mut offset = 32;
        for frame in 0..21 {
            let commit = frame == 20;
            assert_eq!(gathered.write(&header(commit), offset, &mut file), 0);
            assert_eq!(file.writes, 0, "nothing written before the commit page");
            assert_eq!(gathered.write(&[frame as u8; 4096], offset + 24, &mut file), 0);
            offset += 24 + 4096;
        }
        assert_eq!(file.writes, 1);
        assert_eq!(file.content.len(), offset as usize);
        assert_eq!(file.content[32 + 20 * 4120 + 24], 20, "the commit page is in");
        assert!(gathered.bytes.is_empty());
    }

    /// Frames 0..n of a transaction from `offset`, the last a commit.
    fn transaction(gathered: &mut Gathered, file: &mut Memory, mut offset: i64, frames: u8) -> i64 {
        for frame in 0..frames {
            assert_eq!(gathered.write(&header(frame == frames - 1), offset, file), 0);
            assert_eq!(gathered.write(&[frame; 4096], offset + 24, file), 0);
            offset += 4120;
        }
        offset
    }

    #[test]
    fn what_follows_a_commit_frame_goes_straight_through_until_the_next_transaction() {
        let (mut gathered, mut file) = (Gathered::default(), Memory::default());
        let end = transaction(&mut gathered, &mut file, 32, 5);
        assert_eq!(file.writes, 1);
        // Checksums rewritten in frames 1 and 2: written at once.
        gathered.write(&header(false), 32 + 4120, &mut file);
        assert_eq!(file.writes, 2);
        gathered.write(&header(false), 32 + 2 * 4120, &mut file);
        assert_eq!(file.writes, 3);
        // Padding: copies of the commit frame, also at once.
        gathered.write(&header(true), end, &mut file);
        gathered.write(&[9; 4096], end + 24, &mut file);
        assert_eq!(file.writes, 5);
        // The next transaction gathers again, from its first header.
        let next = end + 4120;
        gathered.write(&header(false), next, &mut file);
        gathered.write(&[1; 4096], next + 24, &mut file);
        assert_eq!(file.writes, 5);
        transaction(&mut gathered, &mut file, next + 4120, 3);
        assert_eq!(file.writes, 6);
    }

    #[test]
    fn a_log_started_over_gathers_from_its_header() {
        let (mut gathered, mut file) = (Gathered::default(), Memory::default());
        transaction(&mut gathered, &mut file, 32, 4);
        assert_eq!(file.writes, 1);
        assert_eq!(gathered.write(&[7; WAL_HEADER], 0, &mut file), 0);
        transaction(&mut gathered, &mut file, 32, 4);
        assert_eq!(file.writes, 2, "the log's header went with the first transaction");
        assert_eq!(file.content[0], 7);
    }

    #[test]
    fn a_page_without_a_commit_header_before_it_stays_gathered() {
        let (mut gathered, mut file) = (Gathered::default(), Memory::default());
        gathered.write(&header(false), 32, &mut file);
        gathered.write(&[1; 4096], 56, &mut file);
        assert_eq!(file.writes, 0);
        assert_eq!(gathered.flush(&mut file), 0);
        assert_eq!(file.writes, 1);
    }

    #[test]
    fn an_error_fails_the_call_that_hands_the_bytes_over_and_drops_them() {
        struct Broken;
        impl Sink for Broken {
            fn write(&mut self, _: &[u8], _: i64) -> i32 {
                10 // SQLITE_IOERR
            }
        }
        let mut gathered = Gathered::default();
        assert_eq!(gathered.write(&header(true), 32, &mut Broken), 0);
        assert_eq!(gathered.write(&[1; 4096], 56, &mut Broken), 10);
        assert!(gathered.bytes.is_empty());
        assert!(!gathered.commit_page_next);
    }

    #[derive(Debug, Clone)]
    enum Step {
        Write {
            offset: u16,
            length: u16,
            commit_header: bool,
            byte: u8,
        },
        Flush,
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            6 => (0u16..20_000, 1u16..5_000, any::<bool>(), any::<u8>()).prop_map(|(offset, length, commit, byte)| {
                // Headers are the 24-byte writes; some are commit frames'.
                let length = if commit { FRAME_HEADER as u16 } else { length };
                Step::Write { offset, length, commit_header: commit, byte }
            }),
            1 => Just(Step::Flush),
        ]
    }

    proptest! {
        /// Whatever the writes, the file ends as if each had gone straight
        /// through, in order, with no more calls than writes.
        #[test]
        fn the_file_reads_as_with_direct_writes(steps in prop::collection::vec(step(), 0..60)) {
            let (mut gathered, mut through, mut direct) = (Gathered::default(), Memory::default(), Memory::default());
            let mut writes = 0;
            for step in &steps {
                match step {
                    Step::Write { offset, length, commit_header, byte } => {
                        let mut bytes = vec![*byte; usize::from(*length)];
                        if *commit_header {
                            bytes = header(true);
                        }
                        // Sometimes continue where the last write ended.
                        let offset = if byte % 2 == 0 { i64::from(*offset) } else { gathered.end() };
                        prop_assert_eq!(gathered.write(&bytes, offset, &mut through), 0);
                        direct.write(&bytes, offset);
                        writes += 1;
                    }
                    Step::Flush => {
                        prop_assert_eq!(gathered.flush(&mut through), 0);
                    }
                }
            }
            gathered.flush(&mut through);
            prop_assert_eq!(&through.content, &direct.content);
            prop_assert!(through.writes <= writes);
        }
    }
}
