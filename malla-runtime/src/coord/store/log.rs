//! The group's log, vote and last known commit, as openraft's
//! `RaftLogStorage`: held in memory, and with a data directory also on disk,
//! where nothing is acknowledged before it is on stable storage (`fsync`),
//! so a voter killed with SIGKILL and restarted keeps every vote it cast and
//! every entry it accepted.
//!
//! On disk (`<data dir>/raft/`): `log`, records of `[len u32][crc32 u32]
//! [entry]` appended in order (a torn record at the end, which was never
//! acknowledged, is cut off at the next start); `vote`, `purged` and
//! `committed`, each replaced whole (write, sync, rename, sync the
//! directory).

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{LogState, RaftLogReader, StorageIOError};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::coord::types::{Entry, LogId, StorageError, TypeConfig, Vote};
use crate::sync::lock;

/// Past this many bytes of purged records, the log file is rewritten
/// without them.
const COMPACT_AFTER: u64 = 4 * 1024 * 1024;
/// Largest record accepted when reading the log back.
const MAX_RECORD: usize = 64 * 1024 * 1024;

/// The log store; clones share it (openraft reads through a clone).
#[derive(Clone)]
pub(crate) struct LogStore {
    log: Arc<Mutex<Log>>,
}

struct Log {
    entries: BTreeMap<u64, Entry>,
    vote: Option<Vote>,
    committed: Option<LogId>,
    purged: Option<LogId>,
    disk: Option<Disk>,
}

/// The files of a durable log.
struct Disk {
    dir: PathBuf,
    file: Arc<File>,
    /// Where each entry's record starts in `file`.
    offsets: BTreeMap<u64, u64>,
    len: u64,
    /// Bytes of records at the front of `file` whose entries are purged.
    dead: u64,
    /// Held for as long as the store lives: one process per data directory.
    _lock: File,
}

impl LogStore {
    /// A log that lives only as long as the process.
    pub(crate) fn in_memory() -> Self {
        LogStore::from(Log {
            entries: BTreeMap::new(),
            vote: None,
            committed: None,
            purged: None,
            disk: None,
        })
    }

