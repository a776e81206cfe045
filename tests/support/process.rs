//! A child process that cannot outlive its test: dropped (at the end of the test, or while a failed
//! assertion unwinds), it is killed and reaped. A leaked `ownlist serve` would otherwise keep running
//! on a deleted temporary folder, and keep the test runner's output pipe open forever.

use std::ops::{Deref, DerefMut};
use std::process::Child;

pub struct Process(pub Child);

impl Deref for Process {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl DerefMut for Process {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}
