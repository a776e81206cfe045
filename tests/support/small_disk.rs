//! A small file system for tests of a full disk: a tmpfs mounted for the test's lifetime.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// A tmpfs of `megabytes` mounted on `dir` while this lives (it needs root, as `./test.sh` and CI
/// have; elsewhere the test is skipped, or fails under `./test.sh`).
pub struct SmallDisk(pub PathBuf);

impl SmallDisk {
    pub fn mount(test: &str, dir: &Path, megabytes: u32) -> Option<Self> {
        std::fs::create_dir_all(dir).unwrap();
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={megabytes}m"), "tmpfs"])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        if mounted {
            return Some(Self(dir.to_owned()));
        }
        let message = format!("{test} mounts a small tmpfs: run it as root (./test.sh and CI do)");
        assert!(std::env::var_os("OWNLIST_TEST_REQUIRE_TOOLS").is_none(), "{message}");
        eprintln!("SKIPPED: {message}");
        None
    }

    /// Fills the disk but for about `leave` bytes with a file that `free` removes.
    pub fn fill(&self, leave: u64) {
        use std::io::Write;
        let mut filler = std::fs::File::create(self.0.join("filler")).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        loop {
            let free = fs_free(&self.0);
            if free <= leave {
                break;
            }
            let n = usize::try_from((free - leave).min(chunk.len() as u64)).unwrap();
            if filler.write_all(&chunk[..n]).is_err() {
                break;
            }
        }
        let _ = filler.sync_all();
    }

    pub fn free(&self) {
        std::fs::remove_file(self.0.join("filler")).unwrap();
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Free bytes on the file system holding `dir` (from `df`, to stay free of `unsafe`).
fn fs_free(dir: &Path) -> u64 {
    let out = std::process::Command::new("df").args(["--output=avail", "-B1"]).arg(dir).output().unwrap();
    String::from_utf8_lossy(&out.stdout).lines().nth(1).unwrap().trim().parse().unwrap()
}
