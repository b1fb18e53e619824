//! A state machine that only counts what it applies, for benchmarks that measure Raft and
//! its log alone (and for the baseline a store's benchmark compares itself with).

use crate::entry::{Entry, LogIndex};
use crate::snapshot::{MachineError, SnapshotMeta, SnapshotSink, SnapshotSource, StateMachine};
use bytes::Bytes;

/// A state machine that only counts what it applies.
#[derive(Debug, Default)]
pub struct CountingMachine {
    /// The last index applied.
    pub applied: LogIndex,
}

/// A counting machine's snapshot: its index, as one empty chunk.
#[derive(Debug)]
pub struct CountingSnapshot(LogIndex, bool);

impl SnapshotSource for CountingSnapshot {
    fn index(&self) -> LogIndex {
        self.0
    }
    fn next_chunk(&mut self) -> Result<Option<Bytes>, MachineError> {
        Ok((!std::mem::replace(&mut self.1, true)).then(Bytes::new))
    }
}

impl SnapshotSink for CountingSnapshot {
    type Staged = LogIndex;
    fn write(&mut self, _chunk: &[u8]) -> Result<(), MachineError> {
        Ok(())
    }
    fn finish(self) -> Result<LogIndex, MachineError> {
        Ok(self.0)
    }
}

impl StateMachine for CountingMachine {
    type Response = Bytes;
    type Source = CountingSnapshot;
    type Sink = CountingSnapshot;
    type Staged = LogIndex;
    fn apply(&mut self, entry: &Entry) -> Result<Bytes, MachineError> {
        self.applied = entry.index;
        Ok(Bytes::new())
    }
    fn applied_index(&self) -> LogIndex {
        self.applied
    }
    fn persist(&mut self) -> Result<LogIndex, MachineError> {
        Ok(self.applied)
    }
    fn snapshot(&mut self) -> Result<CountingSnapshot, MachineError> {
        Ok(CountingSnapshot(self.applied, false))
    }
    fn receive_snapshot(&mut self, meta: &SnapshotMeta) -> Result<CountingSnapshot, MachineError> {
        Ok(CountingSnapshot(meta.index, false))
    }
    fn install_snapshot(&mut self, meta: &SnapshotMeta, _: LogIndex) -> Result<(), MachineError> {
        self.applied = meta.index;
        Ok(())
    }
    fn discard_snapshot(&mut self, _: LogIndex) {}
}
