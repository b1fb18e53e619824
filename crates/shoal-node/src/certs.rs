//! A self-signed certificate for a local cluster (`shoal dev --tls`), made once with rcgen
//! and kept beside the data.

use crate::node::TlsFiles;
use std::path::Path;

/// The certificate and key under `dir/tls/`, made on first use for `localhost` and
/// `127.0.0.1` (the key readable by its owner only). Clients trust `cert.pem`.
pub fn dev_certificate(dir: &Path) -> Result<TlsFiles, String> {
    let tls = dir.join("tls");
    let files = TlsFiles {
        cert: tls.join("cert.pem"),
        key: tls.join("key.pem"),
    };
    if files.cert.exists() && files.key.exists() {
        return Ok(files);
    }
    let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    let made = rcgen::generate_simple_self_signed(names).map_err(|e| e.to_string())?;
    std::fs::create_dir_all(&tls).map_err(|e| format!("{}: {e}", tls.display()))?;
    write_private(&files.key, made.key_pair.serialize_pem().as_bytes())?;
    std::fs::write(&files.cert, made.cert.pem())
        .map_err(|e| format!("{}: {e}", files.cert.display()))?;
    Ok(files)
}

/// Writes `bytes` to a new file only its owner can read.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), String> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    file.write_all(bytes)
        .map_err(|e| format!("{}: {e}", path.display()))
}
