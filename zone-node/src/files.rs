//! File modes for what the node keeps on disk: the data directory 0700, the SQLite database and the
//! secret key 0600, whatever the process's umask.

use std::path::Path;

/// Sets `path`'s permission bits to `mode` (no-op off Unix).
pub fn restrict(path: &Path, mode: u32) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
    }
    #[cfg(not(unix))]
    {
        let _ = (path, mode);
        Ok(())
    }
}

/// Creates the data directory `path` readable by its owner only. A directory that already exists
/// keeps its mode (it may be one the operator chose and shares, such as `/tmp`); the node warns
/// when others can read it.
pub fn create_private_dir(path: &Path) -> std::io::Result<()> {
    if !path.exists() {
        std::fs::create_dir_all(path)?;
        return restrict(path, 0o700);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(path)?.permissions().mode();
        if mode & 0o077 != 0 {
            tracing::warn!(
                path = %path.display(),
                mode = format!("{:o}", mode & 0o777),
                "the data directory can be read by other users; chmod 700 it"
            );
        }
    }
    Ok(())
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).permissions().mode() & 0o777
    }

    #[test]
    fn a_new_data_directory_is_owner_only_and_an_existing_one_keeps_its_mode() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let new = dir.path().join("a/b");
        create_private_dir(&new).expect("create a new data directory");
        assert_eq!(mode(&new), 0o700);
        let shared = dir.path().join("shared");
        std::fs::create_dir(&shared).expect("create a shared directory");
        restrict(&shared, 0o755).expect("chmod 755");
        create_private_dir(&shared).expect("an existing directory is accepted");
        assert_eq!(mode(&shared), 0o755);
    }
}
