//! How an engine is opened: limits, durability, cache.

/// When a committed batch reaches the disk. Structural changes (creating, splitting,
/// merging, removing a range, finishing an ingest) are always synced, whatever the mode.
///
/// The Raft log is the source of truth for applied entries, so the engine's own journal may
/// lag behind it: after any crash the engine holds a *prefix* of the committed batches (each
/// batch whole or absent) and reports every range's applied index, from which the log tail
/// is replayed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// Every batch is fsynced before `apply` returns: it survives power loss.
    Sync,
    /// Every batch is handed to the operating system before `apply` returns: it survives the
    /// process crashing or being killed, not the machine losing power (the kernel may lose a
    /// suffix of batches). The default, since Raft has fsynced the log already.
    #[default]
    Process,
    /// Batches collect in the journal's buffer until it fills or [`crate::Engine::persist`]
    /// is called: a process crash may lose a suffix of batches. For bulk loads.
    Buffered,
}

/// Options for [`crate::Engine::open`].
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// The longest key accepted, in bytes (4 KiB).
    pub max_key_len: usize,
    /// The longest value accepted, in bytes (1 MiB).
    pub max_value_len: usize,
    /// When committed batches reach the disk.
    pub durability: Durability,
    /// The block cache, in bytes (64 MiB).
    pub cache_bytes: u64,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            max_key_len: 4 * 1024,
            max_value_len: 1024 * 1024,
            durability: Durability::Process,
            cache_bytes: 64 * 1024 * 1024,
        }
    }
}

impl Durability {
    /// The fjall persist mode for a batch under this durability (`None`: leave it buffered).
    pub(crate) fn persist_mode(self) -> Option<fjall::PersistMode> {
        match self {
            Durability::Sync => Some(fjall::PersistMode::SyncData),
            Durability::Process => Some(fjall::PersistMode::Buffer),
            Durability::Buffered => None,
        }
    }
}
