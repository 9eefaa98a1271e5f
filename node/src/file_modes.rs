//! Who may read a node's data: its owner only. Files are created 0600 and
//! directories 0700.
//!
//! The process umask is the one place that enforces it. Files are created
//! in several places (chunk log segments, staged segments of a compaction
//! or a split, chunk directories) and by sled, which creates the catalog's
//! files itself and takes no mode; a umask reaches all of them, and every
//! creation site added later, without each having to remember a mode.
//! On top of it, the data directory itself is made 0700 even when it
//! already existed with a wider mode, so files a node made before this
//! rule (or that someone copied in) are out of other users' reach.

use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

/// Mode bits withheld from every file and directory the node creates:
/// everything for group and others.
pub const DATA_UMASK: u32 = 0o077;

/// Mode of the data directory.
pub const DATA_DIR_MODE: u32 = 0o700;

/// Sets the process umask to [`DATA_UMASK`]. Process-wide: call it once,
/// before the node creates anything.
pub fn restrict_new_files() {
    // SAFETY: umask only swaps the process's file mode mask; it cannot
    // fail and touches no memory.
    unsafe {
        libc::umask(DATA_UMASK as libc::mode_t);
    }
}

/// Creates `dir` (and missing parents) and makes it [`DATA_DIR_MODE`].
pub fn prepare_data_dir(dir: &Path) -> io::Result<()> {
    std::fs::DirBuilder::new().recursive(true).mode(DATA_DIR_MODE).create(dir)?;
    let mode = std::fs::metadata(dir)?.permissions().mode() & 0o777;
    if mode != DATA_DIR_MODE {
        tracing::info!(
            data_dir = %dir.display(),
            "data directory was {mode:o}; making it {DATA_DIR_MODE:o} (owner only)"
        );
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(DATA_DIR_MODE))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_existing_open_data_dir_is_closed() {
        let tmp = tempfile::tempdir().expect("tmp");
        let dir = tmp.path().join("data");
        std::fs::create_dir(&dir).expect("create");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        prepare_data_dir(&dir).expect("prepare");
        let mode = std::fs::metadata(&dir).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode, DATA_DIR_MODE);
        let nested = tmp.path().join("a/b/c");
        prepare_data_dir(&nested).expect("prepare nested");
        let mode = std::fs::metadata(&nested).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode, DATA_DIR_MODE);
    }
}
