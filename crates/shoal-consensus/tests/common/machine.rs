//! A state machine for tests: the commands applied, in order, behind a shared handle (the
//! host owns the machine; the test reads it through a clone). Its snapshots are the commands,
//! length-prefixed, in chunks of `CHUNK` bytes, so even small ones take several chunks.

use bytes::Bytes;
use shoal_consensus::{
    Entry, EntryPayload, LogIndex, MachineError, SnapshotMeta, SnapshotSink, SnapshotSource,
    StateMachine,
};
use std::sync::{Arc, Mutex};

/// Bytes per snapshot chunk.
pub const CHUNK: usize = 256;

/// What a [`CommandLog`] holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogState {
    pub applied: LogIndex,
    pub commands: Vec<Bytes>,
}

impl LogState {
    fn encode(&self) -> Vec<u8> {
        let mut out = self.applied.to_le_bytes().to_vec();
        for c in &self.commands {
            out.extend_from_slice(&(c.len() as u32).to_le_bytes());
            out.extend_from_slice(c);
        }
        out
    }

    fn decode(mut data: &[u8]) -> Option<LogState> {
        let applied = u64::from_le_bytes(data.get(..8)?.try_into().ok()?);
        data = &data[8..];
        let mut commands = Vec::new();
        while !data.is_empty() {
            let len = u32::from_le_bytes(data.get(..4)?.try_into().ok()?) as usize;
            commands.push(Bytes::copy_from_slice(data.get(4..4 + len)?));
            data = &data[4 + len..];
        }
        Some(LogState { applied, commands })
    }
}

/// Commands in order; answers each with how many it has applied.
#[derive(Clone, Default)]
pub struct CommandLog {
    state: Arc<Mutex<LogState>>,
}

impl CommandLog {
    /// The commands applied so far.
    pub fn commands(&self) -> Vec<Bytes> {
        self.state.lock().unwrap().commands.clone()
    }

    /// Everything it holds.
    pub fn state(&self) -> LogState {
        self.state.lock().unwrap().clone()
    }

    /// The commands applied so far, as text.
    pub fn strings(&self) -> Vec<String> {
        self.commands()
            .iter()
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect()
    }
}

/// A [`CommandLog`] snapshot being read.
pub struct CommandSource {
    index: LogIndex,
    data: Bytes,
    at: usize,
    sent_one: bool,
}

impl SnapshotSource for CommandSource {
    fn index(&self) -> LogIndex {
        self.index
    }

    fn next_chunk(&mut self) -> Result<Option<Bytes>, MachineError> {
        if self.at >= self.data.len() && self.sent_one {
            return Ok(None);
        }
        let end = (self.at + CHUNK).min(self.data.len());
        let chunk = self.data.slice(self.at..end);
        self.at = end;
        self.sent_one = true;
        Ok(Some(chunk))
    }
}

/// A [`CommandLog`] snapshot being received.
pub struct CommandSink {
    index: LogIndex,
    data: Vec<u8>,
}

impl SnapshotSink for CommandSink {
    type Staged = LogState;

    fn write(&mut self, chunk: &[u8]) -> Result<(), MachineError> {
        self.data.extend_from_slice(chunk);
        Ok(())
    }

    fn finish(self) -> Result<LogState, MachineError> {
        let state = LogState::decode(&self.data)
            .ok_or_else(|| MachineError::BadSnapshot("undecodable".into()))?;
        if state.applied != self.index {
            return Err(MachineError::BadSnapshot("wrong index".into()));
        }
        Ok(state)
    }
}

impl StateMachine for CommandLog {
    type Response = Bytes;
    type Source = CommandSource;
    type Sink = CommandSink;
    type Staged = LogState;

    fn apply(&mut self, entry: &Entry) -> Result<Bytes, MachineError> {
        let mut state = self.state.lock().unwrap();
        state.applied = entry.index;
        if let EntryPayload::Command(data) = &entry.payload {
            state.commands.push(data.clone());
        }
        Ok(Bytes::copy_from_slice(
            &(state.commands.len() as u64).to_le_bytes(),
        ))
    }

    fn applied_index(&self) -> LogIndex {
        self.state.lock().unwrap().applied
    }

    fn persist(&mut self) -> Result<LogIndex, MachineError> {
        Ok(self.applied_index())
    }

    fn snapshot(&mut self) -> Result<CommandSource, MachineError> {
        let state = self.state.lock().unwrap();
        Ok(CommandSource {
            index: state.applied,
            data: state.encode().into(),
            at: 0,
            sent_one: false,
        })
    }

    fn receive_snapshot(&mut self, meta: &SnapshotMeta) -> Result<CommandSink, MachineError> {
        Ok(CommandSink {
            index: meta.index,
            data: Vec::new(),
        })
    }

    fn install_snapshot(
        &mut self,
        _meta: &SnapshotMeta,
        staged: LogState,
    ) -> Result<(), MachineError> {
        *self.state.lock().unwrap() = staged;
        Ok(())
    }

    fn discard_snapshot(&mut self, _staged: LogState) {}
}
