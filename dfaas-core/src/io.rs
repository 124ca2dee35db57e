//! File output that never leaves a half-written file behind (`std`).

use std::format;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;

/// Writes `path` atomically: `write` fills a uniquely named temporary file
/// beside it (tempfile), which is flushed, synced and renamed over `path`
/// only when `write` succeeds; then the folder is synced, so the rename
/// survives a crash. On error the temporary file is removed and `path` is
/// untouched.
///
/// # Errors
/// The I/O error of creating, writing or renaming, with the path named.
pub fn write_atomically<F>(path: &Path, write: F) -> io::Result<()>
where
    F: FnOnce(&mut BufWriter<File>) -> io::Result<()>,
{
    if path.file_name().is_none() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{}: not a file path", path.display()),
        ));
    }
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let named = |e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", path.display()));
    // Dropping the temporary file on an error path deletes it. It is
    // created as `File::create` would create the file (0o666 less the
    // umask), not tempfile's private 0o600.
    let mut builder = tempfile::Builder::new();
    builder.prefix(".dfaas-").suffix(".tmp");
    #[cfg(unix)]
    builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666));
    let temporary = builder.tempfile_in(dir).map_err(named)?;
    let result = (|| {
        let mut out = BufWriter::new(temporary.as_file().try_clone()?);
        write(&mut out)?;
        out.flush()?;
        temporary.as_file().sync_all()
    })();
    result.map_err(named)?;
    temporary.persist(path).map_err(|e| named(e.error))?;
    sync_dir(dir).map_err(named)
}

/// Makes a rename inside `dir` durable (a no-op where folders cannot be
/// opened, as on Windows).
fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    File::open(dir)?.sync_all()?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_write_leaves_the_old_file() {
        let temp = tempfile::tempdir().unwrap();
        let dir = temp.path();
        let path = dir.join("out.csv");
        write_atomically(&path, |w| w.write_all(b"first")).unwrap();
        let failed = write_atomically(&path, |w| {
            w.write_all(b"partial")?;
            Err(io::Error::other("interrupted"))
        });
        assert!(failed.is_err());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "first");
        assert_eq!(
            std::fs::read_dir(dir).unwrap().count(),
            1,
            "no temporary file left"
        );
        write_atomically(&path, |w| w.write_all(b"second")).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "second");
        #[cfg(unix)]
        {
            // The permissions of a plainly created file, not 0o600.
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode();
            let plain = dir.join("plain");
            File::create(&plain).unwrap();
            assert_eq!(mode(&path), mode(&plain));
        }
        assert!(
            write_atomically(dir, |_| Ok(())).is_err(),
            "a folder is no file"
        );
    }
}