    /// The log kept in `dir` (created if missing), as it was left.
    pub(crate) fn open(dir: &Path) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let lock_file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join("LOCK"))?;
        lock_file.try_lock().map_err(|_| {
            io::Error::other(format!(
                "{} is in use by another process: each node needs a data directory of its own",
                dir.display()
            ))
        })?;
        let vote = read_value(&dir.join("vote"))?;
        let committed = read_value(&dir.join("committed"))?;
        let purged: Option<LogId> = read_value(&dir.join("purged"))?;
        let path = dir.join("log");
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .append(true)
            .open(&path)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let (records, good) = read_records(&bytes);
        if good < bytes.len() as u64 {
            tracing::warn!(
                log = %path.display(),
                cut = bytes.len() as u64 - good,
                "the log ends in a torn record (a write cut short by a crash, never acknowledged): cut off"
            );
            file.set_len(good)?;
            file.sync_all()?;
        }
        let mut entries = BTreeMap::new();
        let mut offsets = BTreeMap::new();
        let first_live = purged.map_or(0, |p| p.index + 1);
        for (offset, entry) in records {
            let index = entry.log_id.index;
            if index < first_live {
                continue;
            }
            // A later record for the same index replaced it (a truncation
            // the file still holds before this record): keep the last.
            entries.split_off(&index);
            offsets.split_off(&index);
            offsets.insert(index, offset);
            entries.insert(index, entry);
        }
        let dead = offsets.values().next().copied().unwrap_or(good);
        Ok(LogStore::from(Log {
            entries,
            vote,
            committed,
            purged,
            disk: Some(Disk {
                dir: dir.to_owned(),
                file: Arc::new(file),
                offsets,
                len: good,
                dead,
                _lock: lock_file,
            }),
        }))
    }

    fn from(log: Log) -> Self {
        LogStore {
            log: Arc::new(Mutex::new(log)),
        }
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        Ok(lock(&self.log).entries.range(range).map(|(_, e)| e.clone()).collect())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let log = lock(&self.log);
        let last = log.entries.values().next_back().map(|e| e.log_id).or(log.purged);
        Ok(LogState {
            last_purged_log_id: log.purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        let dir = lock(&self.log).disk.as_ref().map(|d| d.dir.clone());
        if let Some(dir) = dir {
            let vote = *vote;
            blocking(move || write_value(&dir.join("vote"), &vote, true))
                .await
                .map_err(|e| StorageIOError::write_vote(&e))?;
        }
        lock(&self.log).vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        Ok(lock(&self.log).vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        let dir = {
            let mut log = lock(&self.log);
            log.committed = committed;
            log.disk.as_ref().map(|d| d.dir.clone())
        };
        if let (Some(dir), Some(committed)) = (dir, committed) {
            // Not synced: a lost commit index only means waiting for the
            // leader to say it again.
            blocking(move || write_value(&dir.join("committed"), &committed, false))
                .await
                .map_err(|e| StorageIOError::write(&e))?;
        }
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(lock(&self.log).committed)
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let write = {
            let mut log = lock(&self.log);
            let mut records = Vec::new();
            let mut placed = Vec::new();
            for entry in entries {
                if let Some(disk) = &log.disk {
                    let at = disk.len + records.len() as u64;
                    encode_record(&mut records, &entry).map_err(|e| StorageIOError::write_logs(&e))?;
                    placed.push((entry.log_id.index, at));
                }
                log.entries.insert(entry.log_id.index, entry);
            }
            log.disk.as_mut().map(|disk| {
                disk.offsets.extend(placed);
                disk.len += records.len() as u64;
                (Arc::clone(&disk.file), records)
            })
        };
        let written = match write {
            None => Ok(()),
            Some((file, records)) => {
                blocking(move || {
                    (&*file).write_all(&records)?;
                    file.sync_data()
                })
                .await
            }
        };
        callback.log_io_completed(written);
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let cut = {
            let mut log = lock(&self.log);
            log.entries.split_off(&log_id.index);
            log.disk.as_mut().and_then(|disk| {
                let at = *disk.offsets.get(&log_id.index)?;
                disk.offsets.split_off(&log_id.index);
                disk.len = at;
                Some((Arc::clone(&disk.file), at))
            })
        };
        if let Some((file, at)) = cut {
            blocking(move || {
                file.set_len(at)?;
                file.sync_all()
            })
            .await
            .map_err(|e| StorageIOError::write_logs(&e))?;
        }
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let (dir, compact) = {
            let mut log = lock(&self.log);
            log.purged = Some(log_id);
            let kept = log.entries.split_off(&(log_id.index + 1));
            log.entries = kept;
            match log.disk.as_mut() {
                None => (None, None),
                Some(disk) => {
                    let kept = disk.offsets.split_off(&(log_id.index + 1));
                    disk.offsets = kept;
                    disk.dead = disk.offsets.values().next().copied().unwrap_or(disk.len);
                    let compact = disk.dead > COMPACT_AFTER && disk.dead * 2 > disk.len;
                    let dir = disk.dir.clone();
                    let live = compact.then(|| log.entries.values().cloned().collect::<Vec<_>>());
                    (Some(dir), live)
                }
            }
        };
        let Some(dir) = dir else { return Ok(()) };
        blocking({
            let dir = dir.clone();
            move || write_value(&dir.join("purged"), &log_id, true)
        })
        .await
        .map_err(|e| StorageIOError::write_logs(&e))?;
        if let Some(live) = compact {
            self.compact(&dir, live)
                .await
                .map_err(|e| StorageIOError::write_logs(&e))?;
        }
        Ok(())
    }
}

impl LogStore {
    /// Rewrites the log file with only `live` (the entries not purged).
    /// Nothing is appended meanwhile: openraft calls the store's writers
    /// one at a time (`&mut self`), and purge awaits this.
    async fn compact(&self, dir: &Path, live: Vec<Entry>) -> io::Result<()> {
        let dir = dir.to_owned();
        let (file, offsets, len) = blocking(move || {
            let mut records = Vec::new();
            let mut offsets = BTreeMap::new();
            for entry in &live {
                offsets.insert(entry.log_id.index, records.len() as u64);
                encode_record(&mut records, entry)?;
            }
            let tmp = dir.join("log.tmp");
            let mut out = File::create(&tmp)?;
            out.write_all(&records)?;
            out.sync_all()?;
            std::fs::rename(&tmp, dir.join("log"))?;
            sync_dir(&dir)?;
            let file = OpenOptions::new().read(true).append(true).open(dir.join("log"))?;
            Ok((file, offsets, records.len() as u64))
        })
        .await?;
        if let Some(disk) = lock(&self.log).disk.as_mut() {
            disk.file = Arc::new(file);
            disk.offsets = offsets;
            disk.len = len;
            disk.dead = 0;
        }
        Ok(())
    }
}

/// Runs blocking file work off the async workers.
async fn blocking<T: Send + 'static>(work: impl FnOnce() -> io::Result<T> + Send + 'static) -> io::Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|e| Err(io::Error::other(format!("the storage task failed: {e}"))))
}

fn encode_record(out: &mut Vec<u8>, entry: &Entry) -> io::Result<()> {
    let payload = postcard::to_allocvec(entry).map_err(io::Error::other)?;
    let len = u32::try_from(payload.len()).map_err(io::Error::other)?;
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    Ok(())
}

/// The records of a log file with their offsets, and where the last good
/// one ends: a short or corrupt record (and everything after it) is torn.
fn read_records(bytes: &[u8]) -> (Vec<(u64, Entry)>, u64) {
    let mut records = Vec::new();
    let mut at = 0usize;
    while bytes.len() - at >= 8 {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().expect("4 bytes"));
        let Some(payload) = bytes.get(at + 8..at + 8 + len).filter(|_| len <= MAX_RECORD) else {
            break;
        };
        if crc32fast::hash(payload) != crc {
            break;
        }
        let Ok(entry) = postcard::from_bytes::<Entry>(payload) else {
            break;
        };
        records.push((at as u64, entry));
        at += 8 + len;
    }
    (records, at as u64)
}

/// A small value kept in a file of its own, with a checksum.
fn read_value<T: DeserializeOwned>(path: &Path) -> io::Result<Option<T>> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let payload = checked_payload(&bytes).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} is corrupt (bad checksum)", path.display()),
        )
    })?;
    postcard::from_bytes(payload)
        .map(Some)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{}: {e}", path.display())))
}

/// The payload after a checksum, if it matches.
fn checked_payload(bytes: &[u8]) -> Option<&[u8]> {
    let (crc, payload) = bytes.split_first_chunk::<4>()?;
    (crc32fast::hash(payload) == u32::from_le_bytes(*crc)).then_some(payload)
}

/// Replaces the file at `path` with `value` in one step; with `sync`, on
/// stable storage before it returns.
pub(crate) fn write_value<T: Serialize>(path: &Path, value: &T, sync: bool) -> io::Result<()> {
    let payload = postcard::to_allocvec(value).map_err(io::Error::other)?;
    let tmp = path.with_extension("tmp");
    let mut file = File::create(&tmp)?;
    file.write_all(&crc32fast::hash(&payload).to_le_bytes())?;
    file.write_all(&payload)?;
    if sync {
        file.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if sync && let Some(dir) = path.parent() {
        sync_dir(dir)?;
    }
    Ok(())
}

/// What `write_value` wrote, for other files of the store.
pub(crate) fn read_small<T: DeserializeOwned>(path: &Path) -> io::Result<Option<T>> {
    read_value(path)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use openraft::storage::RaftLogStorageExt;
    use openraft::{CommittedLeaderId, EntryPayload};

    use super::*;
    use crate::coord::table::{Command, Key};

    fn entry(term: u64, index: u64) -> Entry {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(term, 1), index),
            payload: EntryPayload::Normal(Command::Expire {
                key: Key::Lock(format!("k{index}")),
                token: index,
                renewed_at: index,
            }),
        }
    }

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("malla-log-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    async fn indexes(store: &mut LogStore) -> Vec<u64> {
        store
            .try_get_log_entries(0..)
            .await
            .unwrap()
            .iter()
            .map(|e| e.log_id.index)
            .collect()
    }

    #[tokio::test]
    async fn what_was_acknowledged_is_there_after_a_restart() {
        let dir = scratch("restart");
        {
            let mut store = LogStore::open(&dir).unwrap();
            store.save_vote(&Vote::new(3, 7)).await.unwrap();
            store.blocking_append((1..=5).map(|i| entry(1, i))).await.unwrap();
            store
                .truncate(LogId::new(CommittedLeaderId::new(1, 1), 4))
                .await
                .unwrap();
            store.blocking_append([entry(2, 4)]).await.unwrap();
            store.purge(LogId::new(CommittedLeaderId::new(1, 1), 1)).await.unwrap();
        }
        let mut store = LogStore::open(&dir).unwrap();
        assert_eq!(store.read_vote().await.unwrap(), Some(Vote::new(3, 7)));
        assert_eq!(indexes(&mut store).await, [2, 3, 4]);
        let state = store.get_log_state().await.unwrap();
        assert_eq!(state.last_log_id.map(|l| (l.leader_id.term, l.index)), Some((2, 4)));
        assert_eq!(state.last_purged_log_id.map(|l| l.index), Some(1));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn a_torn_record_at_the_end_is_cut_off() {
        let dir = scratch("torn");
        {
            let mut store = LogStore::open(&dir).unwrap();
            store.blocking_append((1..=3).map(|i| entry(1, i))).await.unwrap();
        }
        // A crash mid-write leaves half a record.
        let path = dir.join("log");
        let len = std::fs::metadata(&path).unwrap().len();
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(&[9, 0, 0, 0, 1, 2]).unwrap();
        drop(file);
        // And a flipped byte in the last whole record makes it torn too.
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[len as usize - 1] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        let mut store = LogStore::open(&dir).unwrap();
        assert_eq!(indexes(&mut store).await, [1, 2]);
        store.blocking_append([entry(1, 3)]).await.unwrap();
        drop(store);
        let mut store = LogStore::open(&dir).unwrap();
        assert_eq!(
            indexes(&mut store).await,
            [1, 2, 3],
            "appends after the cut are read back"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn one_process_per_data_directory() {
        let dir = scratch("lock");
        let _first = LogStore::open(&dir).unwrap();
        let second = LogStore::open(&dir).err().expect("in use");
        assert!(second.to_string().contains("in use by another process"), "{second}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
